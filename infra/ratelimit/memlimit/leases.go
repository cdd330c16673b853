package memlimit

import (
	"context"
	"fmt"
	"sync"
	"time"

	"github.com/lethe-dev/lethe/infra/ratelimit"
)

// Leases is the in-process adapter of the concurrency port: holders per key
// with their expiry. With several instances each counts alone. Memory is
// bounded by the live leases: expired ones are dropped when their key is
// next touched, and a key with none left is deleted.
type Leases struct {
	now  func() time.Time
	mu   sync.Mutex
	keys map[string]map[string]time.Time
}

var _ ratelimit.Leases = (*Leases)(nil)

// NewLeases returns an empty Leases on clock now (nil: time.Now).
func NewLeases(now func() time.Time) *Leases {
	if now == nil {
		now = time.Now
	}
	return &Leases{now: now, keys: map[string]map[string]time.Time{}}
}

// live returns key's holders with the expired ones dropped; mu is held.
func (l *Leases) live(key string, now time.Time) map[string]time.Time {
	hs := l.keys[key]
	for h, exp := range hs {
		if !now.Before(exp) {
			delete(hs, h)
		}
	}
	return hs
}

// Acquire implements ratelimit.Leases.
func (l *Leases) Acquire(ctx context.Context, key, holder string, max int, ttl time.Duration) (bool, error) {
	if err := ratelimit.ValidateLease(key, holder, max, ttl); err != nil {
		return false, fmt.Errorf("memlimit.Acquire: %w", err)
	}
	if err := ctx.Err(); err != nil {
		return false, fmt.Errorf("memlimit.Acquire: %w", err)
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	now := l.now()
	hs := l.live(key, now)
	if _, held := hs[holder]; !held && len(hs) >= max {
		return false, nil
	}
	if hs == nil {
		hs = map[string]time.Time{}
		l.keys[key] = hs
	}
	hs[holder] = now.Add(ttl)
	return true, nil
}

// Renew implements ratelimit.Leases.
func (l *Leases) Renew(ctx context.Context, key, holder string, ttl time.Duration) (bool, error) {
	if err := ratelimit.ValidateLease(key, holder, 1, ttl); err != nil {
		return false, fmt.Errorf("memlimit.Renew: %w", err)
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	now := l.now()
	hs := l.live(key, now)
	if _, held := hs[holder]; !held {
		if len(hs) == 0 {
			delete(l.keys, key)
		}
		return false, nil
	}
	hs[holder] = now.Add(ttl)
	return true, nil
}

// Release implements ratelimit.Leases.
func (l *Leases) Release(ctx context.Context, key, holder string) error {
	l.mu.Lock()
	defer l.mu.Unlock()
	hs := l.live(key, l.now())
	delete(hs, holder)
	if len(hs) == 0 {
		delete(l.keys, key)
	}
	return nil
}
