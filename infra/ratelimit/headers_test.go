package ratelimit_test

import (
	"net/http/httptest"
	"testing"
	"time"

	"github.com/lethe-dev/lethe/infra/ratelimit"
)

func TestWriteHeaders(t *testing.T) {
	l := ratelimit.PerMinute(60, 10)
	tests := []struct {
		name                         string
		r                            ratelimit.Result
		limit, remaining, reset, ret string // ret "" = no Retry-After
	}{
		{"allowed", ratelimit.Result{Allowed: true, Remaining: 7, ResetAfter: 3 * time.Second}, "10", "7", "3", ""},
		{"allowedResetRoundsUp", ratelimit.Result{Allowed: true, Remaining: 9, ResetAfter: 1001 * time.Millisecond}, "10", "9", "2", ""},
		{"deniedWholeSeconds", ratelimit.Result{RetryAfter: 2 * time.Second, ResetAfter: 10 * time.Second}, "10", "0", "10", "2"},
		{"deniedRoundsUp", ratelimit.Result{RetryAfter: 2*time.Second + time.Nanosecond, ResetAfter: 9500 * time.Millisecond}, "10", "0", "10", "3"},
		{"deniedSubSecondIsOne", ratelimit.Result{RetryAfter: 10 * time.Millisecond, ResetAfter: 10 * time.Millisecond}, "10", "0", "1", "1"},
		{"deniedZeroIsOne", ratelimit.Result{}, "10", "0", "0", "1"},
		{"negativeClamped", ratelimit.Result{Allowed: true, Remaining: -1, ResetAfter: -time.Second}, "10", "0", "0", ""},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			w := httptest.NewRecorder()
			w.Header().Set("Retry-After", "99") // stale value from an earlier layer
			ratelimit.WriteHeaders(w, tc.r, l)
			h := w.Header()
			for name, want := range map[string]string{
				"RateLimit-Limit": tc.limit, "RateLimit-Remaining": tc.remaining,
				"RateLimit-Reset": tc.reset, "Retry-After": tc.ret,
			} {
				if got := h.Get(name); got != want {
					t.Errorf("%s = %q, want %q", name, got, want)
				}
			}
		})
	}
}
