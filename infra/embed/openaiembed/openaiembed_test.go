package openaiembed

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"hash/fnv"
	"io"
	"math"
	"math/rand/v2"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/lethe-dev/lethe/infra/embed"
	"github.com/lethe-dev/lethe/infra/embed/embedtest"
)

const (
	testKey    = "sk-test-embed-0123456789"
	testModel  = "text-embedding-3-small"
	secretText = "my diary entry about the divorce"
	maxInputs  = 2048 // OpenAI's documented per-request input limit
)

// vectorFor is the fake model: a deterministic unit vector per text.
func vectorFor(text string, dim int) []float32 {
	h := fnv.New64a()
	_, _ = io.WriteString(h, text)
	r := rand.New(rand.NewPCG(h.Sum64(), 0x9e3779b97f4a7c15))
	v := make([]float32, dim)
	var n float64
	for i := range v {
		x := r.NormFloat64()
		v[i] = float32(x)
		n += x * x
	}
	for i := range v {
		v[i] = float32(float64(v[i]) / math.Sqrt(n))
	}
	return v
}

func apiError(typ, param, code, msg string) string {
	b, _ := json.Marshal(map[string]any{"error": map[string]any{"message": msg, "type": typ, "param": param, "code": code}})
	return string(b)
}

type reply struct {
	status int
	header map[string]string
	body   string
}

// fake is /v1/embeddings as documented: strict request, answer with
// data[].index (in reverse order, which clients must tolerate).
type fake struct {
	t       *testing.T
	srv     *httptest.Server
	dim     int
	replies []reply
	n       atomic.Int32
	mu      sync.Mutex
	// jitter makes answers vary slightly per call, as the hosted model's do.
	jitter *rand.Rand
	reqs   []map[string]json.RawMessage
	sizes  []int
}

func newFake(t *testing.T, dim int, replies ...reply) *fake {
	f := &fake{t: t, dim: dim, replies: replies}
	f.srv = httptest.NewServer(http.HandlerFunc(f.serve))
	t.Cleanup(f.srv.Close)
	return f
}

func (f *fake) fail(w http.ResponseWriter, status int, body string) {
	w.WriteHeader(status)
	_, _ = io.WriteString(w, body)
}

func (f *fake) serve(w http.ResponseWriter, r *http.Request) {
	i := int(f.n.Add(1)) - 1
	w.Header().Set("Content-Type", "application/json")
	if r.Method != http.MethodPost || r.URL.Path != "/v1/embeddings" {
		f.t.Errorf("request %s %s", r.Method, r.URL.Path)
	}
	if r.Header.Get("Authorization") != "Bearer "+testKey {
		f.fail(w, 401, apiError("invalid_request_error", "", "invalid_api_key", "Incorrect API key provided"))
		return
	}
	if ct := r.Header.Get("Content-Type"); ct != "application/json" {
		f.t.Errorf("Content-Type = %q", ct)
	}
	raw, _ := io.ReadAll(r.Body)
	var fields map[string]json.RawMessage
	_ = json.Unmarshal(raw, &fields)
	var req struct {
		Model          string   `json:"model"`
		Input          []string `json:"input"`
		EncodingFormat string   `json:"encoding_format"`
		Dimensions     int      `json:"dimensions"`
	}
	dec := json.NewDecoder(bytes.NewReader(raw))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&req); err != nil {
		f.fail(w, 400, apiError("invalid_request_error", "", "", "bad json"))
		return
	}
	f.mu.Lock()
	f.reqs = append(f.reqs, fields)
	f.sizes = append(f.sizes, len(req.Input))
	f.mu.Unlock()

	if i < len(f.replies) {
		rp := f.replies[i]
		for k, v := range rp.header {
			w.Header().Set(k, v)
		}
		f.fail(w, rp.status, rp.body)
		return
	}
	switch {
	case req.Model != testModel:
		f.fail(w, 404, apiError("invalid_request_error", "model", "model_not_found", "The model does not exist"))
		return
	case len(req.Input) == 0 || len(req.Input) > maxInputs:
		f.fail(w, 400, apiError("invalid_request_error", "input", "", "'input' must have between 1 and 2048 items"))
		return
	case req.EncodingFormat != "float":
		f.t.Errorf("encoding_format = %q", req.EncodingFormat)
	}
	type item struct {
		Object    string    `json:"object"`
		Index     int       `json:"index"`
		Embedding []float32 `json:"embedding"`
	}
	var data []item
	for j := len(req.Input) - 1; j >= 0; j-- {
		data = append(data, item{"embedding", j, f.answer(vectorFor(req.Input[j], f.dim))})
	}
	_ = json.NewEncoder(w).Encode(map[string]any{
		"object": "list",
		"data":   data,
		"model":  req.Model,
		"usage":  map[string]int{"prompt_tokens": 8, "total_tokens": 8},
	})
}

type sleeps struct {
	mu sync.Mutex
	d  []time.Duration
}

func (s *sleeps) sleep(ctx context.Context, d time.Duration) error {
	s.mu.Lock()
	s.d = append(s.d, d)
	s.mu.Unlock()
	return ctx.Err()
}

func newEmbedder(t *testing.T, f *fake, mod func(*Config)) (*Embedder, *sleeps) {
	t.Helper()
	s := &sleeps{}
	cfg := Config{BaseURL: f.srv.URL + "/v1", APIKey: testKey, Model: testModel, Dim: f.dim, Sleep: s.sleep}
	if mod != nil {
		mod(&cfg)
	}
	e, err := New(cfg)
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	return e, s
}

func TestConformance(t *testing.T) {
	f := newFake(t, 64)
	// Hosted models' answers are only approximately repeatable.
	f.jitter = rand.New(rand.NewPCG(3, 4))
	e, _ := newEmbedder(t, f, func(c *Config) { c.MaxBatch = 16 })
	embedtest.RunConformanceTestsWith(t, e, embedtest.Capabilities{Deterministic: false})
	if e.ID() != "openai:text-embedding-3-small:64" {
		t.Errorf("ID() = %q", e.ID())
	}
}

func TestConformanceDefaultBatch(t *testing.T) {
	f := newFake(t, 256)
	e, _ := newEmbedder(t, f, nil)
	embedtest.RunConformanceTestsWith(t, e, embedtest.Capabilities{Deterministic: true, LargeBatch: 600})
}

func TestRequestFields(t *testing.T) {
	for _, sendDims := range []bool{false, true} {
		t.Run(fmt.Sprint("dimensions=", sendDims), func(t *testing.T) {
			f := newFake(t, 8)
			e, _ := newEmbedder(t, f, func(c *Config) { c.SendDimensions = sendDims })
			if _, err := e.Embed(t.Context(), []string{"a", "b"}, embed.Query); err != nil {
				t.Fatal(err)
			}
			req := f.reqs[0]
			if string(req["model"]) != `"`+testModel+`"` || string(req["encoding_format"]) != `"float"` || string(req["input"]) != `["a","b"]` {
				t.Errorf("request %v", req)
			}
			d, ok := req["dimensions"]
			if ok != sendDims || (sendDims && string(d) != "8") {
				t.Errorf("dimensions = %s (present %v)", d, ok)
			}
		})
	}
}

func TestBatching(t *testing.T) {
	cases := []struct {
		name      string
		mod       func(*Config)
		n         int
		textLen   int
		wantSizes []int
	}{
		{"default count limit", nil, 600, 10, []int{256, 256, 88}},
		{"byte limit", func(c *Config) { c.MaxBatchBytes = 1000 }, 25, 100, []int{10, 10, 5}},
		{"both", func(c *Config) { c.MaxBatch = 4; c.MaxBatchBytes = 250 }, 10, 100, []int{2, 2, 2, 2, 2}},
		{"oversized text goes alone", func(c *Config) { c.MaxBatchBytes = 50 }, 3, 100, []int{1, 1, 1}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			f := newFake(t, 4)
			e, _ := newEmbedder(t, f, tc.mod)
			in := make([]string, tc.n)
			for i := range in {
				s := fmt.Sprintf("text %d ", i)
				in[i] = s + strings.Repeat("x", tc.textLen-len(s))
			}
			out, err := e.Embed(t.Context(), in, embed.Passage)
			if err != nil {
				t.Fatal(err)
			}
			if fmt.Sprint(f.sizes) != fmt.Sprint(tc.wantSizes) {
				t.Errorf("request sizes %v, want %v", f.sizes, tc.wantSizes)
			}
			for i := range in {
				want := vectorFor(in[i], 4)
				for j := range want {
					if out[i][j] != want[j] {
						t.Fatalf("vector %d is not text %d's", i, i)
					}
				}
			}
		})
	}
}

func TestRetriesAndErrors(t *testing.T) {
	cases := []struct {
		name      string
		key       string
		replies   []reply
		wantTries int32
		wantErr   error
		wantSleep []time.Duration
		wantInErr []string
	}{
		{
			name:      "429 with Retry-After then success",
			replies:   []reply{{status: 429, header: map[string]string{"Retry-After": "3"}, body: apiError("requests", "", "rate_limit_exceeded", "Rate limit reached for "+secretText)}},
			wantTries: 2,
			wantSleep: []time.Duration{3 * time.Second},
		},
		{
			name:      "500 then success",
			replies:   []reply{{status: 500, body: apiError("server_error", "", "", secretText)}},
			wantTries: 2,
			wantSleep: []time.Duration{0},
		},
		{
			name:      "400 is final",
			replies:   []reply{{status: 400, body: apiError("invalid_request_error", "input", "", "This model's maximum context length is 8192 tokens: "+secretText)}},
			wantTries: 1,
			wantErr:   ErrRejected,
			wantInErr: []string{"HTTP 400", "invalid_request_error", "param input"},
		},
		{
			name:      "401 is final",
			key:       "sk-wrong-key-99999",
			wantTries: 1,
			wantErr:   ErrRejected,
			wantInErr: []string{"HTTP 401", "invalid_request_error:invalid_api_key"},
		},
		{
			name:      "503 until attempts run out",
			replies:   []reply{{status: 503}, {status: 503}, {status: 503}, {status: 503}},
			wantTries: 4,
			wantErr:   ErrUnavailable,
		},
		{
			name:      "malformed JSON",
			replies:   []reply{{status: 200, body: `{"object":"list","data":[{"index":0,"embedding":[0.1,` + secretText}},
			wantTries: 1,
			wantErr:   ErrBadResponse,
		},
		{
			name:      "too few embeddings",
			replies:   []reply{{status: 200, body: `{"object":"list","data":[{"object":"embedding","index":0,"embedding":[1,2,3,4]}]}`}},
			wantTries: 1,
			wantErr:   ErrBadResponse,
			wantInErr: []string{"1 embeddings for 2 inputs"},
		},
		{
			name:      "wrong dimension",
			replies:   []reply{{status: 200, body: `{"data":[{"index":0,"embedding":[1,2,3,4]},{"index":1,"embedding":[1,2,3]}]}`}},
			wantTries: 1,
			wantErr:   ErrBadResponse,
			wantInErr: []string{"3 dimensions, want 4"},
		},
		{
			name:      "duplicate index",
			replies:   []reply{{status: 200, body: `{"data":[{"index":1,"embedding":[1,2,3,4]},{"index":1,"embedding":[1,2,3,4]}]}`}},
			wantTries: 1,
			wantErr:   ErrBadResponse,
		},
		{
			name:      "base64 instead of floats",
			replies:   []reply{{status: 200, body: `{"data":[{"index":0,"embedding":"AAAA"},{"index":1,"embedding":"AAAA"}]}`}},
			wantTries: 1,
			wantErr:   ErrBadResponse,
		},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			f := newFake(t, 4, tc.replies...)
			e, s := newEmbedder(t, f, func(c *Config) {
				if tc.key != "" {
					c.APIKey = tc.key
				}
			})
			out, err := e.Embed(t.Context(), []string{"one", "two"}, embed.Passage)
			if n := f.n.Load(); n != tc.wantTries {
				t.Errorf("tries = %d, want %d", n, tc.wantTries)
			}
			if tc.wantErr == nil {
				if err != nil || len(out) != 2 {
					t.Fatalf("Embed: %v", err)
				}
				if len(s.d) != len(tc.wantSleep) {
					t.Fatalf("sleeps %v", s.d)
				}
				for i, min := range tc.wantSleep {
					if s.d[i] < min {
						t.Errorf("sleep %d = %v, want ≥ %v", i, s.d[i], min)
					}
				}
				return
			}
			if !errors.Is(err, tc.wantErr) {
				t.Fatalf("err = %v, want %v", err, tc.wantErr)
			}
			for _, w := range tc.wantInErr {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error %q lacks %q", err, w)
				}
			}
			for _, leak := range []string{secretText, testKey, "sk-wrong", "maximum context", "Incorrect API key", "one", "two"} {
				if strings.Contains(err.Error(), leak) {
					t.Errorf("error %q leaks %q", err, leak)
				}
			}
		})
	}
}

func TestContextCancelStopsRetries(t *testing.T) {
	f := newFake(t, 4, reply{status: 500}, reply{status: 500})
	ctx, cancel := context.WithCancel(t.Context())
	e, _ := newEmbedder(t, f, func(c *Config) {
		c.Sleep = func(ctx context.Context, d time.Duration) error { cancel(); return ctx.Err() }
	})
	if _, err := e.Embed(ctx, []string{"x"}, embed.Passage); !errors.Is(err, context.Canceled) {
		t.Fatalf("err = %v", err)
	}
	if f.n.Load() != 1 {
		t.Errorf("tries = %d", f.n.Load())
	}
}

func TestNewValidates(t *testing.T) {
	ok := Config{BaseURL: "http://127.0.0.1:8000/v1", Model: "m", Dim: 8}
	cases := []struct {
		mod  func(*Config)
		want string
	}{
		{func(c *Config) { c.BaseURL = "" }, "APIKey"}, // default is api.openai.com
		{func(c *Config) { c.BaseURL = "://" }, "BaseURL"},
		{func(c *Config) { c.Model = "" }, "Model"},
		{func(c *Config) { c.Dim = 0 }, "Dim"},
		{func(c *Config) { c.Dim = 100000 }, "Dim"},
		{func(c *Config) { c.MaxBatch = -1 }, "MaxBatch"},
		{func(c *Config) { c.APIKey = "a\nb" }, "APIKey"},
	}
	for _, tc := range cases {
		cfg := ok
		tc.mod(&cfg)
		if _, err := New(cfg); err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("New(%+v) = %v, want error naming %s", cfg, err, tc.want)
		}
	}
	e, err := New(Config{APIKey: testKey, Model: "m", Dim: 3})
	if err != nil {
		t.Fatal(err)
	}
	if s := fmt.Sprintf("%+v %#v", e, e); strings.Contains(s, testKey) {
		t.Error("printing an Embedder shows the key")
	}
}

func FuzzDecodeResponse(f *testing.F) {
	f.Add([]byte(`{"object":"list","data":[{"object":"embedding","index":1,"embedding":[0.5,0.5]},{"object":"embedding","index":0,"embedding":[1,0]}]}`), 2, 2)
	f.Add([]byte(`{"data":[{"index":0,"embedding":[1e39]}]}`), 1, 1)
	f.Add([]byte(`{"data":null}`), 0, 4)
	f.Fuzz(func(t *testing.T, body []byte, n, dim int) {
		if n < 0 || n > 64 || dim < 1 || dim > 64 {
			return
		}
		out, err := decodeResponse(body, n, dim)
		if err != nil {
			if !errors.Is(err, ErrBadResponse) {
				t.Fatalf("error %v does not wrap ErrBadResponse", err)
			}
			return
		}
		if len(out) != n {
			t.Fatalf("%d vectors for %d inputs", len(out), n)
		}
		for _, v := range out {
			if len(v) != dim {
				t.Fatalf("vector of %d dims, want %d", len(v), dim)
			}
		}
	})
}

func FuzzDecodeError(f *testing.F) {
	f.Add([]byte(apiError("invalid_request_error", "input", "x", "m")))
	f.Add([]byte(`{"error":"plain"}`))
	f.Fuzz(func(t *testing.T, body []byte) {
		_ = decodeError(body) // must not panic; sanitising is httpretry's
	})
}

// answer is v, jittered when the fake plays a nondeterministic model.
func (f *fake) answer(v []float32) []float32 {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.jitter == nil {
		return v
	}
	return embedtest.Jitter(v, f.jitter)
}
