// Package bustest is the behaviour suite every Pub/Sub backend of the bus
// must pass: the in-process pstest server and the gcloud emulator (and, by
// the same code, the real service). Backends that differ declare it in
// Capabilities; nothing is skipped by type assertion.
package bustest

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"cloud.google.com/go/pubsub/v2/apiv1/pubsubpb"
	"github.com/cloudevents/sdk-go/v2/event"

	"github.com/lethe-dev/lethe/events"
	"github.com/lethe-dev/lethe/infra/bus"
	"github.com/lethe-dev/lethe/infra/bus/middleware"
)

// Capabilities are the behaviours that differ between backends.
type Capabilities struct {
	// DeliveryAttempt: messages on subscriptions with a dead-letter policy
	// carry their delivery attempt (pstest and the real service do).
	DeliveryAttempt bool
	// DeadLetterPolicy: the backend itself moves a message that failed
	// MaxDeliveryAttempts times to the dead-letter topic.
	DeadLetterPolicy bool
	// SubscriptionPolicies: GetSubscription returns the dead-letter and
	// retry policies the subscription was created with.
	SubscriptionPolicies bool
}

// Harness opens buses on one backend.
type Harness struct {
	// Open returns an open Bus on the backend. cfg carries the behaviour
	// the test wants (Logger, Validate, PublishDelay, ...); Open fills in
	// the connection fields (ProjectID, Embedded or EmulatorHost) and
	// registers b.Close with t.Cleanup.
	Open func(t *testing.T, cfg bus.Config) *bus.Bus
	Capabilities
}

// RunBusTests runs the suite. Every test names its topics and subscriptions
// after t.Name() plus a random suffix, so tests run in parallel against one
// shared emulator and reruns never see old messages.
func RunBusTests(t *testing.T, h Harness) {
	tests := []struct {
		name string
		fn   func(*testing.T, Harness)
	}{
		{"PublishBinaryModeAttributes", testPublishBinaryModeAttributes},
		{"ReceiveBinaryRoundTrip", testReceiveBinaryRoundTrip},
		{"ReceiveStructuredMode", testReceiveStructuredMode},
		{"PermanentErrorDeadLetters", testPermanentErrorDeadLetters},
		{"DroppedIsAcked", testDroppedIsAcked},
		{"RetryableErrorRedelivered", testRetryableErrorRedelivered},
		{"PanicRecovered", testPanicRecovered},
		{"PanicWithoutRecovererIsNacked", testPanicWithoutRecovererIsNacked},
		{"UndecodableDeadLettered", testUndecodableDeadLettered},
		{"CustomDecoder", testCustomDecoder},
		{"OrderingPerKey", testOrderingPerKey},
		{"GracefulShutdown", testGracefulShutdown},
		{"DrainTimeoutCancelsHandlers", testDrainTimeoutCancelsHandlers},
		{"DeadLetterPolicyBackstop", testDeadLetterPolicyBackstop},
		{"PublishErrors", testPublishErrors},
		{"ReceiveMissingSubscription", testReceiveMissingSubscription},
		{"EnsureTopologyIdempotent", testEnsureTopologyIdempotent},
		{"PingAndClose", testPingAndClose},
		{"DeadLettersListed", testDeadLettersListed},
		{"DeadLettersReplayed", testDeadLettersReplayed},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			tc.fn(t, h)
		})
	}
}

const (
	testType   = "dev.lethe.test.happened.v1"
	waitLong   = 30 * time.Second
	quietAfter = 1500 * time.Millisecond // how long "nothing more happens" is watched
)

// UniqueName turns t.Name() into a valid Pub/Sub resource id (a letter
// first; letters, digits and "-"; at most 255 bytes even with the suffixes
// the bus adds) made unique by a random suffix.
func UniqueName(t testing.TB) string {
	var b strings.Builder
	b.WriteString("t-")
	for _, r := range t.Name() {
		switch {
		case r >= 'a' && r <= 'z', r >= 'A' && r <= 'Z', r >= '0' && r <= '9':
			b.WriteRune(r)
		default:
			b.WriteByte('-')
		}
	}
	s := b.String()
	if len(s) > 180 {
		s = s[:180]
	}
	var rnd [4]byte
	if _, err := rand.Read(rnd[:]); err != nil {
		t.Fatalf("crypto/rand: %v", err)
	}
	return s + "-" + hex.EncodeToString(rnd[:])
}

type names struct{ topic, sub, hold string }

func newNames(t *testing.T) names {
	base := UniqueName(t)
	return names{topic: base, sub: base + "-sub", hold: bus.DeadLetterHoldSubscription(base)}
}

// ensure creates n's topology with one subscription and deletes it when the
// test ends (so a shared emulator does not accumulate resources).
func ensure(t *testing.T, b *bus.Bus, n names, ss bus.SubscriptionSpec) {
	t.Helper()
	ss.Name = n.sub
	if ss.MinBackoff == 0 {
		// Keep redelivery quick on backends that honour the retry policy.
		ss.MinBackoff, ss.MaxBackoff = 100*time.Millisecond, time.Second
	}
	ctx, cancel := context.WithTimeout(context.Background(), waitLong)
	defer cancel()
	if err := b.EnsureTopology(ctx, []bus.TopicSpec{{Name: n.topic, Subscriptions: []bus.SubscriptionSpec{ss}}}); err != nil {
		t.Fatalf("EnsureTopology: %v", err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		c := b.Client()
		for _, s := range []string{n.sub, n.hold} {
			_ = c.SubscriptionAdminClient.DeleteSubscription(ctx, &pubsubpb.DeleteSubscriptionRequest{Subscription: b.SubscriptionName(s)})
		}
		for _, tp := range []string{n.topic, n.topic + "-dead-letter"} {
			_ = c.TopicAdminClient.DeleteTopic(ctx, &pubsubpb.DeleteTopicRequest{Topic: b.TopicName(tp)})
		}
	})
}

func open(t *testing.T, h Harness, cfg bus.Config) (*bus.Bus, *syncBuffer) {
	t.Helper()
	logs := &syncBuffer{}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.NewJSONHandler(logs, &slog.HandlerOptions{Level: slog.LevelDebug}))
	}
	if cfg.PublishDelay == 0 {
		cfg.PublishDelay = time.Millisecond
	}
	return h.Open(t, cfg), logs
}

// syncBuffer is a log sink safe to read while handlers write.
type syncBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.buf.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.buf.String()
}

var fixedTime = time.Date(2026, 11, 23, 10, 11, 12, 123456789, time.FixedZone("CET", 3600))

// fullEvent sets every context attribute and typed extensions, so the
// mapping of each one is checked.
func fullEvent(t *testing.T, id string) event.Event {
	t.Helper()
	e := event.New()
	e.SetID(id)
	e.SetSource(events.Source)
	e.SetType(testType)
	e.SetSubject("users/5f2b9c/conversations/c-1")
	e.SetTime(fixedTime)
	e.SetDataSchema("https://lethe.dev/schemas/" + testType + ".json")
	if err := e.SetData("application/json", []byte(`{"seq":1,"note":"ünïcode"}`)); err != nil {
		t.Fatal(err)
	}
	for k, v := range map[string]any{bus.PartitionKeyExtension: "conv-1", "seq": int32(7), "sealed": true} {
		e.SetExtension(k, v)
	}
	return e
}

func fullEventAttrs(id string) map[string]string {
	return map[string]string{
		"ce-specversion":  "1.0",
		"ce-id":           id,
		"ce-source":       events.Source,
		"ce-type":         testType,
		"ce-subject":      "users/5f2b9c/conversations/c-1",
		"ce-time":         "2026-11-23T09:11:12.123456789Z",
		"ce-dataschema":   "https://lethe.dev/schemas/" + testType + ".json",
		"content-type":    "application/json",
		"ce-partitionkey": "conv-1",
		"ce-seq":          "7",
		"ce-sealed":       "true",
	}
}

func minimalEvent(id string) event.Event {
	e := event.New()
	e.SetID(id)
	e.SetSource(events.Source)
	e.SetType(testType)
	return e
}

func publish(t *testing.T, b *bus.Bus, topic string, e event.Event) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), waitLong)
	defer cancel()
	if err := b.Publish(ctx, topic, e); err != nil {
		t.Fatalf("Publish %s: %v", e.ID(), err)
	}
}

func publishRaw(t *testing.T, b *bus.Bus, topic string, data []byte, attrs map[string]string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), waitLong)
	defer cancel()
	if _, err := b.PublishMessage(ctx, topic, data, attrs, ""); err != nil {
		t.Fatalf("PublishMessage: %v", err)
	}
}

// pull reads n raw messages from sub with synchronous Pull calls and
// acknowledges them. It fails the test if fewer arrive within waitLong.
func pull(t *testing.T, b *bus.Bus, sub string, n int) []*pubsubpb.PubsubMessage {
	t.Helper()
	var got []*pubsubpb.PubsubMessage
	deadline := time.Now().Add(waitLong)
	for len(got) < n && time.Now().Before(deadline) {
		got = append(got, pullOnce(t, b, sub, n-len(got))...)
	}
	if len(got) < n {
		t.Fatalf("pull %s: got %d messages, want %d", sub, len(got), n)
	}
	return got
}

func pullOnce(t *testing.T, b *bus.Bus, sub string, max int) []*pubsubpb.PubsubMessage {
	t.Helper()
	c := b.Client().SubscriptionAdminClient
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	resp, err := c.Pull(ctx, &pubsubpb.PullRequest{Subscription: b.SubscriptionName(sub), MaxMessages: int32(max)})
	if err != nil {
		if ctx.Err() != nil {
			return nil // nothing arrived in time
		}
		t.Fatalf("Pull %s: %v", sub, err)
	}
	var out []*pubsubpb.PubsubMessage
	var ids []string
	for _, rm := range resp.GetReceivedMessages() {
		out = append(out, rm.GetMessage())
		ids = append(ids, rm.GetAckId())
	}
	if len(ids) > 0 {
		actx, acancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer acancel()
		if err := c.Acknowledge(actx, &pubsubpb.AcknowledgeRequest{Subscription: b.SubscriptionName(sub), AckIds: ids}); err != nil {
			t.Fatalf("Acknowledge %s: %v", sub, err)
		}
	}
	return out
}

// expectNoMessage fails if sub yields a message within quietAfter.
func expectNoMessage(t *testing.T, b *bus.Bus, sub string) {
	t.Helper()
	deadline := time.Now().Add(quietAfter)
	for time.Now().Before(deadline) {
		if got := pullOnce(t, b, sub, 10); len(got) > 0 {
			t.Fatalf("%s: unexpected message with attributes %v", sub, got[0].GetAttributes())
		}
	}
}

type receiver struct {
	cancel context.CancelFunc
	done   chan struct{}
	err    error
}

// startReceive runs b.Receive in the background until stop (or the end of
// the test).
func startReceive(t *testing.T, b *bus.Bus, sub string, h bus.Handler) *receiver {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	r := &receiver{cancel: cancel, done: make(chan struct{})}
	go func() {
		defer close(r.done)
		r.err = b.Receive(ctx, sub, h)
	}()
	t.Cleanup(func() { r.stop(t) })
	return r
}

func (r *receiver) stop(t *testing.T) error {
	r.cancel()
	select {
	case <-r.done:
		return r.err
	case <-time.After(waitLong):
		t.Fatalf("Receive did not return %s after cancel", waitLong)
		return nil
	}
}

func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(waitLong)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %s waiting for %s", waitLong, what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

func testPublishBinaryModeAttributes(t *testing.T, h Harness) {
	b, _ := open(t, h, bus.Config{})
	n := newNames(t)
	ensure(t, b, n, bus.SubscriptionSpec{})
	tests := []struct {
		name      string
		event     event.Event
		wantAttrs map[string]string
		wantData  string
		wantKey   string
	}{
		{
			name:      "every attribute",
			event:     fullEvent(t, "evt-full"),
			wantAttrs: fullEventAttrs("evt-full"),
			wantData:  `{"seq":1,"note":"ünïcode"}`,
			wantKey:   "conv-1",
		},
		{
			name:  "required attributes only",
			event: minimalEvent("evt-min"),
			wantAttrs: map[string]string{
				"ce-specversion": "1.0",
				"ce-id":          "evt-min",
				"ce-source":      events.Source,
				"ce-type":        testType,
			},
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			publish(t, b, n.topic, tc.event)
			m := pull(t, b, n.sub, 1)[0]
			if !maps.Equal(m.GetAttributes(), tc.wantAttrs) {
				t.Errorf("attributes:\n got %v\nwant %v", m.GetAttributes(), tc.wantAttrs)
			}
			if string(m.GetData()) != tc.wantData {
				t.Errorf("body = %q, want %q", m.GetData(), tc.wantData)
			}
			if m.GetOrderingKey() != tc.wantKey {
				t.Errorf("ordering key = %q, want %q", m.GetOrderingKey(), tc.wantKey)
			}
		})
	}
}

func testReceiveBinaryRoundTrip(t *testing.T, h Harness) {
	b, _ := open(t, h, bus.Config{})
	n := newNames(t)
	ensure(t, b, n, bus.SubscriptionSpec{})
	got := make(chan event.Event, 1)
	startReceive(t, b, n.sub, func(_ context.Context, e event.Event) error {
		got <- e
		return nil
	})
	publish(t, b, n.topic, fullEvent(t, "evt-rt"))
	var e event.Event
	select {
	case e = <-got:
	case <-time.After(waitLong):
		t.Fatal("handler not called")
	}
	checks := []struct{ field, got, want string }{
		{"specversion", e.SpecVersion(), "1.0"},
		{"id", e.ID(), "evt-rt"},
		{"source", e.Source(), events.Source},
		{"type", e.Type(), testType},
		{"subject", e.Subject(), "users/5f2b9c/conversations/c-1"},
		{"time", e.Time().UTC().Format(time.RFC3339Nano), "2026-11-23T09:11:12.123456789Z"},
		{"dataschema", e.DataSchema(), "https://lethe.dev/schemas/" + testType + ".json"},
		{"datacontenttype", e.DataContentType(), "application/json"},
		{"data", string(e.Data()), `{"seq":1,"note":"ünïcode"}`},
	}
	for _, c := range checks {
		if c.got != c.want {
			t.Errorf("%s = %q, want %q", c.field, c.got, c.want)
		}
	}
	// Binary mode carries extension values as their canonical strings.
	wantExt := map[string]any{bus.PartitionKeyExtension: "conv-1", "seq": "7", "sealed": "true"}
	if !maps.Equal(e.Extensions(), wantExt) {
		t.Errorf("extensions = %v, want %v", e.Extensions(), wantExt)
	}
	expectNoMessage(t, b, n.hold)
}

func testReceiveStructuredMode(t *testing.T, h Harness) {
	b, _ := open(t, h, bus.Config{})
	n := newNames(t)
	ensure(t, b, n, bus.SubscriptionSpec{})
	got := make(chan event.Event, 1)
	startReceive(t, b, n.sub, func(_ context.Context, e event.Event) error {
		got <- e
		return nil
	})
	body := `{"specversion":"1.0","id":"evt-structured","source":"//lethe.dev/pipeline",` +
		`"type":"` + testType + `","subject":"users/5f2b9c/x","time":"2026-11-23T09:11:12Z",` +
		`"datacontenttype":"application/json","data":{"seq":42},"partitionkey":"conv-9"}`
	publishRaw(t, b, n.topic, []byte(body), map[string]string{"content-type": "application/cloudevents+json; charset=UTF-8"})
	var e event.Event
	select {
	case e = <-got:
	case <-time.After(waitLong):
		t.Fatal("handler not called")
	}
	if e.ID() != "evt-structured" || e.Type() != testType || e.Source() != events.Source || e.Subject() != "users/5f2b9c/x" {
		t.Errorf("context = %s", e.Context)
	}
	if !e.Time().Equal(time.Date(2026, 11, 23, 9, 11, 12, 0, time.UTC)) {
		t.Errorf("time = %v", e.Time())
	}
	if string(e.Data()) != `{"seq":42}` || e.DataContentType() != "application/json" {
		t.Errorf("data = %q (%s), want {\"seq\":42} (application/json)", e.Data(), e.DataContentType())
	}
	if v := e.Extensions()[bus.PartitionKeyExtension]; v != "conv-9" {
		t.Errorf("partitionkey = %v", v)
	}
	expectNoMessage(t, b, n.hold)
}

// deadLetters pulls n dead letters from the hold subscription and checks the
// attributes every dead letter must carry.
func deadLetters(t *testing.T, b *bus.Bus, nm names, n int, since time.Time) []*pubsubpb.PubsubMessage {
	t.Helper()
	msgs := pull(t, b, nm.hold, n)
	for _, m := range msgs {
		a := m.GetAttributes()
		if a[bus.AttrDeadLetterSubscription] != nm.sub {
			t.Errorf("%s = %q, want %q", bus.AttrDeadLetterSubscription, a[bus.AttrDeadLetterSubscription], nm.sub)
		}
		ts, err := time.Parse(time.RFC3339Nano, a[bus.AttrDeadLetterTime])
		if err != nil || ts.Before(since.Add(-time.Second)) || ts.After(time.Now().Add(time.Second)) {
			t.Errorf("%s = %q (%v), want a time since %v", bus.AttrDeadLetterTime, a[bus.AttrDeadLetterTime], err, since)
		}
		if a[bus.AttrDeadLetterMessageID] == "" {
			t.Errorf("%s missing", bus.AttrDeadLetterMessageID)
		}
		if len(a[bus.AttrDeadLetterReason]) > 1024 {
			t.Errorf("reason is %d bytes, over 1 KiB", len(a[bus.AttrDeadLetterReason]))
		}
	}
	return msgs
}

func testPermanentErrorDeadLetters(t *testing.T, h Harness) {
	b, _ := open(t, h, bus.Config{})
	n := newNames(t)
	ensure(t, b, n, bus.SubscriptionSpec{})
	var calls atomic.Int32
	startReceive(t, b, n.sub, func(_ context.Context, e event.Event) error {
		calls.Add(1)
		return events.Permanentf("payload rejected: %s", "seq out of range")
	})
	start := time.Now()
	publish(t, b, n.topic, fullEvent(t, "evt-poison"))
	m := deadLetters(t, b, n, 1, start)[0]
	if string(m.GetData()) != `{"seq":1,"note":"ünïcode"}` {
		t.Errorf("dead letter body = %q", m.GetData())
	}
	a := m.GetAttributes()
	if got, want := a[bus.AttrDeadLetterReason], "permanent: payload rejected: seq out of range"; got != want {
		t.Errorf("reason = %q, want %q", got, want)
	}
	for k, v := range fullEventAttrs("evt-poison") {
		if a[k] != v {
			t.Errorf("dead letter attribute %s = %q, want %q", k, a[k], v)
		}
	}
	time.Sleep(quietAfter) // a nacked or unacked message would come back by now
	if c := calls.Load(); c != 1 {
		t.Errorf("handler called %d times, want exactly 1", c)
	}
	expectNoMessage(t, b, n.hold)
}

func testDroppedIsAcked(t *testing.T, h Harness) {
	b, _ := open(t, h, bus.Config{})
	n := newNames(t)
	ensure(t, b, n, bus.SubscriptionSpec{})
	var calls atomic.Int32
	startReceive(t, b, n.sub, func(_ context.Context, e event.Event) error {
		calls.Add(1)
		return fmt.Errorf("user tombstoned: %w", events.ErrDropped)
	})
	publish(t, b, n.topic, minimalEvent("evt-drop"))
	waitFor(t, "handler call", func() bool { return calls.Load() >= 1 })
	time.Sleep(quietAfter)
	if c := calls.Load(); c != 1 {
		t.Errorf("handler called %d times, want 1 (dropped events are acknowledged)", c)
	}
	expectNoMessage(t, b, n.hold)
}

func testRetryableErrorRedelivered(t *testing.T, h Harness) {
	b, _ := open(t, h, bus.Config{})
	n := newNames(t)
	ensure(t, b, n, bus.SubscriptionSpec{})
	var (
		mu       sync.Mutex
		attempts []int
	)
	startReceive(t, b, n.sub, func(ctx context.Context, e event.Event) error {
		mu.Lock()
		defer mu.Unlock()
		attempts = append(attempts, bus.DeliveryAttempt(ctx))
		if len(attempts) < 3 {
			return errors.New("store unavailable")
		}
		return nil
	})
	publish(t, b, n.topic, minimalEvent("evt-retry"))
	count := func() int { mu.Lock(); defer mu.Unlock(); return len(attempts) }
	waitFor(t, "third delivery", func() bool { return count() >= 3 })
	time.Sleep(quietAfter)
	mu.Lock()
	got := append([]int(nil), attempts...)
	mu.Unlock()
	if len(got) != 3 {
		t.Fatalf("handler called %d times, want 3 (2 failures, then acked)", len(got))
	}
	want := []int{0, 0, 0}
	if h.DeliveryAttempt {
		want = []int{1, 2, 3}
	}
	if fmt.Sprint(got) != fmt.Sprint(want) {
		t.Errorf("DeliveryAttempt per call = %v, want %v", got, want)
	}
	expectNoMessage(t, b, n.hold)
}

func testPanicRecovered(t *testing.T, h Harness) {
	b, logs := open(t, h, bus.Config{})
	n := newNames(t)
	ensure(t, b, n, bus.SubscriptionSpec{})
	var calls atomic.Int32
	var metrics middleware.Metrics
	logger := slog.New(slog.NewJSONHandler(logs, nil))
	hnd := bus.Chain(func(_ context.Context, e event.Event) error {
		if calls.Add(1) == 1 {
			var m map[string]int
			//lint:ignore SA5000 the nil-map write is the point: a real runtime panic for the recoverer
			m["boom"]++ // nil map write: a real runtime panic
		}
		return nil
	}, metrics.Middleware, middleware.Recoverer(logger))
	r := startReceive(t, b, n.sub, hnd)
	publish(t, b, n.topic, minimalEvent("evt-panic"))
	waitFor(t, "redelivery after panic", func() bool { return calls.Load() >= 2 })
	time.Sleep(quietAfter)
	if c := calls.Load(); c != 2 {
		t.Errorf("handler called %d times, want 2 (panic, then success)", c)
	}
	if err := r.stop(t); err != nil {
		t.Errorf("Receive: %v", err)
	}
	out := logs.String()
	for _, want := range []string{`"msg":"handler panicked"`, `"event_id":"evt-panic"`, "assignment to entry in nil map", `"stack":"goroutine`} {
		if !strings.Contains(out, want) {
			t.Errorf("log lacks %s:\n%s", want, out)
		}
	}
	if got := metrics.Snapshot()[testType]; got != (middleware.Counts{Acked: 1, Panicked: 1}) {
		t.Errorf("metrics = %+v, want 1 acked, 1 panicked", got)
	}
}

func testPanicWithoutRecovererIsNacked(t *testing.T, h Harness) {
	b, _ := open(t, h, bus.Config{})
	n := newNames(t)
	ensure(t, b, n, bus.SubscriptionSpec{})
	var calls atomic.Int32
	startReceive(t, b, n.sub, func(_ context.Context, e event.Event) error {
		if calls.Add(1) == 1 {
			panic("no recoverer installed")
		}
		return nil
	})
	publish(t, b, n.topic, minimalEvent("evt-bare-panic"))
	waitFor(t, "redelivery after bare panic", func() bool { return calls.Load() >= 2 })
	expectNoMessage(t, b, n.hold)
}

func testUndecodableDeadLettered(t *testing.T, h Harness) {
	reject := func(e event.Event) error {
		if e.Type() == "dev.lethe.test.unknown.v1" {
			return events.Permanentf("unknown event type %q", e.Type())
		}
		return nil
	}
	b, _ := open(t, h, bus.Config{Validate: reject})
	n := newNames(t)
	ensure(t, b, n, bus.SubscriptionSpec{})
	binary := func(drop string, extra map[string]string) map[string]string {
		a := map[string]string{"ce-specversion": "1.0", "ce-id": "x-1", "ce-source": events.Source, "ce-type": testType}
		delete(a, drop)
		maps.Copy(a, extra)
		return a
	}
	cases := []struct {
		name       string
		data       string
		attrs      map[string]string
		wantReason string
	}{
		{"garbage", "\x00\xffnot a cloudevent", nil, "missing ce-specversion"},
		{"missing-id", `{"seq":1}`, binary("ce-id", nil), "missing required attribute ce-id"},
		{"bad-time", `{}`, binary("", map[string]string{"ce-time": "yesterday"}), "ce-time"},
		{"old-specversion", `{}`, binary("", map[string]string{"ce-specversion": "0.3"}), `unsupported specversion "0.3"`},
		{"structured-bad-json", `{"specversion":"1.0",`, map[string]string{"content-type": "application/cloudevents+json"}, "structured event"},
		{"structured-missing-id", `{"specversion":"1.0","source":"/s","type":"t"}`, map[string]string{"content-type": "application/cloudevents+json"}, "id"},
		{"unsupported-format", `{}`, map[string]string{"content-type": "application/cloudevents+avro"}, "unsupported event format"},
		{"schema-rejected", `{}`, binary("", map[string]string{"ce-type": "dev.lethe.test.unknown.v1"}), "validate: permanent: unknown event type"},
	}
	var calls atomic.Int32
	startReceive(t, b, n.sub, func(_ context.Context, e event.Event) error {
		calls.Add(1)
		return nil
	})
	start := time.Now()
	for _, c := range cases {
		attrs := maps.Clone(c.attrs)
		if attrs == nil {
			attrs = map[string]string{}
		}
		attrs["x-case"] = c.name // not a ce- attribute: ignored by the mapping
		publishRaw(t, b, n.topic, []byte(c.data), attrs)
	}
	got := map[string]*pubsubpb.PubsubMessage{}
	for _, m := range deadLetters(t, b, n, len(cases), start) {
		got[m.GetAttributes()["x-case"]] = m
	}
	for _, c := range cases {
		m, ok := got[c.name]
		if !ok {
			t.Errorf("%s: not dead-lettered", c.name)
			continue
		}
		if r := m.GetAttributes()[bus.AttrDeadLetterReason]; !strings.Contains(r, c.wantReason) {
			t.Errorf("%s: reason %q does not contain %q", c.name, r, c.wantReason)
		}
		if string(m.GetData()) != c.data {
			t.Errorf("%s: body %q, want %q", c.name, m.GetData(), c.data)
		}
	}
	if c := calls.Load(); c != 0 {
		t.Errorf("handler called %d times for undecodable messages", c)
	}
	expectNoMessage(t, b, n.sub)
}

func testOrderingPerKey(t *testing.T, h Harness) {
	b, _ := open(t, h, bus.Config{})
	n := newNames(t)
	ensure(t, b, n, bus.SubscriptionSpec{Ordered: true})
	const perKey = 15
	keys := []string{"conv-a", "conv-b"}
	var (
		mu   sync.Mutex
		seen = map[string][]int{}
	)
	var total atomic.Int32
	startReceive(t, b, n.sub, func(_ context.Context, e event.Event) error {
		var seq int32
		if v, ok := e.Extensions()["seq"].(string); ok {
			fmt.Sscan(v, &seq)
		}
		time.Sleep(time.Duration(seq%3) * time.Millisecond) // uneven handler times
		key, _ := e.Extensions()[bus.PartitionKeyExtension].(string)
		mu.Lock()
		seen[key] = append(seen[key], int(seq))
		mu.Unlock()
		total.Add(1)
		return nil
	})
	var wg sync.WaitGroup
	for _, k := range keys {
		wg.Go(func() {
			for i := range perKey {
				e := minimalEvent(fmt.Sprintf("%s-%d", k, i))
				e.SetExtension(bus.PartitionKeyExtension, k)
				e.SetExtension("seq", int32(i))
				ctx, cancel := context.WithTimeout(context.Background(), waitLong)
				err := b.Publish(ctx, n.topic, e)
				cancel()
				if err != nil {
					t.Errorf("Publish %s: %v", e.ID(), err) // not Fatal: off the test goroutine
					return
				}
			}
		})
	}
	wg.Wait()
	waitFor(t, "all ordered messages", func() bool { return total.Load() >= int32(perKey*len(keys)) })
	mu.Lock()
	defer mu.Unlock()
	for _, k := range keys {
		want := make([]int, perKey)
		for i := range want {
			want[i] = i
		}
		if fmt.Sprint(seen[k]) != fmt.Sprint(want) {
			t.Errorf("key %s delivered in order %v, want %v", k, seen[k], want)
		}
	}
}

func testGracefulShutdown(t *testing.T, h Harness) {
	b, _ := open(t, h, bus.Config{DrainTimeout: waitLong})
	n := newNames(t)
	ensure(t, b, n, bus.SubscriptionSpec{})
	started := make(chan struct{})
	release := make(chan struct{})
	var calls atomic.Int32
	var finished atomic.Int64
	var ctxErrAtEnd atomic.Value
	r := startReceive(t, b, n.sub, func(ctx context.Context, e event.Event) error {
		if calls.Add(1) > 1 {
			return nil
		}
		close(started)
		<-release
		ctxErrAtEnd.Store(fmt.Sprint(ctx.Err()))
		finished.Store(time.Now().UnixNano())
		return nil
	})
	publish(t, b, n.topic, minimalEvent("evt-drain"))
	select {
	case <-started:
	case <-time.After(waitLong):
		t.Fatal("handler not called")
	}
	r.cancel()
	select {
	case <-r.done:
		t.Fatal("Receive returned while a handler was still running")
	case <-time.After(300 * time.Millisecond):
	}
	close(release)
	if err := r.stop(t); err != nil {
		t.Errorf("Receive after cancel = %v, want nil", err)
	}
	returned := time.Now().UnixNano()
	if f := finished.Load(); f == 0 || f > returned {
		t.Errorf("Receive returned before the handler finished")
	}
	if got := ctxErrAtEnd.Load(); got != "<nil>" {
		t.Errorf("handler context during drain: %v, want still live", got)
	}
	// The drained message was acknowledged: a new receiver gets nothing.
	var again atomic.Int32
	r2 := startReceive(t, b, n.sub, func(context.Context, event.Event) error { again.Add(1); return nil })
	time.Sleep(quietAfter)
	r2.stop(t)
	if a := again.Load(); a != 0 {
		t.Errorf("drained message redelivered %d times", a)
	}
}

// A handler still running DrainTimeout after shutdown gets its context
// cancelled; its message is nacked and comes back to the next receiver.
func testDrainTimeoutCancelsHandlers(t *testing.T, h Harness) {
	const drain = 300 * time.Millisecond
	b, _ := open(t, h, bus.Config{DrainTimeout: drain})
	n := newNames(t)
	// The nack is sent as the streams close; a redelivery racing with that
	// can land on a closing stream and then waits for the ack deadline
	// (as on the real service). The shortest deadline keeps that bounded.
	ensure(t, b, n, bus.SubscriptionSpec{AckDeadline: 10 * time.Second})
	started := make(chan struct{}, 1)
	r := startReceive(t, b, n.sub, func(ctx context.Context, e event.Event) error {
		started <- struct{}{}
		<-ctx.Done() // a handler stuck until cancelled
		return ctx.Err()
	})
	publish(t, b, n.topic, minimalEvent("evt-stuck"))
	select {
	case <-started:
	case <-time.After(waitLong):
		t.Fatal("handler not called")
	}
	cancelled := time.Now()
	if err := r.stop(t); err != nil {
		t.Errorf("Receive = %v, want nil", err)
	}
	if took := time.Since(cancelled); took < drain {
		t.Errorf("Receive returned %v after cancel, before the %v drain timeout", took, drain)
	}
	got := make(chan string, 10)
	startReceive(t, b, n.sub, func(_ context.Context, e event.Event) error {
		got <- e.ID()
		return nil
	})
	select {
	case id := <-got:
		if id != "evt-stuck" {
			t.Errorf("redelivered %q", id)
		}
	case <-time.After(waitLong):
		t.Fatal("message of the cancelled handler was not redelivered")
	}
}

func testDeadLetterPolicyBackstop(t *testing.T, h Harness) {
	if !h.DeadLetterPolicy {
		t.Skip("backend declares Capabilities.DeadLetterPolicy=false: it does not dead-letter after MaxDeliveryAttempts")
	}
	b, _ := open(t, h, bus.Config{})
	n := newNames(t)
	ensure(t, b, n, bus.SubscriptionSpec{MaxDeliveryAttempts: 5})
	var calls atomic.Int32
	startReceive(t, b, n.sub, func(context.Context, event.Event) error {
		calls.Add(1)
		return errors.New("always failing")
	})
	publish(t, b, n.topic, minimalEvent("evt-backstop"))
	m := pull(t, b, n.hold, 1)[0]
	if m.GetAttributes()["ce-id"] != "evt-backstop" {
		t.Errorf("dead letter attributes = %v", m.GetAttributes())
	}
	if _, ok := m.GetAttributes()[bus.AttrDeadLetterReason]; ok {
		t.Errorf("backstop dead letter carries a bus reason: the bus, not the policy, moved it")
	}
	if c := calls.Load(); c < 5 {
		t.Errorf("handler called %d times before the policy dead-lettered, want >= 5", c)
	}
}

func testPublishErrors(t *testing.T, h Harness) {
	reject := func(e event.Event) error {
		if e.Type() == "dev.lethe.test.unknown.v1" {
			return errors.New("unknown event type")
		}
		return nil
	}
	b, _ := open(t, h, bus.Config{Validate: reject})
	n := newNames(t)
	ensure(t, b, n, bus.SubscriptionSpec{})
	long := minimalEvent("evt-long")
	long.SetSubject("users/" + strings.Repeat("a", 1100))
	unknown := minimalEvent("evt-unknown")
	unknown.SetType("dev.lethe.test.unknown.v1")
	noID := minimalEvent("")
	tests := []struct {
		name          string
		topic         string
		event         event.Event
		wantPermanent bool
	}{
		{"missing id", n.topic, noID, true},
		{"attribute over 1 KiB", n.topic, long, true},
		{"rejected by Validate", n.topic, unknown, true},
		{"topic does not exist", n.topic + "-nope", minimalEvent("evt-nowhere"), false},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			ctx, cancel := context.WithTimeout(context.Background(), waitLong)
			defer cancel()
			err := b.Publish(ctx, tc.topic, tc.event)
			if err == nil {
				t.Fatal("Publish succeeded, want error")
			}
			if events.IsPermanent(err) != tc.wantPermanent {
				t.Errorf("IsPermanent(%v) = %v, want %v", err, !tc.wantPermanent, tc.wantPermanent)
			}
		})
	}
	expectNoMessage(t, b, n.sub)
}

func testReceiveMissingSubscription(t *testing.T, h Harness) {
	b, _ := open(t, h, bus.Config{})
	ctx, cancel := context.WithTimeout(context.Background(), waitLong)
	defer cancel()
	err := b.Receive(ctx, UniqueName(t), func(context.Context, event.Event) error { return nil })
	if err == nil || ctx.Err() != nil {
		t.Fatalf("Receive on a missing subscription = %v (ctx %v), want a prompt error", err, ctx.Err())
	}
}

func testEnsureTopologyIdempotent(t *testing.T, h Harness) {
	b, _ := open(t, h, bus.Config{})
	n := newNames(t)
	spec := bus.SubscriptionSpec{AckDeadline: 30 * time.Second, MaxDeliveryAttempts: 7, Ordered: true, MinBackoff: time.Second, MaxBackoff: 20 * time.Second}
	ensure(t, b, n, spec)
	ensure(t, b, n, spec) // again: AlreadyExists is fine
	ctx, cancel := context.WithTimeout(context.Background(), waitLong)
	defer cancel()
	sc, err := b.Client().SubscriptionAdminClient.GetSubscription(ctx, &pubsubpb.GetSubscriptionRequest{Subscription: b.SubscriptionName(n.sub)})
	if err != nil {
		t.Fatalf("GetSubscription: %v", err)
	}
	if sc.GetTopic() != b.TopicName(n.topic) || sc.GetAckDeadlineSeconds() != 30 || !sc.GetEnableMessageOrdering() {
		t.Errorf("subscription = topic %s, ack %ds, ordered %v", sc.GetTopic(), sc.GetAckDeadlineSeconds(), sc.GetEnableMessageOrdering())
	}
	if h.SubscriptionPolicies {
		dl := sc.GetDeadLetterPolicy()
		if dl.GetDeadLetterTopic() != b.TopicName(n.topic+"-dead-letter") || dl.GetMaxDeliveryAttempts() != 7 {
			t.Errorf("dead-letter policy = %v", dl)
		}
		rp := sc.GetRetryPolicy()
		if rp.GetMinimumBackoff().AsDuration() != time.Second || rp.GetMaximumBackoff().AsDuration() != 20*time.Second {
			t.Errorf("retry policy = %v", rp)
		}
	}
	hold, err := b.Client().SubscriptionAdminClient.GetSubscription(ctx, &pubsubpb.GetSubscriptionRequest{Subscription: b.SubscriptionName(n.hold)})
	if err != nil {
		t.Fatalf("GetSubscription hold: %v", err)
	}
	if hold.GetTopic() != b.TopicName(n.topic+"-dead-letter") {
		t.Errorf("hold subscription reads %s", hold.GetTopic())
	}
	bad := []bus.SubscriptionSpec{
		{Name: n.sub + "-x", MaxDeliveryAttempts: 101},
		{Name: n.sub + "-y", AckDeadline: time.Second},
		{Name: ""},
	}
	for _, ss := range bad {
		if err := b.EnsureTopology(ctx, []bus.TopicSpec{{Name: n.topic, Subscriptions: []bus.SubscriptionSpec{ss}}}); err == nil {
			t.Errorf("EnsureTopology(%+v) succeeded, want error", ss)
		}
	}
}

func testPingAndClose(t *testing.T, h Harness) {
	b, _ := open(t, h, bus.Config{})
	ctx, cancel := context.WithTimeout(context.Background(), waitLong)
	defer cancel()
	if err := b.Ping(ctx); err != nil {
		t.Fatalf("Ping: %v", err)
	}
	if err := b.Close(); err != nil {
		t.Fatalf("Close: %v", err)
	}
	if err := b.Close(); err != nil {
		t.Errorf("second Close: %v", err)
	}
	if err := b.Ping(ctx); !errors.Is(err, bus.ErrClosed) {
		t.Errorf("Ping after Close = %v, want ErrClosed", err)
	}
	if err := b.Publish(ctx, "any", minimalEvent("evt-closed")); !errors.Is(err, bus.ErrClosed) {
		t.Errorf("Publish after Close = %v, want ErrClosed", err)
	}
	if err := b.Receive(ctx, "any", func(context.Context, event.Event) error { return nil }); !errors.Is(err, bus.ErrClosed) {
		t.Errorf("Receive after Close = %v, want ErrClosed", err)
	}
}

// testCustomDecoder: ReceiveWith hands foreign (non-CloudEvents) messages to
// a decoder; what it decodes is handled, its drops are acknowledged and its
// other failures dead-lettered (as permanent, even when the decoder did not
// say so), never redelivered.
func testCustomDecoder(t *testing.T, h Harness) {
	b, _ := open(t, h, bus.Config{})
	n := newNames(t)
	ensure(t, b, n, bus.SubscriptionSpec{})
	decode := func(data []byte, attrs map[string]string) (event.Event, error) {
		switch attrs["kind"] {
		case "ok":
			e := minimalEvent("foreign-" + string(data))
			return e, nil
		case "ignore":
			return event.Event{}, fmt.Errorf("not for us: %w", events.ErrDropped)
		}
		return event.Event{}, errors.New("unknown kind")
	}
	var mu sync.Mutex
	var handled []string
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() {
		done <- b.ReceiveWith(ctx, n.sub, decode, func(_ context.Context, e event.Event) error {
			mu.Lock()
			defer mu.Unlock()
			handled = append(handled, e.ID())
			return nil
		})
	}()
	t.Cleanup(func() {
		cancel()
		select {
		case <-done:
		case <-time.After(waitLong):
			t.Errorf("ReceiveWith did not return after cancel")
		}
	})
	start := time.Now()
	publishRaw(t, b, n.topic, []byte("1"), map[string]string{"kind": "ok"})
	publishRaw(t, b, n.topic, []byte("2"), map[string]string{"kind": "ignore"})
	publishRaw(t, b, n.topic, []byte("3"), map[string]string{"kind": "bogus"})
	m := deadLetters(t, b, n, 1, start)[0]
	if string(m.GetData()) != "3" || !strings.Contains(m.GetAttributes()[bus.AttrDeadLetterReason], "permanent: unknown kind") {
		t.Errorf("dead letter = %q reason %q", m.GetData(), m.GetAttributes()[bus.AttrDeadLetterReason])
	}
	waitFor(t, "the decoded message", func() bool { mu.Lock(); defer mu.Unlock(); return len(handled) >= 1 })
	time.Sleep(quietAfter)
	mu.Lock()
	defer mu.Unlock()
	if len(handled) != 1 || handled[0] != "foreign-1" {
		t.Errorf("handled %q, want exactly [foreign-1]", handled)
	}
	expectNoMessage(t, b, n.sub)
	expectNoMessage(t, b, n.hold)
}
