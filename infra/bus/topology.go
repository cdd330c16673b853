package bus

import (
	"context"
	"fmt"
	"time"

	"cloud.google.com/go/pubsub/v2/apiv1/pubsubpb"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/durationpb"
)

// Suffixes of the dead-letter resources of a topic. Kept in step with
// events.DeadLetterTopic (topic + "-dead-letter").
const (
	deadLetterSuffix     = "-dead-letter"
	deadLetterHoldSuffix = "-hold"
)

// Defaults for SubscriptionSpec fields left zero.
const (
	DefaultAckDeadline         = 60 * time.Second
	DefaultMaxDeliveryAttempts = 10
	DefaultMinBackoff          = 10 * time.Second
	DefaultMaxBackoff          = 600 * time.Second
)

// TopicSpec describes a topic and its subscriptions. Every topic gets a
// dead-letter topic <Name>-dead-letter with a holding subscription
// DeadLetterHoldSubscription(Name), because Pub/Sub drops messages published
// to a topic that has no subscription.
type TopicSpec struct {
	Name          string
	Subscriptions []SubscriptionSpec
}

// SubscriptionSpec describes a pull subscription. Zero fields take the
// Default* values.
type SubscriptionSpec struct {
	Name        string
	AckDeadline time.Duration // 10s..600s
	// MaxDeliveryAttempts before Pub/Sub itself moves a message to the
	// dead-letter topic (5..100, as the service allows).
	MaxDeliveryAttempts int
	// Ordered enables message ordering (by the partitionkey extension).
	Ordered bool
	// MinBackoff and MaxBackoff bound the redelivery delay after a nack.
	MinBackoff time.Duration
	MaxBackoff time.Duration
	// PushEndpoint, when set, makes it a push subscription: Pub/Sub POSTs
	// each message there (the edge's /push/{subscription}) instead of
	// waiting to be pulled.
	PushEndpoint string
}

// deadLetterTopic is the id of topic's dead-letter topic (the rule of
// events.DeadLetterTopic).
func deadLetterTopic(topic string) string { return topic + deadLetterSuffix }

// DeadLetterHoldSubscription is the id of the subscription that keeps the
// dead letters of topic until an operator inspects or replays them.
func DeadLetterHoldSubscription(topic string) string {
	return deadLetterTopic(topic) + deadLetterHoldSuffix
}

// EnsureTopology creates the topics, their dead-letter topics and holding
// subscriptions, and the subscriptions with their dead-letter and retry
// policies. Resources that already exist are left as they are, so it is
// safe to call on every start. In production Terraform owns these resources
// (and the IAM grants dead-lettering needs); this is for embedded mode,
// emulators and tests.
func (b *Bus) EnsureTopology(ctx context.Context, specs []TopicSpec) error {
	if b.isClosed() {
		return ErrClosed
	}
	for _, ts := range specs {
		if ts.Name == "" {
			return fmt.Errorf("bus.EnsureTopology: topic with empty name")
		}
		for _, ss := range ts.Subscriptions {
			if _, err := subscriptionProto(b, ts.Name, ss); err != nil {
				return fmt.Errorf("bus.EnsureTopology: %w", err)
			}
		}
	}
	for _, ts := range specs {
		dlt := deadLetterTopic(ts.Name)
		for _, t := range []string{ts.Name, dlt} {
			if err := b.createTopic(ctx, t); err != nil {
				return err
			}
		}
		hold := &pubsubpb.Subscription{
			Name:               b.SubscriptionName(DeadLetterHoldSubscription(ts.Name)),
			Topic:              b.TopicName(dlt),
			AckDeadlineSeconds: int32(DefaultAckDeadline / time.Second),
		}
		if err := b.createSubscription(ctx, hold); err != nil {
			return err
		}
		for _, ss := range ts.Subscriptions {
			sp, _ := subscriptionProto(b, ts.Name, ss)
			if err := b.createSubscription(ctx, sp); err != nil {
				return err
			}
		}
	}
	return nil
}

func subscriptionProto(b *Bus, topic string, ss SubscriptionSpec) (*pubsubpb.Subscription, error) {
	if ss.Name == "" {
		return nil, fmt.Errorf("topic %q: subscription with empty name", topic)
	}
	ack := ss.AckDeadline
	if ack == 0 {
		ack = DefaultAckDeadline
	}
	if ack < 10*time.Second || ack > 600*time.Second {
		return nil, fmt.Errorf("subscription %q: ack deadline %s outside 10s..600s", ss.Name, ack)
	}
	attempts := ss.MaxDeliveryAttempts
	if attempts == 0 {
		attempts = DefaultMaxDeliveryAttempts
	}
	if attempts < 5 || attempts > 100 {
		return nil, fmt.Errorf("subscription %q: max delivery attempts %d outside 5..100", ss.Name, attempts)
	}
	minB, maxB := ss.MinBackoff, ss.MaxBackoff
	if minB == 0 {
		minB = DefaultMinBackoff
	}
	if maxB == 0 {
		maxB = DefaultMaxBackoff
	}
	if minB < 0 || maxB > 600*time.Second || minB > maxB {
		return nil, fmt.Errorf("subscription %q: backoff %s..%s outside 0s..600s or inverted", ss.Name, minB, maxB)
	}
	var push *pubsubpb.PushConfig
	if ss.PushEndpoint != "" {
		push = &pubsubpb.PushConfig{PushEndpoint: ss.PushEndpoint}
	}
	return &pubsubpb.Subscription{
		PushConfig:            push,
		Name:                  b.SubscriptionName(ss.Name),
		Topic:                 b.TopicName(topic),
		AckDeadlineSeconds:    int32(ack / time.Second),
		EnableMessageOrdering: ss.Ordered,
		DeadLetterPolicy: &pubsubpb.DeadLetterPolicy{
			DeadLetterTopic:     b.TopicName(deadLetterTopic(topic)),
			MaxDeliveryAttempts: int32(attempts),
		},
		RetryPolicy: &pubsubpb.RetryPolicy{
			MinimumBackoff: durationpb.New(minB),
			MaximumBackoff: durationpb.New(maxB),
		},
	}, nil
}

func (b *Bus) createTopic(ctx context.Context, topic string) error {
	_, err := b.client.TopicAdminClient.CreateTopic(ctx, &pubsubpb.Topic{Name: b.TopicName(topic)})
	if err != nil && status.Code(err) != codes.AlreadyExists {
		return fmt.Errorf("bus.EnsureTopology: CreateTopic %s: %w", topic, err)
	}
	return nil
}

func (b *Bus) createSubscription(ctx context.Context, s *pubsubpb.Subscription) error {
	_, err := b.client.SubscriptionAdminClient.CreateSubscription(ctx, s)
	if err != nil && status.Code(err) != codes.AlreadyExists {
		return fmt.Errorf("bus.EnsureTopology: CreateSubscription %s: %w", s.Name, err)
	}
	return nil
}
