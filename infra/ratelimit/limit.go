package ratelimit

import (
	"errors"
	"fmt"
	"time"
)

// ErrInvalidLimit: a Limit that cannot be enforced (Rate, Burst or Period not
// positive, or an emission interval Period/Rate shorter than 1ns).
var ErrInvalidLimit = errors.New("ratelimit: invalid limit")

// ErrInvalidKey: an empty key or one longer than MaxKeyLen.
var ErrInvalidKey = errors.New("ratelimit: invalid key")

// MaxKeyLen bounds keys so that a caller bug cannot grow limiter memory
// (in-process or Redis) without bound. A keyed hash plus a route name fits
// easily.
const MaxKeyLen = 256

// maxBurstWindow bounds Burst × Emission: about 73 years.
const maxBurstWindow = time.Duration(1 << 61)

// Emission is GCRA's emission interval, Period/Rate: the time one event
// costs. Meaningful only for a valid Limit.
func (l Limit) Emission() time.Duration { return l.Period / time.Duration(l.Rate) }

// Validate reports whether l can be enforced. Every adapter calls it first so
// that all of them reject the same limits (Redis' GCRA script would otherwise
// divide by zero).
func (l Limit) Validate() error {
	switch {
	case l.Rate <= 0:
		return fmt.Errorf("%w: rate %d must be positive", ErrInvalidLimit, l.Rate)
	case l.Burst <= 0:
		return fmt.Errorf("%w: burst %d must be positive", ErrInvalidLimit, l.Burst)
	case l.Period <= 0:
		return fmt.Errorf("%w: period %s must be positive", ErrInvalidLimit, l.Period)
	case time.Duration(l.Rate) > l.Period:
		return fmt.Errorf("%w: period %s / rate %d is under 1ns", ErrInvalidLimit, l.Period, l.Rate)
	case l.Emission() > maxBurstWindow/time.Duration(l.Burst):
		// Keeps Burst×interval (and TAT arithmetic on it) far from overflow.
		return fmt.Errorf("%w: burst %d × interval %s is too long", ErrInvalidLimit, l.Burst, l.Emission())
	}
	return nil
}

// ValidateKey reports whether key is usable. The key's content is never put
// in the error: it may be derived from a user.
func ValidateKey(key string) error {
	if key == "" {
		return fmt.Errorf("%w: empty", ErrInvalidKey)
	}
	if len(key) > MaxKeyLen {
		return fmt.Errorf("%w: %d bytes, over %d", ErrInvalidKey, len(key), MaxKeyLen)
	}
	return nil
}
