// Package deepgram is the speech-to-text adapter for Deepgram's pre-recorded
// API (POST /v1/listen), over plain net/http.
//
// The audio goes as a PCM16 WAV body, with mip_opt_out=true so Deepgram
// does not keep it for model training; the answer's words are grouped into
// segments by speaker turn. Failures are never logged here; errors carry the
// status and Deepgram's err_code, never a body, a transcript or the key.
package deepgram

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"strings"
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
	DefaultBaseURL = "https://api.deepgram.com"
	DefaultModel   = "nova-3"
	// DefaultTimeout bounds one HTTP try; pre-recorded requests answer in a
	// fraction of the audio's length, and chunks are at most a few minutes.
	DefaultTimeout = 2 * time.Minute
	listenPath     = "/v1/listen"
	maxResponse    = 8 << 20
)

// Config configures a Transcriber. APIKey is required.
type Config struct {
	APIKey   string
	BaseURL  string // default DefaultBaseURL; tests point it at a fake
	Model    string // default "nova-3"
	Language string // BCP-47 tag, e.g. "en" or "de"; empty = the model's default
	// NoDiarize turns speaker labels off (they are on by default).
	NoDiarize bool

	HTTPClient *http.Client // default: DefaultTimeout, no redirects

	// Retries: zero values take httpretry's defaults (4 attempts, 500 ms base,
	// 20 s cap, 2 min budget).
	MaxAttempts int
	BaseDelay   time.Duration
	MaxDelay    time.Duration
	MaxElapsed  time.Duration
	// Sleep replaces the backoff wait (tests); nil = a context-aware timer.
	Sleep func(ctx context.Context, d time.Duration) error
}

// Transcriber implements stt.Transcriber with Deepgram.
type Transcriber struct {
	client   *httpretry.Client
	endpoint string // full URL with query, built once
	model    string // Transcript.Model
	// authorize sets the key header. A closure rather than a string field so
	// that printing a Transcriber (%+v) cannot show the key.
	authorize func(http.Header)
}

var _ stt.Transcriber = (*Transcriber)(nil)

// New validates cfg and returns a Transcriber.
func New(cfg Config) (*Transcriber, error) {
	if strings.TrimSpace(cfg.APIKey) == "" {
		return nil, errors.New("deepgram.New: Config.APIKey is required")
	}
	if strings.ContainsAny(cfg.APIKey, "\r\n") {
		return nil, errors.New("deepgram.New: Config.APIKey contains a line break")
	}
	if cfg.BaseURL == "" {
		cfg.BaseURL = DefaultBaseURL
	}
	base, err := url.Parse(cfg.BaseURL)
	if err != nil || (base.Scheme != "https" && base.Scheme != "http") || base.Host == "" || base.User != nil || base.RawQuery != "" {
		return nil, errors.New("deepgram.New: Config.BaseURL must be an http(s) URL with a host and no credentials or query")
	}
	if cfg.Model == "" {
		cfg.Model = DefaultModel
	}
	if httpretry.Identifier(cfg.Model, 64) == "" || strings.ContainsAny(cfg.Model, " /") {
		return nil, fmt.Errorf("deepgram.New: Config.Model %q is not a model name", cfg.Model)
	}
	if cfg.Language != "" && (httpretry.Identifier(cfg.Language, 35) == "" || strings.ContainsAny(cfg.Language, " /:")) {
		return nil, fmt.Errorf("deepgram.New: Config.Language %q is not a language tag", cfg.Language)
	}
	if cfg.MaxAttempts < 0 {
		return nil, errors.New("deepgram.New: Config.MaxAttempts must not be negative")
	}
	hc := cfg.HTTPClient
	if hc == nil {
		hc = httpretry.NewClient(DefaultTimeout)
	}

	q := url.Values{}
	q.Set("model", cfg.Model)
	q.Set("smart_format", "true")
	q.Set("punctuate", "true")
	// Opt out of Deepgram's Model Improvement Program: the audio is
	// processed for this request only, not kept to train models.
	q.Set("mip_opt_out", "true")
	if !cfg.NoDiarize {
		q.Set("diarize", "true")
	}
	if cfg.Language != "" {
		q.Set("language", cfg.Language)
	}
	endpoint := *base
	endpoint.Path = strings.TrimRight(base.Path, "/") + listenPath
	endpoint.RawQuery = q.Encode()

	key := "Token " + cfg.APIKey
	t := &Transcriber{
		endpoint: endpoint.String(),
		model:    "deepgram-" + cfg.Model,
	}
	t.client = &httpretry.Client{
		Provider: "deepgram",
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
	}
	t.authorize = func(h http.Header) { h.Set("Authorization", key) }
	return t, nil
}

// Transcribe sends pcm as a WAV file and maps the words to segments. Empty
// audio yields an empty transcript without a request.
func (t *Transcriber) Transcribe(ctx context.Context, pcm audio.PCM) (stt.Transcript, error) {
	if pcm.SampleRate <= 0 {
		return stt.Transcript{}, fmt.Errorf("deepgram.Transcribe: sample rate %d: %w", pcm.SampleRate, ErrRejected)
	}
	if len(pcm.Samples) == 0 {
		return stt.Transcript{Model: t.model}, nil
	}
	wav := audio.EncodeWAV(pcm)
	body, _, err := t.client.Do(ctx, func(ctx context.Context) (*http.Request, error) {
		req, err := http.NewRequestWithContext(ctx, http.MethodPost, t.endpoint, bytes.NewReader(wav))
		if err != nil {
			return nil, err
		}
		req.Header.Set("Content-Type", "audio/wav")
		req.Header.Set("Accept", "application/json")
		t.authorize(req.Header)
		return req, nil
	})
	if err != nil {
		if errors.Is(err, httpretry.ErrUnavailable) {
			return stt.Transcript{}, fmt.Errorf("deepgram.Transcribe: %w: %w", stt.ErrUnavailable, err)
		}
		return stt.Transcript{}, fmt.Errorf("deepgram.Transcribe: %w", err)
	}
	tr, err := decodeResponse(body, audio.Duration(pcm))
	if err != nil {
		return stt.Transcript{}, fmt.Errorf("deepgram.Transcribe: %w", err)
	}
	tr.Model = t.model
	return tr, nil
}
