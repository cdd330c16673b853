package logging

import (
	"bytes"
	"context"
	"encoding/json"
	"log/slog"
	"regexp"
	"strings"
	"testing"

	"go.opentelemetry.io/otel/trace"
)

func TestRedactsTokensContentAndUIDs(t *testing.T) {
	const (
		token      = "eyJhbGciOiJSUzI1NiIsImtpZCI6IjEifQ.eyJzdWIiOiJhbGljZSJ9.c2lnbmF0dXJl"
		transcript = "my bank pin is four four two one"
		uid        = "alice-uid-7f3a"
		phone      = "+15551234567"
	)
	tests := []struct {
		name string
		log  func(l *slog.Logger, h *UserHasher)
	}{
		{"top-level attrs", func(l *slog.Logger, h *UserHasher) {
			l.Info("request", "authorization", "Bearer "+token, "transcript", transcript, h.Attr(uid), "phone", phone)
		}},
		{"grouped attrs", func(l *slog.Logger, h *UserHasher) {
			l.WithGroup("req").Info("request", "token", token, "text", transcript, "from", phone)
		}},
		{"with attrs", func(l *slog.Logger, h *UserHasher) {
			l.With("id_token", token, "segment_text", transcript).Warn("retry")
		}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			var buf bytes.Buffer
			l := New(&buf, Options{})
			tc.log(l, NewUserHasher(1, []byte("0123456789abcdef0123456789abcdef")))
			out := buf.String()
			for _, secret := range []string{token, transcript, uid, phone, "c2lnbmF0dXJl"} {
				if strings.Contains(out, secret) {
					t.Errorf("log line contains %q: %s", secret, out)
				}
			}
			if !strings.Contains(out, Redacted) {
				t.Errorf("expected redaction marker in %s", out)
			}
		})
	}
}

func TestCloudLoggingShape(t *testing.T) {
	var buf bytes.Buffer
	l := New(&buf, Options{ProjectID: "proj"})
	tid, _ := trace.TraceIDFromHex("4bf92f3577b34da6a3ce929d0e0e4736")
	sid, _ := trace.SpanIDFromHex("00f067aa0ba902b7")
	sc := trace.NewSpanContext(trace.SpanContextConfig{TraceID: tid, SpanID: sid, TraceFlags: trace.FlagsSampled})
	l.WarnContext(trace.ContextWithSpanContext(context.Background(), sc), "slow handler", "event_type", "dev.lethe.x.v1")
	var rec map[string]any
	if err := json.Unmarshal(buf.Bytes(), &rec); err != nil {
		t.Fatalf("not JSON: %v: %s", err, buf.String())
	}
	want := map[string]any{
		"severity":                             "WARNING",
		"message":                              "slow handler",
		"event_type":                           "dev.lethe.x.v1",
		"logging.googleapis.com/trace":         "projects/proj/traces/4bf92f3577b34da6a3ce929d0e0e4736",
		"logging.googleapis.com/spanId":        "00f067aa0ba902b7",
		"logging.googleapis.com/trace_sampled": true,
	}
	for k, v := range want {
		if rec[k] != v {
			t.Errorf("%s = %v, want %v", k, rec[k], v)
		}
	}
	if _, ok := rec["time"]; !ok {
		t.Error("no time field")
	}
	if _, ok := rec["level"]; ok {
		t.Error("level should be renamed to severity")
	}
}

func TestNoTraceFieldsWithoutSpan(t *testing.T) {
	var buf bytes.Buffer
	New(&buf, Options{ProjectID: "proj"}).InfoContext(context.Background(), "no span")
	if strings.Contains(buf.String(), "logging.googleapis.com/trace") {
		t.Fatalf("trace fields without a span: %s", buf.String())
	}
}

func TestUserHasherStableAndKeyed(t *testing.T) {
	one, two := []byte("key-one-key-one-key-one-key-one!"), []byte("key-two-key-two-key-two-key-two!")
	a := NewUserHasher(1, one).Attr("alice").Value.String()
	b := NewUserHasher(1, one).Attr("alice").Value.String()
	c := NewUserHasher(1, two).Attr("alice").Value.String()
	v2 := NewUserHasher(2, two).Attr("alice").Value.String()
	if a != b {
		t.Error("same key, same uid: hashes differ")
	}
	if a == c {
		t.Error("different keys gave the same hash")
	}
	shape := regexp.MustCompile(`^[1-9a-f][0-9a-f]{23}$`)
	if !shape.MatchString(a) || a[0] != '1' || v2[0] != '2' || v2[1:] != c[1:] {
		t.Errorf("hashes %q (v1) and %q (v2 of the same key) do not lead with their version", c, v2)
	}
	for _, bad := range []struct {
		v   int
		key []byte
	}{{0, one}, {16, one}, {1, one[:15]}} {
		func() {
			defer func() {
				if recover() == nil {
					t.Errorf("NewUserHasher(%d, %d bytes) accepted", bad.v, len(bad.key))
				}
			}()
			NewUserHasher(bad.v, bad.key)
		}()
	}
}
