package middleware

import (
	"context"
	"errors"
	"sync"
	"sync/atomic"

	"github.com/cloudevents/sdk-go/v2/event"

	"github.com/lethe-dev/lethe/infra/bus"
)

// maxMetricTypes caps the distinct event types counted; beyond it types are
// counted under OtherType, so unvalidated input cannot grow the map without
// bound.
const maxMetricTypes = 256

// OtherType is the Snapshot key for types past the cap.
const OtherType = "other"

// Counts are the outcomes of handled events of one type. Each call is
// counted once: Panicked calls (a *PanicError from Recoverer) are retried
// but counted only as Panicked.
type Counts struct {
	Acked        int64
	Retried      int64 // nacked for redelivery
	DeadLettered int64
	Dropped      int64
	Panicked     int64
}

type counters struct {
	acked, retried, deadLettered, dropped, panicked atomic.Int64
}

// Metrics counts handler outcomes per event type. The zero value is ready to
// use; use one Metrics per process or per worker.
type Metrics struct {
	mu     sync.RWMutex
	byType map[string]*counters
}

// Middleware counts the outcome of each call. Place it outside Recoverer
// and Retry so it sees what the bus will do.
func (m *Metrics) Middleware(next bus.Handler) bus.Handler {
	return func(ctx context.Context, e event.Event) error {
		err := next(ctx, e)
		c := m.counters(e.Type())
		var pe *PanicError
		switch outcome := bus.Classify(err); {
		case outcome == bus.OutcomeRetry && errors.As(err, &pe):
			c.panicked.Add(1)
		case outcome == bus.OutcomeAck:
			c.acked.Add(1)
		case outcome == bus.OutcomeDrop:
			c.dropped.Add(1)
		case outcome == bus.OutcomeDeadLetter:
			c.deadLettered.Add(1)
		default:
			c.retried.Add(1)
		}
		return err
	}
}

func (m *Metrics) counters(typ string) *counters {
	m.mu.RLock()
	c, ok := m.byType[typ]
	m.mu.RUnlock()
	if ok {
		return c
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	if c, ok := m.byType[typ]; ok {
		return c
	}
	if m.byType == nil {
		m.byType = map[string]*counters{}
	}
	if len(m.byType) >= maxMetricTypes {
		typ = OtherType
		if c, ok := m.byType[typ]; ok {
			return c
		}
	}
	c = &counters{}
	m.byType[typ] = c
	return c
}

// Snapshot returns the counts so far, by event type.
func (m *Metrics) Snapshot() map[string]Counts {
	m.mu.RLock()
	defer m.mu.RUnlock()
	out := make(map[string]Counts, len(m.byType))
	for typ, c := range m.byType {
		out[typ] = Counts{
			Acked:        c.acked.Load(),
			Retried:      c.retried.Load(),
			DeadLettered: c.deadLettered.Load(),
			Dropped:      c.dropped.Load(),
			Panicked:     c.panicked.Load(),
		}
	}
	return out
}
