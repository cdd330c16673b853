package bus

import (
	"context"

	"github.com/cloudevents/sdk-go/v2/event"

	"github.com/lethe-dev/lethe/events"
)

// ByType routes each event to the handler of its type: one subscription
// can then carry several types (the lifecycle topic: sweeps, erasures,
// exports). A type with no handler is poison (dead-lettered with the
// reason), never redelivered forever.
func ByType(handlers map[string]Handler) Handler {
	return func(ctx context.Context, e event.Event) error {
		h, ok := handlers[e.Type()]
		if !ok {
			return events.Permanentf("bus: no handler for event type %q on this subscription", e.Type())
		}
		return h(ctx, e)
	}
}
