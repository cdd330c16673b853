// Package ratelimit is the rate-limit port: GCRA limits keyed by a string
// (a user's keyed hash, a client IP, a route). Production adapter: Redis
// (shared across instances); embedded: in-process.
package ratelimit

import (
	"context"
	"errors"
	"time"
)

// ErrUnavailable: the limiter's backend does not answer.
var ErrUnavailable = errors.New("ratelimit: backend unavailable")

// Limit allows Rate events per Period with bursts of up to Burst.
type Limit struct {
	Rate   int
	Burst  int
	Period time.Duration
}

// PerMinute is a convenience constructor.
func PerMinute(rate, burst int) Limit { return Limit{Rate: rate, Burst: burst, Period: time.Minute} }

// Result of one Allow call.
type Result struct {
	Allowed    bool
	Remaining  int
	RetryAfter time.Duration // when not allowed: how long until one event would be
	ResetAfter time.Duration // until the limiter is back to a full burst
}

// Limiter is the rate-limit port.
type Limiter interface {
	// Allow counts one event against key under limit.
	Allow(ctx context.Context, key string, limit Limit) (Result, error)
	// Forget drops the state of keys (an erased user's counters) and
	// returns how many were held.
	Forget(ctx context.Context, keys ...string) (int, error)
	// Held counts how many of keys have state (erasure verifies zero).
	Held(ctx context.Context, keys ...string) (int, error)
}
