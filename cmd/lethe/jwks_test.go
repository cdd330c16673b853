package main

import (
	"bytes"
	"path/filepath"
	"testing"

	"github.com/lethe-dev/lethe/infra/auth/localissuer"
)

// TestServedJWKS: the local issuer's keys are published only when it is
// the issuer lethe trusts.
func TestServedJWKS(t *testing.T) {
	iss, err := localissuer.Open(filepath.Join(t.TempDir(), "issuer.pem"))
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		auth  string
		serve bool
	}{
		{"local", true},
		{"firebase", false},
	} {
		t.Run(tc.auth, func(t *testing.T) {
			got := servedJWKS(Config{Auth: tc.auth}, iss)
			if tc.serve && !bytes.Equal(got, iss.JWKS()) {
				t.Fatalf("LETHE_AUTH=%s serves %q, want the local issuer's keys", tc.auth, got)
			}
			if !tc.serve && got != nil {
				t.Fatalf("LETHE_AUTH=%s serves the local issuer's keys", tc.auth)
			}
		})
	}
}
