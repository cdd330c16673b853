// Package middleware holds cross-cutting concerns for bus handlers, one per
// file in the manner of watermill's router middleware: Recoverer, Timeout,
// Logging, Retry and Metrics. Compose them with bus.Chain, the first
// outermost; lethe run uses
//
//	Chain(h, Logging(l), metrics.Middleware, Recoverer(l), Timeout(d), Retry(cfg))
//
// so Logging and Metrics see what the bus will do, including a panic turned
// into a retryable *PanicError; a panic is not retried in process (it
// passes through Retry to Recoverer, and Pub/Sub redelivers it); and Timeout
// bounds the whole Retry loop, not each attempt. Without Recoverer the
// bus.Router still recovers a panic and nacks the message.
package middleware

import (
	"context"
	"fmt"
	"log/slog"
	"runtime/debug"

	"github.com/cloudevents/sdk-go/v2/event"

	"github.com/lethe-dev/lethe/infra/bus"
)

// PanicError is what Recoverer returns for a handler that panicked. It is
// retryable: the message is redelivered (and dead-lettered by the
// subscription's policy if it keeps panicking).
type PanicError struct {
	Value any    // the value passed to panic
	Stack []byte // the panicking goroutine's stack
}

func (e *PanicError) Error() string { return fmt.Sprintf("handler panicked: %v", e.Value) }

// Recoverer turns a handler panic into a *PanicError and logs it at error
// level with the stack, the event id and type (never the data).
func Recoverer(logger *slog.Logger) bus.Middleware {
	if logger == nil {
		logger = slog.New(slog.DiscardHandler)
	}
	return func(next bus.Handler) bus.Handler {
		return func(ctx context.Context, e event.Event) (err error) {
			defer func() {
				if r := recover(); r != nil {
					pe := &PanicError{Value: r, Stack: debug.Stack()}
					logger.LogAttrs(ctx, slog.LevelError, "handler panicked",
						slog.String("event_id", e.ID()),
						slog.String("event_type", e.Type()),
						slog.String("panic", fmt.Sprint(r)),
						slog.String("stack", string(pe.Stack)),
					)
					err = pe
				}
			}()
			return next(ctx, e)
		}
	}
}
