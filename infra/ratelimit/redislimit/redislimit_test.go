package redislimit

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"os"
	"sync"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/lethe-dev/lethe/infra/ratelimit"
	"github.com/lethe-dev/lethe/infra/ratelimit/ratelimittest"
	"github.com/lethe-dev/lethe/internal/emulators"
)

// redisOptions returns options for the test Redis (LETHE_REDIS_URL, default
// local), skipping when it does not answer unless LETHE_REQUIRE_EMULATORS=1
// (CI), where that is a failure.
func redisOptions(tb testing.TB) *redis.Options {
	tb.Helper()
	rawURL := os.Getenv("LETHE_REDIS_URL")
	if rawURL == "" {
		rawURL = "redis://127.0.0.1:6379/0"
	}
	opts, err := parseURL(rawURL)
	if err != nil {
		tb.Fatalf("LETHE_REDIS_URL: %v", err)
	}
	// Tests run under -race on shared cores: be patient with a live server.
	opts.ReadTimeout, opts.WriteTimeout, opts.PoolTimeout = 2*time.Second, 2*time.Second, 3*time.Second
	c := redis.NewClient(opts)
	defer c.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	if err := c.Ping(ctx).Err(); err != nil {
		emulators.Missing(tb, "Redis at LETHE_REDIS_URL does not answer ("+err.Error()+")")
	}
	return opts
}

// uniquePrefix keeps parallel test runs on one Redis apart.
func uniquePrefix() string {
	b := make([]byte, 8)
	_, _ = rand.Read(b)
	return "lethe:rltest:" + hex.EncodeToString(b) + ":"
}

// deleteKeys removes every key the limiter wrote under prefix.
func deleteKeys(tb testing.TB, c *redis.Client, prefix string) {
	tb.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	iter := c.Scan(ctx, 0, "rate:"+prefix+"*", 500).Iterator()
	var keys []string
	for iter.Next(ctx) {
		keys = append(keys, iter.Val())
	}
	if err := iter.Err(); err != nil {
		tb.Errorf("cleanup: SCAN: %v", err)
		return
	}
	if len(keys) > 0 {
		if err := c.Del(ctx, keys...).Err(); err != nil {
			tb.Errorf("cleanup: DEL: %v", err)
		}
	}
}

type harness struct {
	t       *testing.T
	opts    *redis.Options
	prefix  string
	mu      sync.Mutex
	clients []*redis.Client
}

// MakeLimiter gives each limiter its own client, as separate instances have.
func (h *harness) MakeLimiter(context.Context) (ratelimit.Limiter, error) {
	c := redis.NewClient(h.opts)
	h.mu.Lock()
	h.clients = append(h.clients, c)
	h.mu.Unlock()
	return New(c, h.prefix), nil
}

func (h *harness) Advance(time.Duration) { panic("redis harness cannot move Redis' clock") }

func (h *harness) Capabilities() ratelimittest.Capabilities {
	return ratelimittest.Capabilities{ControlsClock: false, SharedState: true}
}

func (h *harness) Close() {
	h.mu.Lock()
	defer h.mu.Unlock()
	if len(h.clients) > 0 {
		deleteKeys(h.t, h.clients[0], h.prefix)
	}
	for _, c := range h.clients {
		_ = c.Close()
	}
}

func TestConformance(t *testing.T) {
	opts := redisOptions(t)
	ratelimittest.RunConformanceTests(t, func(_ context.Context, t *testing.T) (ratelimittest.Harness, error) {
		return &harness{t: t, opts: opts, prefix: uniquePrefix()}, nil
	})
}

// TestKeysArePrefixed: keys land where the package says, with a TTL, and
// under no other name.
func TestKeysArePrefixed(t *testing.T) {
	opts := redisOptions(t)
	c := redis.NewClient(opts)
	defer c.Close()
	prefix := uniquePrefix()
	defer deleteKeys(t, c, prefix)
	l := New(c, prefix)
	ctx := t.Context()
	key := t.Name() + "/kh"
	if _, err := l.Allow(ctx, key, ratelimit.PerMinute(1, 2)); err != nil {
		t.Fatal(err)
	}
	ttl, err := c.TTL(ctx, "rate:"+prefix+key).Result()
	if err != nil {
		t.Fatal(err)
	}
	if ttl <= 0 || ttl > time.Minute {
		t.Errorf("TTL of %q = %s, want in (0, 1m]", "rate:"+prefix+key, ttl)
	}
	if n, err := c.Exists(ctx, key, prefix+key, "rate:"+key).Result(); err != nil || n != 0 {
		t.Errorf("unprefixed keys exist: %d, %v", n, err)
	}
}

// TestWrongTypeIsNotAnOutage: a reply saying the command is wrong (here the
// key holds a hash) is a bug to surface, not a reason to fall back.
func TestWrongTypeIsNotAnOutage(t *testing.T) {
	opts := redisOptions(t)
	c := redis.NewClient(opts)
	defer c.Close()
	prefix := uniquePrefix()
	defer deleteKeys(t, c, prefix)
	ctx := t.Context()
	key := t.Name()
	if err := c.HSet(ctx, "rate:"+prefix+key, "f", "v").Err(); err != nil {
		t.Fatal(err)
	}
	_, err := New(c, prefix).Allow(ctx, key, ratelimit.PerMinute(1, 1))
	if err == nil {
		t.Fatal("Allow on a hash key: no error")
	}
	if errors.Is(err, ratelimit.ErrUnavailable) {
		t.Errorf("WRONGTYPE reported as ErrUnavailable: %v", err)
	}
}

func TestOpen(t *testing.T) {
	opts := redisOptions(t)
	l, err := Open(t.Context(), "redis://"+opts.Addr+"/0?dial_timeout=2s")
	if err != nil {
		t.Fatalf("Open: %v", err)
	}
	defer l.Close()
	if l.prefix != DefaultPrefix {
		t.Errorf("prefix = %q, want %q", l.prefix, DefaultPrefix)
	}
	if err := l.Ping(t.Context()); err != nil {
		t.Errorf("Ping: %v", err)
	}
	key := t.Name() + "/" + uniquePrefix()
	defer l.client.Del(context.Background(), "rate:"+DefaultPrefix+key)
	if r, err := l.Allow(t.Context(), key, ratelimit.PerMinute(1, 1)); err != nil || !r.Allowed {
		t.Errorf("Allow: %+v, %v", r, err)
	}
}

func BenchmarkAllow(b *testing.B) {
	opts := redisOptions(b)
	c := redis.NewClient(opts)
	defer c.Close()
	prefix := uniquePrefix()
	defer deleteKeys(b, c, prefix)
	l := New(c, prefix)
	limit := ratelimit.Limit{Rate: 1_000_000, Burst: 1_000_000, Period: time.Second}
	ctx := context.Background()
	b.Run("OneKey", func(b *testing.B) {
		for b.Loop() {
			if _, err := l.Allow(ctx, "bench", limit); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("Parallel", func(b *testing.B) {
		b.RunParallel(func(pb *testing.PB) {
			for pb.Next() {
				if _, err := l.Allow(ctx, "bench-parallel", limit); err != nil {
					b.Error(err)
					return
				}
			}
		})
	})
}

func TestLeases(t *testing.T) {
	opts := redisOptions(t)
	h := &harness{t: t, opts: opts, prefix: uniquePrefix()}
	t.Cleanup(h.Close)
	ratelimittest.RunLeaseTests(t, func(*testing.T) ratelimit.Leases {
		l, _ := h.MakeLimiter(context.Background())
		return l.(*Limiter)
	})
}
