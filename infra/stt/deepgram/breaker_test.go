package deepgram_test

import (
	"context"
	"errors"
	"net/http"
	"net/http/httptest"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/lethe-dev/lethe/infra/audio"
	"github.com/lethe-dev/lethe/infra/breaker"
	"github.com/lethe-dev/lethe/infra/stt"
	"github.com/lethe-dev/lethe/infra/stt/deepgram"
)

// TestBreakerStopsHammeringAFailingProvider: a provider answering 429 and
// 500 (or too slowly) is retried with bounded backoff per call; after a few
// such calls the breaker fails fast without calling it; once the cooldown
// has passed, a probe finds it back and the circuit closes.
func TestBreakerStopsHammeringAFailingProvider(t *testing.T) {
	for _, failure := range []string{"429", "500", "timeout"} {
		t.Run(failure, func(t *testing.T) {
			var hits atomic.Int64
			var mu sync.Mutex
			healthy := false
			srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				hits.Add(1)
				mu.Lock()
				ok := healthy
				mu.Unlock()
				switch {
				case ok:
					w.Header().Set("Content-Type", "application/json")
					_, _ = w.Write([]byte(`{"metadata":{"request_id":"r1"},"results":{"channels":[{"alternatives":[{"transcript":"back again","words":[]}]}]}}`))
				case failure == "429":
					w.Header().Set("Retry-After", "0")
					w.WriteHeader(http.StatusTooManyRequests)
				case failure == "500":
					w.WriteHeader(http.StatusInternalServerError)
				default:
					select {
					case <-r.Context().Done():
					case <-time.After(2 * time.Second):
					}
				}
			}))
			defer srv.Close()
			dg, err := deepgram.New(deepgram.Config{APIKey: "k", BaseURL: srv.URL, MaxAttempts: 2,
				BaseDelay: time.Millisecond, MaxDelay: time.Millisecond,
				HTTPClient: &http.Client{Timeout: 50 * time.Millisecond}})
			if err != nil {
				t.Fatal(err)
			}
			now := time.Unix(1_800_000_000, 0)
			var clockMu sync.Mutex
			b := &breaker.Breaker{Threshold: 3, Cooldown: time.Minute, Trips: stt.Unavailable,
				Now: func() time.Time { clockMu.Lock(); defer clockMu.Unlock(); return now }}
			tr := stt.WithBreaker(dg, b)
			pcm := audio.PCM{SampleRate: 16000, Samples: make([]int16, 1600)}
			for i := range 3 {
				if _, err := tr.Transcribe(context.Background(), pcm); !stt.Unavailable(err) {
					t.Fatalf("call %d: %v, want unavailable", i, err)
				}
			}
			if b.State() != breaker.Open {
				t.Fatalf("state %s after 3 failing calls", b.State())
			}
			before := hits.Load()
			if before > 3*2 {
				t.Fatalf("%d requests for 3 calls of at most 2 attempts", before)
			}
			for range 20 {
				if _, err := tr.Transcribe(context.Background(), pcm); !errors.Is(err, breaker.ErrOpen) {
					t.Fatalf("open circuit: %v", err)
				}
			}
			if hits.Load() != before {
				t.Fatalf("the open circuit sent %d requests", hits.Load()-before)
			}
			mu.Lock()
			healthy = true
			mu.Unlock()
			clockMu.Lock()
			now = now.Add(2 * time.Minute)
			clockMu.Unlock()
			got, err := tr.Transcribe(context.Background(), pcm)
			if err != nil || got.Text != "back again" || b.State() != breaker.Closed {
				t.Fatalf("after recovery: %q %v, state %s", got.Text, err, b.State())
			}
		})
	}
}
