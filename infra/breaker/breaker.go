// Package breaker is a circuit breaker for calls to a hosted provider:
// after Threshold consecutive failures that say the provider is down, calls
// fail fast for Cooldown instead of hammering it; then one probe is let
// through, and its success closes the circuit again. Bounded retries with
// backoff stay in the adapters; the breaker stops the next message's
// retries from starting at all while the provider is out.
package breaker

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"time"
)

// ErrOpen: the circuit is open; the call was not made. Callers treat it as
// a transient failure (the bus redelivers later).
var ErrOpen = errors.New("breaker: circuit open, provider presumed down")

// State of the circuit.
type State int

const (
	Closed State = iota
	Open
	HalfOpen
)

func (s State) String() string {
	switch s {
	case Closed:
		return "closed"
	case Open:
		return "open"
	default:
		return "half-open"
	}
}

// Breaker is safe for concurrent use.
type Breaker struct {
	// Threshold is how many consecutive failures open the circuit
	// (default 5).
	Threshold int
	// Cooldown is how long it stays open before a probe (default 30 s).
	Cooldown time.Duration
	// Trips reports whether an error counts against the provider (default:
	// every error except the caller's own cancellation). A rejected request
	// says nothing about the provider's health.
	Trips func(error) bool
	// Now is the clock (tests).
	Now func() time.Time
	// OnChange, when set, hears every state change (logs, metrics).
	OnChange func(from, to State)

	mu       sync.Mutex
	state    State
	failures int
	openedAt time.Time
	probing  bool
}

// Do runs fn unless the circuit is open.
func (b *Breaker) Do(ctx context.Context, fn func(context.Context) error) error {
	if err := b.admit(); err != nil {
		return err
	}
	err := fn(ctx)
	b.record(ctx, err)
	return err
}

// State reports the circuit's state.
func (b *Breaker) State() State {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.state
}

func (b *Breaker) admit() error {
	b.mu.Lock()
	defer b.mu.Unlock()
	switch b.state {
	case Open:
		if b.now().Sub(b.openedAt) < b.cooldown() {
			return fmt.Errorf("%w (for up to %s)", ErrOpen, b.cooldown())
		}
		b.set(HalfOpen)
		b.probing = true
		return nil
	case HalfOpen:
		if b.probing {
			return ErrOpen // one probe at a time
		}
		b.probing = true
	}
	return nil
}

func (b *Breaker) record(ctx context.Context, err error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	wasProbe := b.state == HalfOpen
	b.probing = false
	trips := err != nil && ctx.Err() == nil && b.trips(err)
	switch {
	case wasProbe && trips:
		b.openedAt = b.now()
		b.set(Open)
	case wasProbe:
		// Success, or a rejection: either way the provider answers.
		b.set(Closed)
	case trips:
		b.failures++
		if b.failures >= b.threshold() && b.state == Closed {
			b.openedAt = b.now()
			b.set(Open)
		}
	default:
		b.failures = 0
	}
}

func (b *Breaker) set(s State) {
	if b.state == s {
		return
	}
	from := b.state
	b.state = s
	if s == Closed {
		b.failures = 0
	}
	if b.OnChange != nil {
		b.OnChange(from, s)
	}
}

func (b *Breaker) trips(err error) bool {
	if b.Trips != nil {
		return b.Trips(err)
	}
	return !errors.Is(err, context.Canceled)
}

func (b *Breaker) threshold() int {
	if b.Threshold <= 0 {
		return 5
	}
	return b.Threshold
}

func (b *Breaker) cooldown() time.Duration {
	if b.Cooldown <= 0 {
		return 30 * time.Second
	}
	return b.Cooldown
}

func (b *Breaker) now() time.Time {
	if b.Now == nil {
		return time.Now()
	}
	return b.Now()
}
