// Package pineconeembed is the embeddings adapter for Pinecone Inference
// (POST https://api.pinecone.io/embed), by default with llama-text-embed-v2.
//
// Request: {"model", "parameters": {"input_type": "passage"|"query",
// "truncate", "dimension"}, "inputs": [{"text"}]} with headers Api-Key and
// X-Pinecone-Api-Version. Answer: {"model", "vector_type": "dense",
// "data": [{"values", "vector_type"}], "usage": {"total_tokens"}}, one entry
// per input in input order. Batches stay within the model's 96 inputs;
// longer inputs are truncated by the service (truncate=END).
package pineconeembed

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"slices"
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
	DefaultBaseURL = "https://api.pinecone.io"
	DefaultModel   = "llama-text-embed-v2"
	// DefaultAPIVersion is a stable Pinecone API version whose /embed has the
	// shape above (unchanged from 2025-04 through 2026-07).
	DefaultAPIVersion = "2026-04"
	DefaultTruncate   = "END"
	DefaultTimeout    = time.Minute
	embedPath         = "/embed"
	maxResponse       = 32 << 20 // 96 × 2,048 floats as JSON text is ~4 MB
)

// model is what Pinecone documents for a hosted model (GET /models/{name}).
type model struct {
	maxBatch   int
	dims       []int
	defaultDim int
	dimParam   bool // accepts parameters.dimension
}

func knownModel(name string) (model, bool) {
	switch name {
	case "llama-text-embed-v2":
		return model{maxBatch: 96, dims: []int{384, 512, 768, 1024, 2048}, defaultDim: 1024, dimParam: true}, true
	case "multilingual-e5-large":
		return model{maxBatch: 96, dims: []int{1024}, defaultDim: 1024}, true
	}
	return model{}, false
}

// Config configures an Embedder. APIKey is required.
type Config struct {
	APIKey     string
	BaseURL    string // default DefaultBaseURL; tests point it at a fake
	Model      string // default "llama-text-embed-v2"
	Dim        int    // default the model's (1024); llama-text-embed-v2: 384, 512, 768, 1024 or 2048
	APIVersion string // X-Pinecone-Api-Version; default DefaultAPIVersion
	Truncate   string // END (default), START or NONE (reject over-long input)
	// MaxBatch is inputs per request; default and maximum the model's (96).
	MaxBatch int
	// MaxBatchBytes bounds summed input bytes per request; 0 = no bound
	// (Pinecone limits count and per-input tokens, which truncate handles).
	MaxBatchBytes int
	// SendDimension forces parameters.dimension for models not known here
	// (for known models it is sent exactly when the model accepts it).
	SendDimension bool

	HTTPClient *http.Client // default: DefaultTimeout, no redirects

	// Retries: zero values take httpretry's defaults (4 attempts, 500 ms base,
	// 20 s cap, 2 min budget).
	MaxAttempts int
	BaseDelay   time.Duration
	MaxDelay    time.Duration
	MaxElapsed  time.Duration
	Sleep       func(ctx context.Context, d time.Duration) error
}

// Embedder implements embed.Embedder with Pinecone Inference.
type Embedder struct {
	client    *httpretry.Client
	endpoint  string
	model     string
	dim       int
	truncate  string
	sendDim   bool
	maxBatch  int
	maxBytes  int
	id        string
	headers   func(http.Header) // a closure, so printing an Embedder cannot show the key
	reqHeader http.Header       // fixed non-secret headers
}

var _ embed.Embedder = (*Embedder)(nil)

// New validates cfg and returns an Embedder.
func New(cfg Config) (*Embedder, error) {
	if strings.TrimSpace(cfg.APIKey) == "" {
		return nil, errors.New("pineconeembed.New: Config.APIKey is required")
	}
	if strings.ContainsAny(cfg.APIKey, "\r\n") {
		return nil, errors.New("pineconeembed.New: Config.APIKey contains a line break")
	}
	if cfg.BaseURL == "" {
		cfg.BaseURL = DefaultBaseURL
	}
	base, err := url.Parse(cfg.BaseURL)
	if err != nil || (base.Scheme != "https" && base.Scheme != "http") || base.Host == "" || base.User != nil || base.RawQuery != "" {
		return nil, errors.New("pineconeembed.New: Config.BaseURL must be an http(s) URL with a host and no credentials or query")
	}
	if cfg.Model == "" {
		cfg.Model = DefaultModel
	}
	if httpretry.Identifier(cfg.Model, 128) == "" || strings.Contains(cfg.Model, " ") {
		return nil, errors.New("pineconeembed.New: Config.Model is not a model name")
	}
	if cfg.APIVersion == "" {
		cfg.APIVersion = DefaultAPIVersion
	}
	if httpretry.Identifier(cfg.APIVersion, 32) == "" || strings.Contains(cfg.APIVersion, " ") {
		return nil, errors.New("pineconeembed.New: Config.APIVersion is not a version like 2026-04")
	}
	if cfg.Truncate == "" {
		cfg.Truncate = DefaultTruncate
	}
	if !slices.Contains([]string{"END", "START", "NONE"}, cfg.Truncate) {
		return nil, errors.New("pineconeembed.New: Config.Truncate must be END, START or NONE")
	}
	if cfg.MaxBatch < 0 || cfg.MaxBatchBytes < 0 || cfg.MaxAttempts < 0 || cfg.Dim < 0 {
		return nil, errors.New("pineconeembed.New: Config.Dim, MaxBatch, MaxBatchBytes and MaxAttempts must not be negative")
	}

	sendDim := cfg.SendDimension
	if m, ok := knownModel(cfg.Model); ok {
		if cfg.Dim == 0 {
			cfg.Dim = m.defaultDim
		}
		if !slices.Contains(m.dims, cfg.Dim) {
			return nil, fmt.Errorf("pineconeembed.New: Config.Dim %d is not one of %s's dimensions %v", cfg.Dim, cfg.Model, m.dims)
		}
		if cfg.MaxBatch == 0 {
			cfg.MaxBatch = m.maxBatch
		}
		if cfg.MaxBatch > m.maxBatch {
			return nil, fmt.Errorf("pineconeembed.New: Config.MaxBatch %d exceeds %s's limit of %d", cfg.MaxBatch, cfg.Model, m.maxBatch)
		}
		sendDim = m.dimParam
	} else {
		if cfg.Dim == 0 {
			return nil, fmt.Errorf("pineconeembed.New: Config.Dim is required for model %s", cfg.Model)
		}
		if cfg.MaxBatch == 0 {
			cfg.MaxBatch = 96
		}
	}

	hc := cfg.HTTPClient
	if hc == nil {
		hc = httpretry.NewClient(DefaultTimeout)
	}
	endpoint := *base
	endpoint.Path = strings.TrimRight(base.Path, "/") + embedPath

	key := cfg.APIKey
	e := &Embedder{
		endpoint: endpoint.String(),
		model:    cfg.Model,
		dim:      cfg.Dim,
		truncate: cfg.Truncate,
		sendDim:  sendDim,
		maxBatch: cfg.MaxBatch,
		maxBytes: cfg.MaxBatchBytes,
		id:       fmt.Sprintf("pinecone:%s:%d", cfg.Model, cfg.Dim),
		headers:  func(h http.Header) { h.Set("Api-Key", key) },
		reqHeader: http.Header{
			"X-Pinecone-Api-Version": {cfg.APIVersion},
		},
		client: &httpretry.Client{
			Provider: "pinecone-inference",
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
	return e, nil
}

// ID is "pinecone:<model>:<dim>".
func (e *Embedder) ID() string { return e.id }

// Dim is the configured dimension; every returned vector has it.
func (e *Embedder) Dim() int { return e.dim }

type parameters struct {
	InputType string `json:"input_type"`
	Truncate  string `json:"truncate"`
	Dimension int    `json:"dimension,omitempty"`
}

type input struct {
	Text string `json:"text"`
}

type request struct {
	Model      string     `json:"model"`
	Parameters parameters `json:"parameters"`
	Inputs     []input    `json:"inputs"`
}

// Embed returns one vector per text, in order; kind selects input_type.
func (e *Embedder) Embed(ctx context.Context, texts []string, kind embed.Kind) ([][]float32, error) {
	var inputType string
	switch kind {
	case embed.Passage:
		inputType = "passage"
	case embed.Query:
		inputType = "query"
	default:
		return nil, fmt.Errorf("pineconeembed.Embed: unknown kind %d: %w", kind, ErrRejected)
	}
	out := make([][]float32, len(texts))
	for _, r := range httpretry.Batches(len(texts), e.maxBatch, e.maxBytes, func(i int) int { return len(texts[i]) }) {
		vecs, err := e.embedBatch(ctx, texts[r[0]:r[1]], inputType)
		if err != nil {
			return nil, fmt.Errorf("pineconeembed.Embed: texts %d..%d of %d: %w", r[0], r[1]-1, len(texts), err)
		}
		copy(out[r[0]:r[1]], vecs)
	}
	return out, nil
}

func (e *Embedder) embedBatch(ctx context.Context, batch []string, inputType string) ([][]float32, error) {
	req := request{
		Model:      e.model,
		Parameters: parameters{InputType: inputType, Truncate: e.truncate},
		Inputs:     make([]input, len(batch)),
	}
	if e.sendDim {
		req.Parameters.Dimension = e.dim
	}
	for i, t := range batch {
		req.Inputs[i].Text = t
	}
	payload, err := json.Marshal(req)
	if err != nil {
		return nil, fmt.Errorf("encode request: %w", err)
	}
	body, _, err := e.client.Do(ctx, func(ctx context.Context) (*http.Request, error) {
		r, err := httpretry.JSONBody(ctx, e.endpoint, payload, e.reqHeader)
		if err != nil {
			return nil, err
		}
		e.headers(r.Header)
		return r, nil
	})
	if err != nil {
		return nil, err
	}
	return decodeResponse(body, len(batch), e.dim)
}
