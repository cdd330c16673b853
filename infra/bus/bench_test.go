package bus_test

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/cloudevents/sdk-go/v2/event"

	"github.com/lethe-dev/lethe/events"
	"github.com/lethe-dev/lethe/infra/bus"
)

func benchBus(b *testing.B) (*bus.Bus, chan string) {
	b.Helper()
	bs, err := bus.Open(context.Background(), bus.Config{Embedded: true, PublishDelay: time.Millisecond})
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { _ = bs.Close() })
	ctx, cancel := context.WithCancel(context.Background())
	if err := bs.EnsureTopology(ctx, []bus.TopicSpec{{Name: "bench", Subscriptions: []bus.SubscriptionSpec{{Name: "bench-sub"}}}}); err != nil {
		b.Fatal(err)
	}
	got := make(chan string, 1024)
	done := make(chan struct{})
	go func() {
		defer close(done)
		_ = bs.Receive(ctx, "bench-sub", func(_ context.Context, e event.Event) error {
			got <- e.ID()
			return nil
		})
	}()
	b.Cleanup(func() { cancel(); <-done })
	return bs, got
}

func benchEvent(i int) event.Event {
	e := event.New()
	e.SetID(fmt.Sprintf("bench-%d", i))
	e.SetSource(events.Source)
	e.SetType("dev.lethe.bench.done.v1")
	e.SetSubject("users/5f2b9c/conversations/c1")
	_ = e.SetData("application/json", []byte(`{"seq":1,"sealed_text":"AAECAwQFBgcICQ=="}`))
	return e
}

// BenchmarkRoundTrip: one event published (waiting for the server id) and
// handled before the next, on the embedded pstest server: the latency a
// pipeline stage adds.
func BenchmarkRoundTrip(b *testing.B) {
	bs, got := benchBus(b)
	ctx := context.Background()
	b.ResetTimer()
	for i := range b.N {
		if err := bs.Publish(ctx, "bench", benchEvent(i)); err != nil {
			b.Fatal(err)
		}
		<-got
	}
}

// BenchmarkRoundTripParallel: many publishers at once: throughput.
func BenchmarkRoundTripParallel(b *testing.B) {
	bs, got := benchBus(b)
	ctx := context.Background()
	b.ResetTimer()
	received := make(chan struct{})
	go func() {
		defer close(received)
		for range b.N {
			<-got
		}
	}()
	defer func() { <-received }() // count only fully handled events
	b.SetParallelism(8)
	b.RunParallel(func(pb *testing.PB) {
		i := 0
		for pb.Next() {
			i++
			if err := bs.Publish(ctx, "bench", benchEvent(i)); err != nil {
				b.Error(err)
				return
			}
		}
	})
}

func BenchmarkMapping(b *testing.B) {
	e := benchEvent(1)
	for b.Loop() {
		data, attrs, err := bus.ToMessage(e)
		if err != nil {
			b.Fatal(err)
		}
		if _, err := bus.FromMessage(data, attrs); err != nil {
			b.Fatal(err)
		}
	}
}
