package main

import (
	"bytes"
	"crypto/rand"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/url"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/lethe-dev/lethe/infra/auth"
	"github.com/lethe-dev/lethe/infra/auth/localissuer"
	"github.com/lethe-dev/lethe/internal/emulators"
)

// search is POST /v1/search with q in the body (never in the URL).
func (c client) search(q string, out any) int {
	c.t.Helper()
	body, err := json.Marshal(map[string]any{"q": q})
	if err != nil {
		c.t.Fatal(err)
	}
	return c.do("POST", "/v1/search", "application/json", body, out)
}

// TestEdgeHardeningConfig: the edge's hardening variables are checked once,
// at startup, and name themselves when wrong.
func TestEdgeHardeningConfig(t *testing.T) {
	base := testConfig(t)
	base.SecurityAlertBurst, base.SecurityAlertEvery = 20, time.Minute
	base.MaxUploadBytes, base.UploadURLTTL, base.FirestoreTimeout = 64<<20, 15*time.Minute, 10*time.Second
	if err := base.validate(); err != nil {
		t.Fatalf("defaults refused: %v", err)
	}
	for _, tc := range []struct {
		name   string
		change func(*Config)
		want   string
	}{
		{"negative hops", func(c *Config) { c.TrustedProxyHops = -1 }, "LETHE_TRUSTED_PROXY_HOPS"},
		{"absurd hops", func(c *Config) { c.TrustedProxyHops = 17 }, "LETHE_TRUSTED_PROXY_HOPS"},
		{"wildcard origin", func(c *Config) { c.CORSOrigins = []string{"*"} }, "LETHE_CORS_ORIGINS"},
		{"origin with a path", func(c *Config) { c.CORSOrigins = []string{"https://app.example.com/x"} }, "LETHE_CORS_ORIGINS"},
		{"public URL not http", func(c *Config) { c.PublicURL = "ftp://example.com" }, "LETHE_PUBLIC_URL"},
		{"zero threshold", func(c *Config) { c.SecurityAlertBurst = 0 }, "LETHE_SECURITY_ALERT_THRESHOLD"},
		{"no window", func(c *Config) { c.SecurityAlertEvery = 0 }, "LETHE_SECURITY_ALERT_WINDOW"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c := base
			tc.change(&c)
			if err := c.validate(); err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("validate: %v, want a refusal naming %s", err, tc.want)
			}
		})
	}
	ok := base
	ok.TrustedProxyHops, ok.CORSOrigins, ok.PublicURL, ok.SecurityAlertBurst = 2, []string{"https://app.example.com"}, "https://lethe.example.com", -1
	if err := ok.validate(); err != nil {
		t.Fatalf("a Cloud Run configuration refused: %v", err)
	}
	prod := Config{Env: envProduction, Bus: "gcp", Documents: "firestore", Blobs: "gcs", Vectors: "pinecone",
		KEK: "gcpkms://projects/p/locations/l/keyRings/r/cryptoKeys/k", RateLimit: "redis://10.0.0.3:6379/0", Auth: "firebase",
		PublicURL: "http://lethe.example.com"}
	if err := prod.guardProduction(); err == nil || !strings.Contains(err.Error(), "LETHE_PUBLIC_URL") {
		t.Fatalf("production with an http public URL: %v", err)
	}
}

// TestRejectedTokensBehindAProxyOnRedis is the edge as Cloud Run runs it:
// one front end in front (LETHE_TRUSTED_PROXY_HOPS=1), the rejected-token
// limit in a real Redis reached through a link the test cuts.
func TestRejectedTokensBehindAProxyOnRedis(t *testing.T) {
	redisURL := os.Getenv("LETHE_REDIS_URL")
	if redisURL == "" {
		redisURL = "redis://127.0.0.1:6379/0"
	}
	u, err := url.Parse(redisURL)
	if err != nil {
		t.Fatalf("LETHE_REDIS_URL: %v", err)
	}
	if c, err := net.DialTimeout("tcp", u.Host, 2*time.Second); err != nil {
		emulators.Missing(t, "Redis at "+u.Host+" does not answer ("+err.Error()+")")
	} else {
		c.Close()
	}
	proxy := newCutProxy(t, u.Host)
	cfg := testConfig(t)
	cfg.Workers = "none"
	cfg.RateLimit = "redis://" + proxy.addr() + u.Path
	cfg.TrustedProxyHops = 1
	cfg.RateAuthFailPerMin = 6 // a burst of 2
	p := startTestPipeline(t, cfg, overrides{})
	tok, err := p.app.issuer.Mint("alice-proxy", time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	// Addresses unique to this run: the limiter's keys outlive it in Redis.
	b := make([]byte, 4)
	_, _ = rand.Read(b)
	addr := func(n int) string { return fmt.Sprintf("2001:db8:%x:%x::%d", b[:2], b[2:], n) }
	call := func(token string, xff ...string) int {
		t.Helper()
		req, err := http.NewRequest("GET", "http://"+p.addr+"/v1/conversations", nil)
		if err != nil {
			t.Fatal(err)
		}
		if token != "" {
			req.Header.Set("Authorization", "Bearer "+token)
		}
		for _, v := range xff {
			req.Header.Add("X-Forwarded-For", v)
		}
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		return resp.StatusCode
	}
	for i, want := range []int{401, 401, 429} {
		if got := call("bad.token.x", addr(1)); got != want {
			t.Fatalf("client 1, bad token %d: %d, want %d", i, got, want)
		}
	}
	if got := call("bad.token.x", addr(9)+", "+addr(1)); got != 429 {
		t.Fatalf("client 1 prepending another address: %d, want 429 (same key)", got)
	}
	if got := call("bad.token.x", addr(2)); got != 401 {
		t.Fatalf("client 2 behind the same proxy: %d, want 401 (a bucket of its own)", got)
	}
	if got := call(tok, addr(1)); got != 200 {
		t.Fatalf("a valid token from a limited address: %d, want 200", got)
	}
	proxy.set(true, true) // Redis unreachable
	for _, tc := range []struct{ name, token string }{{"bad token", "bad.token.x"}, {"no token", ""}} {
		if got := call(tc.token, addr(3)); got != http.StatusServiceUnavailable {
			t.Fatalf("%s with Redis down: %d, want 503 (fail closed)", tc.name, got)
		}
	}
	if got := call(tok, addr(3)); got != 200 {
		t.Fatalf("a valid token with Redis down: %d, want 200 (per-user limit falls back)", got)
	}
}

// TestTokenAdminWithSecondFactor: lethe token mints what Firebase would
// send for an admin who signed in with a second factor.
func TestTokenAdminWithSecondFactor(t *testing.T) {
	cfg := testConfig(t)
	for _, tc := range []struct {
		args       []string
		admin      bool
		factor     string
		usageError bool
	}{
		{[]string{"--uid", "root", "--admin", "--second-factor", "totp"}, true, "totp", false},
		{[]string{"--uid", "root", "--admin"}, true, "", false},
		{[]string{"--uid", "u"}, false, "", false},
		{[]string{"--uid", "root", "--second-factor", "to tp"}, false, "", true},
	} {
		var out, errOut bytes.Buffer
		err := cmdToken(t.Context(), cfg, tc.args, &out, &errOut)
		if tc.usageError {
			if !errors.As(err, new(usageError)) {
				t.Fatalf("%q: %v, want a usage error", tc.args, err)
			}
			continue
		}
		if err != nil {
			t.Fatalf("%q: %v", tc.args, err)
		}
		iss, err := localissuer.Open(dataPaths{cfg.DataDir}.issuer())
		if err != nil {
			t.Fatal(err)
		}
		v, err := iss.Verifier()
		if err != nil {
			t.Fatal(err)
		}
		id, err := v.Verify(t.Context(), strings.TrimSpace(out.String()))
		if err != nil || id.HasRole(auth.RoleAdmin) != tc.admin || id.SecondFactor != tc.factor {
			t.Fatalf("%q: identity %+v, %v", tc.args, id, err)
		}
	}
}
