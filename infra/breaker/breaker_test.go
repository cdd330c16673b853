package breaker_test

import (
	"context"
	"errors"
	"sync"
	"testing"
	"time"

	"github.com/lethe-dev/lethe/infra/breaker"
)

var (
	errDown     = errors.New("provider down")
	errRejected = errors.New("request rejected")
)

type clock struct {
	mu sync.Mutex
	t  time.Time
}

func (c *clock) Now() time.Time      { c.mu.Lock(); defer c.mu.Unlock(); return c.t }
func (c *clock) Add(d time.Duration) { c.mu.Lock(); c.t = c.t.Add(d); c.mu.Unlock() }

func TestBreakerOpensFailsFastProbesAndCloses(t *testing.T) {
	clk := &clock{t: time.Unix(1_800_000_000, 0)}
	var changes []string
	b := &breaker.Breaker{Threshold: 3, Cooldown: 10 * time.Second, Now: clk.Now,
		Trips:    func(err error) bool { return errors.Is(err, errDown) },
		OnChange: func(from, to breaker.State) { changes = append(changes, from.String()+">"+to.String()) }}
	calls := 0
	call := func(result error) error {
		return b.Do(t.Context(), func(context.Context) error { calls++; return result })
	}
	// Rejections do not count; failures below the threshold keep it closed.
	for _, r := range []error{errDown, errDown, errRejected, errDown, errDown} {
		_ = call(r)
	}
	if b.State() != breaker.Closed {
		t.Fatalf("opened on %d non-consecutive failures", 4)
	}
	if err := call(errDown); !errors.Is(err, errDown) || b.State() != breaker.Open {
		t.Fatalf("third consecutive failure: %v, state %s", err, b.State())
	}
	before := calls
	for range 10 {
		if err := call(nil); !errors.Is(err, breaker.ErrOpen) {
			t.Fatalf("open circuit let a call through: %v", err)
		}
	}
	if calls != before {
		t.Fatalf("open circuit called the provider %d times", calls-before)
	}
	// After the cooldown one probe goes; its failure reopens.
	clk.Add(11 * time.Second)
	if err := call(errDown); !errors.Is(err, errDown) || b.State() != breaker.Open {
		t.Fatalf("failed probe: %v, state %s", err, b.State())
	}
	if err := call(nil); !errors.Is(err, breaker.ErrOpen) {
		t.Fatalf("after a failed probe: %v", err)
	}
	clk.Add(11 * time.Second)
	if err := call(nil); err != nil || b.State() != breaker.Closed {
		t.Fatalf("good probe: %v, state %s", err, b.State())
	}
	want := []string{"closed>open", "open>half-open", "half-open>open", "open>half-open", "half-open>closed"}
	if len(changes) != len(want) {
		t.Fatalf("changes %v, want %v", changes, want)
	}
	for i := range want {
		if changes[i] != want[i] {
			t.Fatalf("changes %v, want %v", changes, want)
		}
	}
}

func TestBreakerOneProbeAtATimeAndCallerCancellationDoesNotTrip(t *testing.T) {
	clk := &clock{t: time.Unix(1_800_000_000, 0)}
	b := &breaker.Breaker{Threshold: 1, Cooldown: time.Second, Now: clk.Now}
	ctx, cancel := context.WithCancel(t.Context())
	cancel()
	_ = b.Do(ctx, func(ctx context.Context) error { return ctx.Err() })
	if b.State() != breaker.Closed {
		t.Fatal("the caller's own cancellation opened the circuit")
	}
	_ = b.Do(t.Context(), func(context.Context) error { return errDown })
	clk.Add(2 * time.Second)
	probeIn, release := make(chan struct{}), make(chan struct{})
	go func() {
		_ = b.Do(t.Context(), func(context.Context) error { close(probeIn); <-release; return nil })
	}()
	<-probeIn
	if err := b.Do(t.Context(), func(context.Context) error { return nil }); !errors.Is(err, breaker.ErrOpen) {
		t.Fatalf("second call during the probe: %v", err)
	}
	close(release)
}
