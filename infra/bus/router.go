package bus

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"runtime/debug"

	"github.com/cloudevents/sdk-go/v2/event"

	"github.com/lethe-dev/lethe/events"
)

// Delivery is one message as a transport received it: pulled from a
// subscription (Receive) or pushed over HTTP (functions/push).
type Delivery struct {
	Subscription string // subscription id
	MessageID    string // Pub/Sub message id; empty when the transport lost it
	Data         []byte
	Attributes   map[string]string
	// DeliveryAttempt is 1 for the first delivery, 0 when not reported.
	DeliveryAttempt int
}

// DeadLetterSink stores a poison delivery with the reason it failed. A nil
// return means the copy is durable, so the delivery may be acknowledged.
type DeadLetterSink func(ctx context.Context, d Delivery, reason error) error

// Result is what a Router did with a delivery.
type Result struct {
	// Outcome is what the transport must do: acknowledge for OutcomeAck,
	// OutcomeDrop and OutcomeDeadLetter (the copy is stored), nack for
	// OutcomeRetry.
	Outcome Outcome
	// Err is the decode, validation or handler error; nil on OutcomeAck.
	Err error
	// Panicked reports a handler panic that no middleware recovered.
	Panicked bool
	// DeadLetterErr is set when the dead-letter copy failed; Outcome is
	// then OutcomeRetry, so nothing is lost.
	DeadLetterErr error
}

// Router is the one path every received message takes, whatever carried
// it: decode, validate, run the handler (recovering a panic), classify the
// result, and copy poison to the dead-letter sink with its reason. A copy
// that fails turns into a retry. It is safe for concurrent use.
type Router struct {
	// Decode turns the delivery into an event; nil means FromMessage.
	// Failures that are not drops are permanent (see Decode).
	Decode Decoder
	// Validate, when set, checks every decoded event; a failure is poison.
	Validate func(event.Event) error
	// Handler runs once per decoded, valid event (required).
	Handler Handler
	// DeadLetter stores poison (required).
	DeadLetter DeadLetterSink
	// Logger receives dead letters, failed copies and recovered panics,
	// never the data. Nil discards.
	Logger *slog.Logger
}

// Dispatch routes one delivery and returns what the transport must do with
// it. Handlers see ctx with DeliveryAttempt set.
func (r *Router) Dispatch(ctx context.Context, d Delivery) Result {
	ctx = context.WithValue(ctx, deliveryAttemptKey{}, d.DeliveryAttempt)
	logAttrs := r.logAttrs(d)
	decode := r.Decode
	if decode == nil {
		decode = FromMessage
	}
	e, err := Decode(decode, d.Data, d.Attributes)
	if err == nil {
		logAttrs = append(logAttrs, slog.String("event_id", e.ID()), slog.String("event_type", e.Type()))
		if r.Validate != nil {
			if verr := r.Validate(e); verr != nil {
				err = events.Permanent(fmt.Errorf("bus: validate: %w", verr))
			}
		}
		if err == nil {
			var panicked bool
			if panicked, err = r.run(ctx, e, logAttrs); panicked {
				return Result{Outcome: OutcomeRetry, Err: err, Panicked: true}
			}
		}
	}
	out := Classify(err)
	if out == OutcomeDeadLetter {
		return r.deadLetter(ctx, d, err, logAttrs)
	}
	return Result{Outcome: out, Err: err}
}

// Reject dead-letters a delivery the transport itself could not read (a
// push body that is not a push request): the reason is made permanent.
func (r *Router) Reject(ctx context.Context, d Delivery, reason error) Result {
	if !events.IsPermanent(reason) {
		reason = events.Permanent(reason)
	}
	return r.deadLetter(ctx, d, reason, r.logAttrs(d))
}

func (r *Router) deadLetter(ctx context.Context, d Delivery, reason error, logAttrs []any) Result {
	log := r.log()
	logAttrs = append(logAttrs, slog.String("reason", reason.Error()))
	var derr error
	if r.DeadLetter == nil {
		derr = errors.New("bus.Router: no dead-letter sink")
	} else {
		derr = r.DeadLetter(ctx, d, reason)
	}
	if derr != nil {
		log.ErrorContext(ctx, "bus: dead-letter copy failed, nacking", append(logAttrs, slog.String("error", derr.Error()))...)
		return Result{Outcome: OutcomeRetry, Err: reason, DeadLetterErr: derr}
	}
	log.WarnContext(ctx, "bus: message dead-lettered", logAttrs...)
	return Result{Outcome: OutcomeDeadLetter, Err: reason}
}

// run is the last line of defence against panics: a handler that panics
// without the Recoverer middleware nacks its message instead of crashing
// the process.
func (r *Router) run(ctx context.Context, e event.Event, logAttrs []any) (panicked bool, err error) {
	defer func() {
		if p := recover(); p != nil {
			r.log().ErrorContext(ctx, "bus: handler panicked", append(logAttrs, slog.Any("panic", p), slog.String("stack", string(debug.Stack())))...)
			panicked, err = true, fmt.Errorf("bus: handler panicked: %v", p)
		}
	}()
	if r.Handler == nil {
		return false, errors.New("bus.Router: nil handler")
	}
	return false, r.Handler(ctx, e)
}

func (r *Router) logAttrs(d Delivery) []any {
	return []any{slog.String("subscription", d.Subscription), slog.String("message_id", d.MessageID)}
}

func (r *Router) log() *slog.Logger {
	if r.Logger == nil {
		return slog.New(slog.DiscardHandler)
	}
	return r.Logger
}
