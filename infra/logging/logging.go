// Package logging builds the process logger: log/slog JSON in the shape Cloud
// Logging parses (severity, message, time, trace), with redaction so that
// tokens, secrets, user content and raw identifiers never reach a log line.
package logging

import (
	"context"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"io"
	"log/slog"
	"strings"

	"go.opentelemetry.io/otel/trace"
)

// Redacted replaces the value of every sensitive attribute.
const Redacted = "[REDACTED]"

// sensitiveKeys are attribute keys (lower-cased, matched as whole key or
// suffix after "_" or ".") whose values are never logged. Content and
// credentials both: a log pipeline is not a place for either.
var sensitiveKeys = []string{
	"token", "authorization", "auth", "bearer", "secret", "password", "passwd",
	"api_key", "apikey", "key", "cookie", "signature", "credential", "credentials",
	"transcript", "text", "body", "content", "note", "notes", "audio", "data",
	"phone", "from", "to", "caller", "called", "email", "uid", "query", "q",
}

func isSensitive(key string) bool {
	k := strings.ToLower(key)
	for _, s := range sensitiveKeys {
		if k == s || strings.HasSuffix(k, "_"+s) || strings.HasSuffix(k, "."+s) {
			return true
		}
	}
	return false
}

// Options configure New.
type Options struct {
	Level slog.Leveler
	// ProjectID turns trace ids into Cloud Logging's full trace resource
	// name (projects/P/traces/T).
	ProjectID string
}

// New returns a JSON logger writing Cloud Logging's structured shape to w.
func New(w io.Writer, opts Options) *slog.Logger {
	h := slog.NewJSONHandler(w, &slog.HandlerOptions{
		Level:       opts.Level,
		ReplaceAttr: replaceAttr,
	})
	return slog.New(&traceHandler{Handler: h, projectID: opts.ProjectID})
}

func replaceAttr(groups []string, a slog.Attr) slog.Attr {
	if len(groups) == 0 {
		switch a.Key {
		case slog.LevelKey:
			return slog.String("severity", severity(a.Value))
		case slog.MessageKey:
			a.Key = "message"
			return a
		case slog.TimeKey:
			return a
		}
	}
	if isSensitive(a.Key) {
		return slog.String(a.Key, Redacted)
	}
	return a
}

// LevelAlert is Cloud Logging's ALERT severity: a record someone must act
// on now (a security burst). Log-based alerting policies select it.
const LevelAlert = slog.Level(16)

func severity(v slog.Value) string {
	l, ok := v.Any().(slog.Level)
	if !ok {
		return "DEFAULT"
	}
	switch {
	case l >= LevelAlert:
		return "ALERT"
	case l >= slog.LevelError:
		return "ERROR"
	case l >= slog.LevelWarn:
		return "WARNING"
	case l >= slog.LevelInfo:
		return "INFO"
	default:
		return "DEBUG"
	}
}

// TraceFrom returns the trace of the span ctx carries (infra/telemetry
// starts one per request and per handled event).
func TraceFrom(ctx context.Context) (trace.SpanContext, bool) {
	sc := trace.SpanContextFromContext(ctx)
	return sc, sc.HasTraceID()
}

type traceHandler struct {
	slog.Handler
	projectID string
}

func (h *traceHandler) Handle(ctx context.Context, r slog.Record) error {
	if sc, ok := TraceFrom(ctx); ok {
		tr := sc.TraceID().String()
		if h.projectID != "" {
			tr = "projects/" + h.projectID + "/traces/" + tr
		}
		r.AddAttrs(
			slog.String("logging.googleapis.com/trace", tr),
			slog.String("logging.googleapis.com/spanId", sc.SpanID().String()),
			slog.Bool("logging.googleapis.com/trace_sampled", sc.IsSampled()),
		)
	}
	return h.Handler.Handle(ctx, r)
}

func (h *traceHandler) WithAttrs(as []slog.Attr) slog.Handler {
	return &traceHandler{Handler: h.Handler.WithAttrs(as), projectID: h.projectID}
}

func (h *traceHandler) WithGroup(name string) slog.Handler {
	return &traceHandler{Handler: h.Handler.WithGroup(name), projectID: h.projectID}
}

// UserHasher turns raw uids into the keyed hash logs may carry. It uses its
// own key (not the storage pseudonym key), so log readers cannot join logs to
// stored documents without a second secret. The first hex digit names the
// key's version, so hashes made before and after a rotation are told apart.
type UserHasher struct {
	version byte
	key     []byte
}

// NewUserHasher returns a hasher keyed with the given version (1-15) of
// key (at least 16 bytes); it panics otherwise, a wiring bug.
func NewUserHasher(version int, key []byte) *UserHasher {
	if version < 1 || version > 15 || len(key) < 16 {
		panic(fmt.Sprintf("logging.NewUserHasher: version %d, key of %d bytes", version, len(key)))
	}
	return &UserHasher{version: "0123456789abcdef"[version], key: append([]byte(nil), key...)}
}

// Attr returns the attribute "user_hash" for uid: 24 lowercase hex digits,
// the version then 23 of HMAC-SHA256(key, "log-uid:"+uid).
func (h *UserHasher) Attr(uid string) slog.Attr {
	m := hmac.New(sha256.New, h.key)
	m.Write([]byte("log-uid:" + uid))
	return slog.String("user_hash", string(h.version)+hex.EncodeToString(m.Sum(nil)[:12])[:23])
}
