package functions

import (
	"fmt"
	"net/http"
	"net/url"
	"slices"
	"strings"

	"github.com/lethe-dev/lethe/functions/internal/clientip"
)

// MaxTrustedProxyHops bounds Deps.TrustedProxyHops.
const MaxTrustedProxyHops = clientip.MaxHops

// BrowserPolicy is what the edge tells browsers: which origins may call it
// from script (CORS, exact origins only) and whether to insist on HTTPS
// (HSTS).
type BrowserPolicy struct {
	// AllowedOrigins are exact origins ("https://app.example.com"): an
	// allowed Origin is echoed back as it came, any other gets no CORS
	// header at all. Never a wildcard: tokens ride in Authorization.
	AllowedOrigins []string
	// HSTS sends Strict-Transport-Security (the public URL is https).
	HSTS bool
}

// originHosts are the allowed origins as the WebSocket origin check wants
// them (host[:port]); origins are validated at startup.
func (p BrowserPolicy) originHosts() []string {
	out := make([]string, 0, len(p.AllowedOrigins))
	for _, o := range p.AllowedOrigins {
		if u, err := url.Parse(o); err == nil && u.Host != "" {
			out = append(out, u.Host)
		}
	}
	return out
}

// ValidateOrigins checks an allowlist: each entry a bare origin (scheme,
// host, optional port; no path, query, wildcard or "null").
func ValidateOrigins(origins []string) error {
	for _, o := range origins {
		u, err := url.Parse(o)
		switch {
		case o == "*" || strings.Contains(o, "*"):
			return fmt.Errorf("origin %q: wildcards are refused; list exact origins", o)
		case err != nil || (u.Scheme != "https" && u.Scheme != "http") || u.Host == "" ||
			u.Path != "" || u.RawQuery != "" || u.Fragment != "" || u.User != nil || u.Opaque != "":
			return fmt.Errorf("origin %q: want scheme://host[:port] with nothing after it", o)
		case o != strings.ToLower(o):
			return fmt.Errorf("origin %q: browsers send origins in lower case", o)
		}
	}
	return nil
}

const (
	hstsValue     = "max-age=31536000; includeSubDomains"
	corsMethods   = "GET, POST, PUT, DELETE"
	corsHeaders   = "Authorization, Content-Type, traceparent"
	corsExposed   = "Retry-After, RateLimit-Limit, RateLimit-Remaining, RateLimit-Reset"
	corsMaxAgeSec = "600"
)

// browser sets HSTS and CORS headers; it reports true when it answered the
// request (a preflight).
func (s *Server) browser(w http.ResponseWriter, r *http.Request) bool {
	h := w.Header()
	if s.d.Browser.HSTS {
		h.Set("Strict-Transport-Security", hstsValue)
	}
	origin := r.Header.Get("Origin")
	if origin != "" || len(s.d.Browser.AllowedOrigins) > 0 {
		// The answer depends on Origin: caches (of the public JWKS, say)
		// must key on it.
		h.Add("Vary", "Origin")
	}
	if origin == "" {
		return false
	}
	allowed := slices.Contains(s.d.Browser.AllowedOrigins, origin)
	preflight := r.Method == http.MethodOptions && r.Header.Get("Access-Control-Request-Method") != ""
	if preflight {
		h.Add("Vary", "Access-Control-Request-Method, Access-Control-Request-Headers")
		if !allowed {
			writeError(w, http.StatusForbidden, "origin_not_allowed", "this origin may not call the API")
			return true
		}
		h.Set("Access-Control-Allow-Origin", origin)
		h.Set("Access-Control-Allow-Methods", corsMethods)
		h.Set("Access-Control-Allow-Headers", corsHeaders)
		h.Set("Access-Control-Max-Age", corsMaxAgeSec)
		w.WriteHeader(http.StatusNoContent)
		return true
	}
	if allowed {
		h.Set("Access-Control-Allow-Origin", origin)
		h.Set("Access-Control-Expose-Headers", corsExposed)
	}
	return false
}
