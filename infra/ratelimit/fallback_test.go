package ratelimit_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/lethe-dev/lethe/infra/ratelimit"
	"github.com/lethe-dev/lethe/infra/ratelimit/memlimit"
	"github.com/lethe-dev/lethe/infra/ratelimit/ratelimittest"
)

// fakePrimary answers with err when set, else allows with Remaining 42 (a
// value the local limiter never gives, to tell the answers apart).
type fakePrimary struct {
	calls atomic.Int64
	mu    sync.Mutex
	err   error
}

func (p *fakePrimary) setErr(err error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.err = err
}

func (p *fakePrimary) Allow(ctx context.Context, key string, limit ratelimit.Limit) (ratelimit.Result, error) {
	p.calls.Add(1)
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.err != nil {
		return ratelimit.Result{}, p.err
	}
	return ratelimit.Result{Allowed: true, Remaining: 42}, nil
}

// Forget and Held answer err when set; the fake holds no state.
func (p *fakePrimary) Forget(ctx context.Context, keys ...string) (int, error) {
	return p.Held(ctx, keys...)
}

func (p *fakePrimary) Held(ctx context.Context, keys ...string) (int, error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	return 0, p.err
}

// countingLimiter counts calls to the limiter it wraps.
type countingLimiter struct {
	ratelimit.Limiter
	calls atomic.Int64
}

func (c *countingLimiter) Allow(ctx context.Context, key string, limit ratelimit.Limit) (ratelimit.Result, error) {
	c.calls.Add(1)
	return c.Limiter.Allow(ctx, key, limit)
}

var (
	errRedisDown = fmt.Errorf("redis_rate.Allow: %w: dial tcp 127.0.0.1:6379: connect: connection refused", ratelimit.ErrUnavailable)
	limit        = ratelimit.PerMinute(1, 2)
)

type fixture struct {
	primary *fakePrimary
	local   *countingLimiter
	clock   *ratelimittest.Clock
	logs    *bytes.Buffer
	f       *ratelimit.Fallback
}

func newFixture(t *testing.T) *fixture {
	t.Helper()
	clock := ratelimittest.NewClock(time.Unix(1_800_000_000, 0))
	fx := &fixture{
		primary: &fakePrimary{},
		local:   &countingLimiter{Limiter: memlimit.New(memlimit.Options{Now: clock.Now})},
		clock:   clock,
		logs:    &bytes.Buffer{},
	}
	logger := slog.New(slog.NewJSONHandler(&lockedWriter{w: fx.logs}, nil))
	fx.f = ratelimit.NewFallback(fx.primary, fx.local, logger, ratelimit.WithCooldown(time.Second), ratelimit.WithClock(clock.Now))
	return fx
}

type lockedWriter struct {
	mu sync.Mutex
	w  *bytes.Buffer
}

func (l *lockedWriter) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.w.Write(p)
}

func TestFallbackHealthyPrimary(t *testing.T) {
	for _, mode := range []ratelimit.Mode{ratelimit.FailClosed, ratelimit.FallbackLocal} {
		t.Run(mode.String(), func(t *testing.T) {
			fx := newFixture(t)
			r, err := fx.f.Allow(t.Context(), t.Name(), limit, mode)
			if err != nil || r.Remaining != 42 {
				t.Fatalf("Allow: %+v, %v; want the primary's answer", r, err)
			}
			if n := fx.local.calls.Load(); n != 0 {
				t.Errorf("local called %d times with a healthy primary", n)
			}
			if fx.f.Degraded() {
				t.Error("Degraded with a healthy primary")
			}
		})
	}
}

func TestFallbackOutage(t *testing.T) {
	tests := []struct {
		mode      ratelimit.Mode
		wantLocal bool
	}{
		{ratelimit.FallbackLocal, true},
		{ratelimit.FailClosed, false},
		{ratelimit.Mode(0), false}, // the zero Mode fails closed
	}
	for _, tc := range tests {
		t.Run(tc.mode.String(), func(t *testing.T) {
			fx := newFixture(t)
			fx.primary.setErr(errRedisDown)
			key := t.Name()
			for i := range 3 {
				r, err := fx.f.Allow(t.Context(), key, limit, tc.mode)
				if !tc.wantLocal {
					if !errors.Is(err, ratelimit.ErrUnavailable) {
						t.Fatalf("call %d: %+v, %v; want ErrUnavailable (503)", i+1, r, err)
					}
					continue
				}
				if err != nil {
					t.Fatalf("call %d: %v; want the local limiter's answer", i+1, err)
				}
				// The local limiter enforces the same limit: burst 2.
				if want := i < 2; r.Allowed != want || r.Remaining == 42 {
					t.Errorf("call %d: %+v; want local Allowed=%v", i+1, r, want)
				}
			}
			if got, want := fx.local.calls.Load() > 0, tc.wantLocal; got != want {
				t.Errorf("local used = %v, want %v", got, want)
			}
			if !fx.f.Degraded() {
				t.Error("not Degraded during an outage")
			}
		})
	}
}

func TestFallbackCooldownAndRecovery(t *testing.T) {
	fx := newFixture(t)
	ctx := t.Context()
	fx.primary.setErr(errRedisDown)
	if _, err := fx.f.Allow(ctx, "k", limit, ratelimit.FallbackLocal); err != nil {
		t.Fatal(err)
	}
	// Within the cooldown the primary is not asked, in either mode.
	for range 5 {
		_, _ = fx.f.Allow(ctx, "k", limit, ratelimit.FallbackLocal)
		if _, err := fx.f.Allow(ctx, "k", limit, ratelimit.FailClosed); !errors.Is(err, ratelimit.ErrUnavailable) {
			t.Fatalf("FailClosed during cooldown: %v, want ErrUnavailable", err)
		}
	}
	if n := fx.primary.calls.Load(); n != 1 {
		t.Fatalf("primary called %d times during the cooldown, want 1", n)
	}
	fx.primary.setErr(nil)
	fx.clock.Advance(999 * time.Millisecond)
	_, _ = fx.f.Allow(ctx, "k", limit, ratelimit.FallbackLocal)
	if n := fx.primary.calls.Load(); n != 1 {
		t.Fatalf("primary called before the cooldown ended")
	}
	fx.clock.Advance(time.Millisecond)
	r, err := fx.f.Allow(ctx, "k", limit, ratelimit.FailClosed)
	if err != nil || r.Remaining != 42 {
		t.Fatalf("after the cooldown: %+v, %v; want the primary's answer", r, err)
	}
	if fx.f.Degraded() {
		t.Error("still Degraded after the primary answered")
	}
	// One warning for the outage, one notice for the recovery, no key.
	logs := fx.logs.String()
	if n := strings.Count(logs, `"level":"WARN"`); n != 1 {
		t.Errorf("%d warnings logged, want 1:\n%s", n, logs)
	}
	if n := strings.Count(logs, "recovered"); n != 1 {
		t.Errorf("%d recoveries logged, want 1:\n%s", n, logs)
	}
	if strings.Contains(logs, `"k"`) {
		t.Errorf("logs mention the key:\n%s", logs)
	}
}

// TestFallbackOtherErrors: errors that are not outages pass through, in
// both modes, and do not start a cooldown.
func TestFallbackOtherErrors(t *testing.T) {
	for _, perr := range []error{
		fmt.Errorf("redislimit.Allow: %w", ratelimit.ErrInvalidLimit),
		fmt.Errorf("redis_rate.Allow: %w", context.Canceled),
		errors.New("WRONGTYPE Operation against a key holding the wrong kind of value"),
	} {
		for _, mode := range []ratelimit.Mode{ratelimit.FailClosed, ratelimit.FallbackLocal} {
			fx := newFixture(t)
			fx.primary.setErr(perr)
			_, err := fx.f.Allow(t.Context(), "k", limit, mode)
			if !errors.Is(err, perr) || errors.Is(err, ratelimit.ErrUnavailable) {
				t.Errorf("%s, primary %v: err = %v, want it unchanged", mode, perr, err)
			}
			if n := fx.local.calls.Load(); n != 0 {
				t.Errorf("%s, primary %v: local called", mode, perr)
			}
			_, _ = fx.f.Allow(t.Context(), "k", limit, mode)
			if n := fx.primary.calls.Load(); n != 2 {
				t.Errorf("%s, primary %v: primary called %d times, want 2 (no cooldown)", mode, perr, n)
			}
		}
	}
}

func TestFallbackNilLocalFailsClosed(t *testing.T) {
	p := &fakePrimary{}
	p.setErr(errRedisDown)
	f := ratelimit.NewFallback(p, nil, nil)
	if _, err := f.Allow(t.Context(), "k", limit, ratelimit.FallbackLocal); !errors.Is(err, ratelimit.ErrUnavailable) {
		t.Errorf("FallbackLocal without local: %v, want ErrUnavailable", err)
	}
	if _, err := ratelimit.NewFallback(nil, nil, nil).Allow(t.Context(), "k", limit, ratelimit.FallbackLocal); err == nil {
		t.Error("nil primary: no error")
	}
}

func TestFallbackFor(t *testing.T) {
	fx := newFixture(t)
	fx.primary.setErr(errRedisDown)
	var perUser, signIn ratelimit.Limiter = fx.f.For(ratelimit.FallbackLocal), fx.f.For(ratelimit.FailClosed)
	if r, err := perUser.Allow(t.Context(), "u", limit); err != nil || !r.Allowed {
		t.Errorf("For(FallbackLocal): %+v, %v", r, err)
	}
	if _, err := signIn.Allow(t.Context(), "ip", limit); !errors.Is(err, ratelimit.ErrUnavailable) {
		t.Errorf("For(FailClosed): %v, want ErrUnavailable", err)
	}
}

// TestFallbackConcurrent: outages and recoveries racing with callers (run
// with -race) never lose a call's answer.
func TestFallbackConcurrent(t *testing.T) {
	fx := newFixture(t)
	var wg sync.WaitGroup
	var bad atomic.Int64
	for g := range 20 {
		wg.Go(func() {
			for i := range 200 {
				if g == 0 && i%10 == 0 {
					if i%20 == 0 {
						fx.primary.setErr(errRedisDown)
					} else {
						fx.primary.setErr(nil)
					}
					fx.clock.Advance(2 * time.Second)
				}
				_, err := fx.f.Allow(context.Background(), fmt.Sprint("k", g), ratelimit.PerMinute(1000, 1000), ratelimit.FallbackLocal)
				if err != nil {
					bad.Add(1)
				}
			}
		})
	}
	wg.Wait()
	if n := bad.Load(); n != 0 {
		t.Errorf("%d FallbackLocal calls failed", n)
	}
}

// TestFallbackForgetCoversBothAndNeedsThePrimary: a user's counters may sit
// in either limiter; an erasure cannot verify a primary it cannot reach.
func TestFallbackForgetCoversBothAndNeedsThePrimary(t *testing.T) {
	fx := newFixture(t)
	ctx := t.Context()
	fx.primary.setErr(errRedisDown)
	if _, err := fx.f.Allow(ctx, "user:x", limit, ratelimit.FallbackLocal); err != nil {
		t.Fatal(err)
	}
	if _, err := fx.f.Held(ctx, "user:x"); !errors.Is(err, ratelimit.ErrUnavailable) {
		t.Fatalf("Held with the primary down: %v, want ErrUnavailable", err)
	}
	fx.primary.setErr(nil)
	if n, err := fx.f.Held(ctx, "user:x", "user:y"); err != nil || n != 1 {
		t.Fatalf("Held = %d, %v; want the local counter", n, err)
	}
	if n, err := fx.f.Forget(ctx, "user:x"); err != nil || n != 1 {
		t.Fatalf("Forget = %d, %v", n, err)
	}
	if n, err := fx.f.Held(ctx, "user:x"); err != nil || n != 0 {
		t.Fatalf("Held after Forget = %d, %v", n, err)
	}
}
