package jwtverify_test

import (
	"context"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"encoding/base64"
	"encoding/json"
	"encoding/pem"
	"errors"
	"math/big"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"

	"github.com/lethe-dev/lethe/infra/auth"
	"github.com/lethe-dev/lethe/infra/auth/jwtverify"
)

const (
	testIss = "https://securetoken.google.com/lethe-test"
	testAud = "lethe-test"
)

var now = time.Date(2026, 11, 3, 12, 0, 0, 0, time.UTC)

type signer struct {
	key  *rsa.PrivateKey
	kid  string
	jwks []byte
}

func newSigner(t testing.TB, kid string, bits int) *signer {
	t.Helper()
	key, err := rsa.GenerateKey(rand.Reader, bits)
	if err != nil {
		t.Fatal(err)
	}
	return &signer{key: key, kid: kid, jwks: jwksOf(t, kid, &key.PublicKey)}
}

func jwksOf(t testing.TB, kid string, pubs ...*rsa.PublicKey) []byte {
	t.Helper()
	var keys []map[string]string
	for _, pub := range pubs {
		keys = append(keys, map[string]string{
			"kty": "RSA", "kid": kid, "use": "sig", "alg": "RS256",
			"n": base64.RawURLEncoding.EncodeToString(pub.N.Bytes()),
			"e": base64.RawURLEncoding.EncodeToString(big.NewInt(int64(pub.E)).Bytes()),
		})
	}
	b, err := json.Marshal(map[string]any{"keys": keys})
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func baseClaims() jwt.MapClaims {
	return jwt.MapClaims{
		"iss":       testIss,
		"aud":       testAud,
		"sub":       "user-123",
		"iat":       now.Add(-time.Minute).Unix(),
		"auth_time": now.Add(-time.Minute).Unix(),
		"exp":       now.Add(time.Hour).Unix(),
	}
}

func (s *signer) sign(t testing.TB, method jwt.SigningMethod, claims jwt.MapClaims) string {
	t.Helper()
	tok := jwt.NewWithClaims(method, claims)
	if s.kid != "" {
		tok.Header["kid"] = s.kid
	}
	out, err := tok.SignedString(s.key)
	if err != nil {
		t.Fatal(err)
	}
	return out
}

func newVerifier(t testing.TB, jwks []byte) *jwtverify.Verifier {
	t.Helper()
	keys, err := jwtverify.KeysFromJWKSJSON(jwks)
	if err != nil {
		t.Fatal(err)
	}
	v, err := jwtverify.New(jwtverify.Config{
		Issuer: testIss, Audience: testAud, Keys: keys,
		RolesClaim: "roles", Now: func() time.Time { return now },
	})
	if err != nil {
		t.Fatal(err)
	}
	return v
}

func with(mut func(c jwt.MapClaims)) jwt.MapClaims {
	c := baseClaims()
	mut(c)
	return c
}

func hmacToken(t testing.TB, kid string, secret []byte) string {
	t.Helper()
	tok := jwt.NewWithClaims(jwt.SigningMethodHS256, baseClaims())
	tok.Header["kid"] = kid
	s, err := tok.SignedString(secret)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

func TestVerify(t *testing.T) {
	good := newSigner(t, "k1", 2048)
	other := newSigner(t, "k2", 2048)
	impostor := newSigner(t, "k1", 2048) // another key claiming our kid
	noKID := &signer{key: good.key}
	v := newVerifier(t, good.jwks)

	pubDER, err := x509.MarshalPKIXPublicKey(&good.key.PublicKey)
	if err != nil {
		t.Fatal(err)
	}
	pubPEM := pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: pubDER})
	noneTok, err := jwt.NewWithClaims(jwt.SigningMethodNone, baseClaims()).SignedString(jwt.UnsafeAllowNoneSignatureType)
	if err != nil {
		t.Fatal(err)
	}
	validTok := good.sign(t, jwt.SigningMethodRS256, baseClaims())
	parts := strings.Split(validTok, ".")
	tampered := parts[0] + "." + base64.RawURLEncoding.EncodeToString(
		[]byte(`{"iss":"`+testIss+`","aud":"`+testAud+`","sub":"admin","iat":1,"exp":9999999999}`)) + "." + parts[2]

	okCases := []struct {
		name      string
		token     string
		wantUID   string
		wantRoles []string
	}{
		{"valid", validTok, "user-123", nil},
		{"roles", good.sign(t, jwt.SigningMethodRS256, with(func(c jwt.MapClaims) { c["roles"] = []string{"admin", "support"} })), "user-123", []string{"admin", "support"}},
		{"aud list", good.sign(t, jwt.SigningMethodRS256, with(func(c jwt.MapClaims) { c["aud"] = []string{"x", testAud} })), "user-123", nil},
		{"expired within leeway", good.sign(t, jwt.SigningMethodRS256, with(func(c jwt.MapClaims) { c["exp"] = now.Add(-10 * time.Second).Unix() })), "user-123", nil},
		{"iat slightly ahead", good.sign(t, jwt.SigningMethodRS256, with(func(c jwt.MapClaims) { c["iat"] = now.Add(10 * time.Second).Unix() })), "user-123", nil},
		{"sub of 128", good.sign(t, jwt.SigningMethodRS256, with(func(c jwt.MapClaims) { c["sub"] = strings.Repeat("u", 128) })), strings.Repeat("u", 128), nil},
	}
	t.Run("reads the second factor", func(t *testing.T) {
		for claim, want := range map[string]string{"totp": "totp", "phone": "phone", "": ""} {
			tok := good.sign(t, jwt.SigningMethodRS256, with(func(c jwt.MapClaims) {
				fb := map[string]any{"sign_in_provider": "password"}
				if claim != "" {
					fb["sign_in_second_factor"] = claim
				}
				c["firebase"] = fb
			}))
			id, err := v.Verify(t.Context(), tok)
			if err != nil || id.SecondFactor != want {
				t.Fatalf("second factor %q: %+v, %v", claim, id, err)
			}
		}
		if id, err := v.Verify(t.Context(), validTok); err != nil || id.SecondFactor != "" {
			t.Fatalf("no firebase claim: %+v, %v", id, err)
		}
	})
	for _, tc := range okCases {
		t.Run("accepts "+tc.name, func(t *testing.T) {
			id, err := v.Verify(t.Context(), tc.token)
			if err != nil {
				t.Fatalf("Verify: %v", err)
			}
			if id.UID != tc.wantUID || strings.Join(id.Roles, ",") != strings.Join(tc.wantRoles, ",") {
				t.Fatalf("identity = %+v", id)
			}
		})
	}

	badCases := []struct {
		name   string
		token  string
		reason string
	}{
		{"expired", good.sign(t, jwt.SigningMethodRS256, with(func(c jwt.MapClaims) { c["exp"] = now.Add(-time.Hour).Unix() })), "expired"},
		{"no exp", good.sign(t, jwt.SigningMethodRS256, with(func(c jwt.MapClaims) { delete(c, "exp") })), "required claim missing"},
		{"no iat", good.sign(t, jwt.SigningMethodRS256, with(func(c jwt.MapClaims) { delete(c, "iat") })), "iat missing"},
		{"iat in future", good.sign(t, jwt.SigningMethodRS256, with(func(c jwt.MapClaims) { c["iat"] = now.Add(time.Hour).Unix() })), "before issued"},
		{"auth_time in future", good.sign(t, jwt.SigningMethodRS256, with(func(c jwt.MapClaims) { c["auth_time"] = now.Add(time.Hour).Unix() })), "auth_time"},
		{"nbf in future", good.sign(t, jwt.SigningMethodRS256, with(func(c jwt.MapClaims) { c["nbf"] = now.Add(time.Hour).Unix() })), "not valid yet"},
		{"wrong iss", good.sign(t, jwt.SigningMethodRS256, with(func(c jwt.MapClaims) { c["iss"] = "https://securetoken.google.com/other" })), "issuer mismatch"},
		{"no iss", good.sign(t, jwt.SigningMethodRS256, with(func(c jwt.MapClaims) { delete(c, "iss") })), "required claim missing"},
		{"wrong aud", good.sign(t, jwt.SigningMethodRS256, with(func(c jwt.MapClaims) { c["aud"] = "other" })), "audience"},
		{"no aud", good.sign(t, jwt.SigningMethodRS256, with(func(c jwt.MapClaims) { delete(c, "aud") })), "required claim missing"},
		{"missing sub", good.sign(t, jwt.SigningMethodRS256, with(func(c jwt.MapClaims) { delete(c, "sub") })), "sub"},
		{"empty sub", good.sign(t, jwt.SigningMethodRS256, with(func(c jwt.MapClaims) { c["sub"] = "" })), "sub"},
		{"numeric sub", good.sign(t, jwt.SigningMethodRS256, with(func(c jwt.MapClaims) { c["sub"] = 42 })), ""},
		{"sub of 129", good.sign(t, jwt.SigningMethodRS256, with(func(c jwt.MapClaims) { c["sub"] = strings.Repeat("u", 129) })), "sub too long"},
		{"roles not a list", good.sign(t, jwt.SigningMethodRS256, with(func(c jwt.MapClaims) { c["roles"] = "admin" })), "roles"},
		{"roles not strings", good.sign(t, jwt.SigningMethodRS256, with(func(c jwt.MapClaims) { c["roles"] = []any{1} })), "roles"},
		{"firebase claim not an object", good.sign(t, jwt.SigningMethodRS256, with(func(c jwt.MapClaims) { c["firebase"] = "totp" })), "firebase claim"},
		{"second factor not a string", good.sign(t, jwt.SigningMethodRS256, with(func(c jwt.MapClaims) { c["firebase"] = map[string]any{"sign_in_second_factor": true} })), "second factor"},
		{"second factor with odd bytes", good.sign(t, jwt.SigningMethodRS256, with(func(c jwt.MapClaims) { c["firebase"] = map[string]any{"sign_in_second_factor": "to tp\n"} })), "second factor"},
		{"HS256 with public key PEM", hmacToken(t, "k1", pubPEM), ""},
		{"HS256 with public key DER", hmacToken(t, "k1", pubDER), ""},
		{"HS256 with modulus", hmacToken(t, "k1", good.key.N.Bytes()), ""},
		{"RS384", good.sign(t, jwt.SigningMethodRS384, baseClaims()), ""},
		{"PS256", good.sign(t, jwt.SigningMethodPS256, baseClaims()), ""},
		{"alg none", noneTok, ""},
		{"unsigned", parts[0] + "." + parts[1] + ".", ""},
		{"no signature segment", parts[0] + "." + parts[1], "malformed"},
		{"tampered payload", tampered, "signature"},
		{"wrong key, unknown kid", other.sign(t, jwt.SigningMethodRS256, baseClaims()), "no matching key"},
		{"wrong key, our kid", impostor.sign(t, jwt.SigningMethodRS256, baseClaims()), "signature"},
		{"no kid", noKID.sign(t, jwt.SigningMethodRS256, baseClaims()), "kid missing"},
		{"empty", "", "no token"},
		{"garbage", "not a token", "malformed"},
		{"three garbage parts", "a.b.c", "malformed"},
		{"huge", strings.Repeat("a", jwtverify.MaxTokenLen+1), "too large"},
	}
	for _, tc := range badCases {
		t.Run("rejects "+tc.name, func(t *testing.T) {
			id, err := v.Verify(t.Context(), tc.token)
			if !errors.Is(err, auth.ErrUnauthenticated) {
				t.Fatalf("Verify = %+v, %v; want ErrUnauthenticated", id, err)
			}
			if id.UID != "" || id.Roles != nil {
				t.Errorf("identity leaked on failure: %+v", id)
			}
			if !strings.Contains(err.Error(), tc.reason) {
				t.Errorf("error %q does not say %q", err, tc.reason)
			}
			for _, seg := range strings.Split(tc.token, ".") {
				if len(seg) > 8 && strings.Contains(err.Error(), seg) {
					t.Fatalf("error %q contains token material", err)
				}
			}
		})
	}
}

func TestExpiredIsDetectable(t *testing.T) {
	s := newSigner(t, "k1", 2048)
	v := newVerifier(t, s.jwks)
	_, err := v.Verify(t.Context(), s.sign(t, jwt.SigningMethodRS256, with(func(c jwt.MapClaims) { c["exp"] = now.Add(-time.Hour).Unix() })))
	if !errors.Is(err, auth.ErrUnauthenticated) || !errors.Is(err, jwt.ErrTokenExpired) {
		t.Fatalf("err = %v, want ErrUnauthenticated and jwt.ErrTokenExpired", err)
	}
}

func TestWeakKeyRefused(t *testing.T) {
	weak := newSigner(t, "weak", 1024)
	v := newVerifier(t, weak.jwks)
	_, err := v.Verify(t.Context(), weak.sign(t, jwt.SigningMethodRS256, baseClaims()))
	if !errors.Is(err, auth.ErrUnauthenticated) {
		t.Fatalf("1024-bit key accepted: %v", err)
	}
}

func TestNewValidatesConfig(t *testing.T) {
	s := newSigner(t, "k1", 2048)
	keys, err := jwtverify.KeysFromJWKSJSON(s.jwks)
	if err != nil {
		t.Fatal(err)
	}
	for name, cfg := range map[string]jwtverify.Config{
		"no issuer":   {Audience: testAud, Keys: keys},
		"no audience": {Issuer: testIss, Keys: keys},
		"no keys":     {Issuer: testIss, Audience: testAud},
	} {
		if _, err := jwtverify.New(cfg); err == nil {
			t.Errorf("%s: New accepted", name)
		}
	}
	if _, err := jwtverify.KeysFromJWKSJSON([]byte("{")); err == nil {
		t.Error("KeysFromJWKSJSON accepted garbage")
	}
	if got := jwtverify.FirebaseIssuer("p1"); got != "https://securetoken.google.com/p1" {
		t.Errorf("FirebaseIssuer = %q", got)
	}
}

// TestKeysFromURL: the Firebase path, against a local JWKS server with key
// rotation (an unknown kid triggers a refresh).
func TestKeysFromURL(t *testing.T) {
	first := newSigner(t, "k1", 2048)
	second := newSigner(t, "k2", 2048)
	var mu sync.Mutex
	served, hits := first.jwks, 0
	mux := http.NewServeMux()
	mux.HandleFunc("/jwks", func(w http.ResponseWriter, r *http.Request) {
		mu.Lock()
		hits++
		body := served
		mu.Unlock()
		w.Header().Set("Content-Type", "application/json")
		w.Write(body)
	})
	srv := httptest.NewServer(mux)
	defer srv.Close()

	ctx, cancel := context.WithCancel(t.Context())
	defer cancel()
	keys, err := jwtverify.KeysFromURL(ctx, srv.URL+"/jwks", srv.Client())
	if err != nil {
		t.Fatalf("KeysFromURL: %v", err)
	}
	v, err := jwtverify.New(jwtverify.Config{Issuer: testIss, Audience: testAud, Keys: keys, Now: func() time.Time { return now }})
	if err != nil {
		t.Fatal(err)
	}
	if id, err := v.Verify(ctx, first.sign(t, jwt.SigningMethodRS256, baseClaims())); err != nil || id.UID != "user-123" {
		t.Fatalf("Verify = %+v, %v", id, err)
	}
	// Rotation: the server now publishes k2; a k2 token makes keyfunc refetch.
	mu.Lock()
	served = second.jwks
	mu.Unlock()
	if _, err := v.Verify(ctx, second.sign(t, jwt.SigningMethodRS256, baseClaims())); err != nil {
		t.Fatalf("after rotation: %v", err)
	}
	mu.Lock()
	defer mu.Unlock()
	if hits < 2 {
		t.Errorf("JWKS fetched %d times, want a refresh", hits)
	}

	if _, err := jwtverify.KeysFromURL(ctx, srv.URL+"/missing", srv.Client()); err == nil {
		t.Error("KeysFromURL succeeded on a 404")
	}
}

// FuzzVerify: arbitrary strings never panic and never authenticate, except
// the seed's genuine token.
func FuzzVerify(f *testing.F) {
	s := newSigner(f, "k1", 2048)
	v := newVerifier(f, s.jwks)
	valid := s.sign(f, jwt.SigningMethodRS256, baseClaims())
	f.Add(valid)
	f.Add("")
	f.Add("a.b.c")
	f.Add("eyJhbGciOiJub25lIn0.e30.")
	f.Add(strings.Replace(valid, ".", "..", 1))
	parts := strings.Split(valid, ".")
	f.Add(parts[0] + "." + parts[1] + ".")
	f.Fuzz(func(t *testing.T, raw string) {
		id, err := v.Verify(context.Background(), raw)
		if err != nil {
			if !errors.Is(err, auth.ErrUnauthenticated) {
				t.Fatalf("error %v does not wrap ErrUnauthenticated", err)
			}
			return
		}
		if id.UID != "user-123" {
			t.Fatalf("authenticated %q from fuzzed input", id.UID)
		}
	})
}
