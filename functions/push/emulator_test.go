package push

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"net/http"
	"net/http/httptest"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"

	"cloud.google.com/go/pubsub/v2/apiv1/pubsubpb"
	"github.com/cloudevents/sdk-go/v2/event"

	"github.com/lethe-dev/lethe/events"
	"github.com/lethe-dev/lethe/infra/bus"
	"github.com/lethe-dev/lethe/internal/emulators"
)

// emulatorPushWait bounds how long a test waits for the emulator to push.
const emulatorPushWait = 60 * time.Second

// emulatorQuiet is how long a test watches for unwanted redeliveries; the
// emulator redelivers a nacked push after about a second.
const emulatorQuiet = 3 * time.Second

// openEmulator connects to the gcloud Pub/Sub emulator (see
// emulators.Require).
func openEmulator(t *testing.T) *bus.Bus {
	t.Helper()
	host := emulators.Require(t, emulators.PubSub)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	b, err := bus.Open(ctx, bus.Config{ProjectID: "lethe-test", EmulatorHost: host})
	if err != nil {
		t.Fatalf("bus.Open: %v", err)
	}
	t.Cleanup(func() { _ = b.Close() })
	return b
}

var unsafeID = regexp.MustCompile(`[^A-Za-z0-9-]+`)

// resourceID names a topic or subscription after the test, with a random
// suffix so reruns against one emulator never meet old messages.
func resourceID(t *testing.T, suffix string) string {
	var rnd [4]byte
	_, _ = rand.Read(rnd[:])
	id := strings.Trim(unsafeID.ReplaceAllString(t.Name(), "-"), "-")
	if len(id) > 180 {
		id = id[:180]
	}
	return id + "-" + hex.EncodeToString(rnd[:]) + "-" + suffix
}

// TestEmulatorPush runs the receiver behind a real push subscription of the
// gcloud emulator, in both push formats: the first delivery fails with a
// retryable error (nack) and must be redelivered; a poison message is
// dead-lettered once and acknowledged, so never redelivered.
func TestEmulatorPush(t *testing.T) {
	b := openEmulator(t)
	reg := newRegistry(t)
	for _, tc := range []struct {
		name      string
		noWrapper *pubsubpb.PushConfig_NoWrapper
	}{
		{"wrapped", nil},
		{"unwrapped", &pubsubpb.PushConfig_NoWrapper{WriteMetadata: true}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			ctx, cancel := context.WithTimeout(context.Background(), 2*emulatorPushWait)
			defer cancel()
			topic, sub := resourceID(t, "t"), resourceID(t, "s")

			var (
				mu       sync.Mutex
				attempts = map[string]int{} // by event id
				got      = map[string][]handled{}
				dls      []deadLetter
			)
			rc, err := NewReceiver(Config{
				Handlers: map[string]bus.Handler{sub: func(ctx context.Context, e event.Event) error {
					d, _ := DeliveryFromContext(ctx)
					mu.Lock()
					defer mu.Unlock()
					attempts[e.ID()]++
					got[e.ID()] = append(got[e.ID()], handled{e: e, d: d})
					if attempts[e.ID()] == 1 {
						return errTransient // nack: Pub/Sub must redeliver
					}
					return nil
				}},
				Validate: reg.Validate,
				DeadLetter: func(ctx context.Context, s string, data []byte, attrs map[string]string, reason error) error {
					mu.Lock()
					defer mu.Unlock()
					dls = append(dls, deadLetter{sub: s, data: data, attrs: attrs, reason: reason})
					return nil
				},
			})
			if err != nil {
				t.Fatal(err)
			}
			mux := http.NewServeMux()
			mux.Handle("/push/{subscription}", rc)
			srv := httptest.NewServer(mux) // listens on 127.0.0.1
			t.Cleanup(srv.Close)

			admin := b.Client()
			if _, err := admin.TopicAdminClient.CreateTopic(ctx, &pubsubpb.Topic{Name: b.TopicName(topic)}); err != nil {
				t.Fatalf("CreateTopic: %v", err)
			}
			if _, err := admin.SubscriptionAdminClient.CreateSubscription(ctx, &pubsubpb.Subscription{
				Name:               b.SubscriptionName(sub),
				Topic:              b.TopicName(topic),
				AckDeadlineSeconds: 10,
				PushConfig:         pushConfig(srv.URL+"/push/"+sub, tc.noWrapper),
			}); err != nil {
				t.Fatalf("CreateSubscription: %v", err)
			}
			// Runs before srv.Close (cleanups are LIFO): stop pushes first.
			t.Cleanup(func() {
				cctx, ccancel := context.WithTimeout(context.Background(), 10*time.Second)
				defer ccancel()
				_ = admin.SubscriptionAdminClient.DeleteSubscription(cctx, &pubsubpb.DeleteSubscriptionRequest{Subscription: b.SubscriptionName(sub)})
				_ = admin.TopicAdminClient.DeleteTopic(cctx, &pubsubpb.DeleteTopicRequest{Topic: b.TopicName(topic)})
			})

			e := testEvent(t, reg, events.NewID())
			data, attrs := toMessage(t, e)
			if _, err := b.PublishMessage(ctx, topic, data, attrs, ""); err != nil {
				t.Fatalf("PublishMessage: %v", err)
			}
			// Poison: decodable as a push, but not a CloudEvent.
			if _, err := b.PublishMessage(ctx, topic, []byte(`{"not":"an event"}`), map[string]string{"content-type": "application/json"}, ""); err != nil {
				t.Fatalf("PublishMessage poison: %v", err)
			}

			// Wait for the redelivery and the poison's dead letter, then a while
			// longer: the emulator redelivers a nacked message within about a
			// second, so anything not acknowledged would show up again.
			settled := func() bool {
				mu.Lock()
				defer mu.Unlock()
				return attempts[e.ID()] >= 2 && len(dls) >= 1
			}
			deadline := time.Now().Add(emulatorPushWait)
			for !settled() {
				if time.Now().After(deadline) {
					mu.Lock()
					defer mu.Unlock()
					t.Fatalf("within %s: attempts %v, dead letters %d; want a redelivery and one dead letter", emulatorPushWait, attempts, len(dls))
				}
				time.Sleep(50 * time.Millisecond)
			}
			time.Sleep(emulatorQuiet)

			mu.Lock()
			defer mu.Unlock()
			if n := attempts[e.ID()]; n != 2 {
				t.Errorf("event delivered %d times, want 2 (nack, then ack)", n)
			}
			for _, h := range got[e.ID()] {
				assertEvent(t, h.e, e)
				if h.d.MessageID == "" || h.d.Subscription != sub || h.d.Unwrapped != (tc.noWrapper != nil) || h.d.PublishTime.IsZero() {
					t.Errorf("delivery = %+v", h.d)
				}
			}
			if got[e.ID()][0].d.MessageID != got[e.ID()][1].d.MessageID {
				t.Errorf("redelivery has another message id: %q vs %q", got[e.ID()][0].d.MessageID, got[e.ID()][1].d.MessageID)
			}
			// Acknowledged after its dead-letter copy, the poison message is
			// never pushed again.
			if len(dls) != 1 {
				t.Fatalf("dead letters = %d, want 1", len(dls))
			}
			if string(dls[0].data) != `{"not":"an event"}` || dls[0].sub != sub || !events.IsPermanent(dls[0].reason) {
				t.Errorf("dead letter = %q sub %q reason %v", dls[0].data, dls[0].sub, dls[0].reason)
			}
		})
	}
}

// pushConfig is a push to endpoint, unwrapped when nw is set.
func pushConfig(endpoint string, nw *pubsubpb.PushConfig_NoWrapper) *pubsubpb.PushConfig {
	pc := &pubsubpb.PushConfig{PushEndpoint: endpoint}
	if nw != nil {
		pc.Wrapper = &pubsubpb.PushConfig_NoWrapper_{NoWrapper: nw}
	}
	return pc
}
