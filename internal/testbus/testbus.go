// Package testbus is a recording publisher for tests: it keeps what was
// published, in order, and can refuse as a bus that is down does. Test
// support only; no production code imports it.
package testbus

import (
	"context"
	"sync"

	"github.com/cloudevents/sdk-go/v2/event"
)

// Published is one recorded publish.
type Published struct {
	Topic string
	Event event.Event
}

// Recorder implements events.Publisher. The zero value records.
type Recorder struct {
	mu   sync.Mutex
	evs  []Published
	fail error
}

// Publish records e (a copy) on topic, or returns the failure set.
func (b *Recorder) Publish(_ context.Context, topic string, e event.Event) error {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.fail != nil {
		return b.fail
	}
	b.evs = append(b.evs, Published{topic, e.Clone()})
	return nil
}

// SetFail makes Publish fail with err (nil: succeed again).
func (b *Recorder) SetFail(err error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.fail = err
}

// All returns what was published, in order.
func (b *Recorder) All() []Published {
	b.mu.Lock()
	defer b.mu.Unlock()
	return append([]Published(nil), b.evs...)
}
