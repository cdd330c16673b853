package pineconeembed

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
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/lethe-dev/lethe/infra/embed"
	"github.com/lethe-dev/lethe/infra/embed/embedtest"
)

const (
	testKey    = "pcsk_test_5uper5ecret"
	secretText = "the password for the safe"
)

// vectorFor is the fake model: a deterministic unit vector per input type
// and text (llama-text-embed-v2 is asymmetric).
func vectorFor(inputType, text string, dim int) []float32 {
	h := fnv.New64a()
	_, _ = io.WriteString(h, inputType+"\x00"+text)
	r := rand.New(rand.NewPCG(h.Sum64(), 7))
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

func pcError(status int, code, msg string) string {
	b, _ := json.Marshal(map[string]any{"error": map[string]any{"code": code, "message": msg}, "status": status})
	return string(b)
}

type reply struct {
	status int
	header map[string]string
	body   string
}

type embedRequest struct {
	Model      string `json:"model"`
	Parameters struct {
		InputType string `json:"input_type"`
		Truncate  string `json:"truncate"`
		Dimension *int   `json:"dimension"`
	} `json:"parameters"`
	Inputs []struct {
		Text string `json:"text"`
	} `json:"inputs"`
}

// fake is Pinecone's POST /embed with llama-text-embed-v2's documented
// limits: 96 inputs per request, input_type required, dimension one of
// 384/512/768/1024/2048 (default 1024).
type fake struct {
	t       *testing.T
	srv     *httptest.Server
	replies []reply
	n       atomic.Int32
	mu      sync.Mutex
	// jitter makes answers vary slightly per call, as the hosted model's do.
	jitter  *rand.Rand
	reqs    []embedRequest
	headers []http.Header
}

func newFake(t *testing.T, replies ...reply) *fake {
	f := &fake{t: t, replies: replies}
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
	if r.Method != http.MethodPost || r.URL.Path != "/embed" {
		f.t.Errorf("request %s %s", r.Method, r.URL.Path)
	}
	if r.Header.Get("Api-Key") != testKey {
		f.fail(w, 401, pcError(401, "UNAUTHENTICATED", "Invalid API key."))
		return
	}
	if r.Header.Get("X-Pinecone-Api-Version") == "" {
		f.fail(w, 400, pcError(400, "INVALID_ARGUMENT", "missing X-Pinecone-Api-Version"))
		return
	}
	raw, _ := io.ReadAll(r.Body)
	var req embedRequest
	dec := json.NewDecoder(bytes.NewReader(raw))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&req); err != nil {
		f.fail(w, 400, pcError(400, "INVALID_ARGUMENT", "bad request"))
		return
	}
	f.mu.Lock()
	f.reqs = append(f.reqs, req)
	f.headers = append(f.headers, r.Header.Clone())
	f.mu.Unlock()

	if i < len(f.replies) {
		rp := f.replies[i]
		for k, v := range rp.header {
			w.Header().Set(k, v)
		}
		f.fail(w, rp.status, rp.body)
		return
	}
	dim := 1024
	if req.Parameters.Dimension != nil {
		dim = *req.Parameters.Dimension
	}
	switch {
	case req.Model != "llama-text-embed-v2":
		f.fail(w, 404, pcError(404, "NOT_FOUND", "Model not found."))
		return
	case req.Parameters.InputType != "query" && req.Parameters.InputType != "passage":
		f.fail(w, 400, pcError(400, "INVALID_ARGUMENT", "input_type is required"))
		return
	case len(req.Inputs) == 0 || len(req.Inputs) > 96:
		f.fail(w, 400, pcError(400, "INVALID_ARGUMENT", "Batch size exceeds the maximum of 96"))
		return
	case !slices.Contains([]int{384, 512, 768, 1024, 2048}, dim):
		f.fail(w, 400, pcError(400, "INVALID_ARGUMENT", "unsupported dimension"))
		return
	}
	type item struct {
		Values     []float32 `json:"values"`
		VectorType string    `json:"vector_type"`
	}
	data := make([]item, len(req.Inputs))
	for j, in := range req.Inputs {
		data[j] = item{f.answer(vectorFor(req.Parameters.InputType, in.Text, dim)), "dense"}
	}
	_ = json.NewEncoder(w).Encode(map[string]any{
		"model":       req.Model,
		"vector_type": "dense",
		"data":        data,
		"usage":       map[string]int{"total_tokens": 17 * len(req.Inputs)},
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
	cfg := Config{APIKey: testKey, BaseURL: f.srv.URL, Dim: 384, Sleep: s.sleep}
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
	f := newFake(t)
	// Pinecone's model answers are only approximately repeatable.
	f.jitter = rand.New(rand.NewPCG(1, 2))
	e, _ := newEmbedder(t, f, nil)
	embedtest.RunConformanceTestsWith(t, e, embedtest.Capabilities{Deterministic: false})
	if e.ID() != "pinecone:llama-text-embed-v2:384" || e.Dim() != 384 {
		t.Errorf("ID() = %q, Dim() = %d", e.ID(), e.Dim())
	}
}

func TestConformanceDefaultDim(t *testing.T) {
	f := newFake(t)
	e, _ := newEmbedder(t, f, func(c *Config) { c.Dim = 0; c.MaxBatch = 10 })
	if e.Dim() != 1024 || e.ID() != "pinecone:llama-text-embed-v2:1024" {
		t.Fatalf("ID() = %q", e.ID())
	}
	embedtest.RunConformanceTestsWith(t, e, embedtest.Capabilities{Deterministic: true, LargeBatch: 45})
}

func TestRequestShape(t *testing.T) {
	f := newFake(t)
	e, _ := newEmbedder(t, f, func(c *Config) { c.APIVersion = "2025-10"; c.Dim = 768 })
	if _, err := e.Embed(t.Context(), []string{"a", "b"}, embed.Passage); err != nil {
		t.Fatal(err)
	}
	if _, err := e.Embed(t.Context(), []string{"c"}, embed.Query); err != nil {
		t.Fatal(err)
	}
	h := f.headers[0]
	if h.Get("X-Pinecone-Api-Version") != "2025-10" || h.Get("Content-Type") != "application/json" || h.Get("Api-Key") != testKey {
		t.Errorf("headers %v", h)
	}
	p := f.reqs[0]
	if p.Model != "llama-text-embed-v2" || p.Parameters.InputType != "passage" || p.Parameters.Truncate != "END" ||
		p.Parameters.Dimension == nil || *p.Parameters.Dimension != 768 || len(p.Inputs) != 2 || p.Inputs[1].Text != "b" {
		t.Errorf("request %+v", p)
	}
	if f.reqs[1].Parameters.InputType != "query" {
		t.Errorf("query sent as %q", f.reqs[1].Parameters.InputType)
	}
	if ver := f.headers[1].Values("X-Pinecone-Api-Version"); len(ver) != 1 {
		t.Errorf("version header repeated across requests: %v", ver)
	}
}

func TestKindsDiffer(t *testing.T) {
	f := newFake(t)
	e, _ := newEmbedder(t, f, nil)
	p, err := e.Embed(t.Context(), []string{"coffee"}, embed.Passage)
	if err != nil {
		t.Fatal(err)
	}
	q, err := e.Embed(t.Context(), []string{"coffee"}, embed.Query)
	if err != nil {
		t.Fatal(err)
	}
	if slices.Equal(p[0], q[0]) {
		t.Error("query and passage vectors are equal: kind not mapped to input_type")
	}
	if _, err := e.Embed(t.Context(), []string{"x"}, embed.Kind(9)); !errors.Is(err, ErrRejected) {
		t.Errorf("unknown kind: err = %v", err)
	}
}

func TestBatching(t *testing.T) {
	cases := []struct {
		name      string
		mod       func(*Config)
		n         int
		wantSizes []int
	}{
		{"96 per request", nil, 200, []int{96, 96, 8}},
		{"exactly 96", nil, 96, []int{96}},
		{"smaller batches", func(c *Config) { c.MaxBatch = 30 }, 70, []int{30, 30, 10}},
		{"byte bound", func(c *Config) { c.MaxBatchBytes = 100 }, 5, []int{2, 2, 1}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			f := newFake(t)
			e, _ := newEmbedder(t, f, tc.mod)
			in := make([]string, tc.n)
			for i := range in {
				in[i] = fmt.Sprintf("text number %033d", i) // 45 bytes
			}
			out, err := e.Embed(t.Context(), in, embed.Passage)
			if err != nil {
				t.Fatal(err)
			}
			var sizes []int
			for _, r := range f.reqs {
				sizes = append(sizes, len(r.Inputs))
			}
			if !slices.Equal(sizes, tc.wantSizes) {
				t.Errorf("request sizes %v, want %v", sizes, tc.wantSizes)
			}
			for i := range in {
				if !slices.Equal(out[i], vectorFor("passage", in[i], 384)) {
					t.Fatalf("vector %d is not text %d's", i, i)
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
			replies:   []reply{{status: 429, header: map[string]string{"Retry-After": "5"}, body: pcError(429, "RESOURCE_EXHAUSTED", "Request failed. You've reached the max embedding tokens per minute "+secretText)}},
			wantTries: 2,
			wantSleep: []time.Duration{5 * time.Second},
		},
		{
			name:      "500 then success",
			replies:   []reply{{status: 500, body: pcError(500, "UNKNOWN", "Internal server error")}},
			wantTries: 2,
			wantSleep: []time.Duration{0},
		},
		{
			name:      "400 is final",
			replies:   []reply{{status: 400, body: pcError(400, "INVALID_ARGUMENT", "Input "+secretText+" too long")}},
			wantTries: 1,
			wantErr:   ErrRejected,
			wantInErr: []string{"HTTP 400", "INVALID_ARGUMENT"},
		},
		{
			name:      "401 is final",
			key:       "pcsk_wrong_key_123",
			wantTries: 1,
			wantErr:   ErrRejected,
			wantInErr: []string{"HTTP 401", "UNAUTHENTICATED"},
		},
		{
			name:      "5xx until attempts run out",
			replies:   []reply{{status: 500}, {status: 502}, {status: 503}, {status: 500, body: pcError(500, "UNAVAILABLE", "x")}},
			wantTries: 4,
			wantErr:   ErrUnavailable,
			wantInErr: []string{"UNAVAILABLE"},
		},
		{
			name:      "malformed JSON",
			replies:   []reply{{status: 200, body: `{"model":"llama-text-embed-v2","data":[{"values":[0.1,`}},
			wantTries: 1,
			wantErr:   ErrBadResponse,
		},
		{
			name:      "too few embeddings",
			replies:   []reply{{status: 200, body: `{"model":"llama-text-embed-v2","vector_type":"dense","data":[{"values":[1,2,3],"vector_type":"dense"}],"usage":{"total_tokens":3}}`}},
			wantTries: 1,
			wantErr:   ErrBadResponse,
			wantInErr: []string{"1 embeddings for 2 inputs"},
		},
		{
			name:      "wrong dimension",
			replies:   []reply{{status: 200, body: `{"vector_type":"dense","data":[{"values":[1,2,3],"vector_type":"dense"},{"values":[1,2,3],"vector_type":"dense"}]}`}},
			wantTries: 1,
			wantErr:   ErrBadResponse,
			wantInErr: []string{"3 dimensions, want 384"},
		},
		{
			name:      "sparse answer",
			replies:   []reply{{status: 200, body: `{"vector_type":"sparse","data":[{"sparse_values":[1],"sparse_indices":[3],"vector_type":"sparse"},{"sparse_values":[1],"sparse_indices":[3],"vector_type":"sparse"}]}`}},
			wantTries: 1,
			wantErr:   ErrBadResponse,
		},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			f := newFake(t, tc.replies...)
			e, s := newEmbedder(t, f, func(c *Config) {
				if tc.key != "" {
					c.APIKey = tc.key
				}
			})
			out, err := e.Embed(t.Context(), []string{"alpha", "beta"}, embed.Passage)
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
			for _, leak := range []string{secretText, testKey, "pcsk_wrong", "Invalid API key", "alpha", "beta"} {
				if strings.Contains(err.Error(), leak) {
					t.Errorf("error %q leaks %q", err, leak)
				}
			}
		})
	}
}

func TestContextCancelStopsRetries(t *testing.T) {
	f := newFake(t, reply{status: 503}, reply{status: 503})
	ctx, cancel := context.WithCancel(t.Context())
	e, _ := newEmbedder(t, f, func(c *Config) {
		c.Sleep = func(ctx context.Context, d time.Duration) error { cancel(); return ctx.Err() }
	})
	if _, err := e.Embed(ctx, []string{"x"}, embed.Query); !errors.Is(err, context.Canceled) {
		t.Fatalf("err = %v", err)
	}
	if f.n.Load() != 1 {
		t.Errorf("tries = %d", f.n.Load())
	}
}

func TestNewValidates(t *testing.T) {
	cases := []struct {
		cfg  Config
		want string
	}{
		{Config{}, "APIKey"},
		{Config{APIKey: "k\r\n"}, "APIKey"},
		{Config{APIKey: "k", BaseURL: "api.pinecone.io"}, "BaseURL"},
		{Config{APIKey: "k", Dim: 100}, "Dim"},
		{Config{APIKey: "k", MaxBatch: 97}, "MaxBatch"},
		{Config{APIKey: "k", Truncate: "MIDDLE"}, "Truncate"},
		{Config{APIKey: "k", APIVersion: "2026 04"}, "APIVersion"},
		{Config{APIKey: "k", Model: "my-own-model"}, "Dim"},
		{Config{APIKey: "k", Model: "multilingual-e5-large", Dim: 384}, "Dim"},
		{Config{APIKey: "k", MaxAttempts: -1}, "MaxAttempts"},
	}
	for _, tc := range cases {
		if _, err := New(tc.cfg); err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("New(%+v) = %v, want error naming %s", tc.cfg, err, tc.want)
		}
	}
	e, err := New(Config{APIKey: testKey, Model: "multilingual-e5-large"})
	if err != nil || e.sendDim || e.Dim() != 1024 || e.maxBatch != 96 {
		t.Fatalf("multilingual-e5-large: %+v, %v", e, err)
	}
	if s := fmt.Sprintf("%+v %#v", e, e); strings.Contains(s, testKey) {
		t.Error("printing an Embedder shows the key")
	}
}

func FuzzDecodeResponse(f *testing.F) {
	f.Add([]byte(`{"model":"llama-text-embed-v2","vector_type":"dense","data":[{"values":[0.1,0.2],"vector_type":"dense"}],"usage":{"total_tokens":5}}`), 1, 2)
	f.Add([]byte(`{"data":[{"values":null}]}`), 1, 2)
	f.Add([]byte(`{"vector_type":"sparse","data":[]}`), 0, 2)
	f.Fuzz(func(t *testing.T, body []byte, n, dim int) {
		if n < 0 || n > 96 || dim < 1 || dim > 64 {
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
	f.Add([]byte(pcError(400, "INVALID_ARGUMENT", "m")))
	f.Add([]byte(`{"error":{"code":5}}`))
	f.Fuzz(func(t *testing.T, body []byte) {
		_ = decodeError(body)
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
