package localissuer

import (
	"encoding/json"
	"errors"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"

	"github.com/lethe-dev/lethe/infra/auth"
)

func keyPath(t *testing.T) string {
	return filepath.Join(t.TempDir(), strings.ReplaceAll(t.Name(), "/", "_"), DefaultPath)
}

func mustOpen(t *testing.T, path string) *Issuer {
	t.Helper()
	iss, err := Open(path)
	if err != nil {
		t.Fatalf("Open: %v", err)
	}
	return iss
}

func TestOpenCreatesAndReopens(t *testing.T) {
	path := keyPath(t)
	a := mustOpen(t, path)
	st, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	if st.Mode().Perm() != 0o600 {
		t.Errorf("key file mode %#o, want 0600", st.Mode().Perm())
	}
	dst, err := os.Stat(filepath.Dir(path))
	if err != nil {
		t.Fatal(err)
	}
	if dst.Mode().Perm() != 0o700 {
		t.Errorf("key dir mode %#o, want 0700", dst.Mode().Perm())
	}
	if leftovers, _ := filepath.Glob(filepath.Join(filepath.Dir(path), ".issuer-*")); len(leftovers) != 0 {
		t.Errorf("temp files left: %v", leftovers)
	}

	b := mustOpen(t, path)
	if a.KeyID() != b.KeyID() || string(a.JWKS()) != string(b.JWKS()) {
		t.Fatal("reopen yields a different key")
	}
	if a.key.D.Cmp(b.key.D) != 0 {
		t.Fatal("reopen yields a different private key")
	}
	// A token minted before the reopen verifies after it.
	tok, err := a.Mint("alice", time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	v, err := b.Verifier()
	if err != nil {
		t.Fatal(err)
	}
	if id, err := v.Verify(t.Context(), tok); err != nil || id.UID != "alice" {
		t.Fatalf("Verify after reopen = %+v, %v", id, err)
	}
}

func TestConcurrentFirstOpen(t *testing.T) {
	path := keyPath(t)
	const n = 4
	kids := make([]string, n)
	errs := make([]error, n)
	var wg sync.WaitGroup
	for i := range n {
		wg.Go(func() {
			iss, err := Open(path)
			errs[i] = err
			if err == nil {
				kids[i] = iss.KeyID()
			}
		})
	}
	wg.Wait()
	for i := range n {
		if errs[i] != nil {
			t.Fatalf("Open %d: %v", i, errs[i])
		}
	}
	for _, k := range kids {
		if k != kids[0] {
			t.Fatalf("racing first opens produced different keys: %v", kids)
		}
	}
	if got := mustOpen(t, path).KeyID(); got != kids[0] {
		t.Fatalf("file holds %s, openers used %s", got, kids[0])
	}
}

func TestOpenRefuses(t *testing.T) {
	tests := []struct {
		name  string
		setup func(t *testing.T, path string)
		want  string
	}{
		{"world-readable key", func(t *testing.T, path string) {
			mustOpen(t, path)
			if err := os.Chmod(path, 0o644); err != nil {
				t.Fatal(err)
			}
		}, "0600"},
		{"garbage", func(t *testing.T, path string) {
			os.MkdirAll(filepath.Dir(path), 0o700)
			os.WriteFile(path, []byte("not a key"), 0o600)
		}, "PEM"},
		{"wrong PEM type", func(t *testing.T, path string) {
			os.MkdirAll(filepath.Dir(path), 0o700)
			os.WriteFile(path, []byte("-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n"), 0o600)
		}, "PEM type"},
		{"directory", func(t *testing.T, path string) {
			os.MkdirAll(path, 0o700)
		}, ""},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			path := keyPath(t)
			tc.setup(t, path)
			_, err := Open(path)
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("Open = %v, want error mentioning %q", err, tc.want)
			}
		})
	}
}

func TestJWKS(t *testing.T) {
	iss := mustOpen(t, keyPath(t))
	var set struct {
		Keys []map[string]any `json:"keys"`
	}
	if err := json.Unmarshal(iss.JWKS(), &set); err != nil {
		t.Fatal(err)
	}
	if len(set.Keys) != 1 {
		t.Fatalf("%d keys", len(set.Keys))
	}
	k := set.Keys[0]
	if k["kty"] != "RSA" || k["alg"] != "RS256" || k["use"] != "sig" || k["kid"] != iss.KeyID() || k["e"] != "AQAB" {
		t.Errorf("jwk = %v", k)
	}
	for _, private := range []string{"d", "p", "q", "dp", "dq", "qi"} {
		if _, ok := k[private]; ok {
			t.Errorf("JWKS carries private member %q", private)
		}
	}
	// The caller's copy cannot alter the issuer.
	b := iss.JWKS()
	b[0] = 'X'
	if iss.JWKS()[0] != '{' {
		t.Error("JWKS returned internal buffer")
	}
}

// RFC 7638 §3.1 example.
func TestThumbprintRFC7638(t *testing.T) {
	n := "0vx7agoebGcQSuuPiLJXZptN9nndrQmbXEps2aiAFbWhM78LhWx4cbbfAAtVT86zwu1RK7aPFFxuhDR1L6tSoc_BJECPebWKRXjBZCiFV4n3oknjhMstn64tZ_2W-5JsGY4Hc5n9yBXArwl93lqt7_RN5w6Cf0h4QyQ5v-65YGjQR0_FDW2QvzqY368QQMicAtaSqzs8KJZgnYb9c7d0zgdAZHzu6qMQvRL5hajrn1n91CbOpbISD08qNLyrdkt-bFTWhAI4vMQFh6WeZu0fM4lFd2NcRwr3XPksINHaQ-G_xBniIqbw0Ls1jF44-csFCur-kEgU8awapJzKnqDKgw"
	if got := thumbprint("AQAB", n); got != "NzbLsXh8uDCcd-6MNwXF4W_7noWXFZAfHkxZsRGC9Xs" {
		t.Fatalf("thumbprint = %s", got)
	}
}

func TestMintAndVerify(t *testing.T) {
	iss := mustOpen(t, keyPath(t))
	other := mustOpen(t, keyPath(t)+".other")
	v, err := iss.Verifier()
	if err != nil {
		t.Fatal(err)
	}

	tok, err := iss.MintWithRoles("bob", []string{"admin"}, time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	id, err := v.Verify(t.Context(), tok)
	if err != nil || id.UID != "bob" || !slices.Equal(id.Roles, []string{"admin"}) {
		t.Fatalf("Verify = %+v, %v", id, err)
	}
	// Claims as documented.
	claims := jwt.MapClaims{}
	if _, _, err := jwt.NewParser().ParseUnverified(tok, claims); err != nil {
		t.Fatal(err)
	}
	if claims["iss"] != IssuerURL || claims["aud"] != Audience || claims["sub"] != "bob" {
		t.Errorf("claims = %v", claims)
	}

	// Another issuer's token (another key) is refused.
	otherTok, err := other.Mint("bob", time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := v.Verify(t.Context(), otherTok); !errors.Is(err, auth.ErrUnauthenticated) {
		t.Fatalf("other issuer's token: %v", err)
	}

	// Expired: mint in the past with the issuer's clock.
	past := mustOpen(t, keyPath(t))
	past.key, past.kid, past.jwks = iss.key, iss.kid, iss.jwks
	past.now = func() time.Time { return time.Now().Add(-2 * time.Hour) }
	old, err := past.Mint("bob", time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := v.Verify(t.Context(), old); !errors.Is(err, auth.ErrUnauthenticated) {
		t.Fatalf("expired token: %v", err)
	}
}

func TestMintRejects(t *testing.T) {
	iss := mustOpen(t, keyPath(t))
	for name, tc := range map[string]struct {
		uid string
		ttl time.Duration
	}{
		"empty uid":    {"", time.Hour},
		"long uid":     {strings.Repeat("u", 129), time.Hour},
		"uid with sp":  {"a b", time.Hour},
		"zero ttl":     {"alice", 0},
		"negative ttl": {"alice", -time.Second},
		"huge ttl":     {"alice", MaxTTL + time.Second},
	} {
		if _, err := iss.Mint(tc.uid, tc.ttl); err == nil {
			t.Errorf("%s: Mint accepted", name)
		}
	}
}
