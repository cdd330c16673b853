package memlimit

import (
	"context"
	"fmt"
	"strconv"
	"testing"
	"time"

	"github.com/lethe-dev/lethe/infra/ratelimit"
	"github.com/lethe-dev/lethe/infra/ratelimit/ratelimittest"
)

type harness struct{ clock *ratelimittest.Clock }

func (h *harness) MakeLimiter(context.Context) (ratelimit.Limiter, error) {
	return New(Options{Now: h.clock.Now}), nil
}
func (h *harness) Advance(d time.Duration) { h.clock.Advance(d) }
func (h *harness) Capabilities() ratelimittest.Capabilities {
	return ratelimittest.Capabilities{ControlsClock: true, SharedState: false}
}
func (h *harness) Close() {}

func TestConformance(t *testing.T) {
	ratelimittest.RunConformanceTests(t, func(context.Context, *testing.T) (ratelimittest.Harness, error) {
		return &harness{clock: ratelimittest.NewClock(time.Date(2026, 11, 1, 12, 0, 0, 0, time.UTC))}, nil
	})
}

// TestRealClock runs the suite on the default clock too (its counting tests).
func TestRealClock(t *testing.T) {
	ratelimittest.RunConformanceTests(t, func(context.Context, *testing.T) (ratelimittest.Harness, error) {
		return realClockHarness{}, nil
	})
}

type realClockHarness struct{}

func (realClockHarness) MakeLimiter(context.Context) (ratelimit.Limiter, error) {
	return New(Options{}), nil
}
func (realClockHarness) Advance(time.Duration) { panic("Advance without ControlsClock") }
func (realClockHarness) Capabilities() ratelimittest.Capabilities {
	return ratelimittest.Capabilities{}
}
func (realClockHarness) Close() {}

var minute = ratelimit.Limit{Rate: 1, Burst: 2, Period: time.Minute}

func TestMaxKeysBoundsMemory(t *testing.T) {
	for _, maxKeys := range []int{1, 5, 16, 100} {
		t.Run(strconv.Itoa(maxKeys), func(t *testing.T) {
			clock := ratelimittest.NewClock(time.Unix(0, 0))
			l := New(Options{MaxKeys: maxKeys, Now: clock.Now})
			for i := range 10 * maxKeys {
				if r, err := l.Allow(t.Context(), fmt.Sprintf("%s/%d", t.Name(), i), minute); err != nil || !r.Allowed {
					t.Fatalf("Allow key %d: %+v, %v", i, r, err)
				}
				if n := l.Len(); n > maxKeys {
					t.Fatalf("after %d keys: Len = %d, over MaxKeys %d", i+1, n, maxKeys)
				}
			}
			if n := l.Len(); n != maxKeys {
				t.Errorf("Len = %d, want full at %d", n, maxKeys)
			}
		})
	}
}

func TestIdleKeysAreDropped(t *testing.T) {
	clock := ratelimittest.NewClock(time.Unix(0, 0))
	l := newSharded(Options{MaxKeys: 1000, Now: clock.Now}, 1)
	ctx := t.Context()
	for i := range 100 {
		if _, err := l.Allow(ctx, "idle/"+strconv.Itoa(i), minute); err != nil {
			t.Fatal(err)
		}
	}
	// Past every TAT, each call sweeps a few idle keys from the cold end.
	clock.Advance(minute.Emission() + time.Nanosecond)
	for i := range 20 {
		if _, err := l.Allow(ctx, "active/"+strconv.Itoa(i), minute); err != nil {
			t.Fatal(err)
		}
	}
	if n, want := l.Len(), 100-20*sweepPerCall+20; n != want {
		t.Errorf("Len = %d, want %d (idle keys swept)", n, want)
	}
}

// TestEvictsLeastRecentlyUsed: when full, the key used longest ago goes
// first, and a key kept in use (even when denied) stays limited.
func TestEvictsLeastRecentlyUsed(t *testing.T) {
	clock := ratelimittest.NewClock(time.Unix(0, 0))
	l := newSharded(Options{MaxKeys: 3, Now: clock.Now}, 1)
	ctx := t.Context()
	allow := func(key string) ratelimit.Result {
		t.Helper()
		r, err := l.Allow(ctx, key, minute)
		if err != nil {
			t.Fatal(err)
		}
		return r
	}
	for _, k := range []string{"hot", "hot", "cold", "warm"} {
		allow(k)
	}
	if r := allow("hot"); r.Allowed {
		t.Fatalf("hot allowed a third time: %+v", r)
	}
	allow("new") // evicts cold, the least recently used
	if r := allow("hot"); r.Allowed {
		t.Errorf("hot was evicted (allowed again), want cold evicted")
	}
	if r := allow("cold"); !r.Allowed || r.Remaining != 1 {
		t.Errorf("cold: %+v, want a fresh key (evicted)", r)
	}
	if n := l.Len(); n != 3 {
		t.Errorf("Len = %d, want 3", n)
	}
}

func TestShardsSumToMaxKeys(t *testing.T) {
	for _, maxKeys := range []int{1, 7, 16, 17, 100_001} {
		l := New(Options{MaxKeys: maxKeys})
		total := 0
		for i := range l.shards {
			if l.shards[i].max < 1 {
				t.Errorf("MaxKeys %d: shard %d holds %d keys", maxKeys, i, l.shards[i].max)
			}
			total += l.shards[i].max
		}
		if total != maxKeys {
			t.Errorf("MaxKeys %d: shards hold %d", maxKeys, total)
		}
	}
}

// TestClockBackwards: a clock that steps back (NTP, a fake) never grants
// more than the burst: the stored TAT stays the reference.
func TestClockBackwards(t *testing.T) {
	clock := ratelimittest.NewClock(time.Unix(1000, 0))
	l := New(Options{Now: clock.Now})
	limit := ratelimit.Limit{Rate: 1, Burst: 2, Period: time.Minute}
	for range 2 {
		if r, _ := l.Allow(t.Context(), "k", limit); !r.Allowed {
			t.Fatal("burst denied")
		}
	}
	clock.Advance(-time.Hour)
	r, err := l.Allow(t.Context(), "k", limit)
	if err != nil || r.Allowed {
		t.Errorf("after the clock stepped back: %+v, %v; want denied", r, err)
	}
}

func BenchmarkAllow(b *testing.B) {
	limit := ratelimit.Limit{Rate: 1000, Burst: 1000, Period: time.Second}
	b.Run("OneKey", func(b *testing.B) {
		l := New(Options{})
		ctx := context.Background()
		for b.Loop() {
			if _, err := l.Allow(ctx, "bench", limit); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("ManyKeysParallel", func(b *testing.B) {
		l := New(Options{})
		keys := make([]string, 10_000)
		for i := range keys {
			keys[i] = fmt.Sprintf("user-%064x", i)
		}
		ctx := context.Background()
		b.RunParallel(func(pb *testing.PB) {
			i := 0
			for pb.Next() {
				if _, err := l.Allow(ctx, keys[i%len(keys)], limit); err != nil {
					b.Error(err)
					return
				}
				i += 7
			}
		})
	})
	b.Run("EvictingAtCap", func(b *testing.B) {
		l := New(Options{MaxKeys: 1000})
		ctx := context.Background()
		i := 0
		for b.Loop() {
			if _, err := l.Allow(ctx, strconv.Itoa(i), limit); err != nil {
				b.Fatal(err)
			}
			i++
		}
	})
}

// TestStaleStateIgnored: a key whose TAT has passed but which the sweep has
// not reached (a still-limited key sits at the cold end) counts as fresh:
// max(TAT, now), never more than the burst.
func TestStaleStateIgnored(t *testing.T) {
	clock := ratelimittest.NewClock(time.Unix(0, 0))
	l := newSharded(Options{MaxKeys: 100, Now: clock.Now}, 1)
	ctx := t.Context()
	daily := ratelimit.Limit{Rate: 1, Burst: 1, Period: 24 * time.Hour}
	if _, err := l.Allow(ctx, "daily", daily); err != nil {
		t.Fatal(err)
	}
	for range 2 {
		if r, err := l.Allow(ctx, "k", minute); err != nil || !r.Allowed {
			t.Fatalf("burst: %+v, %v", r, err)
		}
	}
	clock.Advance(time.Hour)
	for i, want := range []bool{true, true, false} {
		r, err := l.Allow(ctx, "k", minute)
		if err != nil || r.Allowed != want || (want && r.Remaining != 1-i) {
			t.Errorf("call %d after an hour: %+v, %v; want Allowed=%v Remaining=%d", i+1, r, err, want, 1-i)
		}
	}
	if l.Len() != 2 {
		t.Errorf("Len = %d, want 2 (the sweep stopped at the daily key)", l.Len())
	}
}

func TestLeases(t *testing.T) {
	shared := NewLeases(nil)
	ratelimittest.RunLeaseTests(t, func(*testing.T) ratelimit.Leases { return shared })
}
