package middleware_test

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/cloudevents/sdk-go/v2/event"

	"github.com/lethe-dev/lethe/events"
	"github.com/lethe-dev/lethe/infra/bus"
	"github.com/lethe-dev/lethe/infra/bus/middleware"
)

const secret = "TRANSCRIPT: meet me at the usual place"

func testEvent(typ string) event.Event {
	e := event.New()
	e.SetID("evt-1")
	e.SetSource("//lethe.dev/pipeline")
	e.SetType(typ)
	e.SetSubject("users/5f2b9c/conversations/c1")
	_ = e.SetData("application/json", []byte(`{"text":"`+secret+`"}`))
	return e
}

func TestChainOrder(t *testing.T) {
	var order []string
	mw := func(name string) bus.Middleware {
		return func(next bus.Handler) bus.Handler {
			return func(ctx context.Context, e event.Event) error {
				order = append(order, name+">")
				err := next(ctx, e)
				order = append(order, "<"+name)
				return err
			}
		}
	}
	h := bus.Chain(func(context.Context, event.Event) error { order = append(order, "h"); return nil }, mw("a"), mw("b"))
	if err := h(context.Background(), testEvent("t")); err != nil {
		t.Fatal(err)
	}
	if got := strings.Join(order, " "); got != "a> b> h <b <a" {
		t.Errorf("order = %s", got)
	}
}

func TestRecoverer(t *testing.T) {
	var logs bytes.Buffer
	h := middleware.Recoverer(slog.New(slog.NewJSONHandler(&logs, nil)))(func(context.Context, event.Event) error {
		panic("kaboom")
	})
	err := h(context.Background(), testEvent("t"))
	var pe *middleware.PanicError
	if !errors.As(err, &pe) || pe.Value != "kaboom" || len(pe.Stack) == 0 {
		t.Fatalf("err = %#v, want *PanicError with value and stack", err)
	}
	if bus.Classify(err) != bus.OutcomeRetry {
		t.Errorf("panic outcome = %v, want retry", bus.Classify(err))
	}
	var line map[string]any
	if err := json.Unmarshal(logs.Bytes(), &line); err != nil {
		t.Fatalf("log is not one JSON line: %v\n%s", err, logs.String())
	}
	if line["level"] != "ERROR" || line["panic"] != "kaboom" || line["event_id"] != "evt-1" ||
		!strings.Contains(fmt.Sprint(line["stack"]), "middleware_test.TestRecoverer") {
		t.Errorf("log line = %v", line)
	}
	if strings.Contains(logs.String(), secret) {
		t.Error("log contains event data")
	}
	// No panic: the result passes through untouched.
	want := errors.New("plain")
	if got := middleware.Recoverer(nil)(func(context.Context, event.Event) error { return want })(context.Background(), testEvent("t")); got != want {
		t.Errorf("err = %v, want %v", got, want)
	}
}

func TestTimeout(t *testing.T) {
	tests := []struct {
		name        string
		handler     bus.Handler
		wantErr     bool
		wantTimeout bool
		wantPerm    bool
	}{
		{"fast success", func(ctx context.Context, _ event.Event) error {
			if _, ok := ctx.Deadline(); !ok {
				return errors.New("no deadline set")
			}
			return nil
		}, false, false, false},
		{"honours the deadline", func(ctx context.Context, _ event.Event) error {
			<-ctx.Done()
			return ctx.Err()
		}, true, true, false},
		{"permanent error after deadline stays permanent", func(ctx context.Context, _ event.Event) error {
			<-ctx.Done()
			return events.Permanentf("bad input")
		}, true, true, true},
		{"fast failure is not a timeout", func(context.Context, event.Event) error {
			return errors.New("nope")
		}, true, false, false},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			err := middleware.Timeout(20*time.Millisecond)(tc.handler)(context.Background(), testEvent("t"))
			if (err != nil) != tc.wantErr {
				t.Fatalf("err = %v, wantErr %v", err, tc.wantErr)
			}
			if got := err != nil && strings.Contains(err.Error(), "timed out after 20ms"); got != tc.wantTimeout {
				t.Errorf("timeout reported = %v (%v), want %v", got, err, tc.wantTimeout)
			}
			if events.IsPermanent(err) != tc.wantPerm {
				t.Errorf("IsPermanent = %v, want %v", events.IsPermanent(err), tc.wantPerm)
			}
		})
	}
	// d <= 0 leaves the context alone.
	_ = middleware.Timeout(0)(func(ctx context.Context, _ event.Event) error {
		if _, ok := ctx.Deadline(); ok {
			t.Error("Timeout(0) set a deadline")
		}
		return nil
	})(context.Background(), testEvent("t"))
}

func TestLogging(t *testing.T) {
	tests := []struct {
		name        string
		err         error
		wantLevel   string
		wantOutcome string
	}{
		{"ack", nil, "INFO", "ack"},
		{"drop", fmt.Errorf("tombstoned: %w", events.ErrDropped), "INFO", "drop"},
		{"retry", errors.New("store down"), "WARN", "retry"},
		{"dead-letter", events.Permanentf("schema"), "ERROR", "dead-letter"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			var logs bytes.Buffer
			h := middleware.Logging(slog.New(slog.NewJSONHandler(&logs, nil)))(func(context.Context, event.Event) error {
				time.Sleep(time.Millisecond)
				return tc.err
			})
			if err := h(context.Background(), testEvent("dev.lethe.x.v1")); err != tc.err {
				t.Errorf("err = %v, want it passed through", err)
			}
			var line map[string]any
			if err := json.Unmarshal(logs.Bytes(), &line); err != nil {
				t.Fatalf("log: %v\n%s", err, logs.String())
			}
			if line["level"] != tc.wantLevel || line["outcome"] != tc.wantOutcome || line["event_id"] != "evt-1" ||
				line["event_type"] != "dev.lethe.x.v1" || line["subject"] != "users/5f2b9c/conversations/c1" {
				t.Errorf("log line = %v", line)
			}
			if d, _ := line["duration"].(float64); d < float64(time.Millisecond) {
				t.Errorf("duration = %v, want >= 1ms", line["duration"])
			}
			if (tc.err != nil) != (line["error"] != nil) {
				t.Errorf("error field = %v for err %v", line["error"], tc.err)
			}
			if strings.Contains(logs.String(), secret) || strings.Contains(logs.String(), "text") {
				t.Errorf("log contains event data: %s", logs.String())
			}
		})
	}
}

func TestRetry(t *testing.T) {
	transient := errors.New("transient")
	tests := []struct {
		name      string
		results   []error // per call; the last repeats
		cfg       middleware.RetryConfig
		wantCalls int
		wantErr   error
	}{
		{"success first time", []error{nil}, middleware.RetryConfig{MaxRetries: 3}, 1, nil},
		{"succeeds on third call", []error{transient, transient, nil}, middleware.RetryConfig{MaxRetries: 3}, 3, nil},
		{"gives up after MaxRetries", []error{transient}, middleware.RetryConfig{MaxRetries: 2}, 3, transient},
		{"permanent is not retried", []error{events.Permanentf("poison")}, middleware.RetryConfig{MaxRetries: 5}, 1, nil},
		{"drop is not retried", []error{events.ErrDropped}, middleware.RetryConfig{MaxRetries: 5}, 1, events.ErrDropped},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			tc.cfg.InitialInterval = time.Millisecond
			tc.cfg.MaxInterval = 4 * time.Millisecond
			calls := 0
			h := middleware.Retry(tc.cfg)(func(context.Context, event.Event) error {
				r := tc.results[min(calls, len(tc.results)-1)]
				calls++
				return r
			})
			err := h(context.Background(), testEvent("t"))
			if calls != tc.wantCalls {
				t.Errorf("calls = %d, want %d", calls, tc.wantCalls)
			}
			if tc.wantErr != nil && !errors.Is(err, tc.wantErr) {
				t.Errorf("err = %v, want %v", err, tc.wantErr)
			}
			if tc.name == "permanent is not retried" && !events.IsPermanent(err) {
				t.Errorf("err = %v, want permanent", err)
			}
		})
	}
}

func TestRetryBackoffGrowsWithJitterAndStopsOnCancel(t *testing.T) {
	var (
		mu    sync.Mutex
		times []time.Time
	)
	cfg := middleware.RetryConfig{MaxRetries: 4, InitialInterval: 10 * time.Millisecond, MaxInterval: 40 * time.Millisecond, Multiplier: 2, Jitter: 0.5}
	h := middleware.Retry(cfg)(func(context.Context, event.Event) error {
		mu.Lock()
		times = append(times, time.Now())
		mu.Unlock()
		return errors.New("transient")
	})
	_ = h(context.Background(), testEvent("t"))
	if len(times) != 5 {
		t.Fatalf("calls = %d, want 5", len(times))
	}
	// Nominal waits 10, 20, 40, 40 ms, each within ±50% and never above
	// MaxInterval (timers only ever fire late, so check the lower bound
	// against the jittered minimum).
	nominal := []time.Duration{10, 20, 40, 40}
	var total time.Duration
	for i, n := range nominal {
		gap := times[i+1].Sub(times[i])
		total += gap
		if gap < n*time.Millisecond/2 {
			t.Errorf("wait %d = %v, below %v", i, gap, n*time.Millisecond/2)
		}
	}
	if total > 2*time.Second {
		t.Errorf("total wait %v: backoff not bounded by MaxInterval", total)
	}

	ctx, cancel := context.WithCancel(context.Background())
	var calls atomic.Int32
	h = middleware.Retry(middleware.RetryConfig{MaxRetries: 10, InitialInterval: time.Hour, MaxInterval: time.Hour})(func(context.Context, event.Event) error {
		calls.Add(1)
		cancel()
		return errors.New("transient")
	})
	start := time.Now()
	if err := h(ctx, testEvent("t")); err == nil || calls.Load() != 1 || time.Since(start) > time.Second {
		t.Errorf("cancelled retry: err %v, calls %d, took %v", err, calls.Load(), time.Since(start))
	}
}

func TestMetrics(t *testing.T) {
	var m middleware.Metrics
	results := map[string][]error{
		"dev.lethe.a.v1": {nil, nil, errors.New("x"), events.Permanentf("p"), fmt.Errorf("w: %w", events.ErrDropped)},
		"dev.lethe.b.v1": {&middleware.PanicError{Value: "boom"}, nil},
	}
	var wg sync.WaitGroup
	for typ, errs := range results {
		for _, err := range errs {
			for range 50 { // concurrent writers: -race checks the counters
				wg.Go(func() {
					_ = m.Middleware(func(context.Context, event.Event) error { return err })(context.Background(), testEvent(typ))
				})
			}
		}
	}
	wg.Wait()
	got := m.Snapshot()
	want := map[string]middleware.Counts{
		"dev.lethe.a.v1": {Acked: 100, Retried: 50, DeadLettered: 50, Dropped: 50},
		"dev.lethe.b.v1": {Acked: 50, Panicked: 50},
	}
	if fmt.Sprint(got) != fmt.Sprint(want) {
		t.Errorf("Snapshot = %+v, want %+v", got, want)
	}
}

func TestMetricsCapsTypes(t *testing.T) {
	var m middleware.Metrics
	for i := range 300 {
		_ = m.Middleware(func(context.Context, event.Event) error { return nil })(context.Background(), testEvent(fmt.Sprintf("t%d", i)))
	}
	s := m.Snapshot()
	if len(s) != 257 || s[middleware.OtherType].Acked != 44 {
		t.Errorf("distinct types = %d, other = %+v; want 256 + other with 44", len(s), s[middleware.OtherType])
	}
}
