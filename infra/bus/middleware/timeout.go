package middleware

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/cloudevents/sdk-go/v2/event"

	"github.com/lethe-dev/lethe/infra/bus"
)

// Timeout gives each handler call a context that expires after d. The
// handler is not abandoned: it must honour its context (a goroutine left
// running would defeat graceful drain and ack bookkeeping). A failure after
// the deadline is reported as a retryable timeout. d <= 0 disables it.
func Timeout(d time.Duration) bus.Middleware {
	return func(next bus.Handler) bus.Handler {
		if d <= 0 {
			return next
		}
		return func(ctx context.Context, e event.Event) error {
			ctx, cancel := context.WithTimeout(ctx, d)
			defer cancel()
			err := next(ctx, e)
			if err != nil && errors.Is(ctx.Err(), context.DeadlineExceeded) {
				return fmt.Errorf("handler timed out after %s: %w", d, err)
			}
			return err
		}
	}
}
