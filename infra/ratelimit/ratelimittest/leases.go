package ratelimittest

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/lethe-dev/lethe/infra/ratelimit"
)

// RunLeaseTests is the conformance suite of the concurrency port. newLeases
// returns leases over one backend each time it is called: with a shared
// backend (Redis) two of them are two instances seeing the same slots.
// Expiry is checked by waiting past a short TTL: it can only fail if a
// lease outlives its TTL.
func RunLeaseTests(t *testing.T, newLeases func(t *testing.T) ratelimit.Leases) {
	ctx := context.Background()
	const ttl = time.Minute
	t.Run("MaxHolders", func(t *testing.T) {
		a, b := newLeases(t), newLeases(t)
		key := t.Name()
		for i, h := range []string{"h1", "h2"} {
			if ok, err := []ratelimit.Leases{a, b}[i].Acquire(ctx, key, h, 2, ttl); err != nil || !ok {
				t.Fatalf("acquire %s: %v %v", h, ok, err)
			}
		}
		if ok, err := a.Acquire(ctx, key, "h3", 2, ttl); err != nil || ok {
			t.Fatalf("third holder of 2 slots: %v %v", ok, err)
		}
		// A holder asking again renews rather than taking a second slot.
		if ok, err := b.Acquire(ctx, key, "h1", 2, ttl); err != nil || !ok {
			t.Fatalf("re-acquire: %v %v", ok, err)
		}
		if ok, err := a.Acquire(ctx, key+"-other", "h3", 2, ttl); err != nil || !ok {
			t.Fatalf("another key: %v %v", ok, err)
		}
		if err := b.Release(ctx, key, "h1"); err != nil {
			t.Fatal(err)
		}
		if ok, err := a.Renew(ctx, key, "h1", ttl); err != nil || ok {
			t.Fatalf("renew after release: %v %v", ok, err)
		}
		if ok, err := a.Acquire(ctx, key, "h3", 2, ttl); err != nil || !ok {
			t.Fatalf("acquire after release: %v %v", ok, err)
		}
		if ok, err := a.Renew(ctx, key, "h2", ttl); err != nil || !ok {
			t.Fatalf("renew: %v %v", ok, err)
		}
	})
	t.Run("Expiry", func(t *testing.T) {
		l := newLeases(t)
		key := t.Name()
		if ok, err := l.Acquire(ctx, key, "gone", 1, 50*time.Millisecond); err != nil || !ok {
			t.Fatalf("acquire: %v %v", ok, err)
		}
		time.Sleep(200 * time.Millisecond)
		if ok, err := l.Acquire(ctx, key, "next", 1, ttl); err != nil || !ok {
			t.Fatalf("slot of an expired lease not free: %v %v", ok, err)
		}
		if ok, err := l.Renew(ctx, key, "gone", ttl); err != nil || ok {
			t.Fatalf("expired lease renewed: %v %v", ok, err)
		}
	})
	t.Run("InvalidInput", func(t *testing.T) {
		l := newLeases(t)
		for _, c := range []struct {
			key, holder string
			max         int
			ttl         time.Duration
		}{{"", "h", 1, ttl}, {"k", "", 1, ttl}, {"k", "h", 0, ttl}, {"k", "h", 1, 0}} {
			_, err := l.Acquire(ctx, c.key, c.holder, c.max, c.ttl)
			if !errors.Is(err, ratelimit.ErrInvalidKey) && !errors.Is(err, ratelimit.ErrInvalidLimit) {
				t.Errorf("Acquire(%q, %q, %d, %s) = %v", c.key, c.holder, c.max, c.ttl, err)
			}
		}
	})
}
