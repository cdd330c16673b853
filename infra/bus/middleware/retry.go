package middleware

import (
	"context"
	"math/rand/v2"
	"time"

	"github.com/cloudevents/sdk-go/v2/event"

	"github.com/lethe-dev/lethe/infra/bus"
)

// RetryConfig bounds in-process retries. Zero fields take the defaults
// noted.
type RetryConfig struct {
	MaxRetries      int           // retries after the first call (default 3)
	InitialInterval time.Duration // wait before the first retry (default 100ms)
	MaxInterval     time.Duration // cap on any wait (default 5s)
	Multiplier      float64       // growth per retry (default 2)
	// Jitter spreads each wait uniformly over ±Jitter of its value
	// (0..1, default 0.2), so many failing handlers do not retry in step.
	Jitter float64
}

func (c RetryConfig) withDefaults() RetryConfig {
	if c.MaxRetries <= 0 {
		c.MaxRetries = 3
	}
	if c.InitialInterval <= 0 {
		c.InitialInterval = 100 * time.Millisecond
	}
	if c.MaxInterval <= 0 {
		c.MaxInterval = 5 * time.Second
	}
	if c.MaxInterval < c.InitialInterval {
		c.MaxInterval = c.InitialInterval
	}
	if c.Multiplier < 1 {
		c.Multiplier = 2
	}
	if c.Jitter <= 0 || c.Jitter > 1 {
		c.Jitter = 0.2
	}
	return c
}

// backoff is the wait before retry number n (0-based), jittered.
func (c RetryConfig) backoff(n int) time.Duration {
	d := float64(c.InitialInterval)
	for range n {
		d *= c.Multiplier
		if d >= float64(c.MaxInterval) {
			d = float64(c.MaxInterval)
			break
		}
	}
	d *= 1 + c.Jitter*(2*rand.Float64()-1)
	return min(time.Duration(d), c.MaxInterval)
}

// Retry calls the handler again, in process, while it fails with a
// retryable error (bus.OutcomeRetry), up to MaxRetries times with
// exponential backoff and jitter. Success, drops and permanent errors return
// at once. When it gives up (or ctx ends) it returns the last error, so the
// bus nacks and Pub/Sub's own backoff takes over.
func Retry(cfg RetryConfig) bus.Middleware {
	cfg = cfg.withDefaults()
	return func(next bus.Handler) bus.Handler {
		return func(ctx context.Context, e event.Event) error {
			err := next(ctx, e)
			for n := 0; n < cfg.MaxRetries && bus.Classify(err) == bus.OutcomeRetry; n++ {
				t := time.NewTimer(cfg.backoff(n))
				select {
				case <-ctx.Done():
					t.Stop()
					return err
				case <-t.C:
				}
				err = next(ctx, e)
			}
			return err
		}
	}
}
