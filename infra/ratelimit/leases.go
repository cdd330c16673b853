package ratelimit

import (
	"context"
	"fmt"
	"time"
)

// Leases is the concurrency port: at most max holders of a key at once
// (a user's open streams, a conversation's one stream). A lease expires
// unless renewed within its TTL, so the slots of a crashed instance come
// back on their own. Production adapter: Redis, shared by every instance;
// embedded: in-process.
type Leases interface {
	// Acquire takes a slot of key for holder if fewer than max hold one;
	// a holder that already holds one renews it. false: key is full.
	Acquire(ctx context.Context, key, holder string, max int, ttl time.Duration) (bool, error)
	// Renew extends holder's lease; false: it expired or was released.
	Renew(ctx context.Context, key, holder string, ttl time.Duration) (bool, error)
	// Release gives holder's slot back (a no-op when not held).
	Release(ctx context.Context, key, holder string) error
}

// ValidateLease reports whether a lease request is usable; every adapter
// calls it first so that all refuse the same input.
func ValidateLease(key, holder string, max int, ttl time.Duration) error {
	if err := ValidateKey(key); err != nil {
		return err
	}
	if holder == "" || len(holder) > MaxKeyLen {
		return fmt.Errorf("%w: lease holder of %d bytes", ErrInvalidKey, len(holder))
	}
	if max <= 0 || ttl < time.Millisecond {
		return fmt.Errorf("%w: lease max %d, ttl %s", ErrInvalidLimit, max, ttl)
	}
	return nil
}
