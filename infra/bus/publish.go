package bus

import (
	"context"
	"errors"
	"fmt"

	"cloud.google.com/go/pubsub/v2"
	"github.com/cloudevents/sdk-go/v2/event"
	"github.com/cloudevents/sdk-go/v2/types"

	"github.com/lethe-dev/lethe/events"
)

// PartitionKeyExtension is the CloudEvents partitioning extension; its value
// becomes the Pub/Sub ordering key, so events of one partition (one
// conversation) are delivered in publish order on ordered subscriptions.
const PartitionKeyExtension = "partitionkey"

// Publish validates e (when Config.Validate is set), maps it to a binary-mode
// message and publishes it to topic (an id or a full name), returning only
// once the server has stored it. Mapping and validation failures are
// permanent errors; publish failures are not.
func (b *Bus) Publish(ctx context.Context, topic string, e event.Event) error {
	if b.cfg.Validate != nil {
		if err := b.cfg.Validate(e); err != nil {
			return fmt.Errorf("bus.Publish: validate: %w", events.Permanent(err))
		}
	}
	data, attrs, err := ToMessage(e)
	if err != nil {
		return fmt.Errorf("bus.Publish: %w", err)
	}
	key := ""
	if v, ok := e.Extensions()[PartitionKeyExtension]; ok {
		if key, err = types.Format(v); err != nil {
			return fmt.Errorf("bus.Publish: %s: %w", PartitionKeyExtension, events.Permanent(err))
		}
	}
	if _, err := b.PublishMessage(ctx, topic, data, attrs, key); err != nil {
		return fmt.Errorf("bus.Publish: %w", err)
	}
	return nil
}

// PublishMessage publishes a raw Pub/Sub message and waits for its server
// id. It bypasses the CloudEvents mapping: it is for replaying dead letters
// and for tests that need malformed or structured-mode messages.
func (b *Bus) PublishMessage(ctx context.Context, topic string, data []byte, attrs map[string]string, orderingKey string) (string, error) {
	p, err := b.publisher(topic)
	if err != nil {
		return "", err
	}
	res := p.Publish(ctx, &pubsub.Message{Data: data, Attributes: attrs, OrderingKey: orderingKey})
	id, err := res.Get(ctx)
	if err != nil {
		if orderingKey != "" {
			// An ordered publisher pauses a key after a failure; resume it
			// so the caller's retry can go through.
			p.ResumePublish(orderingKey)
		}
		if errors.Is(err, pubsub.ErrOversizedMessage) {
			err = events.Permanent(err)
		}
		return "", fmt.Errorf("pubsub.Publish %s: %w", p.ID(), err)
	}
	return id, nil
}
