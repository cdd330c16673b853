// Package middleware holds cross-cutting concerns for bus handlers, one per
// file in the manner of watermill's router middleware: Recoverer, Timeout,
// Logging, Retry and Metrics. Compose them with bus.Chain; a sensible order
// is Chain(h, metrics.Middleware, Logging(l), Recoverer(l), Retry(cfg),
// Timeout(d)), so a panic becomes a retryable error that Retry, Logging and
// Metrics all see.
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
