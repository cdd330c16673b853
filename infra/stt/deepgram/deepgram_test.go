package deepgram

import (
	"context"
	"encoding/json"
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
	testKey    = "dg-test-key-5f1c0ffee"
	secretText = "my bank pin is 4711"
)

// okBody is a pre-recorded answer in Deepgram's documented shape, with
// diarised, smart-formatted words.
const okBody = `{
  "metadata": {
    "transaction_key": "deprecated",
    "request_id": "3b1f3a2e-6d0c-4b8e-9a55-0f5f2b9c1d11",
    "sha256": "154e291ecfa8be6ab8343560bcc109008fa7853eb5372533e8efdefc9b504c33",
    "created": "2026-11-01T12:00:00.000Z",
    "duration": 4.2,
    "channels": 1,
    "models": ["2187e11a-3532-4498-b076-81fa530bdd49"],
    "model_info": {"2187e11a-3532-4498-b076-81fa530bdd49": {"name": "general-nova-3", "version": "2025-01-13.0", "arch": "nova-3"}}
  },
  "results": {
    "channels": [{
      "alternatives": [{
        "transcript": "Hello there. Hi! How are you? Fine.",
        "confidence": 0.99,
        "words": [
          {"word": "hello", "start": 0.08, "end": 0.4, "confidence": 0.99, "speaker": 0, "speaker_confidence": 0.6, "punctuated_word": "Hello"},
          {"word": "there", "start": 0.4, "end": 0.8, "confidence": 0.98, "speaker": 0, "speaker_confidence": 0.6, "punctuated_word": "there."},
          {"word": "hi", "start": 1.1, "end": 1.3, "confidence": 0.97, "speaker": 1, "speaker_confidence": 0.5, "punctuated_word": "Hi!"},
          {"word": "how", "start": 1.5, "end": 1.7, "confidence": 0.97, "speaker": 1, "speaker_confidence": 0.5, "punctuated_word": "How"},
          {"word": "are", "start": 1.7, "end": 1.8, "confidence": 0.97, "speaker": 1, "speaker_confidence": 0.5, "punctuated_word": "are"},
          {"word": "you", "start": 1.8, "end": 2.0, "confidence": 0.97, "speaker": 1, "speaker_confidence": 0.5, "punctuated_word": "you?"},
          {"word": "fine", "start": 2.5, "end": 2.9155, "confidence": 0.95, "speaker": 0, "speaker_confidence": 0.4, "punctuated_word": "Fine."}
        ]
      }]
    }]
  }
}`

func errBody(code, msg string) string {
	return fmt.Sprintf(`{"err_code":%q,"err_msg":%q,"request_id":"9d7e0c55-1111-2222-3333-444455556666"}`, code, msg)
}

type reply struct {
	status int
	header map[string]string
	body   string
}

// fake is Deepgram's /v1/listen as far as the adapter can tell: it checks
// the request and answers the scripted replies in order, then okBody.
type fake struct {
	t       *testing.T
	srv     *httptest.Server
	replies []reply
	n       atomic.Int32
	mu      sync.Mutex
	queries []string
	pcm     []audio.PCM
}

func newFake(t *testing.T, replies ...reply) *fake {
	f := &fake{t: t, replies: replies}
	f.srv = httptest.NewServer(http.HandlerFunc(f.serve))
	t.Cleanup(f.srv.Close)
	return f
}

func (f *fake) serve(w http.ResponseWriter, r *http.Request) {
	i := int(f.n.Add(1)) - 1
	w.Header().Set("Content-Type", "application/json")
	if r.Method != http.MethodPost || r.URL.Path != "/v1/listen" {
		f.t.Errorf("request %s %s", r.Method, r.URL.Path)
	}
	if got := r.Header.Get("Authorization"); got != "Token "+testKey {
		w.WriteHeader(401)
		_, _ = io.WriteString(w, errBody("INVALID_AUTH", "Invalid credentials."))
		return
	}
	if ct := r.Header.Get("Content-Type"); ct != "audio/wav" {
		f.t.Errorf("Content-Type = %q", ct)
	}
	body, _ := io.ReadAll(r.Body)
	p, err := audio.Decode("audio/wav", body)
	if err != nil {
		w.WriteHeader(400)
		_, _ = io.WriteString(w, errBody("Bad Request", "Bad Request: failed to process audio: corrupt or unsupported data"))
		return
	}
	f.mu.Lock()
	f.queries = append(f.queries, r.URL.RawQuery)
	f.pcm = append(f.pcm, p)
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
	_, _ = io.WriteString(w, okBody)
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
	cfg := Config{APIKey: testKey, BaseURL: f.srv.URL, Sleep: s.sleep}
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
		p.Samples[i] = int16((i*37)%2000 - 1000)
	}
	return p
}

func TestTranscribeSuccess(t *testing.T) {
	f := newFake(t)
	tr, _ := newTranscriber(t, f, nil)
	in := tone(16000)
	got, err := tr.Transcribe(t.Context(), in)
	if err != nil {
		t.Fatalf("Transcribe: %v", err)
	}
	want := stt.Transcript{
		Text:  "Hello there. Hi! How are you? Fine.",
		Model: "deepgram-nova-3",
		Segments: []stt.Segment{
			{StartMS: 80, EndMS: 800, Text: "Hello there.", Speaker: 0},
			{StartMS: 1100, EndMS: 2000, Text: "Hi! How are you?", Speaker: 1},
			{StartMS: 2500, EndMS: 2916, Text: "Fine.", Speaker: 0},
		},
	}
	if got.Text != want.Text || got.Model != want.Model || !slices.Equal(got.Segments, want.Segments) {
		t.Errorf("got  %+v\nwant %+v", got, want)
	}
	// The audio that arrived is the WAV of exactly our samples at our rate.
	if len(f.pcm) != 1 || f.pcm[0].SampleRate != 16000 || !slices.Equal(f.pcm[0].Samples, in.Samples) {
		t.Errorf("server got rate %d, %d samples", f.pcm[0].SampleRate, len(f.pcm[0].Samples))
	}
}

func TestTranscribeQuery(t *testing.T) {
	cases := []struct {
		name string
		mod  func(*Config)
		want map[string]string
		none []string
	}{
		{
			name: "defaults",
			want: map[string]string{"model": "nova-3", "smart_format": "true", "diarize": "true", "punctuate": "true", "mip_opt_out": "true"},
			none: []string{"language"},
		},
		{
			name: "language and model",
			mod:  func(c *Config) { c.Language = "de"; c.Model = "nova-3-medical" },
			want: map[string]string{"model": "nova-3-medical", "language": "de", "diarize": "true", "mip_opt_out": "true"},
		},
		{
			name: "no diarize",
			mod:  func(c *Config) { c.NoDiarize = true },
			want: map[string]string{"smart_format": "true", "mip_opt_out": "true"},
			none: []string{"diarize"},
		},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			f := newFake(t)
			tr, _ := newTranscriber(t, f, tc.mod)
			if _, err := tr.Transcribe(t.Context(), tone(800)); err != nil {
				t.Fatalf("Transcribe: %v", err)
			}
			q := f.queries[0]
			for k, v := range tc.want {
				if !strings.Contains("&"+q+"&", "&"+k+"="+v+"&") {
					t.Errorf("query %q lacks %s=%s", q, k, v)
				}
			}
			for _, k := range tc.none {
				if strings.Contains(q, k+"=") {
					t.Errorf("query %q has %s", q, k)
				}
			}
		})
	}
}

func TestTranscribeModelName(t *testing.T) {
	f := newFake(t)
	tr, _ := newTranscriber(t, f, func(c *Config) { c.Model = "nova-2" })
	got, err := tr.Transcribe(t.Context(), tone(100))
	if err != nil || got.Model != "deepgram-nova-2" {
		t.Fatalf("Model = %q, err = %v", got.Model, err)
	}
}

func TestTranscribeRetriesAndErrors(t *testing.T) {
	cases := []struct {
		name      string
		key       string
		replies   []reply
		wantTries int32
		wantErr   error
		wantSleep []time.Duration // lower bounds
		wantInErr []string
	}{
		{
			name:      "429 with Retry-After then success",
			replies:   []reply{{status: 429, header: map[string]string{"Retry-After": "2"}, body: errBody("TOO_MANY_REQUESTS", "Too many requests "+secretText)}},
			wantTries: 2,
			wantSleep: []time.Duration{2 * time.Second},
		},
		{
			name:      "500 then success",
			replies:   []reply{{status: 500, body: errBody("INTERNAL_SERVER_ERROR", secretText)}},
			wantTries: 2,
			wantSleep: []time.Duration{0},
		},
		{
			name:      "400 is final",
			replies:   []reply{{status: 400, body: errBody("Bad Request", "Bad Request: "+secretText)}},
			wantTries: 1,
			wantErr:   ErrRejected,
			wantInErr: []string{"HTTP 400", "Bad Request", "9d7e0c55-1111-2222-3333-444455556666"},
		},
		{
			name:      "401 is final",
			key:       "dg-wrong-key-abcdef",
			wantTries: 1,
			wantErr:   ErrRejected,
			wantInErr: []string{"HTTP 401", "INVALID_AUTH"},
		},
		{
			name:      "402 newer error shape",
			replies:   []reply{{status: 402, body: `{"category":"INSUFFICIENT_PERMISSIONS","message":"` + secretText + `","details":"x","request_id":"r-1"}`}},
			wantTries: 1,
			wantErr:   ErrRejected,
			wantInErr: []string{"HTTP 402", "INSUFFICIENT_PERMISSIONS"},
		},
		{
			name: "503 until attempts run out",
			replies: []reply{
				{status: 503, body: errBody("SERVICE_UNAVAILABLE", secretText)},
				{status: 503}, {status: 502}, {status: 504},
			},
			wantTries: 4,
			wantErr:   stt.ErrUnavailable,
			wantInErr: []string{"HTTP 504"},
		},
		{
			name:      "malformed JSON",
			replies:   []reply{{status: 200, body: `{"metadata":{},"results":{"channels":[{"alternatives":[{"transcript":"` + secretText}},
			wantTries: 1,
			wantErr:   ErrBadResponse,
		},
		{
			name:      "wrong shape",
			replies:   []reply{{status: 200, body: `{"metadata":{},"results":{"channels":[]}}`}},
			wantTries: 1,
			wantErr:   ErrBadResponse,
		},
		{
			name:      "word timings out of order",
			replies:   []reply{{status: 200, body: `{"metadata":{},"results":{"channels":[{"alternatives":[{"transcript":"a","words":[{"word":"a","start":2,"end":1}]}]}]}}`}},
			wantTries: 1,
			wantErr:   ErrBadResponse,
		},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			f := newFake(t, tc.replies...)
			tr, s := newTranscriber(t, f, func(c *Config) {
				if tc.key != "" {
					c.APIKey = tc.key
				}
			})
			got, err := tr.Transcribe(t.Context(), tone(1600))
			if n := f.n.Load(); n != tc.wantTries {
				t.Errorf("tries = %d, want %d", n, tc.wantTries)
			}
			if tc.wantErr == nil {
				if err != nil {
					t.Fatalf("Transcribe: %v", err)
				}
				if len(got.Segments) != 3 {
					t.Errorf("segments = %+v", got.Segments)
				}
				if len(s.d) != len(tc.wantSleep) {
					t.Fatalf("sleeps = %v, want %d", s.d, len(tc.wantSleep))
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
			for _, leak := range []string{secretText, testKey, tc.key, "Invalid credentials", "failed to process"} {
				if leak != "" && strings.Contains(err.Error(), leak) {
					t.Errorf("error %q leaks %q", err, leak)
				}
			}
		})
	}
}

func TestTranscribeContextCancelStopsRetries(t *testing.T) {
	f := newFake(t, reply{status: 503}, reply{status: 503}, reply{status: 503})
	ctx, cancel := context.WithCancel(t.Context())
	tr, _ := newTranscriber(t, f, func(c *Config) {
		c.Sleep = func(ctx context.Context, d time.Duration) error { cancel(); return ctx.Err() }
	})
	_, err := tr.Transcribe(ctx, tone(100))
	if !errors.Is(err, context.Canceled) {
		t.Fatalf("err = %v", err)
	}
	if f.n.Load() != 1 {
		t.Errorf("tries = %d, want 1", f.n.Load())
	}
}

func TestTranscribeMaxAttempts(t *testing.T) {
	f := newFake(t, reply{status: 500}, reply{status: 500}, reply{status: 500})
	tr, _ := newTranscriber(t, f, func(c *Config) { c.MaxAttempts = 2 })
	if _, err := tr.Transcribe(t.Context(), tone(100)); !errors.Is(err, stt.ErrUnavailable) {
		t.Fatalf("err = %v", err)
	}
	if f.n.Load() != 2 {
		t.Errorf("tries = %d, want 2", f.n.Load())
	}
}

func TestTranscribeEmptyAudio(t *testing.T) {
	f := newFake(t)
	tr, _ := newTranscriber(t, f, nil)
	got, err := tr.Transcribe(t.Context(), audio.PCM{SampleRate: 16000})
	if err != nil || got.Text != "" || len(got.Segments) != 0 || got.Model != "deepgram-nova-3" {
		t.Fatalf("got %+v, %v", got, err)
	}
	if f.n.Load() != 0 {
		t.Errorf("empty audio was sent")
	}
	if _, err := tr.Transcribe(t.Context(), audio.PCM{Samples: []int16{1}}); !errors.Is(err, ErrRejected) {
		t.Errorf("zero sample rate: err = %v", err)
	}
}

func TestNewValidates(t *testing.T) {
	cases := []struct {
		cfg  Config
		want string
	}{
		{Config{}, "APIKey"},
		{Config{APIKey: "  "}, "APIKey"},
		{Config{APIKey: "k\nX-Evil: 1"}, "APIKey"},
		{Config{APIKey: "k", BaseURL: "ftp://x"}, "BaseURL"},
		{Config{APIKey: "k", BaseURL: "https://user:pw@api.deepgram.com"}, "BaseURL"},
		{Config{APIKey: "k", BaseURL: "https://api.deepgram.com?x=1"}, "BaseURL"},
		{Config{APIKey: "k", Model: "nova 3"}, "Model"},
		{Config{APIKey: "k", Language: "en&x=1"}, "Language"},
		{Config{APIKey: "k", MaxAttempts: -1}, "MaxAttempts"},
	}
	for _, tc := range cases {
		_, err := New(tc.cfg)
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("New(%+v) = %v, want error naming %s", tc.cfg, err, tc.want)
		}
		if err != nil && tc.cfg.APIKey != "" && len(tc.cfg.APIKey) > 3 && strings.Contains(err.Error(), tc.cfg.APIKey) {
			t.Errorf("error repeats the key: %v", err)
		}
	}
	tr, err := New(Config{APIKey: testKey})
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	if s := fmt.Sprintf("%+v %#v", tr, tr); strings.Contains(s, testKey) {
		t.Errorf("printing a Transcriber shows the key")
	}
}

func TestDecodeResponseShapes(t *testing.T) {
	cases := []struct {
		name string
		body string
		want stt.Transcript
		err  bool
	}{
		{
			name: "no diarisation: one segment, speaker -1",
			body: `{"metadata":{"request_id":"x"},"results":{"channels":[{"alternatives":[{"transcript":"a b","words":[{"word":"a","start":0,"end":0.5},{"word":"b","start":0.6,"end":1}]}]}]}}`,
			want: stt.Transcript{Text: "a b", Segments: []stt.Segment{{StartMS: 0, EndMS: 1000, Text: "a b", Speaker: -1}}},
		},
		{
			name: "silence",
			body: `{"metadata":{},"results":{"channels":[{"alternatives":[{"transcript":"","confidence":0,"words":[]}]}]}}`,
			want: stt.Transcript{},
		},
		{
			name: "transcript without words spans the audio",
			body: `{"metadata":{},"results":{"channels":[{"alternatives":[{"transcript":"hi"}]}]}}`,
			want: stt.Transcript{Text: "hi", Segments: []stt.Segment{{StartMS: 0, EndMS: 2000, Text: "hi", Speaker: -1}}},
		},
		{name: "no metadata", body: `{"results":{"channels":[{"alternatives":[{"transcript":""}]}]}}`, err: true},
		{name: "no transcript", body: `{"metadata":{},"results":{"channels":[{"alternatives":[{}]}]}}`, err: true},
		{name: "word without end", body: `{"metadata":{},"results":{"channels":[{"alternatives":[{"transcript":"a","words":[{"word":"a","start":0}]}]}]}}`, err: true},
		{name: "negative speaker", body: `{"metadata":{},"results":{"channels":[{"alternatives":[{"transcript":"a","words":[{"word":"a","start":0,"end":1,"speaker":-2}]}]}]}}`, err: true},
		{name: "transcript is a number", body: `{"metadata":{},"results":{"channels":[{"alternatives":[{"transcript":5}]}]}}`, err: true},
		{name: "array", body: `[]`, err: true},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			got, err := decodeResponse([]byte(tc.body), 2*time.Second)
			if tc.err {
				if !errors.Is(err, ErrBadResponse) {
					t.Fatalf("err = %v, want ErrBadResponse", err)
				}
				return
			}
			if err != nil {
				t.Fatalf("decode: %v", err)
			}
			if got.Text != tc.want.Text || !slices.Equal(got.Segments, tc.want.Segments) {
				t.Errorf("got %+v, want %+v", got, tc.want)
			}
		})
	}
}

func FuzzDecodeResponse(f *testing.F) {
	f.Add([]byte(okBody))
	f.Add([]byte(`{"metadata":{},"results":{"channels":[{"alternatives":[{"transcript":"hi"}]}]}}`))
	f.Add([]byte(errBody("Bad Request", "x")))
	f.Fuzz(func(t *testing.T, body []byte) {
		tr, err := decodeResponse(body, time.Second)
		if err != nil {
			if !errors.Is(err, ErrBadResponse) {
				t.Fatalf("error %v does not wrap ErrBadResponse", err)
			}
			return
		}
		for _, s := range tr.Segments {
			if s.StartMS < 0 || s.EndMS < s.StartMS || s.Speaker < -1 || s.Text == "" {
				t.Fatalf("bad segment %+v", s)
			}
		}
	})
}

func FuzzDecodeError(f *testing.F) {
	f.Add([]byte(errBody("INVALID_AUTH", "Invalid credentials.")))
	f.Add([]byte(`{"category":"INVALID_JSON","message":"m","details":"d","request_id":"r"}`))
	f.Add([]byte(`{"err_code":7}`))
	f.Fuzz(func(t *testing.T, body []byte) {
		info := decodeError(body)
		var raw map[string]any
		if json.Unmarshal(body, &raw) != nil && info.Code != "" {
			t.Fatalf("code %q from invalid JSON", info.Code)
		}
	})
}
