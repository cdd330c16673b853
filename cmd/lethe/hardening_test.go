package main

import (
	"encoding/json"
	"strings"
	"testing"
	"time"
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
