package bus_test

import (
	"context"
	"errors"
	"strings"
	"testing"

	"github.com/cloudevents/sdk-go/v2/event"

	"github.com/lethe-dev/lethe/events"
	"github.com/lethe-dev/lethe/infra/bus"
)

// TestRouterDispatch: every way a delivery can end, as both receivers see
// it through the one Router.
func TestRouterDispatch(t *testing.T) {
	ev := event.New()
	ev.SetID("evt-1")
	ev.SetSource(events.Source)
	ev.SetType("dev.lethe.test.happened.v1")
	data, attrs, err := bus.ToMessage(ev)
	if err != nil {
		t.Fatal(err)
	}
	good := bus.Delivery{Subscription: "s", MessageID: "m-1", Data: data, Attributes: attrs, DeliveryAttempt: 3}
	notCE := bus.Delivery{Subscription: "s", MessageID: "m-2", Data: []byte("x"), Attributes: map[string]string{"ce-id": "x"}}
	sinkDown := errors.New("dead-letter topic unreachable")
	for _, tc := range []struct {
		name       string
		d          bus.Delivery
		validate   func(event.Event) error
		handler    bus.Handler
		sinkErr    error
		want       bus.Outcome
		panicked   bool
		wantCopy   bool
		wantReason string
	}{
		{name: "handled", d: good, handler: func(context.Context, event.Event) error { return nil }, want: bus.OutcomeAck},
		{name: "dropped", d: good, handler: func(context.Context, event.Event) error { return events.ErrDropped }, want: bus.OutcomeDrop},
		{name: "retryable", d: good, handler: func(context.Context, event.Event) error { return errors.New("busy") }, want: bus.OutcomeRetry},
		{name: "permanent", d: good, handler: func(context.Context, event.Event) error { return events.Permanentf("bad seq") },
			want: bus.OutcomeDeadLetter, wantCopy: true, wantReason: "permanent: bad seq"},
		{name: "undecodable", d: notCE, want: bus.OutcomeDeadLetter, wantCopy: true, wantReason: "permanent: "},
		{name: "invalid", d: good, validate: func(event.Event) error { return errors.New("schema") },
			want: bus.OutcomeDeadLetter, wantCopy: true, wantReason: "permanent: bus: validate: schema"},
		{name: "panic", d: good, handler: func(context.Context, event.Event) error { panic("boom") }, want: bus.OutcomeRetry, panicked: true},
		{name: "dead-letter copy fails", d: good, handler: func(context.Context, event.Event) error { return events.Permanentf("bad") },
			sinkErr: sinkDown, want: bus.OutcomeRetry, wantCopy: true, wantReason: "permanent: bad"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var copies []bus.Delivery
			var reasons []string
			var attempt int
			h := tc.handler
			if h == nil {
				h = func(context.Context, event.Event) error { t.Error("handler called"); return nil }
			}
			r := &bus.Router{
				Validate: tc.validate,
				Handler: func(ctx context.Context, e event.Event) error {
					attempt = bus.DeliveryAttempt(ctx)
					return h(ctx, e)
				},
				DeadLetter: func(_ context.Context, d bus.Delivery, reason error) error {
					copies, reasons = append(copies, d), append(reasons, reason.Error())
					return tc.sinkErr
				},
			}
			res := r.Dispatch(context.Background(), tc.d)
			if res.Outcome != tc.want || res.Panicked != tc.panicked {
				t.Fatalf("Dispatch = %+v, want outcome %s, panicked %v", res, tc.want, tc.panicked)
			}
			if (res.DeadLetterErr != nil) != (tc.sinkErr != nil) || (tc.sinkErr != nil && !errors.Is(res.DeadLetterErr, tc.sinkErr)) {
				t.Errorf("DeadLetterErr = %v, want %v", res.DeadLetterErr, tc.sinkErr)
			}
			if tc.wantCopy != (len(copies) == 1) || len(copies) > 1 {
				t.Fatalf("dead-letter copies %d, want copy %v", len(copies), tc.wantCopy)
			}
			if tc.wantCopy && (!strings.HasPrefix(reasons[0], tc.wantReason) || copies[0].MessageID != tc.d.MessageID || string(copies[0].Data) != string(tc.d.Data)) {
				t.Errorf("copy %+v with reason %q, want the delivery with reason %q", copies[0], reasons[0], tc.wantReason)
			}
			if tc.handler != nil && !tc.panicked && attempt != tc.d.DeliveryAttempt {
				t.Errorf("handler saw delivery attempt %d, want %d", attempt, tc.d.DeliveryAttempt)
			}
		})
	}
}

// TestRouterReject: what a transport cannot read is dead-lettered as is,
// permanently, or retried when the copy fails.
func TestRouterReject(t *testing.T) {
	var got error
	r := &bus.Router{Handler: func(context.Context, event.Event) error { return nil },
		DeadLetter: func(_ context.Context, _ bus.Delivery, reason error) error { got = reason; return nil }}
	if res := r.Reject(context.Background(), bus.Delivery{Data: []byte("{")}, errors.New("bad JSON")); res.Outcome != bus.OutcomeDeadLetter || !events.IsPermanent(got) {
		t.Fatalf("Reject = %+v, copied with %v; want dead-lettered with a permanent reason", res, got)
	}
	r.DeadLetter = nil
	if res := r.Reject(context.Background(), bus.Delivery{}, errors.New("bad JSON")); res.Outcome != bus.OutcomeRetry || res.DeadLetterErr == nil {
		t.Fatalf("Reject without a sink = %+v, want a retry", res)
	}
}
