// Package security turns security events (rejected tokens, refused admin
// calls, schema rejections, rate-limit hits, bad webhook signatures) into
// signals: a counter per kind and reason class, one log line each with a
// keyed subject and the client address, and one ALERT-severity line per
// window when one address or one user passes a threshold. Events carry no
// token, secret or content: Event has no field that could hold one.
package security

import (
	"context"
	"log/slog"
	"sort"
	"sync"
	"time"

	"github.com/lethe-dev/lethe/infra/logging"
)

// Kind is what happened.
type Kind string

// The kinds the edge reports.
const (
	AuthFailure      Kind = "auth_failure"      // missing, malformed, expired or forged token
	ForbiddenAdmin   Kind = "forbidden_admin"   // admin route without the role or the second factor
	SchemaRejection  Kind = "schema_rejection"  // a body refused by its JSON Schema
	RateLimited      Kind = "rate_limited"      // a request over a rate limit
	SignatureFailure Kind = "signature_failure" // a webhook or signed URL with a bad signature
)

var kinds = map[Kind]bool{AuthFailure: true, ForbiddenAdmin: true, SchemaRejection: true, RateLimited: true, SignatureFailure: true}

// Reason classes used by the edge; others may be added (lower-case letters,
// digits and '_', at most 32 bytes; anything else is counted as "other").
const (
	ReasonMissing        = "missing"          // no credential at all
	ReasonMalformed      = "malformed"        // not parseable
	ReasonInvalid        = "invalid"          // parsed, but bad signature, issuer, audience or expiry
	ReasonNoRole         = "no_role"          // admin route, user without the admin role
	ReasonNoSecondFactor = "no_second_factor" // admin route, token without a second factor
	ReasonOther          = "other"
)

// Event is one security event. Only classes, the route pattern, the client
// address and (hashed) the uid leave the package.
type Event struct {
	Kind   Kind
	Reason string // a reason class, never free text
	Route  string // the route pattern ("GET /v1/search"), never the path
	Addr   string // the client address as the trusted proxy hop saw it
	UID    string // the raw uid when known; logged only as its keyed hash
}

// Key names one counter.
type Key struct {
	Kind   Kind
	Reason string
}

// Options configure New.
type Options struct {
	Logger *slog.Logger // nil discards
	// Users hashes uids into the keyed subject logs carry (the log key, not
	// the storage pseudonym key). Nil: the user subject is neither logged
	// nor tracked.
	Users *logging.UserHasher
	// Threshold is how many events from one address, or against one user,
	// within Window raise an alert. Zero: DefaultThreshold; negative: off.
	Threshold int
	// Window is the alerting window (default DefaultWindow).
	Window time.Duration
	// MaxSubjects bounds the addresses and users tracked per window
	// (default DefaultMaxSubjects), so a flood of distinct addresses
	// cannot grow memory; past it one alert says so.
	MaxSubjects int
	Now         func() time.Time
	// Count, when set, hears each event's kind and reason class (an
	// exported metric: infra/telemetry's lethe.security.events).
	Count func(ctx context.Context, kind, reason string)
}

// Defaults of Options.
const (
	DefaultThreshold   = 20
	DefaultWindow      = time.Minute
	DefaultMaxSubjects = 10000
	// maxCounters caps distinct (kind, reason) counters.
	maxCounters = 128
)

// Signals records security events. The zero value is not usable; a nil
// *Signals ignores events, so a component may hold an optional one. Safe for
// concurrent use.
type Signals struct {
	o Options

	mu          sync.Mutex
	counts      map[Key]int64
	alerts      int64
	windowStart time.Time
	bySubject   map[string]int
	overflowed  bool
}

// New returns Signals with o's defaults filled in.
func New(o Options) *Signals {
	if o.Logger == nil {
		o.Logger = slog.New(slog.DiscardHandler)
	}
	if o.Threshold == 0 {
		o.Threshold = DefaultThreshold
	}
	if o.Window <= 0 {
		o.Window = DefaultWindow
	}
	if o.MaxSubjects <= 0 {
		o.MaxSubjects = DefaultMaxSubjects
	}
	if o.Now == nil {
		o.Now = time.Now
	}
	return &Signals{o: o, counts: map[Key]int64{}, bySubject: map[string]int{}}
}

// Record counts e, logs it at WARNING and, when e takes its address or its
// user to the threshold in the current window, logs one ALERT.
func (s *Signals) Record(ctx context.Context, e Event) {
	if s == nil {
		return
	}
	if !kinds[e.Kind] {
		e.Kind = Kind(ReasonOther)
	}
	e.Reason = reasonClass(e.Reason)
	var userHash string
	if e.UID != "" && s.o.Users != nil {
		userHash = s.o.Users.Attr(e.UID).Value.String()
	}
	attrs := []slog.Attr{
		slog.String("security_event", string(e.Kind)),
		slog.String("reason", e.Reason),
		slog.String("route", e.Route),
		slog.String("client_addr", e.Addr),
	}
	if userHash != "" {
		attrs = append(attrs, slog.String("user_hash", userHash))
	}
	s.o.Logger.LogAttrs(ctx, slog.LevelWarn, "security event", attrs...)
	if s.o.Count != nil {
		s.o.Count(ctx, string(e.Kind), e.Reason)
	}

	var alerts []slog.Attr
	s.mu.Lock()
	k := Key{e.Kind, e.Reason}
	if _, ok := s.counts[k]; !ok && len(s.counts) >= maxCounters {
		k = Key{e.Kind, ReasonOther}
	}
	s.counts[k]++
	if s.o.Threshold > 0 {
		now := s.o.Now()
		if now.Sub(s.windowStart) >= s.o.Window || now.Before(s.windowStart) {
			s.windowStart, s.overflowed = now.Truncate(s.o.Window), false
			clear(s.bySubject)
		}
		if e.Addr != "" {
			alerts = s.countSubject(alerts, "address", "client_addr", e.Addr)
		}
		if userHash != "" {
			alerts = s.countSubject(alerts, "user", "user_hash", userHash)
		}
	}
	s.mu.Unlock()
	for _, a := range alerts {
		s.o.Logger.LogAttrs(ctx, logging.LevelAlert, "security alert: burst of security events",
			slog.String("security_event", string(e.Kind)), a,
			slog.Int("threshold", s.o.Threshold), slog.Float64("window_s", s.o.Window.Seconds()))
	}
}

// countSubject counts one event for a subject; it returns alerts with one
// more entry when this event is the one that reaches the threshold (so
// once per window). Called with s.mu held.
func (s *Signals) countSubject(alerts []slog.Attr, typ, attr, value string) []slog.Attr {
	key := typ + ":" + value
	n, ok := s.bySubject[key]
	if !ok && len(s.bySubject) >= s.o.MaxSubjects {
		if !s.overflowed {
			s.overflowed = true
			s.alerts++
			return append(alerts, slog.Group("subject", slog.String("type", "too_many_subjects"), slog.Int("tracked", len(s.bySubject))))
		}
		return alerts
	}
	n++
	s.bySubject[key] = n
	if n == s.o.Threshold {
		s.alerts++
		return append(alerts, slog.Group("subject", slog.String("type", typ), slog.String(attr, value)))
	}
	return alerts
}

// Counts returns the events counted so far by kind and reason class.
func (s *Signals) Counts() map[Key]int64 {
	s.mu.Lock()
	defer s.mu.Unlock()
	out := make(map[Key]int64, len(s.counts))
	for k, v := range s.counts {
		out[k] = v
	}
	return out
}

// Count returns the events of kind counted so far, all reasons together.
func (s *Signals) Count(kind Kind) int64 {
	var n int64
	for k, v := range s.Counts() {
		if k.Kind == kind {
			n += v
		}
	}
	return n
}

// Alerts returns how many alerts were raised so far.
func (s *Signals) Alerts() int64 {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.alerts
}

// Keys returns the counter keys in a stable order (for exposition).
func (s *Signals) Keys() []Key {
	c := s.Counts()
	out := make([]Key, 0, len(c))
	for k := range c {
		out = append(out, k)
	}
	sort.Slice(out, func(i, j int) bool {
		if out[i].Kind != out[j].Kind {
			return out[i].Kind < out[j].Kind
		}
		return out[i].Reason < out[j].Reason
	})
	return out
}

func reasonClass(r string) string {
	if r == "" || len(r) > 32 {
		return ReasonOther
	}
	for i := 0; i < len(r); i++ {
		c := r[i]
		if !(c >= 'a' && c <= 'z' || c >= '0' && c <= '9' || c == '_') {
			return ReasonOther
		}
	}
	return r
}
