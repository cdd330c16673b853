// Package functions is the HTTP edge: authenticated user API, audio ingest,
// health. It accepts audio only once it is durable (sealed blob, chunk
// record, event published) and never trusts a uid that is not in a verified
// token.
package functions

import (
	"context"
	"errors"
	"log/slog"
	"net/http"
	"runtime/debug"
	"strings"
	"time"

	"github.com/lethe-dev/lethe/app/audit"
	"github.com/lethe-dev/lethe/app/forget"
	"github.com/lethe-dev/lethe/app/phones"
	"github.com/lethe-dev/lethe/app/records"
	"github.com/lethe-dev/lethe/events"
	"github.com/lethe-dev/lethe/functions/internal/clientip"
	"github.com/lethe-dev/lethe/functions/internal/reply"
	"github.com/lethe-dev/lethe/functions/openapi"
	"github.com/lethe-dev/lethe/infra/auth"
	"github.com/lethe-dev/lethe/infra/blobs"
	"github.com/lethe-dev/lethe/infra/docs"
	"github.com/lethe-dev/lethe/infra/embed"
	"github.com/lethe-dev/lethe/infra/keys"
	"github.com/lethe-dev/lethe/infra/logging"
	"github.com/lethe-dev/lethe/infra/ratelimit"
	"github.com/lethe-dev/lethe/infra/security"
	"github.com/lethe-dev/lethe/infra/telemetry"
	"github.com/lethe-dev/lethe/infra/vectors"
)

// Pseudonyms maps a raw uid to the keyed hash every store is keyed by.
type Pseudonyms interface {
	User(uid string) string
}

// Limiter counts events against rate limits (ratelimit.Fallback): with
// FallbackLocal a shared backend outage degrades to per-instance limits,
// with FailClosed it is an error (503).
type Limiter interface {
	Allow(ctx context.Context, key string, limit ratelimit.Limit, mode ratelimit.Mode) (ratelimit.Result, error)
}

// Limits are the edge's rate limits.
type Limits struct {
	PerUser    ratelimit.Limit // every authenticated call, per user
	Search     ratelimit.Limit // searches (embedding + vector query), per user
	FailedAuth ratelimit.Limit // rejected tokens, per client address
	PhoneCodes ratelimit.Limit // phone registrations and code checks, per user
}

// Deps are the ports the edge uses.
type Deps struct {
	Verifier   auth.Verifier
	Pseudonyms Pseudonyms
	Docs       docs.Store
	Blobs      blobs.Bucket
	Keys       keys.Sealer
	Vectors    vectors.Index
	Embedder   embed.Embedder
	Bus        events.Publisher
	Events     *events.Registry
	Logger     *slog.Logger
	LogUsers   *logging.UserHasher
	Limiter    Limiter
	Limits     Limits
	// MaxChunkBytes bounds one audio chunk body.
	MaxChunkBytes int64
	// Uploads signs upload URLs for large recordings; nil answers 501.
	Uploads UploadSigner
	// MaxUploadBytes bounds a signed upload; UploadURLTTL is a URL's lifetime.
	MaxUploadBytes int64
	UploadURLTTL   time.Duration
	// Erasures starts and reads user erasures, Conversations erases one
	// conversation, Audit is the lifecycle trail; nil answers 501.
	Erasures      *forget.Saga
	Conversations *forget.Conversations
	Audit         *audit.Log
	// DeadLetters lists and replays the topics' dead letters for admins;
	// nil answers 501.
	DeadLetters DeadLetters
	// Sessions revokes an erased user's sessions at the identity provider
	// (Firebase refresh tokens); nil where there is nothing to revoke.
	Sessions SessionRevoker
	// ExportURLKey signs export download URLs (HMAC-SHA256); every
	// instance must share it. Empty: downloads answer 501.
	ExportURLKey []byte
	// ExportURLTTL is a download URL's lifetime (default 15 minutes).
	ExportURLTTL time.Duration
	// Ready reports whether dependencies answer (for /readyz).
	Ready func(ctx context.Context) error
	// JWKS, when set, is served at /.well-known/jwks.json (the embedded
	// local issuer's public keys).
	JWKS []byte
	Now  func() time.Time
	// Retention is the policy of users who set none (configuration).
	Retention records.Retention
	// Console, when set, is served at "/" and "/console/" (the dev
	// console; development only).
	Console http.Handler
	// Telemetry makes each request's span (trace ids in its logs) and
	// records request latency; nil still follows an incoming traceparent.
	Telemetry *telemetry.Telemetry
	// TrustedProxyHops is how many trusted proxies append to
	// X-Forwarded-For in front of the edge (0: the socket peer is the
	// client); every per-address limit and log uses the address it gives.
	TrustedProxyHops int
	// Security receives security events (counted, logged, alerted on);
	// nil: signals of the edge's own, with the default threshold.
	Security *security.Signals
	// AdminSecondFactor makes admin routes require a token signed in with
	// a second factor (Firebase's firebase.sign_in_second_factor).
	AdminSecondFactor bool
	// Browser holds the CORS allowlist and HSTS (see headers.go).
	Browser BrowserPolicy
	// Leases caps open streams across instances (GET /v1/listen); nil
	// answers 501. Streams bounds each streaming connection.
	Leases  ratelimit.Leases
	Streams StreamLimits
	// Twilio configures the Twilio webhooks; nil leaves them unrouted.
	Twilio *Twilio
	// Phones proves and lists users' phone numbers; nil answers 501.
	Phones *phones.Registry
}

// Server is the edge.
type Server struct {
	d   Deps
	mux *routeMux
}

// New returns the edge with every route registered.
func New(d Deps) *Server {
	if d.Now == nil {
		d.Now = time.Now
	}
	if d.Security == nil {
		d.Security = security.New(security.Options{Logger: d.Logger, Users: d.LogUsers, Now: d.Now})
	}
	s := &Server{d: d, mux: newRouteMux()}
	s.mux.HandleFunc("GET /healthz", s.healthz)
	s.mux.HandleFunc("GET /readyz", s.readyz)
	if len(d.JWKS) > 0 {
		s.mux.HandleFunc("GET /.well-known/jwks.json", s.jwks)
	}
	s.mux.Handle("GET /openapi.yaml", openapi.Handler())
	s.mux.Handle("PUT /v1/conversations/{cid}/chunks/{seq}", s.authed(s.putChunk))
	s.mux.HandleFunc("GET /v1/listen", s.listen) // authenticates after the handshake
	s.mux.Handle("POST /v1/conversations/{cid}/chunks/{seq}/upload-url", s.authed(s.uploadURL))
	s.mux.Handle("GET /v1/conversations", s.authed(s.listConversations))
	s.mux.Handle("GET /v1/conversations/{cid}", s.authed(s.getConversation))
	s.mux.Handle("POST /v1/search", s.authed(s.limited(rateKeySearch, d.Limits.Search, ratelimit.FailClosed, s.search)))
	s.mux.HandleFunc("GET /v1/search", s.searchByURL)
	s.mux.Handle("DELETE /v1/conversations/{cid}", s.authed(s.deleteConversation))
	s.mux.Handle("DELETE /v1/me", s.authedErased(s.eraseMe))
	s.mux.Handle("GET /v1/me/erasure/{id}", s.authedErased(s.erasureStatus))
	s.mux.Handle("DELETE /v1/admin/users/{uid}", s.admin(s.adminErase))
	s.mux.Handle("GET /v1/admin/erasures/{id}", s.admin(s.adminErasureStatus))
	s.mux.Handle("GET /v1/admin/audit", s.admin(s.adminAudit))
	s.routeNotes()
	s.routeExport()
	retention := newRetentionRoutes(s)
	s.mux.Handle("GET /v1/me/retention", s.authed(retention.get))
	s.mux.Handle("PUT /v1/me/retention", s.authed(retention.put))
	s.routeDeadLetters()
	if d.Console != nil {
		s.mux.Handle("GET /{$}", d.Console)
		s.mux.Handle("GET /console/", d.Console)
	}
	s.routeTwilio()
	s.routePhones()
	s.mux.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) {
		writeError(w, http.StatusNotFound, "not_found", "no such route")
	})
	return s
}

// ServeHTTP adds what every response needs: trace context for logs, panic
// recovery, security headers, an access log without bodies or tokens.
func (s *Server) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	start := s.d.Now()
	ctx, endSpan := s.d.Telemetry.StartRequest(r)
	r = r.WithContext(ctx)
	h := w.Header()
	h.Set("X-Content-Type-Options", "nosniff")
	h.Set("Cache-Control", "no-store")
	h.Set("Referrer-Policy", "no-referrer")
	info := &requestInfo{addr: s.clientAddr(r)}
	r = r.WithContext(context.WithValue(ctx, requestInfoKey{}, info))
	rec := &statusRecorder{ResponseWriter: w, status: http.StatusOK}
	defer func() {
		if p := recover(); p != nil {
			s.d.Logger.ErrorContext(ctx, "edge panic", "panic", p, "stack", string(debug.Stack()))
			if !rec.wrote {
				writeError(rec, http.StatusInternalServerError, "internal", "internal error")
			}
		}
		attrs := []any{"method", r.Method, "route", routeOf(r), "status", rec.status,
			"duration_ms", s.d.Now().Sub(start).Milliseconds(), "client_addr", info.addr}
		if info.uid != "" && s.d.LogUsers != nil {
			attrs = append(attrs, s.d.LogUsers.Attr(info.uid))
		}
		s.d.Logger.InfoContext(ctx, "request", attrs...)
		endSpan(routeOf(r), rec.status)
	}()
	if s.browser(rec, r) {
		return // a CORS preflight, answered
	}
	s.mux.ServeHTTP(rec, r)
}

// routeOf logs the pattern, not the path: paths carry conversation ids.
func routeOf(r *http.Request) string {
	if r.Pattern != "" {
		return r.Pattern
	}
	return "unmatched"
}

type statusRecorder struct {
	http.ResponseWriter
	status int
	wrote  bool
}

func (r *statusRecorder) WriteHeader(code int) {
	if !r.wrote {
		r.status, r.wrote = code, true
	}
	r.ResponseWriter.WriteHeader(code)
}

// Unwrap lets http.ResponseController reach the connection (WebSocket
// handshakes hijack it).
func (r *statusRecorder) Unwrap() http.ResponseWriter { return r.ResponseWriter }

func (r *statusRecorder) Write(b []byte) (int, error) {
	r.wrote = true
	return r.ResponseWriter.Write(b)
}

func (s *Server) healthz(w http.ResponseWriter, r *http.Request) {
	writeJSON(w, http.StatusOK, map[string]string{"status": "ok"})
}

func (s *Server) readyz(w http.ResponseWriter, r *http.Request) {
	if s.d.Ready != nil {
		ctx, cancel := context.WithTimeout(r.Context(), 2*time.Second)
		defer cancel()
		if err := s.d.Ready(ctx); err != nil {
			s.d.Logger.WarnContext(ctx, "not ready", "error", err.Error())
			writeError(w, http.StatusServiceUnavailable, "unavailable", "a dependency is not ready")
			return
		}
	}
	writeJSON(w, http.StatusOK, map[string]string{"status": "ready"})
}

func (s *Server) jwks(w http.ResponseWriter, r *http.Request) {
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Cache-Control", "public, max-age=300")
	_, _ = w.Write(s.d.JWKS)
}

// requestInfo carries what the access log needs from inner handlers.
type requestInfo struct {
	uid  string
	addr string // the client address (trusted proxy hops)
}

type requestInfoKey struct{}

type userKey struct{}

// caller is the authenticated user of a request.
type caller struct {
	uid   string // raw: only for sealing it into data, never logged or stored
	user  string // keyed hash: the id every store uses
	admin bool   // holds the admin role
}

// Rate-limit keys of a user (RateLimitKeys lists them for erasure).
const (
	rateKeyUser     = "user:"
	rateKeySearch   = "search"
	rateKeyAuthFail = "authfail:" // per client address, not per user
)

// RateLimitKeys names every rate-limit entry the edge keeps for a user, so
// an erasure can forget and verify them.
func RateLimitKeys(user string) []string {
	return []string{rateKeyUser + user, rateKeySearch + ":" + user}
}

func callerFrom(ctx context.Context) caller { c, _ := ctx.Value(userKey{}).(caller); return c }

// authed verifies the bearer token; the uid comes from it and nowhere else.
// An erased user's token answers 410 and reaches nothing.
func (s *Server) authed(next http.HandlerFunc) http.Handler { return s.auth(authOptions{}, next) }

// authedErased is authed for the routes an erased user may still call: the
// erasure request and its status.
func (s *Server) authedErased(next http.HandlerFunc) http.Handler {
	return s.auth(authOptions{allowErased: true}, next)
}

// admin is authed for routes that need the admin role; every call is
// audited.
func (s *Server) admin(next http.HandlerFunc) http.Handler {
	return s.auth(authOptions{admin: true}, next)
}

type authOptions struct {
	allowErased bool
	admin       bool
}

func (s *Server) auth(o authOptions, next http.HandlerFunc) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		raw, ok := bearer(r.Header.Get("Authorization"))
		if !ok {
			reason := security.ReasonMissing
			if r.Header.Get("Authorization") != "" {
				reason = security.ReasonMalformed
			}
			s.securityEvent(r, security.AuthFailure, reason, "")
			// An unauthenticated request: its per-address limit fails
			// closed when the shared limiter is down.
			if !s.allow(w, r, rateKeyAuthFail+s.clientAddr(r), s.d.Limits.FailedAuth, ratelimit.FailClosed) {
				return
			}
			w.Header().Set("WWW-Authenticate", `Bearer realm="lethe"`)
			writeError(w, http.StatusUnauthorized, "unauthenticated", "a bearer token is required")
			return
		}
		id, err := s.d.Verifier.Verify(r.Context(), raw)
		if err != nil {
			w.Header().Set("WWW-Authenticate", `Bearer realm="lethe", error="invalid_token"`)
			if !errors.Is(err, auth.ErrUnauthenticated) {
				s.d.Logger.ErrorContext(r.Context(), "token verification failed", "error", err.Error())
				writeError(w, http.StatusServiceUnavailable, "unavailable", "cannot verify tokens now")
				return
			}
			s.securityEvent(r, security.AuthFailure, security.ReasonInvalid, "")
			if !s.allow(w, r, rateKeyAuthFail+s.clientAddr(r), s.d.Limits.FailedAuth, ratelimit.FailClosed) {
				return
			}
			writeError(w, http.StatusUnauthorized, "unauthenticated", "the token is not valid")
			return
		}
		c := caller{uid: id.UID, user: s.d.Pseudonyms.User(id.UID), admin: id.HasRole(auth.RoleAdmin)}
		if info, ok := r.Context().Value(requestInfoKey{}).(*requestInfo); ok {
			info.uid = id.UID // logged only as LogUsers' keyed hash
		}
		// The tombstone is checked before the per-user limit: counting an
		// erased user's calls would write their key back into the limiter
		// the erasure emptied. Erased users are limited per address.
		gone, err := records.Tombstoned(r.Context(), s.d.Docs, c.user)
		if err != nil {
			s.unavailable(w, r, "records.Tombstoned", err)
			return
		}
		if gone {
			if !s.allow(w, r, "erased:"+s.clientAddr(r), s.d.Limits.PerUser, ratelimit.FallbackLocal) {
				return
			}
			if !o.allowErased {
				writeError(w, http.StatusGone, "account_erased", "this account was erased")
				return
			}
		} else if !s.allowFor(w, r, rateKeyUser+c.user, s.d.Limits.PerUser, ratelimit.FallbackLocal, c.uid) {
			return
		}
		if o.admin && !c.admin {
			s.securityEvent(r, security.ForbiddenAdmin, security.ReasonNoRole, id.UID)
			writeError(w, http.StatusForbidden, "forbidden", "this route needs the admin role")
			return
		}
		if o.admin && s.d.AdminSecondFactor && id.SecondFactor == "" {
			s.securityEvent(r, security.ForbiddenAdmin, security.ReasonNoSecondFactor, id.UID)
			writeError(w, http.StatusForbidden, "second_factor_required", "admin routes need a sign-in with a second factor")
			return
		}
		ctx := context.WithValue(r.Context(), userKey{}, c)
		next(w, r.WithContext(ctx))
	})
}

func bearer(h string) (string, bool) {
	scheme, tok, ok := strings.Cut(h, " ")
	if !ok || !strings.EqualFold(scheme, "Bearer") {
		return "", false
	}
	tok = strings.TrimSpace(tok)
	if tok == "" || len(tok) > 8192 {
		return "", false
	}
	return tok, true
}

// The edge's answers: one writer for the API and the push receiver.
var (
	writeError = reply.Error
	writeJSON  = reply.JSON
)

// limited adds a per-user limit of its own to an authenticated route.
func (s *Server) limited(name string, l ratelimit.Limit, mode ratelimit.Mode, next http.HandlerFunc) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		if s.allow(w, r, name+":"+callerFrom(r.Context()).user, l, mode) {
			next(w, r)
		}
	}
}

// allow counts one request against key; when it may not proceed it has
// already answered 429 (with Retry-After) or 503. A zero limit is off.
func (s *Server) allow(w http.ResponseWriter, r *http.Request, key string, l ratelimit.Limit, mode ratelimit.Mode) bool {
	return s.allowFor(w, r, key, l, mode, callerFrom(r.Context()).uid)
}

// allowFor is allow for a request of user uid (raw; "" when unknown), whom
// a rate_limited security event names by keyed hash.
func (s *Server) allowFor(w http.ResponseWriter, r *http.Request, key string, l ratelimit.Limit, mode ratelimit.Mode, uid string) bool {
	if s.d.Limiter == nil || l.Rate == 0 {
		return true
	}
	res, err := s.d.Limiter.Allow(r.Context(), key, l, mode)
	if err != nil {
		s.d.Logger.ErrorContext(r.Context(), "rate limiter failed", "error", err.Error())
		writeError(w, http.StatusServiceUnavailable, "unavailable", "rate limiting is unavailable; retry later")
		return false
	}
	ratelimit.WriteHeaders(w, res, l)
	if !res.Allowed {
		class, _, _ := strings.Cut(key, ":")
		s.securityEvent(r, security.RateLimited, class, uid)
		writeError(w, http.StatusTooManyRequests, "rate_limited", "too many requests; retry after the Retry-After delay")
		return false
	}
	return true
}

// clientAddr is the client's address: the X-Forwarded-For entry the
// outermost trusted proxy wrote (TrustedProxyHops), so that behind Cloud
// Run's front end every client is not one address; what a client adds
// itself is ignored.
func (s *Server) clientAddr(r *http.Request) string {
	if info, ok := r.Context().Value(requestInfoKey{}).(*requestInfo); ok && info.addr != "" {
		return info.addr
	}
	addr, _ := clientip.Resolver{Hops: s.d.TrustedProxyHops}.Addr(r)
	return addr
}

// securityEvent reports one security event with the request's route and
// client address; uid is the raw uid when known (hashed by Security).
func (s *Server) securityEvent(r *http.Request, kind security.Kind, reason, uid string) {
	s.d.Security.Record(r.Context(), security.Event{Kind: kind, Reason: reason, Route: routeOf(r), Addr: s.clientAddr(r), UID: uid})
}
