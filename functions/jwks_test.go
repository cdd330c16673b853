package functions_test

import "testing"

// TestJWKSOnlyWhenSet: without keys to publish (Firebase auth), the JWKS
// route does not exist.
func TestJWKSOnlyWhenSet(t *testing.T) {
	for _, tc := range []struct {
		name   string
		noJWKS bool
		want   int
	}{
		{"local issuer", false, 200},
		{"firebase", true, 404},
	} {
		t.Run(tc.name, func(t *testing.T) {
			e := newEdgeWith(t, edgeOptions{maxChunk: 1 << 20, noJWKS: tc.noJWKS})
			if r := e.do("GET", "/.well-known/jwks.json", "", "", nil); r.status != tc.want {
				t.Fatalf("jwks: %d %v, want %d", r.status, r.body, tc.want)
			}
		})
	}
}
