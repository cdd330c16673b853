package functions_test

import (
	"net"
	"net/http"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/lethe-dev/lethe/functions"
	"github.com/lethe-dev/lethe/infra/auth/localissuer"
	"github.com/lethe-dev/lethe/infra/ratelimit"
	"github.com/lethe-dev/lethe/infra/ratelimit/redislimit"
	"github.com/lethe-dev/lethe/infra/security"
)

// doFrom is do for a request that reached the edge through a proxy which
// wrote xff (what a Cloud Run front end sends on).
func (e *edge) doFrom(xff []string, method, path, token string) reply {
	e.t.Helper()
	req, err := http.NewRequest(method, e.url+path, nil)
	must(e.t, err)
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	for _, v := range xff {
		req.Header.Add("X-Forwarded-For", v)
	}
	return e.send(req)
}

func TestRejectedTokenLimitKeyedOnTrustedHopAddress(t *testing.T) {
	sig := security.New(security.Options{Threshold: -1})
	e := newEdgeWith(t, edgeOptions{maxChunk: 1 << 20, proxyHops: 1, security: sig,
		limits: functions.Limits{FailedAuth: ratelimit.Limit{Rate: 2, Burst: 2, Period: time.Hour}}})
	// Every request comes from the same socket peer (the test's proxy).
	for i, want := range []int{401, 401, 429} {
		if r := e.doFrom([]string{"203.0.113.1"}, "GET", "/v1/conversations", "forged.token.here"); r.status != want {
			t.Fatalf("client A bad token %d: %d, want %d", i, r.status, want)
		}
	}
	spoofs := [][]string{
		{"198.51.100.77, 203.0.113.1"},   // an entry the client prepended
		{"198.51.100.78", "203.0.113.1"}, // a header line of its own
		{"not-an-ip,,, 203.0.113.1"},     // garbage before the trusted entry
		{"203.0.113.2, 203.0.113.1"},     // client B's address, claimed
	}
	for _, xff := range spoofs {
		if r := e.doFrom(xff, "GET", "/v1/conversations", "forged.token.here"); r.status != 429 {
			t.Fatalf("client A spoofing %q: %d, want 429 (same key)", xff, r.status)
		}
	}
	// Client B behind the same proxy has a bucket of its own.
	for i := range 2 {
		if r := e.doFrom([]string{"203.0.113.2"}, "GET", "/v1/conversations", "forged.token.here"); r.status != 401 {
			t.Fatalf("client B bad token %d: %d, want 401", i, r.status)
		}
	}
	if got := sig.Count(security.AuthFailure); got != 9 {
		t.Errorf("auth failures counted %d, want 9", got)
	}
	if got := sig.Counts()[security.Key{Kind: security.RateLimited, Reason: "authfail"}]; got != 5 {
		t.Errorf("rate-limited auth failures counted %d, want 5", got)
	}
	logs := e.logs.String()
	if !strings.Contains(logs, `"client_addr":"203.0.113.2"`) || strings.Contains(logs, `"client_addr":"198.51.100.77"`) {
		t.Errorf("logs do not carry the trusted client address only")
	}
	if strings.Contains(logs, "forged.token.here") {
		t.Error("a token reached the logs")
	}
}

// closedRedis is a real Redis adapter pointed at a port nobody listens on.
func closedRedis(t *testing.T) ratelimit.Limiter {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	must(t, err)
	addr := ln.Addr().String()
	must(t, ln.Close())
	c := redis.NewClient(&redis.Options{Addr: addr, DialTimeout: time.Second, MaxRetries: -1, DialerRetries: 1})
	t.Cleanup(func() { c.Close() })
	return redislimit.New(c, t.Name())
}

func TestSharedLimiterDownUnauthenticatedFailClosed(t *testing.T) {
	e := newEdgeWith(t, edgeOptions{maxChunk: 1 << 20, limiter: closedRedis(t), limits: functions.Limits{
		PerUser:    ratelimit.PerMinute(100, 100),
		FailedAuth: ratelimit.PerMinute(100, 100),
	}})
	for _, tc := range []struct{ name, token string }{{"no token", ""}, {"bad token", "forged.token.here"}} {
		r := e.do("GET", "/v1/conversations", tc.token, "", nil)
		if r.status != http.StatusServiceUnavailable || errCode(r) != "unavailable" {
			t.Errorf("%s with Redis down: %d %v, want 503", tc.name, r.status, r.body)
		}
	}
	// An authenticated user's per-user limit degrades to the local one.
	if r := e.do("GET", "/v1/conversations", e.token("alice"), "", nil); r.status != 200 {
		t.Errorf("authenticated call with Redis down: %d, want 200 (local fallback)", r.status)
	}
}

func TestAdminRoutesNeedRoleAndSecondFactor(t *testing.T) {
	mint := func(e *edge, uid string, o localissuer.MintOptions) string {
		tok, err := e.issuer.MintWith(uid, o, time.Hour)
		must(t, err)
		return tok
	}
	admin := localissuer.MintOptions{Roles: []string{"admin"}}
	admin2FA := localissuer.MintOptions{Roles: []string{"admin"}, SecondFactor: "totp"}
	tests := []struct {
		name         string
		secondFactor bool // the identity provider is Firebase
		claims       localissuer.MintOptions
		status       int
		code         string
		reason       string
	}{
		{"user", false, localissuer.MintOptions{}, 403, "forbidden", security.ReasonNoRole},
		{"user with a second factor", true, localissuer.MintOptions{SecondFactor: "totp"}, 403, "forbidden", security.ReasonNoRole},
		{"admin, local issuer", false, admin, 200, "", ""},
		{"admin without second factor, firebase", true, admin, 403, "second_factor_required", security.ReasonNoSecondFactor},
		{"admin with second factor, firebase", true, admin2FA, 200, "", ""},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			sig := security.New(security.Options{Threshold: -1})
			e := newEdgeWith(t, edgeOptions{maxChunk: 1 << 20, secondFactor: tc.secondFactor, security: sig})
			r := e.do("GET", "/v1/admin/audit", mint(e, "root", tc.claims), "", nil)
			if r.status != tc.status || errCode(r) != tc.code {
				t.Fatalf("status %d code %q, want %d %q", r.status, errCode(r), tc.status, tc.code)
			}
			got := sig.Counts()[security.Key{Kind: security.ForbiddenAdmin, Reason: tc.reason}]
			if tc.reason != "" && got != 1 {
				t.Fatalf("forbidden_admin/%s counted %d, want 1", tc.reason, got)
			}
			if tc.reason == "" && sig.Count(security.ForbiddenAdmin) != 0 {
				t.Fatal("an allowed admin call was counted as forbidden")
			}
		})
	}
}

func TestBrowserHeaders(t *testing.T) {
	const allowed = "https://app.example.com"
	e := newEdgeWith(t, edgeOptions{maxChunk: 1 << 20, browser: functions.BrowserPolicy{
		AllowedOrigins: []string{allowed, "http://localhost:5173"}, HSTS: true}})
	tok := e.token("alice")
	req := func(method, origin string, preflight bool) *http.Response {
		r, err := http.NewRequest(method, e.url+"/v1/conversations", nil)
		must(t, err)
		if origin != "" {
			r.Header.Set("Origin", origin)
		}
		if preflight {
			r.Header.Set("Access-Control-Request-Method", "GET")
			r.Header.Set("Access-Control-Request-Headers", "authorization")
		} else {
			r.Header.Set("Authorization", "Bearer "+tok)
		}
		resp, err := http.DefaultClient.Do(r)
		must(t, err)
		resp.Body.Close()
		return resp
	}
	tests := []struct {
		name      string
		method    string
		origin    string
		preflight bool
		status    int
		acao      string
	}{
		{"allowed origin", "GET", allowed, false, 200, allowed},
		{"second allowed origin", "GET", "http://localhost:5173", false, 200, "http://localhost:5173"},
		{"other origin", "GET", "https://evil.example.com", false, 200, ""},
		{"suffix of an allowed origin", "GET", "https://app.example.com.evil.net", false, 200, ""},
		{"scheme differs", "GET", "http://app.example.com", false, 200, ""},
		{"null origin", "GET", "null", false, 200, ""},
		{"no origin", "GET", "", false, 200, ""},
		{"preflight, allowed", "OPTIONS", allowed, true, 204, allowed},
		{"preflight, other", "OPTIONS", "https://evil.example.com", true, 403, ""},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			resp := req(tc.method, tc.origin, tc.preflight)
			h := resp.Header
			if resp.StatusCode != tc.status || h.Get("Access-Control-Allow-Origin") != tc.acao {
				t.Fatalf("status %d ACAO %q, want %d %q", resp.StatusCode, h.Get("Access-Control-Allow-Origin"), tc.status, tc.acao)
			}
			if h.Get("Access-Control-Allow-Credentials") != "" {
				t.Fatal("credentials allowed: tokens ride in Authorization, not cookies")
			}
			if tc.origin != "" && !slices.Contains(h.Values("Vary"), "Origin") {
				t.Fatalf("Vary %q lacks Origin", h.Values("Vary"))
			}
			if tc.preflight && tc.acao != "" && !strings.Contains(h.Get("Access-Control-Allow-Methods"), "POST") {
				t.Fatalf("preflight methods %q", h.Get("Access-Control-Allow-Methods"))
			}
			for name, want := range map[string]string{
				"Strict-Transport-Security": "max-age=31536000; includeSubDomains",
				"X-Content-Type-Options":    "nosniff",
				"Cache-Control":             "no-store",
			} {
				if h.Get(name) != want {
					t.Fatalf("%s = %q, want %q", name, h.Get(name), want)
				}
			}
		})
	}
	// Without https there is no HSTS.
	plain := newEdge(t, 1<<20)
	if r := plain.do("GET", "/healthz", "", "", nil); r.header.Get("Strict-Transport-Security") != "" || r.header.Get("X-Content-Type-Options") != "nosniff" {
		t.Fatalf("plain edge headers: %v", r.header)
	}
}

func TestValidateOrigins(t *testing.T) {
	for _, good := range [][]string{nil, {"https://app.example.com"}, {"http://localhost:5173", "https://a.b:8443"}} {
		if err := functions.ValidateOrigins(good); err != nil {
			t.Errorf("%q: %v", good, err)
		}
	}
	for _, bad := range []string{"*", "https://*.example.com", "null", "https://app.example.com/", "https://app.example.com/x",
		"app.example.com", "ftp://a.b", "https://App.example.com", "https://u:p@a.b", "https://a.b?x=1"} {
		if err := functions.ValidateOrigins([]string{bad}); err == nil {
			t.Errorf("%q accepted", bad)
		}
	}
}
