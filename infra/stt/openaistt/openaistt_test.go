package openaistt

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/lethe-dev/lethe/infra/audio"
	"github.com/lethe-dev/lethe/infra/stt"
)

const (
	testKey    = "sk-test-0123456789abcdef"
	secretText = "the alarm code is 9911"
)

// verboseBody is verbose_json as OpenAI documents it.
const verboseBody = `{
  "task": "transcribe",
  "language": "english",
  "duration": 3.2,
  "text": "The quick brown fox. Jumped over.",
  "segments": [
    {"id": 0, "seek": 0, "start": 0.0, "end": 1.84, "text": " The quick brown fox.", "tokens": [50364, 440, 1702], "temperature": 0.0, "avg_logprob": -0.28, "compression_ratio": 0.9, "no_speech_prob": 0.01},
    {"id": 1, "seek": 0, "start": 2.0, "end": 3.2, "text": " Jumped over.", "tokens": [50464, 508], "temperature": 0.0, "avg_logprob": -0.3, "compression_ratio": 0.9, "no_speech_prob": 0.02}
  ],
  "usage": {"type": "duration", "seconds": 4}
}`

const jsonBody = `{"text": "The quick brown fox. Jumped over.", "usage": {"type": "tokens", "input_tokens": 14, "output_tokens": 10, "total_tokens": 24}}`

func openAIError(typ, param, code, msg string) string {
	p, c := "null", "null"
	if param != "" {
		p = fmt.Sprintf("%q", param)
	}
	if code != "" {
		c = fmt.Sprintf("%q", code)
	}
	return fmt.Sprintf(`{"error":{"message":%q,"type":%q,"param":%s,"code":%s}}`, msg, typ, p, c)
}

type reply struct {
	status int
	header map[string]string
	body   string
}

type seen struct {
	auth, model, format, language string
	filename, fileType            string
	pcm                           audio.PCM
}

// fake is /v1/audio/transcriptions. verbose says how it answers
// verbose_json: "ok", "openai-400" (as OpenAI for gpt-4o models),
// "fastapi-422", or "ignore" (answers plain json, as old whisper.cpp builds).
type fake struct {
	t       *testing.T
	srv     *httptest.Server
	verbose string
	replies []reply
	n       atomic.Int32
	mu      sync.Mutex
	seen    []seen
}

func newFake(t *testing.T, verbose string, replies ...reply) *fake {
	f := &fake{t: t, verbose: verbose, replies: replies}
	f.srv = httptest.NewServer(http.HandlerFunc(f.serve))
	t.Cleanup(f.srv.Close)
	return f
}

func (f *fake) serve(w http.ResponseWriter, r *http.Request) {
	i := int(f.n.Add(1)) - 1
	w.Header().Set("Content-Type", "application/json")
	if r.Method != http.MethodPost || r.URL.Path != "/v1/audio/transcriptions" {
		f.t.Errorf("request %s %s", r.Method, r.URL.Path)
	}
	if err := r.ParseMultipartForm(64 << 20); err != nil {
		f.t.Errorf("multipart: %v", err)
		w.WriteHeader(400)
		return
	}
	s := seen{
		auth:     r.Header.Get("Authorization"),
		model:    r.FormValue("model"),
		format:   r.FormValue("response_format"),
		language: r.FormValue("language"),
	}
	file, hdr, err := r.FormFile("file")
	if err != nil {
		f.t.Errorf("no file part: %v", err)
		w.WriteHeader(400)
		return
	}
	s.filename, s.fileType = hdr.Filename, hdr.Header.Get("Content-Type")
	b, _ := io.ReadAll(file)
	s.pcm, err = audio.Decode("audio/wav", b)
	if err != nil {
		f.t.Errorf("file is not a WAV: %v", err)
	}
	f.mu.Lock()
	f.seen = append(f.seen, s)
	f.mu.Unlock()

	if i < len(f.replies) {
		rp := f.replies[i]
		for k, v := range rp.header {
			w.Header().Set(k, v)
		}
		w.WriteHeader(rp.status)
		_, _ = io.WriteString(w, rp.body)
		return
	}
	switch {
	case s.format == "json":
		_, _ = io.WriteString(w, jsonBody)
	case s.format != "verbose_json":
		f.t.Errorf("response_format = %q", s.format)
	case f.verbose == "ok":
		_, _ = io.WriteString(w, verboseBody)
	case f.verbose == "ignore":
		_, _ = io.WriteString(w, jsonBody)
	case f.verbose == "openai-400":
		w.WriteHeader(400)
		_, _ = io.WriteString(w, openAIError("invalid_request_error", "response_format", "unsupported_value",
			"response_format 'verbose_json' is not compatible with model 'gpt-4o-transcribe'. Use 'json' or 'text' instead."))
	case f.verbose == "fastapi-422":
		w.WriteHeader(422)
		_, _ = io.WriteString(w, `{"detail":[{"type":"enum","loc":["body","response_format"],"msg":"Input should be 'text' or 'json'","input":"verbose_json"}]}`)
	}
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

func newTranscriber(t *testing.T, f *fake, mod func(*Config)) (*Transcriber, *sleeps) {
	t.Helper()
	s := &sleeps{}
	cfg := Config{BaseURL: f.srv.URL + "/v1", APIKey: testKey, Sleep: s.sleep}
	if mod != nil {
		mod(&cfg)
	}
	tr, err := New(cfg)
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	return tr, s
}

func tone(n int) audio.PCM {
	p := audio.PCM{SampleRate: 16000, Samples: make([]int16, n)}
	for i := range p.Samples {
		p.Samples[i] = int16((i*53)%3000 - 1500)
	}
	return p
}

var verboseSegments = []stt.Segment{
	{StartMS: 0, EndMS: 1840, Text: "The quick brown fox.", Speaker: -1},
	{StartMS: 2000, EndMS: 3200, Text: "Jumped over.", Speaker: -1},
}

func TestTranscribeVerbose(t *testing.T) {
	f := newFake(t, "ok")
	tr, _ := newTranscriber(t, f, func(c *Config) { c.Language = "en"; c.Model = "Systran/faster-whisper-small" })
	in := tone(24000)
	got, err := tr.Transcribe(t.Context(), in)
	if err != nil {
		t.Fatalf("Transcribe: %v", err)
	}
	if got.Text != "The quick brown fox. Jumped over." || got.Model != "openai-Systran/faster-whisper-small" || !slices.Equal(got.Segments, verboseSegments) {
		t.Errorf("got %+v", got)
	}
	s := f.seen[0]
	if s.auth != "Bearer "+testKey || s.model != "Systran/faster-whisper-small" || s.format != "verbose_json" || s.language != "en" {
		t.Errorf("request fields %+v", s)
	}
	if s.filename != "audio.wav" || s.fileType != "audio/wav" {
		t.Errorf("file part %q %q", s.filename, s.fileType)
	}
	if s.pcm.SampleRate != 16000 || !slices.Equal(s.pcm.Samples, in.Samples) {
		t.Errorf("server got rate %d and %d samples", s.pcm.SampleRate, len(s.pcm.Samples))
	}
}

func TestTranscribeNoKeyForLocalServer(t *testing.T) {
	f := newFake(t, "ok")
	tr, _ := newTranscriber(t, f, func(c *Config) { c.APIKey = "" })
	if _, err := tr.Transcribe(t.Context(), tone(100)); err != nil {
		t.Fatalf("Transcribe: %v", err)
	}
	if f.seen[0].auth != "" {
		t.Errorf("Authorization sent without a key: %q", f.seen[0].auth)
	}
	if f.seen[0].language != "" || f.seen[0].model != "whisper-1" {
		t.Errorf("fields %+v", f.seen[0])
	}
}

func TestTranscribeFallsBackToJSON(t *testing.T) {
	for _, mode := range []string{"openai-400", "fastapi-422", "ignore"} {
		t.Run(mode, func(t *testing.T) {
			f := newFake(t, mode)
			tr, _ := newTranscriber(t, f, nil)
			want := []stt.Segment{{StartMS: 0, EndMS: 1500, Text: "The quick brown fox. Jumped over.", Speaker: -1}}
			for call := range 2 {
				got, err := tr.Transcribe(t.Context(), tone(24000))
				if err != nil {
					t.Fatalf("call %d: %v", call, err)
				}
				if got.Text != "The quick brown fox. Jumped over." || !slices.Equal(got.Segments, want) {
					t.Errorf("call %d: got %+v", call, got)
				}
			}
			var formats []string
			for _, s := range f.seen {
				formats = append(formats, s.format)
			}
			wantFormats := []string{"verbose_json", "json", "json"} // refused once, then remembered
			if mode == "ignore" {
				wantFormats = []string{"verbose_json", "verbose_json"}
			}
			if !slices.Equal(formats, wantFormats) {
				t.Errorf("formats sent = %v, want %v", formats, wantFormats)
			}
		})
	}
}

func TestTranscribeJSONOnly(t *testing.T) {
	f := newFake(t, "ok")
	tr, _ := newTranscriber(t, f, func(c *Config) { c.JSONOnly = true })
	if _, err := tr.Transcribe(t.Context(), tone(100)); err != nil {
		t.Fatal(err)
	}
	if f.seen[0].format != "json" {
		t.Errorf("format = %q", f.seen[0].format)
	}
}

func TestTranscribeRetriesAndErrors(t *testing.T) {
	cases := []struct {
		name      string
		replies   []reply
		wantTries int32
		wantErr   error
		wantSleep []time.Duration // lower bounds
		wantInErr []string
	}{
		{
			name:      "429 with Retry-After then success",
			replies:   []reply{{status: 429, header: map[string]string{"Retry-After": "4"}, body: openAIError("requests", "", "rate_limit_exceeded", "Rate limit reached "+secretText)}},
			wantTries: 2,
			wantSleep: []time.Duration{4 * time.Second},
		},
		{
			name:      "500 then success",
			replies:   []reply{{status: 500, body: openAIError("server_error", "", "", secretText)}},
			wantTries: 2,
			wantSleep: []time.Duration{0},
		},
		{
			name:      "400 is final and not a format fallback",
			replies:   []reply{{status: 400, body: openAIError("invalid_request_error", "file", "invalid_value", "Audio file might be corrupted: "+secretText)}},
			wantTries: 1,
			wantErr:   ErrRejected,
			wantInErr: []string{"HTTP 400", "invalid_request_error:invalid_value", "param file"},
		},
		{
			name:      "401 is final",
			replies:   []reply{{status: 401, body: openAIError("invalid_request_error", "", "invalid_api_key", "Incorrect API key provided: sk-test-0***cdef.")}},
			wantTries: 1,
			wantErr:   ErrRejected,
			wantInErr: []string{"HTTP 401", "invalid_api_key"},
		},
		{
			name:      "whisper.cpp string error",
			replies:   []reply{{status: 400, body: `{"error":"failed to read WAV file ` + secretText + `"}`}},
			wantTries: 1,
			wantErr:   ErrRejected,
		},
		{
			name:      "500 until attempts run out",
			replies:   []reply{{status: 500}, {status: 500}, {status: 503}, {status: 500}},
			wantTries: 4,
			wantErr:   stt.ErrUnavailable,
		},
		{
			name:      "malformed JSON",
			replies:   []reply{{status: 200, body: `{"text": "` + secretText}},
			wantTries: 1,
			wantErr:   ErrBadResponse,
		},
		{
			name:      "missing text",
			replies:   []reply{{status: 200, body: `{"segments": []}`}},
			wantTries: 1,
			wantErr:   ErrBadResponse,
		},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			f := newFake(t, "ok", tc.replies...)
			tr, s := newTranscriber(t, f, nil)
			got, err := tr.Transcribe(t.Context(), tone(1600))
			if n := f.n.Load(); n != tc.wantTries {
				t.Errorf("tries = %d, want %d", n, tc.wantTries)
			}
			if tc.wantErr == nil {
				if err != nil {
					t.Fatalf("Transcribe: %v", err)
				}
				if !slices.Equal(got.Segments, verboseSegments) {
					t.Errorf("segments = %+v", got.Segments)
				}
				if len(s.d) != len(tc.wantSleep) {
					t.Fatalf("sleeps = %v", s.d)
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
			for _, leak := range []string{secretText, testKey, "Incorrect API key", "sk-test"} {
				if strings.Contains(err.Error(), leak) {
					t.Errorf("error %q leaks %q", err, leak)
				}
			}
		})
	}
}

func TestTranscribeContextCancelStopsRetries(t *testing.T) {
	f := newFake(t, "ok", reply{status: 502}, reply{status: 502})
	ctx, cancel := context.WithCancel(t.Context())
	tr, _ := newTranscriber(t, f, func(c *Config) {
		c.Sleep = func(ctx context.Context, d time.Duration) error { cancel(); return ctx.Err() }
	})
	if _, err := tr.Transcribe(ctx, tone(100)); !errors.Is(err, context.Canceled) {
		t.Fatalf("err = %v", err)
	}
	if f.n.Load() != 1 {
		t.Errorf("tries = %d", f.n.Load())
	}
}

func TestTranscribeEmptyAudio(t *testing.T) {
	f := newFake(t, "ok")
	tr, _ := newTranscriber(t, f, nil)
	got, err := tr.Transcribe(t.Context(), audio.PCM{SampleRate: 16000})
	if err != nil || len(got.Segments) != 0 || f.n.Load() != 0 {
		t.Fatalf("got %+v, %v, %d requests", got, err, f.n.Load())
	}
}

func TestNewValidates(t *testing.T) {
	cases := []struct {
		cfg  Config
		want string
	}{
		{Config{}, "APIKey"},
		{Config{BaseURL: "https://API.openai.com/v1"}, "APIKey"},
		{Config{BaseURL: "http://127.0.0.1:8080/v1", APIKey: "a\r\nb"}, "APIKey"},
		{Config{BaseURL: "localhost:8080"}, "BaseURL"},
		{Config{BaseURL: "http://u:p@127.0.0.1/v1"}, "BaseURL"},
		{Config{BaseURL: "http://127.0.0.1/v1", Model: "a\nb"}, "Model"},
		{Config{BaseURL: "http://127.0.0.1/v1", Language: "en&x"}, "Language"},
		{Config{BaseURL: "http://127.0.0.1/v1", MaxAttempts: -2}, "MaxAttempts"},
	}
	for _, tc := range cases {
		if _, err := New(tc.cfg); err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("New(%+v) = %v, want error naming %s", tc.cfg, err, tc.want)
		}
	}
	tr, err := New(Config{APIKey: testKey})
	if err != nil {
		t.Fatal(err)
	}
	if s := fmt.Sprintf("%+v %#v", tr, tr); strings.Contains(s, testKey) {
		t.Errorf("printing a Transcriber shows the key")
	}
}

func TestDecodeErrorShapes(t *testing.T) {
	cases := []struct {
		body        string
		code, param string
	}{
		{openAIError("invalid_request_error", "", "invalid_api_key", "x"), "invalid_request_error:invalid_api_key", ""},
		{openAIError("server_error", "", "", "x"), "server_error", ""},
		{openAIError("invalid_request_error", "", "", "response_format verbose_json unsupported"), "invalid_request_error", "response_format"},
		{`{"error":"verbose_json not supported"}`, "", "response_format"},
		{`{"error":"boom"}`, "", ""},
		{`{"detail":[{"type":"enum","loc":["body","response_format"]}]}`, "enum", "response_format"},
		{`{"detail":"Not Found"}`, "", ""},
		{`<html>`, "", ""},
	}
	for _, tc := range cases {
		info := decodeError([]byte(tc.body))
		if info.Code != tc.code || info.Param != tc.param {
			t.Errorf("decodeError(%s) = %+v, want code %q param %q", tc.body, info, tc.code, tc.param)
		}
	}
}

func FuzzDecodeResponse(f *testing.F) {
	f.Add([]byte(verboseBody))
	f.Add([]byte(jsonBody))
	f.Add([]byte(`{"text":"","segments":[{"start":1,"end":0.5,"text":"x"}]}`))
	f.Fuzz(func(t *testing.T, body []byte) {
		tr, err := decodeResponse(body, time.Second)
		if err != nil {
			if !errors.Is(err, ErrBadResponse) {
				t.Fatalf("error %v does not wrap ErrBadResponse", err)
			}
			return
		}
		for _, s := range tr.Segments {
			if s.StartMS < 0 || s.EndMS < s.StartMS || s.Speaker != -1 || s.Text == "" {
				t.Fatalf("bad segment %+v", s)
			}
		}
	})
}

func FuzzDecodeError(f *testing.F) {
	f.Add([]byte(openAIError("invalid_request_error", "response_format", "unsupported_value", "m")))
	f.Add([]byte(`{"detail":[{"type":"enum","loc":["body","response_format"]}]}`))
	f.Add([]byte(`{"error":"x"}`))
	f.Fuzz(func(t *testing.T, body []byte) {
		info := decodeError(body)
		if info.Param != "" && info.Param != "response_format" && !strings.Contains(string(body), info.Param) {
			t.Fatalf("param %q not from the body", info.Param)
		}
	})
}
