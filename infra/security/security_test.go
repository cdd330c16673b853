package security_test

import (
	"bytes"
	"context"
	"encoding/json"
	"log/slog"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/lethe-dev/lethe/infra/logging"
	"github.com/lethe-dev/lethe/infra/security"
)

type clock struct {
	mu sync.Mutex
	t  time.Time
}

func (c *clock) now() time.Time      { c.mu.Lock(); defer c.mu.Unlock(); return c.t }
func (c *clock) add(d time.Duration) { c.mu.Lock(); c.t = c.t.Add(d); c.mu.Unlock() }

var hasher = logging.NewUserHasher(1, []byte("0123456789abcdef0123456789abcdef"))

func newSignals(t *testing.T, o security.Options) (*security.Signals, *bytes.Buffer, *clock) {
	t.Helper()
	buf := &bytes.Buffer{}
	c := &clock{t: time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)}
	o.Logger = logging.New(buf, logging.Options{Level: slog.LevelDebug})
	o.Users = hasher
	o.Now = c.now
	return security.New(o), buf, c
}

// lines decodes the JSON log lines.
func lines(t *testing.T, buf *bytes.Buffer) []map[string]any {
	t.Helper()
	var out []map[string]any
	for _, l := range strings.Split(strings.TrimSpace(buf.String()), "\n") {
		if l == "" {
			continue
		}
		var m map[string]any
		if err := json.Unmarshal([]byte(l), &m); err != nil {
			t.Fatalf("log line %q: %v", l, err)
		}
		out = append(out, m)
	}
	return out
}

func alertsIn(t *testing.T, buf *bytes.Buffer) []map[string]any {
	var out []map[string]any
	for _, m := range lines(t, buf) {
		if m["severity"] == "ALERT" {
			out = append(out, m)
		}
	}
	return out
}

func TestCountsByKindAndReasonAndLogsKeyedSubject(t *testing.T) {
	s, buf, _ := newSignals(t, security.Options{Threshold: -1})
	ctx := context.Background()
	s.Record(ctx, security.Event{Kind: security.AuthFailure, Reason: security.ReasonInvalid, Route: "GET /v1/conversations", Addr: "203.0.113.7"})
	s.Record(ctx, security.Event{Kind: security.AuthFailure, Reason: security.ReasonMissing, Addr: "203.0.113.7"})
	s.Record(ctx, security.Event{Kind: security.ForbiddenAdmin, Reason: security.ReasonNoRole, Addr: "198.51.100.1", UID: "alice-raw-uid"})
	// A reason that is not a class (here a would-be token) is counted as "other" and never logged.
	s.Record(ctx, security.Event{Kind: security.SignatureFailure, Reason: "Bearer eyJhbGciOi.secret", Addr: "198.51.100.1"})
	s.Record(ctx, security.Event{Kind: "made_up", Reason: "x"})
	want := map[security.Key]int64{
		{Kind: security.AuthFailure, Reason: "invalid"}:    1,
		{Kind: security.AuthFailure, Reason: "missing"}:    1,
		{Kind: security.ForbiddenAdmin, Reason: "no_role"}: 1,
		{Kind: security.SignatureFailure, Reason: "other"}: 1,
		{Kind: "other", Reason: "x"}:                       1,
	}
	got := s.Counts()
	if len(got) != len(want) {
		t.Fatalf("counts %v, want %v", got, want)
	}
	for k, v := range want {
		if got[k] != v {
			t.Errorf("count %v = %d, want %d", k, got[k], v)
		}
	}
	if s.Count(security.AuthFailure) != 2 {
		t.Errorf("auth failures %d, want 2", s.Count(security.AuthFailure))
	}
	logs := buf.String()
	for _, leak := range []string{"alice-raw-uid", "eyJhbGciOi", "secret"} {
		if strings.Contains(logs, leak) {
			t.Errorf("logs hold %q: %s", leak, logs)
		}
	}
	ls := lines(t, buf)
	if len(ls) != 5 {
		t.Fatalf("%d log lines, want 5", len(ls))
	}
	if ls[0]["security_event"] != "auth_failure" || ls[0]["reason"] != "invalid" || ls[0]["client_addr"] != "203.0.113.7" ||
		ls[0]["route"] != "GET /v1/conversations" || ls[0]["severity"] != "WARNING" {
		t.Errorf("first line %v", ls[0])
	}
	if ls[2]["user_hash"] != hasher.Attr("alice-raw-uid").Value.String() {
		t.Errorf("forbidden admin line has user_hash %v", ls[2]["user_hash"])
	}
	if s.Alerts() != 0 || len(alertsIn(t, buf)) != 0 {
		t.Error("alerts raised with alerting off")
	}
}

func TestBurstRaisesOneAlertPerWindow(t *testing.T) {
	tests := []struct {
		name   string
		events func(i int) security.Event
		attr   string
		value  string
	}{
		{"from one address", func(i int) security.Event {
			return security.Event{Kind: security.AuthFailure, Reason: "invalid", Addr: "203.0.113.9"}
		}, "client_addr", "203.0.113.9"},
		{"against one user from many addresses", func(i int) security.Event {
			return security.Event{Kind: security.ForbiddenAdmin, Reason: "no_role", Addr: "10.0.0." + string(rune('a'+i)), UID: "mallory"}
		}, "user_hash", hasher.Attr("mallory").Value.String()},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			s, buf, c := newSignals(t, security.Options{Threshold: 3, Window: time.Minute})
			ctx := context.Background()
			for i := range 2 {
				s.Record(ctx, tc.events(i))
			}
			if n := len(alertsIn(t, buf)); n != 0 {
				t.Fatalf("%d alerts below the threshold", n)
			}
			for i := 2; i < 10; i++ {
				s.Record(ctx, tc.events(i))
			}
			alerts := alertsIn(t, buf)
			if len(alerts) != 1 || s.Alerts() != 1 {
				t.Fatalf("%d alerts (%d counted) in one window, want 1", len(alerts), s.Alerts())
			}
			subj, _ := alerts[0]["subject"].(map[string]any)
			if subj[tc.attr] != tc.value {
				t.Fatalf("alert subject %v, want %s=%s", alerts[0], tc.attr, tc.value)
			}
			c.add(time.Minute)
			for i := range 3 {
				s.Record(ctx, tc.events(i))
			}
			if n := len(alertsIn(t, buf)); n != 2 {
				t.Fatalf("%d alerts after a burst in the next window, want 2", n)
			}
		})
	}
}

func TestDistinctAddressesBelowThresholdRaiseNothingUntilTrackingIsFull(t *testing.T) {
	s, buf, _ := newSignals(t, security.Options{Threshold: 2, MaxSubjects: 4})
	ctx := context.Background()
	for _, a := range []string{"a", "b", "c", "d"} {
		s.Record(ctx, security.Event{Kind: security.RateLimited, Reason: "per_address", Addr: a})
	}
	if n := len(alertsIn(t, buf)); n != 0 {
		t.Fatalf("%d alerts for four addresses with one event each", n)
	}
	for _, a := range []string{"e", "f", "g"} {
		s.Record(ctx, security.Event{Kind: security.RateLimited, Reason: "per_address", Addr: a})
	}
	alerts := alertsIn(t, buf)
	if len(alerts) != 1 {
		t.Fatalf("%d alerts once tracking is full, want 1", len(alerts))
	}
	if subj, _ := alerts[0]["subject"].(map[string]any); subj["type"] != "too_many_subjects" {
		t.Fatalf("alert %v", alerts[0])
	}
}

func TestNilSignalsIgnoresEvents(t *testing.T) {
	var s *security.Signals
	s.Record(context.Background(), security.Event{Kind: security.AuthFailure})
}

func TestConcurrentRecord(t *testing.T) {
	s, _, _ := newSignals(t, security.Options{Threshold: 50})
	var wg sync.WaitGroup
	for g := range 8 {
		wg.Go(func() {
			for range 100 {
				s.Record(context.Background(), security.Event{Kind: security.SchemaRejection, Reason: "invalid", Addr: "a", UID: string(rune('a' + g))})
			}
		})
	}
	wg.Wait()
	if n := s.Count(security.SchemaRejection); n != 800 {
		t.Fatalf("counted %d, want 800", n)
	}
	if s.Alerts() != 1+8 { // the address once, each user once
		t.Fatalf("%d alerts, want 9", s.Alerts())
	}
}

// TestCountHook: every event reaches the exported metric's hook with its
// kind and reason class, never its address or user.
func TestCountHook(t *testing.T) {
	var got []string
	s := security.New(security.Options{Count: func(_ context.Context, kind, reason string) { got = append(got, kind+"/"+reason) }})
	s.Record(t.Context(), security.Event{Kind: security.AuthFailure, Reason: security.ReasonInvalid, Addr: "203.0.113.9", UID: "alice"})
	s.Record(t.Context(), security.Event{Kind: security.SignatureFailure, Reason: "signature_failure"})
	if len(got) != 2 || got[0] != "auth_failure/invalid" || !strings.HasPrefix(got[1], "signature_failure/") {
		t.Fatalf("hook heard %v", got)
	}
}
