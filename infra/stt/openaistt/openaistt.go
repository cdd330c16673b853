// Package openaistt is the speech-to-text adapter for any server that speaks
// OpenAI's POST /v1/audio/transcriptions: OpenAI itself, whisper.cpp's server
// (run with --inference-path /v1/audio/transcriptions), speaches, and others.
//
// It asks for response_format=verbose_json (segments with timings) and falls
// back to json ({text}) when the server or model refuses verbose_json, then
// remembers that. Errors carry the status and the server's error type/code,
// never a body, a transcript or the key.
package openaistt

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"mime/multipart"
	"net/http"
	"net/textproto"
	"net/url"
	"strings"
	"sync/atomic"
	"time"

	"github.com/lethe-dev/lethe/infra/audio"
	"github.com/lethe-dev/lethe/infra/internal/httpretry"
	"github.com/lethe-dev/lethe/infra/stt"
)

// Errors, shared with the other hosted adapters (errors.Is works across them).
// Transient failures also wrap stt.ErrUnavailable.
var (
	ErrRejected    = httpretry.ErrRejected
	ErrBadResponse = httpretry.ErrBadResponse
)

const (
	// DefaultBaseURL is the API root including the version, as in OpenAI's
	// SDKs; the adapter appends /audio/transcriptions.
	DefaultBaseURL = "https://api.openai.com/v1"
	DefaultModel   = "whisper-1"
	DefaultTimeout = 5 * time.Minute // local CPU whisper can be slower than real time
	transcriptions = "/audio/transcriptions"
	maxResponse    = 8 << 20

	formatVerbose = "verbose_json"
	formatJSON    = "json"
)

// Config configures a Transcriber.
type Config struct {
	// BaseURL is the API root with its version path, e.g.
	// "http://127.0.0.1:8080/v1". Default DefaultBaseURL.
	BaseURL string
	// APIKey is sent as a bearer token when set; required for api.openai.com.
	APIKey   string
	Model    string // default "whisper-1"
	Language string // ISO-639-1 hint, e.g. "en"; empty = detect
	// JSONOnly skips verbose_json (for servers known not to support it).
	JSONOnly bool

	HTTPClient *http.Client // default: DefaultTimeout, no redirects

	// Retries: zero values take httpretry's defaults (4 attempts, 500 ms base,
	// 20 s cap, 2 min budget).
	MaxAttempts int
	BaseDelay   time.Duration
	MaxDelay    time.Duration
	MaxElapsed  time.Duration
	Sleep       func(ctx context.Context, d time.Duration) error
}

// Transcriber implements stt.Transcriber over /audio/transcriptions.
type Transcriber struct {
	client    *httpretry.Client
	endpoint  string
	model     string
	language  string
	plainJSON atomic.Bool // set once the server refused verbose_json
	authorize func(http.Header)
}

var _ stt.Transcriber = (*Transcriber)(nil)

// New validates cfg and returns a Transcriber.
func New(cfg Config) (*Transcriber, error) {
	if cfg.BaseURL == "" {
		cfg.BaseURL = DefaultBaseURL
	}
	base, err := url.Parse(cfg.BaseURL)
	if err != nil || (base.Scheme != "https" && base.Scheme != "http") || base.Host == "" || base.User != nil || base.RawQuery != "" {
		return nil, errors.New("openaistt.New: Config.BaseURL must be an http(s) URL with a host and no credentials or query")
	}
	if strings.ContainsAny(cfg.APIKey, "\r\n") {
		return nil, errors.New("openaistt.New: Config.APIKey contains a line break")
	}
	if strings.TrimSpace(cfg.APIKey) == "" && strings.EqualFold(base.Hostname(), "api.openai.com") {
		return nil, errors.New("openaistt.New: Config.APIKey is required for api.openai.com")
	}
	if cfg.Model == "" {
		cfg.Model = DefaultModel
	}
	if len(cfg.Model) > 128 || strings.ContainsAny(cfg.Model, "\r\n\"") {
		return nil, errors.New("openaistt.New: Config.Model is not a model name")
	}
	if cfg.Language != "" && (httpretry.Identifier(cfg.Language, 16) == "" || strings.ContainsAny(cfg.Language, " /:")) {
		return nil, fmt.Errorf("openaistt.New: Config.Language %q is not a language code", cfg.Language)
	}
	if cfg.MaxAttempts < 0 {
		return nil, errors.New("openaistt.New: Config.MaxAttempts must not be negative")
	}
	hc := cfg.HTTPClient
	if hc == nil {
		hc = httpretry.NewClient(DefaultTimeout)
	}
	endpoint := *base
	endpoint.Path = strings.TrimRight(base.Path, "/") + transcriptions

	t := &Transcriber{
		endpoint: endpoint.String(),
		model:    cfg.Model,
		language: cfg.Language,
		client: &httpretry.Client{
			Provider: "openai-stt",
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
	t.plainJSON.Store(cfg.JSONOnly)
	// A closure, not a field, so that printing a Transcriber cannot show the key.
	key := cfg.APIKey
	t.authorize = func(h http.Header) {
		if key != "" {
			h.Set("Authorization", "Bearer "+key)
		}
	}
	return t, nil
}

// Transcribe uploads pcm as audio.wav. Empty audio yields an empty
// transcript without a request.
func (t *Transcriber) Transcribe(ctx context.Context, pcm audio.PCM) (stt.Transcript, error) {
	if pcm.SampleRate <= 0 {
		return stt.Transcript{}, fmt.Errorf("openaistt.Transcribe: sample rate %d: %w", pcm.SampleRate, ErrRejected)
	}
	modelName := "openai-" + t.model
	if len(pcm.Samples) == 0 {
		return stt.Transcript{Model: modelName}, nil
	}
	wav := audio.EncodeWAV(pcm)

	format := formatVerbose
	if t.plainJSON.Load() {
		format = formatJSON
	}
	body, err := t.post(ctx, wav, format)
	if format == formatVerbose && refusedVerbose(err) {
		t.plainJSON.Store(true)
		format = formatJSON
		body, err = t.post(ctx, wav, format)
	}
	if err != nil {
		if errors.Is(err, httpretry.ErrUnavailable) {
			return stt.Transcript{}, fmt.Errorf("openaistt.Transcribe: %w: %w", stt.ErrUnavailable, err)
		}
		return stt.Transcript{}, fmt.Errorf("openaistt.Transcribe: %w", err)
	}
	tr, err := decodeResponse(body, audio.Duration(pcm))
	if err != nil {
		return stt.Transcript{}, fmt.Errorf("openaistt.Transcribe: %w", err)
	}
	tr.Model = modelName
	return tr, nil
}

func (t *Transcriber) post(ctx context.Context, wav []byte, format string) ([]byte, error) {
	form, contentType, err := t.form(wav, format)
	if err != nil {
		return nil, err
	}
	body, _, err := t.client.Do(ctx, func(ctx context.Context) (*http.Request, error) {
		req, err := http.NewRequestWithContext(ctx, http.MethodPost, t.endpoint, bytes.NewReader(form))
		if err != nil {
			return nil, err
		}
		req.Header.Set("Content-Type", contentType)
		req.Header.Set("Accept", "application/json")
		t.authorize(req.Header)
		return req, nil
	})
	return body, err
}

// form is the multipart body: file (audio.wav, audio/wav), model,
// response_format and, if set, language.
func (t *Transcriber) form(wav []byte, format string) ([]byte, string, error) {
	var buf bytes.Buffer
	buf.Grow(len(wav) + 1024)
	mw := multipart.NewWriter(&buf)
	h := textproto.MIMEHeader{}
	h.Set("Content-Disposition", `form-data; name="file"; filename="audio.wav"`)
	h.Set("Content-Type", "audio/wav")
	fw, err := mw.CreatePart(h)
	if err != nil {
		return nil, "", fmt.Errorf("openaistt: multipart: %w", err)
	}
	if _, err := fw.Write(wav); err != nil {
		return nil, "", fmt.Errorf("openaistt: multipart: %w", err)
	}
	fields := [][2]string{{"model", t.model}, {"response_format", format}}
	if t.language != "" {
		fields = append(fields, [2]string{"language", t.language})
	}
	for _, f := range fields {
		if err := mw.WriteField(f[0], f[1]); err != nil {
			return nil, "", fmt.Errorf("openaistt: multipart: %w", err)
		}
	}
	if err := mw.Close(); err != nil {
		return nil, "", fmt.Errorf("openaistt: multipart: %w", err)
	}
	return buf.Bytes(), mw.FormDataContentType(), nil
}

// refusedVerbose: a 400/422 that blames response_format, which is how
// OpenAI (for gpt-4o-transcribe models) and FastAPI-based servers refuse
// verbose_json.
func refusedVerbose(err error) bool {
	var se *httpretry.StatusError
	if !errors.As(err, &se) {
		return false
	}
	return (se.StatusCode == http.StatusBadRequest || se.StatusCode == http.StatusUnprocessableEntity) &&
		se.Info.Param == "response_format"
}
