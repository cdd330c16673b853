package bus

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"time"

	"cloud.google.com/go/pubsub/v2"
	"cloud.google.com/go/pubsub/v2/apiv1/pubsubpb"
	"github.com/cloudevents/sdk-go/v2/event"

	"github.com/lethe-dev/lethe/events"
)

// Attributes added to the copy of a message sent to a dead-letter topic.
const (
	AttrDeadLetterReason       = "lethe-dead-letter-reason"       // error text, at most 1 KiB
	AttrDeadLetterSubscription = "lethe-dead-letter-subscription" // subscription id
	AttrDeadLetterTime         = "lethe-dead-letter-time"         // RFC 3339, UTC
	AttrDeadLetterMessageID    = "lethe-dead-letter-message-id"   // original Pub/Sub message id
)

// deadLetterPublishTimeout bounds the dead-letter copy, so a stuck publish
// cannot hold a message (and a drain) forever; on timeout the message is
// nacked and nothing is lost.
const deadLetterPublishTimeout = 30 * time.Second

// Outcome is what the bus does with a message after its handler returned.
type Outcome int

const (
	OutcomeAck        Outcome = iota // success: acknowledge
	OutcomeDrop                      // deliberately ignored (events.ErrDropped): acknowledge
	OutcomeDeadLetter                // permanent failure: copy to the dead-letter topic, acknowledge
	OutcomeRetry                     // transient failure: nack for redelivery
)

func (o Outcome) String() string {
	switch o {
	case OutcomeAck:
		return "ack"
	case OutcomeDrop:
		return "drop"
	case OutcomeDeadLetter:
		return "dead-letter"
	case OutcomeRetry:
		return "retry"
	}
	return fmt.Sprintf("Outcome(%d)", int(o))
}

// Classify maps a handler result to its Outcome. A drop wins over
// permanence: a handler that says "dropped" meant to acknowledge.
func Classify(err error) Outcome {
	switch {
	case err == nil:
		return OutcomeAck
	case errors.Is(err, events.ErrDropped):
		return OutcomeDrop
	case events.IsPermanent(err):
		return OutcomeDeadLetter
	}
	return OutcomeRetry
}

type deliveryAttemptKey struct{}

// DeliveryAttempt returns the Pub/Sub delivery attempt (1 for the first
// delivery) of the message being handled, or 0 when the backend does not
// report it (it does only on subscriptions with a dead-letter policy).
func DeliveryAttempt(ctx context.Context) int {
	n, _ := ctx.Value(deliveryAttemptKey{}).(int)
	return n
}

// Receive runs h for every message of subscription (an id or a full name)
// until ctx is cancelled, then waits for the handlers in flight and returns
// nil. Handlers keep a live context for Config.DrainTimeout after ctx is
// cancelled, so a clean shutdown finishes work instead of redoing it.
//
// Each message goes through a Router: decode (FromMessage), validate
// (Config.Validate), run h, then act on Classify(err). Decode and
// validation failures are permanent. A dead-letter copy that cannot be
// published nacks the message instead, so nothing is lost. Receive returns
// an error when the subscription cannot be read (e.g. it does not exist).
func (b *Bus) Receive(ctx context.Context, subscription string, h Handler) error {
	return b.ReceiveWith(ctx, subscription, FromMessage, h)
}

// Decoder turns a Pub/Sub message into the event a Handler takes.
// FromMessage is the decoder of CloudEvents; others adapt messages that
// outside publishers send in their own format (a Cloud Storage
// notification). Errors follow Handler's rules: events.ErrDropped
// acknowledges, anything else is poison and dead-letters the message.
type Decoder func(data []byte, attrs map[string]string) (event.Event, error)

// ReceiveWith is Receive with decode in place of FromMessage; decode
// failures that are not drops are permanent, whatever their error says.
func (b *Bus) ReceiveWith(ctx context.Context, subscription string, decode Decoder, h Handler) error {
	if decode == nil {
		return errors.New("bus.Receive: nil decoder")
	}
	if h == nil {
		return errors.New("bus.Receive: nil handler")
	}
	if b.isClosed() {
		return ErrClosed
	}
	subName := b.SubscriptionName(subscription)
	sc, err := b.client.SubscriptionAdminClient.GetSubscription(ctx, &pubsubpb.GetSubscriptionRequest{Subscription: subName})
	if err != nil {
		if ctx.Err() != nil {
			return nil
		}
		return fmt.Errorf("bus.Receive: GetSubscription %s: %w", subscription, err)
	}
	dlt := sc.GetDeadLetterPolicy().GetDeadLetterTopic()
	if dlt == "" {
		dlt = sc.GetTopic() + deadLetterSuffix
	}
	subID := lastSegment(sc.GetName())

	sub := b.client.Subscriber(subName)
	sub.ReceiveSettings.NumGoroutines = b.cfg.NumGoroutines
	if ad := time.Duration(sc.GetAckDeadlineSeconds()) * time.Second; ad >= 10*time.Second && ad <= 600*time.Second {
		// Lease messages in steps of the subscription's own ack deadline
		// (the client's default is 60s): a message that reaches a stream
		// as it closes comes back after the deadline the subscription
		// was configured with.
		sub.ReceiveSettings.MaxDurationPerAckExtension = ad
	}
	if b.cfg.MaxOutstanding != 0 {
		sub.ReceiveSettings.MaxOutstandingMessages = b.cfg.MaxOutstanding
	}

	// Handlers get ctx's values but their own cancellation: it follows ctx
	// only after the drain timeout.
	hctx, hcancel := context.WithCancel(context.WithoutCancel(ctx))
	defer hcancel()
	done := make(chan struct{})
	defer close(done)
	go func() {
		select {
		case <-done:
			return
		case <-ctx.Done():
		}
		t := time.NewTimer(b.cfg.DrainTimeout)
		defer t.Stop()
		select {
		case <-done:
		case <-t.C:
			hcancel()
		}
	}()

	router := &Router{
		Decode:   decode,
		Validate: b.cfg.Validate,
		Handler:  h,
		Logger:   b.log,
		DeadLetter: func(ctx context.Context, d Delivery, reason error) error {
			return b.publishDeadLetter(ctx, dlt, d.Subscription, d.MessageID, d.Data, d.Attributes, reason)
		},
	}
	err = sub.Receive(ctx, func(_ context.Context, m *pubsub.Message) {
		d := Delivery{Subscription: subID, MessageID: m.ID, Data: m.Data, Attributes: m.Attributes}
		if m.DeliveryAttempt != nil {
			d.DeliveryAttempt = *m.DeliveryAttempt
		}
		if router.Dispatch(hctx, d).Outcome == OutcomeRetry {
			m.Nack()
			return
		}
		m.Ack()
	})
	if err != nil && ctx.Err() == nil {
		return fmt.Errorf("bus.Receive %s: %w", subscription, err)
	}
	return nil
}

func lastSegment(name string) string {
	for i := len(name) - 1; i >= 0; i-- {
		if name[i] == '/' {
			return name[i+1:]
		}
	}
	return name
}

// Decode runs decode and makes its failures permanent unless they are
// drops, so a decoder cannot have a malformed message redelivered forever.
func Decode(decode Decoder, data []byte, attrs map[string]string) (event.Event, error) {
	e, err := decode(data, attrs)
	if err != nil && !errors.Is(err, events.ErrDropped) && !events.IsPermanent(err) {
		err = events.Permanent(err)
	}
	return e, err
}

// DeadLetter copies a poison message, with the reason, to topic's
// dead-letter topic: what Receive does for pulled messages, for receivers
// of pushed ones.
func (b *Bus) DeadLetter(ctx context.Context, topic, subscription, messageID string, data []byte, attrs map[string]string, reason error) error {
	return b.publishDeadLetter(ctx, b.TopicName(deadLetterTopic(topic)), subscription, messageID, data, attrs, reason)
}

func (b *Bus) publishDeadLetter(ctx context.Context, dlt, subID, messageID string, data []byte, orig map[string]string, reason error) error {
	attrs := make(map[string]string, len(orig)+4)
	maps.Copy(attrs, orig)
	attrs[AttrDeadLetterReason] = truncateUTF8(reason.Error(), maxAttributeValueLen)
	attrs[AttrDeadLetterSubscription] = subID
	attrs[AttrDeadLetterTime] = time.Now().UTC().Format(time.RFC3339Nano)
	attrs[AttrDeadLetterMessageID] = messageID
	p, err := b.publisher(dlt)
	if err != nil {
		return err
	}
	ctx, cancel := context.WithTimeout(ctx, deadLetterPublishTimeout)
	defer cancel()
	if _, err := p.Publish(ctx, &pubsub.Message{Data: data, Attributes: attrs}).Get(ctx); err != nil {
		return fmt.Errorf("pubsub.Publish %s: %w", p.ID(), err)
	}
	return nil
}
