// Package ratelimittest is the conformance suite of the rate-limit port. The
// in-process and the Redis adapters both run it through a Harness, so they
// keep the same GCRA semantics (those of github.com/go-redis/redis_rate/v10).
//
// Redis' clock cannot be faked, so tests that need time to pass run only when
// the harness declares ControlsClock. The other tests count instead of timing:
// their limits have emission intervals of a minute or more, so the few
// milliseconds a test takes never refill a token, and they never sleep.
// Intervals are whole seconds because Redis computes in float64 seconds, where
// whole numbers are exact and fractions like 0.1 are not.
package ratelimittest

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/lethe-dev/lethe/infra/ratelimit"
)

// Capabilities declares what differs between backends.
type Capabilities struct {
	// ControlsClock: Harness.Advance moves the clock of the harness's
	// limiters, so refill can be tested exactly.
	ControlsClock bool
	// SharedState: limiters made by one harness share their counts, as
	// instances sharing one Redis do. Otherwise each limiter counts alone.
	SharedState bool
}

// Harness makes limiters for one test. Keys used by the suite are named from
// t.Name(); a harness over a shared backend also gives each run its own key
// prefix so parallel runs do not collide, and removes its keys on Close.
type Harness interface {
	// MakeLimiter returns a limiter with no key limited yet.
	MakeLimiter(ctx context.Context) (ratelimit.Limiter, error)
	// Advance moves the clock forward; called only when ControlsClock.
	Advance(d time.Duration)
	Capabilities() Capabilities
	// Close releases the harness's resources and keys.
	Close()
}

// HarnessMaker makes a Harness for t.
type HarnessMaker func(ctx context.Context, t *testing.T) (Harness, error)

// RunConformanceTests runs the suite against the adapter newHarness makes.
func RunConformanceTests(t *testing.T, newHarness HarnessMaker) {
	t.Helper()
	tests := []struct {
		name string
		fn   func(t *testing.T, f *fixture)
	}{
		{"BurstThenDeny", testBurstThenDeny},
		{"RemainingDecreases", testRemainingDecreases},
		{"DenialsDoNotConsume", testDenialsDoNotConsume},
		{"KeyIsolation", testKeyIsolation},
		{"LimitsPerKey", testLimitsPerKey},
		{"LimitChangeKeepsState", testLimitChangeKeepsState},
		{"Concurrent", testConcurrent},
		{"Instances", testInstances},
		{"InvalidInput", testInvalidInput},
		{"CanceledContext", testCanceledContext},
		{"Refill", testRefill},
		{"RefillCapsAtBurst", testRefillCapsAtBurst},
		{"SustainedRate", testSustainedRate},
		{"ForgetAndHeld", testForgetAndHeld},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			tc.fn(t, newFixture(t, newHarness))
		})
	}
}

// Clock is a fake clock for harnesses that control time. Safe for
// concurrent use.
type Clock struct {
	mu  sync.Mutex
	now time.Time
}

// NewClock returns a clock reading t0.
func NewClock(t0 time.Time) *Clock { return &Clock{now: t0} }

// Now reads the clock.
func (c *Clock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.now
}

// Advance moves the clock forward by d.
func (c *Clock) Advance(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.now = c.now.Add(d)
}

// fixture holds the harness and a limiter for one test.
type fixture struct {
	ctx context.Context
	h   Harness
	l   ratelimit.Limiter
	// base keeps keys unique per test: t.Name() is unique in a run.
	base string
}

func newFixture(t *testing.T, newHarness HarnessMaker) *fixture {
	t.Helper()
	ctx := t.Context()
	h, err := newHarness(ctx, t)
	if err != nil {
		t.Fatalf("newHarness: %v", err)
	}
	t.Cleanup(h.Close)
	l, err := h.MakeLimiter(ctx)
	if err != nil {
		t.Fatalf("MakeLimiter: %v", err)
	}
	return &fixture{ctx: ctx, h: h, l: l, base: t.Name()}
}

func (f *fixture) key(name string) string { return f.base + "/" + name }

// allow calls Allow and fails the test on error.
func (f *fixture) allow(t *testing.T, l ratelimit.Limiter, key string, limit ratelimit.Limit) ratelimit.Result {
	t.Helper()
	r, err := l.Allow(f.ctx, key, limit)
	if err != nil {
		t.Fatalf("Allow(%q, %+v): %v", key, limit, err)
	}
	return r
}

// drain calls Allow until the first denial and returns how many were allowed
// (at most max+1 calls, so a limiter that never denies fails the test).
func (f *fixture) drain(t *testing.T, l ratelimit.Limiter, key string, limit ratelimit.Limit, max int) int {
	t.Helper()
	for n := 0; n <= max; n++ {
		if r := f.allow(t, l, key, limit); !r.Allowed {
			return n
		}
	}
	t.Fatalf("key %q: %d calls allowed under %+v, want a denial", key, max+1, limit)
	return 0
}

func (f *fixture) needClock(t *testing.T) {
	t.Helper()
	if !f.h.Capabilities().ControlsClock {
		t.Skip("harness does not control the clock (Capabilities.ControlsClock)")
	}
}

// perMinute is Burst events at once, then one per minute.
func perMinute(burst int) ratelimit.Limit {
	return ratelimit.Limit{Rate: 1, Burst: burst, Period: time.Minute}
}

// within checks lo < d ≤ hi.
func within(t *testing.T, what string, d, lo, hi time.Duration) {
	t.Helper()
	if d <= lo || d > hi {
		t.Errorf("%s = %s, want in (%s, %s]", what, d, lo, hi)
	}
}

func testBurstThenDeny(t *testing.T, f *fixture) {
	const burst = 5
	limit := perMinute(burst)
	interval := limit.Emission()
	// slack: how much real time a backend with a real clock may see pass.
	slack := interval / 2
	key := f.key("k")
	for i := range burst {
		r := f.allow(t, f.l, key, limit)
		if !r.Allowed {
			t.Fatalf("call %d denied, want the first %d allowed", i+1, burst)
		}
		if r.RetryAfter != 0 {
			t.Errorf("call %d: RetryAfter = %s, want 0 when allowed", i+1, r.RetryAfter)
		}
		// After i+1 events the limiter is a full burst again in (i+1) intervals.
		n := time.Duration(i + 1)
		within(t, fmt.Sprintf("call %d: ResetAfter", i+1), r.ResetAfter, n*interval-slack, n*interval)
	}
	r := f.allow(t, f.l, key, limit)
	if r.Allowed {
		t.Fatalf("call %d allowed, want denied after a burst of %d", burst+1, burst)
	}
	if r.Remaining != 0 {
		t.Errorf("denied: Remaining = %d, want 0", r.Remaining)
	}
	within(t, "denied: RetryAfter", r.RetryAfter, 0, interval)
	within(t, "denied: RetryAfter", r.RetryAfter, interval-slack, interval)
	within(t, "denied: ResetAfter", r.ResetAfter, burst*interval-slack, burst*interval)
}

func testRemainingDecreases(t *testing.T, f *fixture) {
	const burst = 8
	limit := perMinute(burst)
	key := f.key("k")
	for i := range burst {
		r := f.allow(t, f.l, key, limit)
		if want := burst - 1 - i; !r.Allowed || r.Remaining != want {
			t.Fatalf("call %d: Allowed=%v Remaining=%d, want true %d", i+1, r.Allowed, r.Remaining, want)
		}
	}
}

// testDenialsDoNotConsume: GCRA stores nothing on a denial, so a client that
// keeps calling while limited waits no longer than one that stops.
func testDenialsDoNotConsume(t *testing.T, f *fixture) {
	limit := perMinute(2)
	key := f.key("k")
	if n := f.drain(t, f.l, key, limit, 2); n != 2 {
		t.Fatalf("allowed %d, want 2", n)
	}
	prev := limit.Emission()
	for i := range 10 {
		r := f.allow(t, f.l, key, limit)
		if r.Allowed {
			t.Fatalf("denial %d: allowed", i+1)
		}
		if r.RetryAfter > prev {
			t.Fatalf("denial %d: RetryAfter grew to %s from %s: denials are being counted", i+1, r.RetryAfter, prev)
		}
		prev = r.RetryAfter
	}
	if f.h.Capabilities().ControlsClock {
		f.h.Advance(limit.Emission())
		if n := f.drain(t, f.l, key, limit, 2); n != 1 {
			t.Errorf("one interval after the denials: allowed %d, want 1", n)
		}
	}
}

func testKeyIsolation(t *testing.T, f *fixture) {
	limit := perMinute(3)
	a := f.key("a")
	if n := f.drain(t, f.l, a, limit, 3); n != 3 {
		t.Fatalf("key a: allowed %d, want 3", n)
	}
	// Keys that share a prefix, extend one, or differ in case are distinct.
	for _, k := range []string{f.key("A"), f.key("ab"), f.key(""), a + " ", strings.TrimSuffix(a, "a") + "b"} {
		r := f.allow(t, f.l, k, limit)
		if !r.Allowed || r.Remaining != 2 {
			t.Errorf("key %q after exhausting %q: Allowed=%v Remaining=%d, want true 2", k, a, r.Allowed, r.Remaining)
		}
	}
	if r := f.allow(t, f.l, a, limit); r.Allowed {
		t.Errorf("key a allowed again after other keys were used")
	}
}

func testLimitsPerKey(t *testing.T, f *fixture) {
	tests := []struct {
		name  string
		limit ratelimit.Limit
	}{
		{"burst1", perMinute(1)},
		{"burst2", perMinute(2)},
		{"burst7", perMinute(7)},
		{"hourly", ratelimit.Limit{Rate: 1, Burst: 4, Period: time.Hour}},
		{"perMinuteHelper", ratelimit.PerMinute(1, 3)},
		{"manyPerDay", ratelimit.Limit{Rate: 24, Burst: 6, Period: 24 * time.Hour}},
	}
	// Interleave the keys so a limiter that mixes them up is caught.
	allowed := make([]int, len(tests))
	denied := make([]ratelimit.Result, len(tests))
	for round := range 10 {
		for i, tc := range tests {
			r := f.allow(t, f.l, f.key(tc.name), tc.limit)
			switch {
			case r.Allowed && denied[i] != (ratelimit.Result{}):
				t.Fatalf("%s: allowed in round %d after a denial", tc.name, round)
			case r.Allowed:
				allowed[i]++
			case denied[i] == (ratelimit.Result{}):
				denied[i] = r
			}
		}
	}
	for i, tc := range tests {
		if allowed[i] != tc.limit.Burst {
			t.Errorf("%s: allowed %d, want burst %d", tc.name, allowed[i], tc.limit.Burst)
		}
		e := tc.limit.Emission()
		within(t, tc.name+": RetryAfter", denied[i].RetryAfter, e/2, e)
	}
}

// testLimitChangeKeepsState: the state is the key's TAT alone, so a key used
// under one limit is judged under a new one by the same TAT (as in
// redis_rate): used 2 of 2, it then has 3 left under a burst of 5.
func testLimitChangeKeepsState(t *testing.T, f *fixture) {
	key := f.key("k")
	if n := f.drain(t, f.l, key, perMinute(2), 2); n != 2 {
		t.Fatalf("allowed %d under burst 2, want 2", n)
	}
	if n := f.drain(t, f.l, key, perMinute(5), 5); n != 3 {
		t.Errorf("allowed %d more under burst 5, want 3", n)
	}
}

func testConcurrent(t *testing.T, f *fixture) {
	const (
		goroutines = 50
		calls      = 3
		burst      = 20
	)
	limit := perMinute(burst)
	key := f.key("k")
	var (
		mu        sync.Mutex
		remaining []int
		errs      []error
		wg        sync.WaitGroup
	)
	start := make(chan struct{})
	for range goroutines {
		wg.Go(func() {
			<-start
			for range calls {
				r, err := f.l.Allow(f.ctx, key, limit)
				mu.Lock()
				if err != nil {
					errs = append(errs, err)
				} else if r.Allowed {
					remaining = append(remaining, r.Remaining)
				}
				mu.Unlock()
			}
		})
	}
	close(start)
	wg.Wait()
	if len(errs) > 0 {
		t.Fatalf("%d errors, first: %v", len(errs), errs[0])
	}
	if len(remaining) != burst {
		t.Fatalf("%d of %d concurrent calls allowed, want exactly burst %d", len(remaining), goroutines*calls, burst)
	}
	// Each allowed call saw a distinct count: the check-and-set is atomic.
	slices.Sort(remaining)
	for i, r := range remaining {
		if r != i {
			t.Fatalf("Remaining values %v, want 0..%d each once", remaining, burst-1)
		}
	}
}

func testInstances(t *testing.T, f *fixture) {
	other, err := f.h.MakeLimiter(f.ctx)
	if err != nil {
		t.Fatalf("MakeLimiter: %v", err)
	}
	limit := perMinute(3)
	key := f.key("k")
	if n := f.drain(t, f.l, key, limit, 3); n != 3 {
		t.Fatalf("first instance: allowed %d, want 3", n)
	}
	r := f.allow(t, other, key, limit)
	if f.h.Capabilities().SharedState {
		if r.Allowed {
			t.Errorf("second instance allowed a key the first exhausted; SharedState declared")
		}
	} else if !r.Allowed || r.Remaining != 2 {
		t.Errorf("second instance: Allowed=%v Remaining=%d, want its own full burst (true 2)", r.Allowed, r.Remaining)
	}
}

func testInvalidInput(t *testing.T, f *fixture) {
	good := perMinute(2)
	key := f.key("k")
	tests := []struct {
		name  string
		key   string
		limit ratelimit.Limit
		want  error
	}{
		{"zeroLimit", key, ratelimit.Limit{}, ratelimit.ErrInvalidLimit},
		{"zeroRate", key, ratelimit.Limit{Rate: 0, Burst: 1, Period: time.Minute}, ratelimit.ErrInvalidLimit},
		{"negativeRate", key, ratelimit.Limit{Rate: -1, Burst: 1, Period: time.Minute}, ratelimit.ErrInvalidLimit},
		{"zeroBurst", key, ratelimit.Limit{Rate: 1, Burst: 0, Period: time.Minute}, ratelimit.ErrInvalidLimit},
		{"negativeBurst", key, ratelimit.Limit{Rate: 1, Burst: -3, Period: time.Minute}, ratelimit.ErrInvalidLimit},
		{"zeroPeriod", key, ratelimit.Limit{Rate: 1, Burst: 1}, ratelimit.ErrInvalidLimit},
		{"negativePeriod", key, ratelimit.Limit{Rate: 1, Burst: 1, Period: -time.Second}, ratelimit.ErrInvalidLimit},
		{"subNanosecondInterval", key, ratelimit.Limit{Rate: 1000, Burst: 1, Period: time.Microsecond / 2}, ratelimit.ErrInvalidLimit},
		{"hugeBurstWindow", key, ratelimit.Limit{Rate: 1, Burst: 1 << 30, Period: 24 * time.Hour}, ratelimit.ErrInvalidLimit},
		{"emptyKey", "", good, ratelimit.ErrInvalidKey},
		{"longKey", strings.Repeat("k", ratelimit.MaxKeyLen+1), good, ratelimit.ErrInvalidKey},
	}
	for _, tc := range tests {
		_, err := f.l.Allow(f.ctx, tc.key, tc.limit)
		if !errors.Is(err, tc.want) {
			t.Errorf("%s: err = %v, want %v", tc.name, err, tc.want)
		}
		if errors.Is(err, ratelimit.ErrUnavailable) {
			t.Errorf("%s: invalid input reported as ErrUnavailable: %v", tc.name, err)
		}
	}
	// Rejected calls counted nothing.
	if n := f.drain(t, f.l, key, good, 2); n != 2 {
		t.Errorf("after invalid calls: allowed %d, want the full burst 2", n)
	}
	if n := f.drain(t, f.l, strings.Repeat("k", ratelimit.MaxKeyLen), good, 2); n != 2 {
		t.Errorf("key of MaxKeyLen: allowed %d, want 2", n)
	}
}

func testCanceledContext(t *testing.T, f *fixture) {
	ctx, cancel := context.WithCancel(f.ctx)
	cancel()
	_, err := f.l.Allow(ctx, f.key("k"), perMinute(1))
	if !errors.Is(err, context.Canceled) {
		t.Fatalf("Allow with canceled context: err = %v, want context.Canceled", err)
	}
	// A caller that went away is not an outage: it must not trigger fallbacks.
	if errors.Is(err, ratelimit.ErrUnavailable) {
		t.Errorf("canceled context reported as ErrUnavailable: %v", err)
	}
}

func testRefill(t *testing.T, f *fixture) {
	f.needClock(t)
	limit := perMinute(3)
	interval := limit.Emission()
	key := f.key("k")
	if n := f.drain(t, f.l, key, limit, 3); n != 3 {
		t.Fatalf("allowed %d, want 3", n)
	}
	f.h.Advance(interval / 4)
	r := f.allow(t, f.l, key, limit)
	if r.Allowed || r.RetryAfter != interval*3/4 || r.ResetAfter != 3*interval-interval/4 {
		t.Errorf("a quarter interval later: %+v, want denied, RetryAfter %s, ResetAfter %s", r, interval*3/4, 3*interval-interval/4)
	}
	f.h.Advance(interval * 3 / 4)
	r = f.allow(t, f.l, key, limit)
	if !r.Allowed || r.Remaining != 0 || r.ResetAfter != 3*interval {
		t.Errorf("one interval later: %+v, want allowed, Remaining 0, ResetAfter %s", r, 3*interval)
	}
	if r := f.allow(t, f.l, key, limit); r.Allowed || r.RetryAfter != interval {
		t.Errorf("right after: %+v, want denied with RetryAfter %s", r, interval)
	}
	f.h.Advance(2 * interval)
	r = f.allow(t, f.l, key, limit)
	if !r.Allowed || r.Remaining != 1 {
		t.Errorf("two intervals later: %+v, want allowed, Remaining 1", r)
	}
}

func testRefillCapsAtBurst(t *testing.T, f *fixture) {
	f.needClock(t)
	limit := perMinute(4)
	key := f.key("k")
	// A key still limited long after k's state goes stale, used before k, so
	// that an adapter dropping idle keys in use order still holds k's stale
	// state and must ignore it.
	f.allow(t, f.l, f.key("daily"), ratelimit.Limit{Rate: 1, Burst: 1, Period: 24 * time.Hour})
	if n := f.drain(t, f.l, key, limit, 4); n != 4 {
		t.Fatalf("allowed %d, want 4", n)
	}
	// Idle far longer than needed: tokens do not pile up past the burst.
	f.h.Advance(100 * limit.Emission())
	r := f.allow(t, f.l, key, limit)
	if !r.Allowed || r.Remaining != 3 || r.ResetAfter != limit.Emission() {
		t.Errorf("after a long idle: %+v, want allowed, Remaining 3, ResetAfter %s", r, limit.Emission())
	}
	if n := f.drain(t, f.l, key, limit, 4); n != 3 {
		t.Errorf("after a long idle: allowed %d more, want 3 (burst 4)", n)
	}
}

func testSustainedRate(t *testing.T, f *fixture) {
	f.needClock(t)
	limit := ratelimit.Limit{Rate: 10, Burst: 1, Period: time.Second}
	key := f.key("k")
	// Calls at exactly the rate are all allowed; at twice the rate, half.
	for i := range 50 {
		if r := f.allow(t, f.l, key, limit); !r.Allowed {
			t.Fatalf("call %d at the rate denied: %+v", i+1, r)
		}
		f.h.Advance(100 * time.Millisecond)
	}
	allowed := 0
	for range 100 {
		if f.allow(t, f.l, key, limit).Allowed {
			allowed++
		}
		f.h.Advance(50 * time.Millisecond)
	}
	if allowed != 50 {
		t.Errorf("at twice the rate: allowed %d of 100, want 50", allowed)
	}
}

// testForgetAndHeld: an erased user's counters can be counted and dropped;
// a forgotten key starts again with a full burst.
func testForgetAndHeld(t *testing.T, f *fixture) {
	ctx := t.Context()
	l := f.l
	limit := perMinute(3)
	a, b, c := f.key("a"), f.key("b"), f.key("never")
	f.drain(t, l, a, limit, 10)
	f.allow(t, l, b, limit)
	held, err := l.Held(ctx, a, b, c)
	if err != nil || held != 2 {
		t.Fatalf("Held = %d, %v; want 2", held, err)
	}
	n, err := l.Forget(ctx, a, c)
	if err != nil || n != 1 {
		t.Fatalf("Forget = %d, %v; want 1", n, err)
	}
	if held, err := l.Held(ctx, a, b, c); err != nil || held != 1 {
		t.Fatalf("Held after Forget = %d, %v; want 1 (b)", held, err)
	}
	if got := f.drain(t, l, a, limit, 10); got != 3 {
		t.Fatalf("forgotten key allowed %d, want a full burst of 3", got)
	}
	if n, err := l.Forget(ctx, a, b); err != nil || n != 2 {
		t.Fatalf("Forget = %d, %v; want 2", n, err)
	}
	if _, err := l.Forget(ctx, ""); err == nil {
		t.Fatal("Forget of an invalid key: no error")
	}
}
