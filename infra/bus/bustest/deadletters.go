package bustest

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/cloudevents/sdk-go/v2/event"

	"github.com/lethe-dev/lethe/events"
	"github.com/lethe-dev/lethe/infra/bus"
)

const invalidType = "dev.lethe.test.invalid.v1"

// rejectInvalidType is the registry stand-in of the dead-letter tests: it
// refuses one event type.
func rejectInvalidType(e event.Event) error {
	if e.Type() == invalidType {
		return fmt.Errorf("unknown event type %s", e.Type())
	}
	return nil
}

// deadLetterThree dead-letters evt-a and evt-b (the handler calls them
// poison) and evt-bad (it fails validation), then stops receiving, so what
// the test replays lands in the subscription to be pulled.
func deadLetterThree(t *testing.T, b *bus.Bus, n names) {
	t.Helper()
	ensure(t, b, n, bus.SubscriptionSpec{})
	r := startReceive(t, b, n.sub, func(context.Context, event.Event) error {
		return events.Permanentf("poison for now")
	})
	publish(t, b, n.topic, fullEvent(t, "evt-a"))
	publish(t, b, n.topic, fullEvent(t, "evt-b"))
	bad := fullEventAttrs("evt-bad")
	bad["ce-type"] = invalidType
	publishRaw(t, b, n.topic, []byte(`{}`), bad)
	waitFor(t, "three dead letters", func() bool { return len(listDeadLetters(t, b, n.topic)) == 3 })
	if err := r.stop(t); err != nil {
		t.Fatalf("Receive: %v", err)
	}
}

func listDeadLetters(t *testing.T, b *bus.Bus, topic string) []bus.DeadLetter {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), waitLong)
	defer cancel()
	dls, err := b.ListDeadLetters(ctx, topic, 10)
	if err != nil {
		t.Fatalf("ListDeadLetters: %v", err)
	}
	return dls
}

func byEventID(dls []bus.DeadLetter) map[string]bus.DeadLetter {
	m := map[string]bus.DeadLetter{}
	for _, dl := range dls {
		m[dl.EventID] = dl
	}
	return m
}

// testDeadLettersListed: a listing describes every dead letter (never its
// data) and consumes none.
func testDeadLettersListed(t *testing.T, h Harness) {
	b, _ := open(t, h, bus.Config{Validate: rejectInvalidType})
	n := newNames(t)
	start := time.Now()
	deadLetterThree(t, b, n)
	for range 2 { // listing twice sees the same: nothing was consumed
		got := byEventID(listDeadLetters(t, b, n.topic))
		if len(got) != 3 {
			t.Fatalf("listed %v, want evt-a, evt-b, evt-bad", got)
		}
		for id, dl := range got {
			wantType := testType
			wantReason := "permanent: poison for now"
			if id == "evt-bad" {
				wantType = invalidType
				wantReason = "permanent: bus: validate: unknown event type " + invalidType
			}
			if dl.EventType != wantType || dl.Reason != wantReason || dl.Subscription != n.sub ||
				dl.Subject != "users/5f2b9c/conversations/c-1" || dl.ID == "" || dl.MessageID == "" || dl.ID == dl.MessageID ||
				dl.Time.Before(start.Add(-time.Second)) || dl.Time.After(time.Now().Add(time.Second)) {
				t.Errorf("dead letter %s = %+v, want type %s, reason %q, subscription %s, ids and a time since %v", id, dl, wantType, wantReason, n.sub, start)
			}
		}
	}
	if got := len(listDeadLetters(t, b, n.topic)); got != 3 {
		t.Errorf("after listing, %d dead letters held, want 3", got)
	}
}

// testDeadLettersReplayed: a replay of one id republishes only that one,
// without the dead-letter attributes and with its ordering key; a replay of
// all republishes what still validates and leaves the rest, reported.
func testDeadLettersReplayed(t *testing.T, h Harness) {
	b, _ := open(t, h, bus.Config{Validate: rejectInvalidType})
	n := newNames(t)
	deadLetterThree(t, b, n)
	held := byEventID(listDeadLetters(t, b, n.topic))
	ctx, cancel := context.WithTimeout(context.Background(), waitLong)
	defer cancel()

	if _, _, err := b.ReplayDeadLetters(ctx, n.topic, bus.ReplayFilter{ID: "no-such-id"}, nil, nil); !errors.Is(err, bus.ErrDeadLetterNotFound) {
		t.Errorf("replay of an unknown id: %v, want ErrDeadLetterNotFound", err)
	}
	if _, _, err := b.ReplayDeadLetters(ctx, n.topic, bus.ReplayFilter{}, nil, nil); err == nil {
		t.Error("replay with neither an id nor all succeeded")
	}

	var steps []bus.ReplayStep
	progress := func(s bus.ReplayStep) { steps = append(steps, s) }
	replayed, skipped, err := b.ReplayDeadLetters(ctx, n.topic, bus.ReplayFilter{ID: held["evt-a"].ID}, nil, progress)
	if err != nil || replayed != 1 || skipped != 0 {
		t.Fatalf("replay of evt-a = %d replayed, %d skipped, %v; want 1, 0, nil", replayed, skipped, err)
	}
	if len(steps) != 1 || steps[0].EventID != "evt-a" || steps[0].Err != nil {
		t.Errorf("progress = %+v, want evt-a replayed", steps)
	}
	m := pull(t, b, n.sub, 1)[0]
	if !maps.Equal(m.GetAttributes(), fullEventAttrs("evt-a")) {
		t.Errorf("replayed attributes = %v, want the original ones %v", m.GetAttributes(), fullEventAttrs("evt-a"))
	}
	if m.GetOrderingKey() != "conv-1" {
		t.Errorf("replayed ordering key = %q, want conv-1", m.GetOrderingKey())
	}
	if string(m.GetData()) != `{"seq":1,"note":"ünïcode"}` {
		t.Errorf("replayed data = %q", m.GetData())
	}
	if got := byEventID(listDeadLetters(t, b, n.topic)); len(got) != 2 || got["evt-a"].ID != "" {
		t.Errorf("after replaying evt-a, held %v, want evt-b and evt-bad", got)
	}

	steps = nil
	replayed, skipped, err = b.ReplayDeadLetters(ctx, n.topic, bus.ReplayFilter{All: true}, nil, progress)
	if err != nil || replayed != 1 || skipped != 1 {
		t.Fatalf("replay of all = %d replayed, %d skipped, %v; want 1, 1, nil", replayed, skipped, err)
	}
	slices.SortFunc(steps, func(a, b bus.ReplayStep) int { return strings.Compare(a.EventID, b.EventID) })
	if len(steps) != 2 || steps[0].EventID != "evt-b" || steps[0].Err != nil ||
		steps[1].EventID != "evt-bad" || steps[1].Err == nil || !strings.Contains(steps[1].Err.Error(), "unknown event type") {
		t.Errorf("progress = %+v, want evt-b replayed and evt-bad refused by validation", steps)
	}
	if m := pull(t, b, n.sub, 1)[0]; m.GetAttributes()["ce-id"] != "evt-b" {
		t.Errorf("replayed %v, want evt-b", m.GetAttributes())
	}
	expectNoMessage(t, b, n.sub)
	if got := byEventID(listDeadLetters(t, b, n.topic)); len(got) != 1 || got["evt-bad"].ID != held["evt-bad"].ID {
		t.Errorf("after replaying all, held %v, want evt-bad only", got)
	}
}
