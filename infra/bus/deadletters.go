package bus

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"strings"
	"time"

	"cloud.google.com/go/pubsub/v2/apiv1/pubsubpb"
	"github.com/cloudevents/sdk-go/v2/event"
	"github.com/cloudevents/sdk-go/v2/types"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

// deadLetterPullTimeout bounds one pull from a holding subscription: an
// empty dead-letter topic answers with nothing rather than at once.
const deadLetterPullTimeout = 3 * time.Second

// DefaultDeadLetterList is how many dead letters ListDeadLetters returns
// when max is not positive.
const DefaultDeadLetterList = 100

// DeadLetter describes a message held in a topic's dead-letter topic. It
// never carries the message data.
type DeadLetter struct {
	ID           string    // message id in the dead-letter topic: what a replay names
	EventType    string    // empty when the message is not a CloudEvent
	EventID      string    //
	Subject      string    // users/<uid-hash>/..., already pseudonymous
	Reason       string    // why it was dead-lettered (AttrDeadLetterReason)
	Time         time.Time // when it was dead-lettered
	Subscription string    // the subscription it failed on
	MessageID    string    // its message id on the original topic
}

// ReplayFilter selects the dead letters a replay republishes: the one with
// ID, or All of them.
type ReplayFilter struct {
	ID  string
	All bool
	// Decode is how the topic's messages decode for re-validation (the
	// upload decoder for Cloud Storage notifications); nil means
	// FromMessage.
	Decode Decoder
}

// ReplayStep reports one dead letter a replay looked at: Err is nil when it
// was republished, else why it was left in the dead-letter topic.
type ReplayStep struct {
	DeadLetter
	Err error
}

// ErrDeadLetterNotFound is returned by a replay of one ID that is not held.
var ErrDeadLetterNotFound = errors.New("bus: dead letter not found")

// ListDeadLetters returns up to max (DefaultDeadLetterList when max <= 0)
// dead letters of topic without consuming them: they are pulled from the
// holding subscription and released at once, so they stay for a replay.
func (b *Bus) ListDeadLetters(ctx context.Context, topic string, max int) ([]DeadLetter, error) {
	if b.isClosed() {
		return nil, ErrClosed
	}
	if max <= 0 {
		max = DefaultDeadLetterList
	}
	hold := b.SubscriptionName(DeadLetterHoldSubscription(topic))
	var (
		out     []DeadLetter
		ackIDs  []string
		seen    = map[string]bool{}
		pullErr error
	)
	for len(out) < max {
		msgs, err := b.pullHold(ctx, hold, max-len(out))
		if err != nil {
			pullErr = err
			break
		}
		if len(msgs) == 0 {
			break
		}
		for _, rm := range msgs {
			ackIDs = append(ackIDs, rm.GetAckId())
			m := rm.GetMessage()
			if seen[m.GetMessageId()] {
				continue
			}
			seen[m.GetMessageId()] = true
			out = append(out, describeDeadLetter(m))
		}
	}
	// Released whatever happened, so a failed listing leaves them in place.
	if err := b.releaseHold(context.WithoutCancel(ctx), hold, ackIDs); err != nil && pullErr == nil {
		pullErr = err
	}
	if pullErr != nil {
		return nil, fmt.Errorf("bus.ListDeadLetters %s: %w", topic, pullErr)
	}
	return out, nil
}

// ReplayDeadLetters republishes dead letters of topic to topic itself, so
// every subscription of the topic sees them again (handlers are idempotent).
// Each is first stripped of the dead-letter attributes, decoded with
// f.Decode and checked with validate (nil means Config.Validate): one that
// fails stays in the dead-letter topic and counts as skipped. A republished
// one is then acknowledged in the holding subscription. progress, when set,
// is called once per dead letter looked at. Dead letters that arrive after
// the replay started (a replayed message failing again) are left for the
// next replay, so a replay always ends.
func (b *Bus) ReplayDeadLetters(ctx context.Context, topic string, f ReplayFilter, validate func(event.Event) error, progress func(ReplayStep)) (replayed, skipped int, err error) {
	if b.isClosed() {
		return 0, 0, ErrClosed
	}
	if f.All == (f.ID != "") {
		return 0, 0, errors.New("bus.ReplayDeadLetters: give either an ID or All")
	}
	if validate == nil {
		validate = b.cfg.Validate
	}
	decode := f.Decode
	if decode == nil {
		decode = FromMessage
	}
	if progress == nil {
		progress = func(ReplayStep) {}
	}
	hold := b.SubscriptionName(DeadLetterHoldSubscription(topic))
	start := time.Now()
	var release []string // ack ids to hand back at the end
	seen := map[string]bool{}
	found := false
	defer func() {
		if rerr := b.releaseHold(context.WithoutCancel(ctx), hold, release); rerr != nil && err == nil {
			err = fmt.Errorf("bus.ReplayDeadLetters %s: %w", topic, rerr)
		}
	}()
	for !(found && f.ID != "") {
		msgs, perr := b.pullHold(ctx, hold, 100)
		if perr != nil {
			return replayed, skipped, fmt.Errorf("bus.ReplayDeadLetters %s: %w", topic, perr)
		}
		fresh := 0
		for _, rm := range msgs {
			m := rm.GetMessage()
			if seen[m.GetMessageId()] || (f.ID != "" && m.GetMessageId() != f.ID) || found ||
				(m.GetPublishTime() != nil && m.GetPublishTime().AsTime().After(start)) {
				release = append(release, rm.GetAckId())
				continue
			}
			seen[m.GetMessageId()] = true
			fresh++
			found = found || f.ID != ""
			dl := describeDeadLetter(m)
			data, attrs, key, verr := replayable(m, decode, validate)
			if verr != nil {
				skipped++
				release = append(release, rm.GetAckId())
				progress(ReplayStep{DeadLetter: dl, Err: verr})
				continue
			}
			if _, perr := b.PublishMessage(ctx, topic, data, attrs, key); perr != nil {
				release = append(release, rm.GetAckId())
				return replayed, skipped, fmt.Errorf("bus.ReplayDeadLetters %s: %w", topic, perr)
			}
			if aerr := b.client.SubscriptionAdminClient.Acknowledge(context.WithoutCancel(ctx), &pubsubpb.AcknowledgeRequest{Subscription: hold, AckIds: []string{rm.GetAckId()}}); aerr != nil {
				// Republished but still held: a later replay sends it
				// again, which idempotent handlers absorb.
				return replayed, skipped, fmt.Errorf("bus.ReplayDeadLetters %s: Acknowledge: %w", topic, aerr)
			}
			replayed++
			progress(ReplayStep{DeadLetter: dl})
		}
		if len(msgs) == 0 || fresh == 0 {
			break
		}
	}
	if f.ID != "" && !found {
		return 0, 0, fmt.Errorf("bus.ReplayDeadLetters %s: %s: %w", topic, f.ID, ErrDeadLetterNotFound)
	}
	return replayed, skipped, nil
}

// replayable strips the dead-letter attributes from m and checks that what
// is left still decodes and validates.
func replayable(m *pubsubpb.PubsubMessage, decode Decoder, validate func(event.Event) error) (data []byte, attrs map[string]string, orderingKey string, err error) {
	attrs = maps.Clone(m.GetAttributes())
	for _, k := range []string{AttrDeadLetterReason, AttrDeadLetterSubscription, AttrDeadLetterTime, AttrDeadLetterMessageID} {
		delete(attrs, k)
	}
	e, err := decode(m.GetData(), attrs)
	if err != nil {
		return nil, nil, "", fmt.Errorf("decode: %w", err)
	}
	if validate != nil {
		if err := validate(e); err != nil {
			return nil, nil, "", fmt.Errorf("validate: %w", err)
		}
	}
	if v, ok := e.Extensions()[PartitionKeyExtension]; ok {
		if orderingKey, err = types.Format(v); err != nil {
			return nil, nil, "", fmt.Errorf("%s: %w", PartitionKeyExtension, err)
		}
	}
	return m.GetData(), attrs, orderingKey, nil
}

// describeDeadLetter reads what an operator needs from a dead letter, never
// its data: the CloudEvents attributes (binary mode) or, for a structured
// message, the decoded context.
func describeDeadLetter(m *pubsubpb.PubsubMessage) DeadLetter {
	a := m.GetAttributes()
	dl := DeadLetter{
		ID:           m.GetMessageId(),
		EventType:    a[AttrPrefix+"type"],
		EventID:      a[AttrPrefix+"id"],
		Subject:      a[AttrPrefix+"subject"],
		Reason:       a[AttrDeadLetterReason],
		Subscription: a[AttrDeadLetterSubscription],
		MessageID:    a[AttrDeadLetterMessageID],
	}
	if dl.EventType == "" && strings.HasPrefix(a[AttrContentType], "application/cloudevents") {
		if e, err := FromMessage(m.GetData(), a); err == nil {
			dl.EventType, dl.EventID, dl.Subject = e.Type(), e.ID(), e.Subject()
		}
	}
	if t, err := time.Parse(time.RFC3339Nano, a[AttrDeadLetterTime]); err == nil {
		dl.Time = t
	} else if m.GetPublishTime() != nil {
		dl.Time = m.GetPublishTime().AsTime()
	}
	if dl.Reason == "" {
		// Moved by the subscription's dead-letter policy, not by Receive.
		dl.Reason = "delivery attempts exhausted"
	}
	return dl
}

// pullHold pulls up to max messages from a holding subscription; an empty
// subscription yields none after deadLetterPullTimeout at most.
func (b *Bus) pullHold(ctx context.Context, hold string, max int) ([]*pubsubpb.ReceivedMessage, error) {
	pctx, cancel := context.WithTimeout(ctx, deadLetterPullTimeout)
	defer cancel()
	resp, err := b.client.SubscriptionAdminClient.Pull(pctx, &pubsubpb.PullRequest{Subscription: hold, MaxMessages: int32(min(max, 1000))})
	if err != nil {
		if ctx.Err() == nil && (pctx.Err() != nil || status.Code(err) == codes.DeadlineExceeded) {
			return nil, nil
		}
		return nil, fmt.Errorf("pubsub.Pull: %w", err)
	}
	return resp.GetReceivedMessages(), nil
}

// releaseHold makes pulled messages available again at once.
func (b *Bus) releaseHold(ctx context.Context, hold string, ackIDs []string) error {
	for len(ackIDs) > 0 {
		n := min(len(ackIDs), 1000)
		if err := b.client.SubscriptionAdminClient.ModifyAckDeadline(ctx, &pubsubpb.ModifyAckDeadlineRequest{Subscription: hold, AckIds: ackIDs[:n], AckDeadlineSeconds: 0}); err != nil {
			return fmt.Errorf("ModifyAckDeadline: %w", err)
		}
		ackIDs = ackIDs[n:]
	}
	return nil
}
