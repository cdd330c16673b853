// Package openaiembed is the embeddings adapter for any server that speaks
// OpenAI's POST /v1/embeddings (OpenAI, vLLM, llama.cpp server, Ollama's
// OpenAI endpoint, text-embeddings-inference, ...).
//
// Texts are sent in batches bounded by count and size, vectors are put back
// in input order by data[i].index, and every vector is checked against the
// configured dimension. Errors carry the status and the server's error
// type/code, never a body, a text or the key.
package openaiembed

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"strings"
	"time"

	"github.com/lethe-dev/lethe/infra/embed"
	"github.com/lethe-dev/lethe/infra/internal/httpretry"
)

// Errors, shared with the other hosted adapters (errors.Is works across them).
var (
	ErrRejected    = httpretry.ErrRejected    // 4xx: will not succeed as sent
	ErrUnavailable = httpretry.ErrUnavailable // transport/429/5xx after retries: try later
	ErrBadResponse = httpretry.ErrBadResponse // wrong shape, count or dimension
)

const (
	// DefaultBaseURL is the API root including the version, as in OpenAI's
	// SDKs; the adapter appends /embeddings.
	DefaultBaseURL = "https://api.openai.com/v1"
	// DefaultMaxBatch is well under OpenAI's 2,048 inputs per request.
	DefaultMaxBatch = 256
	// DefaultMaxBatchBytes keeps a request under OpenAI's 300,000 tokens even
	// at one token per byte.
	DefaultMaxBatchBytes = 250_000
	DefaultTimeout       = time.Minute
	embeddingsPath       = "/embeddings"
	maxResponse          = 64 << 20 // 256 × 3,072 floats as JSON text is ~15 MB
)

// Config configures an Embedder. Model and Dim are required.
type Config struct {
	BaseURL string // API root with version, e.g. "http://127.0.0.1:8000/v1"
	APIKey  string // bearer token; required for api.openai.com
	Model   string
	Dim     int
	// SendDimensions asks the server for Dim-sized vectors ("dimensions"),
	// which text-embedding-3 models support; other servers may refuse it.
	SendDimensions bool
	MaxBatch       int // inputs per request; default DefaultMaxBatch
	MaxBatchBytes  int // summed input bytes per request; default DefaultMaxBatchBytes

	HTTPClient *http.Client // default: DefaultTimeout, no redirects

	// Retries: zero values take httpretry's defaults (4 attempts, 500 ms base,
	// 20 s cap, 2 min budget).
	MaxAttempts int
	BaseDelay   time.Duration
	MaxDelay    time.Duration
	MaxElapsed  time.Duration
	Sleep       func(ctx context.Context, d time.Duration) error
}

// Embedder implements embed.Embedder over /embeddings.
type Embedder struct {
	client    *httpretry.Client
	endpoint  string
	model     string
	dim       int
	sendDims  bool
	maxBatch  int
	maxBytes  int
	id        string
	authorize func(http.Header)
}

var _ embed.Embedder = (*Embedder)(nil)

// New validates cfg and returns an Embedder.
func New(cfg Config) (*Embedder, error) {
	if cfg.BaseURL == "" {
		cfg.BaseURL = DefaultBaseURL
	}
	base, err := url.Parse(cfg.BaseURL)
	if err != nil || (base.Scheme != "https" && base.Scheme != "http") || base.Host == "" || base.User != nil || base.RawQuery != "" {
		return nil, errors.New("openaiembed.New: Config.BaseURL must be an http(s) URL with a host and no credentials or query")
	}
	if strings.ContainsAny(cfg.APIKey, "\r\n") {
		return nil, errors.New("openaiembed.New: Config.APIKey contains a line break")
	}
	if strings.TrimSpace(cfg.APIKey) == "" && strings.EqualFold(base.Hostname(), "api.openai.com") {
		return nil, errors.New("openaiembed.New: Config.APIKey is required for api.openai.com")
	}
	if strings.TrimSpace(cfg.Model) == "" || len(cfg.Model) > 128 || strings.ContainsAny(cfg.Model, "\r\n\"") {
		return nil, errors.New("openaiembed.New: Config.Model is required")
	}
	if cfg.Dim <= 0 || cfg.Dim > 16384 {
		return nil, fmt.Errorf("openaiembed.New: Config.Dim %d must be in 1..16384", cfg.Dim)
	}
	if cfg.MaxBatch < 0 || cfg.MaxBatchBytes < 0 || cfg.MaxAttempts < 0 {
		return nil, errors.New("openaiembed.New: Config.MaxBatch, MaxBatchBytes and MaxAttempts must not be negative")
	}
	if cfg.MaxBatch == 0 {
		cfg.MaxBatch = DefaultMaxBatch
	}
	if cfg.MaxBatchBytes == 0 {
		cfg.MaxBatchBytes = DefaultMaxBatchBytes
	}
	hc := cfg.HTTPClient
	if hc == nil {
		hc = httpretry.NewClient(DefaultTimeout)
	}
	endpoint := *base
	endpoint.Path = strings.TrimRight(base.Path, "/") + embeddingsPath

	e := &Embedder{
		endpoint: endpoint.String(),
		model:    cfg.Model,
		dim:      cfg.Dim,
		sendDims: cfg.SendDimensions,
		maxBatch: cfg.MaxBatch,
		maxBytes: cfg.MaxBatchBytes,
		id:       fmt.Sprintf("openai:%s:%d", cfg.Model, cfg.Dim),
		client: &httpretry.Client{
			Provider: "openai-embeddings",
			HTTP:     hc,
			MaxBody:  maxResponse,
			Policy: httpretry.Policy{
				MaxAttempts: cfg.MaxAttempts,
				BaseDelay:   cfg.BaseDelay,
				MaxDelay:    cfg.MaxDelay,
				MaxElapsed:  cfg.MaxElapsed,
				Sleep:       cfg.Sleep,
			},
			DecodeError: decodeError,
		},
	}
	// A closure, not a field, so that printing an Embedder cannot show the key.
	key := cfg.APIKey
	e.authorize = func(h http.Header) {
		if key != "" {
			h.Set("Authorization", "Bearer "+key)
		}
	}
	return e, nil
}

// ID is "openai:<model>:<dim>".
func (e *Embedder) ID() string { return e.id }

// Dim is the configured dimension; every returned vector has it.
func (e *Embedder) Dim() int { return e.dim }

type request struct {
	Model          string   `json:"model"`
	Input          []string `json:"input"`
	EncodingFormat string   `json:"encoding_format"`
	Dimensions     int      `json:"dimensions,omitempty"`
}

// Embed returns one vector per text, in order. OpenAI-style models are
// symmetric, so kind is not sent.
func (e *Embedder) Embed(ctx context.Context, texts []string, _ embed.Kind) ([][]float32, error) {
	out := make([][]float32, len(texts))
	for _, r := range httpretry.Batches(len(texts), e.maxBatch, e.maxBytes, func(i int) int { return len(texts[i]) }) {
		vecs, err := e.embedBatch(ctx, texts[r[0]:r[1]])
		if err != nil {
			return nil, fmt.Errorf("openaiembed.Embed: texts %d..%d of %d: %w", r[0], r[1]-1, len(texts), err)
		}
		copy(out[r[0]:r[1]], vecs)
	}
	return out, nil
}

func (e *Embedder) embedBatch(ctx context.Context, batch []string) ([][]float32, error) {
	req := request{Model: e.model, Input: batch, EncodingFormat: "float"}
	if e.sendDims {
		req.Dimensions = e.dim
	}
	payload, err := json.Marshal(req)
	if err != nil {
		return nil, fmt.Errorf("encode request: %w", err)
	}
	body, _, err := e.client.Do(ctx, func(ctx context.Context) (*http.Request, error) {
		r, err := httpretry.JSONBody(ctx, e.endpoint, payload, nil)
		if err != nil {
			return nil, err
		}
		e.authorize(r.Header)
		return r, nil
	})
	if err != nil {
		return nil, err
	}
	return decodeResponse(body, len(batch), e.dim)
}
