package httpretry

import (
	"context"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

const secretBody = "TRANSCRIPT-CONTENT-must-not-leak"

// recorder is an injected sleep that records waits and returns at once.
type recorder struct {
	mu     sync.Mutex
	waits  []time.Duration
	now    time.Time
	cancel context.CancelFunc // if set, cancels instead of sleeping
}

func (r *recorder) sleep(ctx context.Context, d time.Duration) error {
	r.mu.Lock()
	r.waits = append(r.waits, d)
	r.now = r.now.Add(d)
	cancel := r.cancel
	r.mu.Unlock()
	if cancel != nil {
		cancel()
		return ctx.Err()
	}
	return nil
}

func (r *recorder) clock() time.Time {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.now
}

func newTestClient(t *testing.T, srv *httptest.Server, rec *recorder) *Client {
	t.Helper()
	rec.now = time.Date(2026, 11, 1, 12, 0, 0, 0, time.UTC)
	return &Client{
		Provider: "test",
		HTTP:     srv.Client(),
		Policy: Policy{
			Sleep:  rec.sleep,
			Now:    rec.clock,
			Jitter: func(n int64) int64 { return n - 1 },
		},
		DecodeError: func(b []byte) ErrorInfo {
			var e struct {
				Code string `json:"code"`
				ID   string `json:"request_id"`
			}
			_ = json.Unmarshal(b, &e)
			return ErrorInfo{Code: e.Code, RequestID: e.ID}
		},
	}
}

func build(url string) func(ctx context.Context) (*http.Request, error) {
	return func(ctx context.Context) (*http.Request, error) {
		return JSONBody(ctx, url, []byte(`{"x":1}`), http.Header{"Authorization": {"Bearer sk-secret-key"}})
	}
}

type step struct {
	status int
	header map[string]string
	body   string
}

// scripted answers the steps in order, then 200 {"ok":true}; it checks that
// every try carries the full request body.
func scripted(t *testing.T, steps ...step) (*httptest.Server, *atomic.Int32) {
	t.Helper()
	var n atomic.Int32
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		i := int(n.Add(1)) - 1
		b, _ := io.ReadAll(r.Body)
		if string(b) != `{"x":1}` {
			t.Errorf("try %d: body %q", i+1, b)
		}
		if i < len(steps) {
			s := steps[i]
			for k, v := range s.header {
				w.Header().Set(k, v)
			}
			w.WriteHeader(s.status)
			_, _ = io.WriteString(w, s.body)
			return
		}
		_, _ = io.WriteString(w, `{"ok":true}`)
	}))
	t.Cleanup(srv.Close)
	return srv, &n
}

func TestDo(t *testing.T) {
	errBody := `{"code":"rate_limited","request_id":"req-1","message":"` + secretBody + `"}`
	cases := []struct {
		name      string
		steps     []step
		wantTries int32
		wantErr   error
		wantWaits []time.Duration // with Jitter = n-1
		wantInErr []string
	}{
		{name: "success", wantTries: 1},
		{
			name:      "429 Retry-After seconds then success",
			steps:     []step{{status: 429, header: map[string]string{"Retry-After": "3"}, body: errBody}},
			wantTries: 2,
			wantWaits: []time.Duration{3 * time.Second},
		},
		{
			name:      "429 Retry-After HTTP date",
			steps:     []step{{status: 429, header: map[string]string{"Retry-After": "Sun, 01 Nov 2026 12:00:07 GMT"}}},
			wantTries: 2,
			wantWaits: []time.Duration{7 * time.Second},
		},
		{
			name:      "Retry-After-Ms",
			steps:     []step{{status: 429, header: map[string]string{"Retry-After-Ms": "1500"}}},
			wantTries: 2,
			wantWaits: []time.Duration{1500 * time.Millisecond},
		},
		{
			name:      "500 then 503 then success uses growing backoff",
			steps:     []step{{status: 500}, {status: 503}},
			wantTries: 3,
			wantWaits: []time.Duration{DefaultBaseDelay - 1, 2*DefaultBaseDelay - 1},
		},
		{
			name:      "408 is retried",
			steps:     []step{{status: 408}},
			wantTries: 2,
			wantWaits: []time.Duration{DefaultBaseDelay - 1},
		},
		{
			name:      "500 until attempts run out",
			steps:     []step{{status: 500, body: errBody}, {status: 500, body: errBody}, {status: 500, body: errBody}, {status: 502, body: errBody}},
			wantTries: 4,
			wantErr:   ErrUnavailable,
			wantWaits: []time.Duration{DefaultBaseDelay - 1, 2*DefaultBaseDelay - 1, 4*DefaultBaseDelay - 1},
			wantInErr: []string{"HTTP 502", "rate_limited", "req-1", "after 4 attempts"},
		},
		{
			name:      "400 is not retried",
			steps:     []step{{status: 400, body: errBody}},
			wantTries: 1,
			wantErr:   ErrRejected,
			wantInErr: []string{"HTTP 400", "code rate_limited"},
		},
		{
			name:      "401 is not retried",
			steps:     []step{{status: 401, body: `not json ` + secretBody}},
			wantTries: 1,
			wantErr:   ErrRejected,
			wantInErr: []string{"HTTP 401"},
		},
		{
			name:      "Retry-After beyond the budget stops at once",
			steps:     []step{{status: 429, header: map[string]string{"Retry-After": "3600"}}},
			wantTries: 1,
			wantErr:   ErrUnavailable,
			wantInErr: []string{"HTTP 429", "retry after 1h0m0s"},
		},
		{
			name:      "redirect is not followed",
			steps:     []step{{status: 307, header: map[string]string{"Location": "http://elsewhere.invalid/"}}},
			wantTries: 1,
			wantErr:   ErrRejected,
		},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			srv, tries := scripted(t, tc.steps...)
			rec := &recorder{}
			c := newTestClient(t, srv, rec)
			c.HTTP = NewClient(5 * time.Second)
			body, _, err := c.Do(t.Context(), build(srv.URL+"/v1/thing?model=m"))
			if got := tries.Load(); got != tc.wantTries {
				t.Errorf("tries = %d, want %d", got, tc.wantTries)
			}
			if tc.wantErr == nil {
				if err != nil {
					t.Fatalf("Do: %v", err)
				}
				if string(body) != `{"ok":true}` {
					t.Errorf("body = %q", body)
				}
			} else {
				if !errors.Is(err, tc.wantErr) {
					t.Fatalf("err = %v, want %v", err, tc.wantErr)
				}
				for _, s := range tc.wantInErr {
					if !strings.Contains(err.Error(), s) {
						t.Errorf("error %q lacks %q", err, s)
					}
				}
				assertClean(t, err)
			}
			if tc.wantWaits != nil || len(rec.waits) > 0 {
				if len(rec.waits) != len(tc.wantWaits) {
					t.Fatalf("waits = %v, want %v", rec.waits, tc.wantWaits)
				}
				for i := range rec.waits {
					if rec.waits[i] != tc.wantWaits[i] {
						t.Errorf("wait %d = %v, want %v", i, rec.waits[i], tc.wantWaits[i])
					}
				}
			}
		})
	}
}

func assertClean(t *testing.T, err error) {
	t.Helper()
	for _, s := range []string{secretBody, "sk-secret-key", "model=m"} {
		if strings.Contains(err.Error(), s) {
			t.Errorf("error %q leaks %q", err, s)
		}
	}
}

func TestDoStatusErrorFields(t *testing.T) {
	srv, _ := scripted(t, step{status: 403, header: map[string]string{"X-Request-Id": "hdr-7"}, body: `{"code":"FORBIDDEN"}`})
	c := newTestClient(t, srv, &recorder{})
	_, _, err := c.Do(t.Context(), build(srv.URL+"/p"))
	var se *StatusError
	if !errors.As(err, &se) {
		t.Fatalf("err %v is not a *StatusError", err)
	}
	if se.StatusCode != 403 || se.Info.Code != "FORBIDDEN" || se.Info.RequestID != "hdr-7" || se.Op != "POST /p" {
		t.Errorf("StatusError = %+v", se)
	}
	var r interface{ Retryable() bool }
	if !errors.As(err, &r) || r.Retryable() {
		t.Errorf("403 must be classified not retryable")
	}
}

func TestDoTransportErrorIsRetried(t *testing.T) {
	var n atomic.Int32
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if n.Add(1) == 1 {
			// Drop the connection without an answer.
			hj, _ := w.(http.Hijacker)
			conn, _, _ := hj.Hijack()
			_ = conn.Close()
			return
		}
		_, _ = io.WriteString(w, `{}`)
	}))
	t.Cleanup(srv.Close)
	rec := &recorder{}
	c := newTestClient(t, srv, rec)
	if _, _, err := c.Do(t.Context(), build(srv.URL)); err != nil {
		t.Fatalf("Do: %v", err)
	}
	if n.Load() != 2 || len(rec.waits) != 1 {
		t.Errorf("tries = %d, waits = %v", n.Load(), rec.waits)
	}
}

func TestDoTransportErrorExhausted(t *testing.T) {
	srv := httptest.NewServer(http.NotFoundHandler())
	url := srv.URL
	srv.Close() // nothing listens any more
	rec := &recorder{}
	c := newTestClient(t, srv, rec)
	c.HTTP = NewClient(time.Second)
	_, _, err := c.Do(t.Context(), build(url+"/v1/x?q=secretquery"))
	if !errors.Is(err, ErrUnavailable) {
		t.Fatalf("err = %v, want ErrUnavailable", err)
	}
	if strings.Contains(err.Error(), "secretquery") {
		t.Errorf("error repeats the URL query: %v", err)
	}
	if len(rec.waits) != DefaultMaxAttempts-1 {
		t.Errorf("waits = %v", rec.waits)
	}
}

func TestDoContextCancelStopsRetries(t *testing.T) {
	srv, tries := scripted(t, step{status: 503}, step{status: 503}, step{status: 503})
	ctx, cancel := context.WithCancel(t.Context())
	defer cancel()
	rec := &recorder{cancel: cancel}
	c := newTestClient(t, srv, rec)
	_, _, err := c.Do(ctx, build(srv.URL))
	if !errors.Is(err, context.Canceled) {
		t.Fatalf("err = %v, want context.Canceled", err)
	}
	if tries.Load() != 1 {
		t.Errorf("tries = %d after cancel, want 1", tries.Load())
	}
}

func TestDoAlreadyCancelled(t *testing.T) {
	srv, tries := scripted(t)
	ctx, cancel := context.WithCancel(t.Context())
	cancel()
	c := newTestClient(t, srv, &recorder{})
	if _, _, err := c.Do(ctx, build(srv.URL)); !errors.Is(err, context.Canceled) {
		t.Fatalf("err = %v", err)
	}
	if tries.Load() != 0 {
		t.Errorf("a request was sent with a cancelled context")
	}
}

func TestDoRealSleepHonoursContext(t *testing.T) {
	srv, _ := scripted(t, step{status: 503, header: map[string]string{"Retry-After": "30"}})
	ctx, cancel := context.WithTimeout(t.Context(), 50*time.Millisecond)
	defer cancel()
	c := &Client{Provider: "test", HTTP: srv.Client()}
	start := time.Now()
	_, _, err := c.Do(ctx, build(srv.URL))
	if !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("err = %v", err)
	}
	if time.Since(start) > 10*time.Second {
		t.Errorf("sleep ignored the context")
	}
}

func TestDoBodyTooLarge(t *testing.T) {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		_, _ = io.WriteString(w, strings.Repeat("x", 2048))
	}))
	t.Cleanup(srv.Close)
	c := newTestClient(t, srv, &recorder{})
	c.MaxBody = 1024
	_, _, err := c.Do(t.Context(), build(srv.URL))
	if !errors.Is(err, ErrBadResponse) {
		t.Fatalf("err = %v", err)
	}
}

func TestDoErrorBodyReadIsBounded(t *testing.T) {
	var got []byte
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.WriteHeader(400)
		_, _ = io.WriteString(w, strings.Repeat("y", 1<<20))
	}))
	t.Cleanup(srv.Close)
	c := newTestClient(t, srv, &recorder{})
	c.DecodeError = func(b []byte) ErrorInfo { got = b; return ErrorInfo{Code: string(b[:10])} }
	_, _, err := c.Do(t.Context(), build(srv.URL))
	if !errors.Is(err, ErrRejected) {
		t.Fatalf("err = %v", err)
	}
	if len(got) != MaxErrorBody {
		t.Errorf("decoder saw %d bytes, want %d", len(got), MaxErrorBody)
	}
}

func TestBackoffFullJitterBounds(t *testing.T) {
	var seen []int64
	p := Policy{BaseDelay: time.Second, MaxDelay: 5 * time.Second, Jitter: func(n int64) int64 { seen = append(seen, n); return 0 }}
	for a := 1; a <= 6; a++ {
		p.Backoff(a)
	}
	want := []time.Duration{1, 2, 4, 5, 5, 5}
	for i, n := range seen {
		if time.Duration(n) != want[i]*time.Second {
			t.Errorf("attempt %d: jitter ceiling %v, want %v", i+1, time.Duration(n), want[i]*time.Second)
		}
	}
	// Default jitter stays within the ceiling.
	q := Policy{BaseDelay: 10 * time.Millisecond}
	for range 100 {
		if d := q.Backoff(3); d < 0 || d >= 40*time.Millisecond {
			t.Fatalf("backoff %v outside [0, 40ms)", d)
		}
	}
}

func TestRetryAfter(t *testing.T) {
	now := time.Date(2026, 11, 1, 12, 0, 0, 0, time.UTC)
	clock := func() time.Time { return now }
	cases := []struct {
		h    map[string]string
		want time.Duration
	}{
		{nil, 0},
		{map[string]string{"Retry-After": "0"}, 0},
		{map[string]string{"Retry-After": "12"}, 12 * time.Second},
		{map[string]string{"Retry-After": " 5 "}, 5 * time.Second},
		{map[string]string{"Retry-After": "-3"}, 0},
		{map[string]string{"Retry-After": "soon"}, 0},
		{map[string]string{"Retry-After": "99999999999999999999"}, 0},
		{map[string]string{"Retry-After": "9999999999"}, 24 * time.Hour},
		{map[string]string{"Retry-After": "Sun, 01 Nov 2026 12:01:00 GMT"}, time.Minute},
		{map[string]string{"Retry-After": "Sun, 01 Nov 2026 11:00:00 GMT"}, 0},
		{map[string]string{"Retry-After-Ms": "250", "Retry-After": "9"}, 250 * time.Millisecond},
		{map[string]string{"Retry-After-Ms": "nope", "Retry-After": "2"}, 2 * time.Second},
	}
	for _, tc := range cases {
		h := http.Header{}
		for k, v := range tc.h {
			h.Set(k, v)
		}
		if got := RetryAfter(h, clock); got != tc.want {
			t.Errorf("RetryAfter(%v) = %v, want %v", tc.h, got, tc.want)
		}
	}
}

func TestIdentifier(t *testing.T) {
	cases := map[string]string{
		"INVALID_ARGUMENT":      "INVALID_ARGUMENT",
		"invalid_request_error": "invalid_request_error",
		"Bad Request":           "Bad Request",
		"  spaced  ":            "spaced",
		"has\nnewline":          "",
		`quote"`:                "",
		"tüt":                   "",
		strings.Repeat("a", 65): "",
		"":                      "",
	}
	for in, want := range cases {
		if got := Identifier(in, 64); got != want {
			t.Errorf("Identifier(%q) = %q, want %q", in, got, want)
		}
	}
}

func TestBatches(t *testing.T) {
	sizes := []int{5, 5, 5, 20, 1, 1, 1}
	size := func(i int) int { return sizes[i] }
	cases := []struct {
		name           string
		n, items, size int
		want           [][2]int
	}{
		{"empty", 0, 3, 10, nil},
		{"count only", 7, 3, 0, [][2]int{{0, 3}, {3, 6}, {6, 7}}},
		{"size only", 7, 0, 10, [][2]int{{0, 2}, {2, 3}, {3, 4}, {4, 7}}},
		{"both", 7, 2, 10, [][2]int{{0, 2}, {2, 3}, {3, 4}, {4, 6}, {6, 7}}},
		{"no limits", 7, 0, 0, [][2]int{{0, 7}}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			got := Batches(tc.n, tc.items, tc.size, size)
			if len(got) != len(tc.want) {
				t.Fatalf("got %v, want %v", got, tc.want)
			}
			for i := range got {
				if got[i] != tc.want[i] {
					t.Fatalf("got %v, want %v", got, tc.want)
				}
			}
		})
	}
}

func FuzzRetryAfter(f *testing.F) {
	for _, s := range []string{"1", "0", "-1", "Sun, 01 Nov 2026 12:01:00 GMT", "1e9", "abc", "18446744073709551616"} {
		f.Add(s, "")
		f.Add("", s)
	}
	now := time.Date(2026, 11, 1, 12, 0, 0, 0, time.UTC)
	f.Fuzz(func(t *testing.T, ra, ms string) {
		h := http.Header{}
		h.Set("Retry-After", ra)
		h.Set("Retry-After-Ms", ms)
		d := RetryAfter(h, func() time.Time { return now })
		if d < 0 || d > 24*time.Hour {
			t.Fatalf("RetryAfter(%q, %q) = %v", ra, ms, d)
		}
	})
}

func FuzzBatches(f *testing.F) {
	f.Add(10, 3, 7, []byte{1, 2, 3, 4, 5, 6, 7, 8, 9, 10})
	f.Fuzz(func(t *testing.T, n, items, size int, sizes []byte) {
		if n < 0 || n > 1000 || len(sizes) < n {
			return
		}
		got := Batches(n, items, size, func(i int) int { return int(sizes[i]) })
		next := 0
		for _, r := range got {
			if r[0] != next || r[1] <= r[0] {
				t.Fatalf("ranges %v not contiguous and non-empty", got)
			}
			if items > 0 && r[1]-r[0] > items {
				t.Fatalf("range %v has more than %d items", r, items)
			}
			total := 0
			for i := r[0]; i < r[1]; i++ {
				total += int(sizes[i])
			}
			if size > 0 && total > size && r[1]-r[0] > 1 {
				t.Fatalf("range %v totals %d > %d", r, total, size)
			}
			next = r[1]
		}
		if next != n {
			t.Fatalf("ranges %v do not cover %d items", got, n)
		}
	})
}
