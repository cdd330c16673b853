package ratelimit

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"time"
)

// Mode says what a route does when the shared limiter is unavailable.
type Mode int

const (
	// FailClosed refuses the request (ErrUnavailable, answered 503) while the
	// shared limiter is down: for unauthenticated and expensive routes, where
	// per-instance counting would multiply an attacker's budget by the number
	// of instances. The zero Mode, so a route that forgets to choose is safe.
	FailClosed Mode = iota
	// FallbackLocal counts against the in-process limiter while the shared
	// one is down: for authenticated per-user limits, where a degraded,
	// per-instance limit beats refusing every user.
	FallbackLocal
)

func (m Mode) String() string {
	switch m {
	case FailClosed:
		return "fail-closed"
	case FallbackLocal:
		return "fallback-local"
	}
	return fmt.Sprintf("Mode(%d)", int(m))
}

// DefaultCooldown is how long Fallback skips a primary that was unavailable
// before trying it again.
const DefaultCooldown = time.Second

// Fallback applies the outage policy on top of a shared (primary) limiter and
// an in-process (local) one. After the primary reports ErrUnavailable it is
// not called again for a cooldown, so an outage costs each request nothing
// rather than a connect timeout. Other primary errors (invalid input, a
// canceled context, a bug) are returned as they are, in either mode. Safe for
// concurrent use.
type Fallback struct {
	primary  Limiter
	local    Limiter
	logger   *slog.Logger
	cooldown time.Duration
	now      func() time.Time

	mu sync.Mutex
	// downUntil: skip the primary until then (zero when healthy).
	downUntil time.Time
	// degraded: an outage was logged and its recovery not yet.
	degraded bool
}

// FallbackOption configures a Fallback.
type FallbackOption func(*Fallback)

// WithCooldown sets how long an unavailable primary is skipped (default
// DefaultCooldown; zero or less tries it on every call).
func WithCooldown(d time.Duration) FallbackOption {
	return func(f *Fallback) { f.cooldown = d }
}

// WithClock sets the clock the cooldown is measured on (tests).
func WithClock(now func() time.Time) FallbackOption {
	return func(f *Fallback) { f.now = now }
}

// NewFallback returns a Fallback over primary (shared, e.g. Redis) and local
// (in-process). A nil local makes FallbackLocal behave as FailClosed; a nil
// logger discards. The outage and the recovery are each logged once.
func NewFallback(primary, local Limiter, logger *slog.Logger, opts ...FallbackOption) *Fallback {
	if logger == nil {
		logger = slog.New(slog.DiscardHandler)
	}
	f := &Fallback{primary: primary, local: local, logger: logger, cooldown: DefaultCooldown, now: time.Now}
	for _, o := range opts {
		o(f)
	}
	return f
}

// Allow counts one event against key under limit on the primary; while the
// primary is unavailable, mode decides: FallbackLocal counts on the local
// limiter, FailClosed returns an error wrapping ErrUnavailable.
func (f *Fallback) Allow(ctx context.Context, key string, limit Limit, mode Mode) (Result, error) {
	if f.primary == nil {
		return Result{}, errors.New("ratelimit.Fallback: no primary limiter")
	}
	var cause error
	if f.primaryDown() {
		cause = errors.New("skipped during cooldown")
	} else {
		r, err := f.primary.Allow(ctx, key, limit)
		if err == nil {
			f.markUp()
			return r, nil
		}
		if !errors.Is(err, ErrUnavailable) {
			return Result{}, err
		}
		f.markDown(err)
		cause = err
	}
	if mode == FallbackLocal && f.local != nil {
		r, err := f.local.Allow(ctx, key, limit)
		if err != nil {
			return Result{}, fmt.Errorf("ratelimit.Fallback local: %w", err)
		}
		return r, nil
	}
	return Result{}, fmt.Errorf("ratelimit.Fallback (%s): %w", mode, unavailable(cause))
}

// Forget drops the keys on the primary and the local limiter (a user's
// counters may be in either); the primary must answer, since an erasure
// cannot verify what it cannot reach.
func (f *Fallback) Forget(ctx context.Context, keys ...string) (int, error) {
	return f.both(ctx, func(l Limiter) (int, error) { return l.Forget(ctx, keys...) })
}

// Held counts the keys held on the primary and the local limiter.
func (f *Fallback) Held(ctx context.Context, keys ...string) (int, error) {
	return f.both(ctx, func(l Limiter) (int, error) { return l.Held(ctx, keys...) })
}

func (f *Fallback) both(ctx context.Context, fn func(Limiter) (int, error)) (int, error) {
	if f.primary == nil {
		return 0, errors.New("ratelimit.Fallback: no primary limiter")
	}
	n, err := fn(f.primary)
	if err != nil {
		return 0, fmt.Errorf("ratelimit.Fallback primary: %w", err)
	}
	if f.local != nil && f.local != f.primary {
		m, err := fn(f.local)
		if err != nil {
			return n, fmt.Errorf("ratelimit.Fallback local: %w", err)
		}
		n += m
	}
	return n, nil
}

// unavailable makes sure err wraps ErrUnavailable.
func unavailable(err error) error {
	if errors.Is(err, ErrUnavailable) {
		return err
	}
	return fmt.Errorf("%w: %w", ErrUnavailable, err)
}

// For returns f bound to mode as a Limiter, so each route's middleware can be
// given the policy it needs (e.g. For(FailClosed) on sign-in, For(FallbackLocal)
// on per-user reads).
func (f *Fallback) For(mode Mode) Limiter { return boundFallback{f: f, mode: mode} }

type boundFallback struct {
	f    *Fallback
	mode Mode
}

func (b boundFallback) Allow(ctx context.Context, key string, limit Limit) (Result, error) {
	return b.f.Allow(ctx, key, limit, b.mode)
}

func (b boundFallback) Forget(ctx context.Context, keys ...string) (int, error) {
	return b.f.Forget(ctx, keys...)
}

func (b boundFallback) Held(ctx context.Context, keys ...string) (int, error) {
	return b.f.Held(ctx, keys...)
}

// Degraded reports whether the primary is currently considered down (for
// readiness output and metrics).
func (f *Fallback) Degraded() bool {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.degraded
}

func (f *Fallback) primaryDown() bool {
	f.mu.Lock()
	defer f.mu.Unlock()
	return !f.downUntil.IsZero() && f.now().Before(f.downUntil)
}

func (f *Fallback) markDown(err error) {
	f.mu.Lock()
	f.downUntil = f.now().Add(f.cooldown)
	first := !f.degraded
	f.degraded = true
	f.mu.Unlock()
	if first {
		// The error names the backend call and address, never the key.
		f.logger.Warn("rate limiter backend unavailable: per-user limits are per instance, fail-closed routes answer 503",
			"err", err.Error(), "cooldown", f.cooldown.String())
	}
}

func (f *Fallback) markUp() {
	f.mu.Lock()
	recovered := f.degraded
	f.degraded = false
	f.downUntil = time.Time{}
	f.mu.Unlock()
	if recovered {
		f.logger.Info("rate limiter backend recovered")
	}
}
