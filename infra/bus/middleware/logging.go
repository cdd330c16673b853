package middleware

import (
	"context"
	"log/slog"
	"time"

	"github.com/cloudevents/sdk-go/v2/event"

	"github.com/lethe-dev/lethe/infra/bus"
)

// Logging logs one line per handled event: id, type, subject, delivery
// attempt, outcome (as the bus will act on it), duration and, on failure,
// the error. Subjects are users/<uid-hash>/..., already pseudonymous; the
// data is never logged. Levels: info for ack and drop, warn for retry,
// error for dead-letter.
func Logging(logger *slog.Logger) bus.Middleware {
	if logger == nil {
		logger = slog.New(slog.DiscardHandler)
	}
	return func(next bus.Handler) bus.Handler {
		return func(ctx context.Context, e event.Event) error {
			start := time.Now()
			err := next(ctx, e)
			outcome := bus.Classify(err)
			level := slog.LevelInfo
			switch outcome {
			case bus.OutcomeRetry:
				level = slog.LevelWarn
			case bus.OutcomeDeadLetter:
				level = slog.LevelError
			}
			attrs := []slog.Attr{
				slog.String("event_id", e.ID()),
				slog.String("event_type", e.Type()),
				slog.String("subject", e.Subject()),
				slog.Int("delivery_attempt", bus.DeliveryAttempt(ctx)),
				slog.String("outcome", outcome.String()),
				slog.Duration("duration", time.Since(start)),
			}
			if err != nil {
				attrs = append(attrs, slog.String("error", err.Error()))
			}
			logger.LogAttrs(ctx, level, "event handled", attrs...)
			return err
		}
	}
}
