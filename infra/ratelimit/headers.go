package ratelimit

import (
	"net/http"
	"strconv"
	"time"
)

// WriteHeaders sets the rate-limit response headers for r under l:
// RateLimit-Limit (the burst: what a fresh client may send at once),
// RateLimit-Remaining and RateLimit-Reset (seconds until the burst is whole
// again), as in the IETF httpapi RateLimit header fields draft, and, on a
// denial, Retry-After in whole seconds rounded up and at least 1 (a client
// told "0" would retry at once). Call it before WriteHeader.
func WriteHeaders(w http.ResponseWriter, r Result, l Limit) {
	h := w.Header()
	h.Set("RateLimit-Limit", strconv.Itoa(max(l.Burst, 0)))
	h.Set("RateLimit-Remaining", strconv.Itoa(max(r.Remaining, 0)))
	h.Set("RateLimit-Reset", strconv.FormatInt(ceilSeconds(r.ResetAfter), 10))
	if r.Allowed {
		h.Del("Retry-After")
		return
	}
	h.Set("Retry-After", strconv.FormatInt(max(ceilSeconds(r.RetryAfter), 1), 10))
}

// ceilSeconds rounds d up to whole seconds; 0 for d ≤ 0.
func ceilSeconds(d time.Duration) int64 {
	if d <= 0 {
		return 0
	}
	s := int64(d / time.Second)
	if d%time.Second != 0 {
		s++
	}
	return s
}
