package main

import (
	"net/http"
	"strings"
	"testing"
	"time"
)

// TestNoCrossOriginAccess: the edge never grants another origin access
// (no Access-Control-* header on a preflight, a read or an error), so a
// browser page elsewhere cannot call the API with a user's token; the
// only browser client is served from the edge's own origin.
func TestNoCrossOriginAccess(t *testing.T) {
	p := startTestPipeline(t, testConfig(t), overrides{STT: instantSTT{}})
	tok, err := p.app.issuer.Mint("cors-user", time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	base := "http://" + p.addr
	for _, tc := range []struct {
		method, path string
		auth         bool
		headers      map[string]string
	}{
		{"OPTIONS", "/v1/conversations", false, map[string]string{"Access-Control-Request-Method": "GET", "Access-Control-Request-Headers": "authorization"}},
		{"OPTIONS", "/v1/me", false, map[string]string{"Access-Control-Request-Method": "DELETE"}},
		{"GET", "/v1/conversations", true, nil},
		{"GET", "/v1/conversations", false, nil},
		{"GET", "/v1/conversations", true, nil},
	} {
		req, err := http.NewRequest(tc.method, base+tc.path, nil)
		if err != nil {
			t.Fatal(err)
		}
		req.Header.Set("Origin", "https://evil.example")
		for k, v := range tc.headers {
			req.Header.Set(k, v)
		}
		if tc.auth {
			req.Header.Set("Authorization", "Bearer "+tok)
		}
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if tc.auth && tc.method == "GET" && resp.StatusCode != http.StatusOK {
			t.Fatalf("%s %s: %d (the request itself must work)", tc.method, tc.path, resp.StatusCode)
		}
		for k := range resp.Header {
			if strings.HasPrefix(strings.ToLower(k), "access-control-") {
				t.Errorf("%s %s (auth %v): answered %s: %q", tc.method, tc.path, tc.auth, k, resp.Header.Get(k))
			}
		}
	}
}
