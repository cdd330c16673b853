package push

import (
	"context"
	"crypto/rand"
	"crypto/rsa"
	"encoding/base64"
	"encoding/json"
	"errors"
	"io"
	"math/big"
	"net/http"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"

	"github.com/lethe-dev/lethe/infra/bus"
)

const (
	googleCertsURL = "https://www.googleapis.com/oauth2/v3/certs"
	testAudience   = "https://lethe.example/push"
	testPushSA     = "pubsub-push@lethe-test.iam.gserviceaccount.com"
	testKID        = "test-kid-1"
)

// certsTransport stands in for Google's certs endpoint: it serves a JWKS
// for exactly the URL idtoken fetches and fails everything else, so a test
// can never reach the network.
type certsTransport struct {
	jwks    []byte
	fetches atomic.Int32
}

func (c *certsTransport) RoundTrip(r *http.Request) (*http.Response, error) {
	if r.Method != http.MethodGet || r.URL.String() != googleCertsURL {
		return nil, errors.New("certsTransport: unexpected request to " + r.URL.Redacted())
	}
	c.fetches.Add(1)
	return &http.Response{
		StatusCode: http.StatusOK,
		Header:     http.Header{"Content-Type": {"application/json"}, "Cache-Control": {"public, max-age=3600"}},
		Body:       io.NopCloser(strings.NewReader(string(c.jwks))),
		Request:    r,
	}, nil
}

func jwksFor(t testing.TB, kid string, pub *rsa.PublicKey) []byte {
	t.Helper()
	b, err := json.Marshal(map[string]any{"keys": []map[string]string{{
		"kty": "RSA", "alg": "RS256", "use": "sig", "kid": kid,
		"n": base64.RawURLEncoding.EncodeToString(pub.N.Bytes()),
		"e": base64.RawURLEncoding.EncodeToString(big.NewInt(int64(pub.E)).Bytes()),
	}}})
	if err != nil {
		t.Fatal(err)
	}
	return b
}

type oidcFixture struct {
	key, other *rsa.PrivateKey
	transport  *certsTransport
	verifier   *OIDCVerifier
}

func newOIDCFixture(t testing.TB) *oidcFixture {
	t.Helper()
	key, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		t.Fatal(err)
	}
	other, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		t.Fatal(err)
	}
	tr := &certsTransport{jwks: jwksFor(t, testKID, &key.PublicKey)}
	v, err := NewOIDCVerifier(context.Background(), OIDCConfig{
		Audiences:           []string{testAudience},
		ServiceAccountEmail: testPushSA,
		HTTPClient:          &http.Client{Transport: tr},
	})
	if err != nil {
		t.Fatal(err)
	}
	return &oidcFixture{key: key, other: other, transport: tr, verifier: v}
}

// pushClaims are the claims of a token Pub/Sub attaches to a push request.
func pushClaims() jwt.MapClaims {
	now := time.Now()
	return jwt.MapClaims{
		"iss":            "https://accounts.google.com",
		"aud":            testAudience,
		"azp":            "112233445566778899",
		"sub":            "112233445566778899",
		"email":          testPushSA,
		"email_verified": true,
		"iat":            now.Add(-time.Minute).Unix(),
		"exp":            now.Add(time.Hour).Unix(),
	}
}

func sign(t testing.TB, key *rsa.PrivateKey, kid string, claims jwt.MapClaims) string {
	t.Helper()
	tok := jwt.NewWithClaims(jwt.SigningMethodRS256, claims)
	tok.Header["kid"] = kid
	s, err := tok.SignedString(key)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

func unsigned(claims jwt.MapClaims) string {
	enc := func(v any) string {
		b, _ := json.Marshal(v)
		return base64.RawURLEncoding.EncodeToString(b)
	}
	return enc(map[string]string{"alg": "none", "typ": "JWT", "kid": testKID}) + "." + enc(claims) + "."
}

func with(mod func(jwt.MapClaims)) jwt.MapClaims {
	c := pushClaims()
	mod(c)
	return c
}

func TestOIDCVerifier(t *testing.T) {
	f := newOIDCFixture(t)
	hs256 := func() string {
		tok := jwt.NewWithClaims(jwt.SigningMethodHS256, pushClaims())
		tok.Header["kid"] = testKID
		s, err := tok.SignedString(jwksFor(t, testKID, &f.key.PublicKey))
		if err != nil {
			t.Fatal(err)
		}
		return s
	}()
	good := sign(t, f.key, testKID, pushClaims())
	tests := []struct {
		name   string
		header []string // Authorization values
		reason string   // substring of the refusal; empty: accepted
	}{
		{"valid", []string{"Bearer " + good}, ""},
		{"bearer scheme any case", []string{"bearer " + good}, ""},
		{"issuer without scheme", []string{"Bearer " + sign(t, f.key, testKID, with(func(c jwt.MapClaims) { c["iss"] = "accounts.google.com" }))}, ""},
		{"wrong audience", []string{"Bearer " + sign(t, f.key, testKID, with(func(c jwt.MapClaims) { c["aud"] = "https://other.example/push" }))}, "audience"},
		{"wrong email", []string{"Bearer " + sign(t, f.key, testKID, with(func(c jwt.MapClaims) { c["email"] = "attacker@evil.iam.gserviceaccount.com" }))}, "email is not"},
		{"no email", []string{"Bearer " + sign(t, f.key, testKID, with(func(c jwt.MapClaims) { delete(c, "email") }))}, "email is not"},
		{"email_verified false", []string{"Bearer " + sign(t, f.key, testKID, with(func(c jwt.MapClaims) { c["email_verified"] = false }))}, "not verified"},
		{"email_verified as string", []string{"Bearer " + sign(t, f.key, testKID, with(func(c jwt.MapClaims) { c["email_verified"] = "true" }))}, "not verified"},
		{"expired", []string{"Bearer " + sign(t, f.key, testKID, with(func(c jwt.MapClaims) { c["exp"] = time.Now().Add(-time.Minute).Unix() }))}, "expired"},
		{"issued in the future", []string{"Bearer " + sign(t, f.key, testKID, with(func(c jwt.MapClaims) { c["iat"] = time.Now().Add(time.Hour).Unix() }))}, "iat"},
		{"no iat", []string{"Bearer " + sign(t, f.key, testKID, with(func(c jwt.MapClaims) { delete(c, "iat") }))}, "iat"},
		{"wrong issuer", []string{"Bearer " + sign(t, f.key, testKID, with(func(c jwt.MapClaims) { c["iss"] = "https://evil.example" }))}, "issuer"},
		{"firebase issuer", []string{"Bearer " + sign(t, f.key, testKID, with(func(c jwt.MapClaims) { c["iss"] = "https://securetoken.google.com/lethe-test" }))}, "issuer"},
		{"unsigned alg none", []string{"Bearer " + unsigned(pushClaims())}, "alg \"none\""},
		{"HS256 keyed with the public key", []string{"Bearer " + hs256}, "alg \"HS256\""},
		{"signed by another key", []string{"Bearer " + sign(t, f.other, testKID, pushClaims())}, "verification error"},
		{"unknown kid", []string{"Bearer " + sign(t, f.key, "other-kid", pushClaims())}, "keyId"},
		{"signature stripped", []string{"Bearer " + good[:strings.LastIndex(good, ".")+1]}, "verification error"},
		{"payload swapped", []string{"Bearer " + swapPayload(good, sign(t, f.other, testKID, with(func(c jwt.MapClaims) { c["email"] = "x@y" })))}, "verification error"},
		{"no header", nil, "got 0"},
		{"two headers", []string{"Bearer " + good, "Bearer " + good}, "got 2"},
		{"basic scheme", []string{"Basic " + good}, "not a Bearer"},
		{"empty bearer", []string{"Bearer "}, "empty"},
		{"not a JWT", []string{"Bearer abc"}, "not a JWT"},
		{"too long", []string{"Bearer " + strings.Repeat("a", maxTokenLen+1)}, "too long"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			r, err := http.NewRequest(http.MethodPost, "https://lethe.example/push/"+testSub, nil)
			if err != nil {
				t.Fatal(err)
			}
			for _, v := range tc.header {
				r.Header.Add("Authorization", v)
			}
			err = f.verifier.Verify(r)
			if tc.reason == "" {
				if err != nil {
					t.Fatalf("Verify: %v", err)
				}
				return
			}
			if !errors.Is(err, ErrUnauthenticated) {
				t.Fatalf("Verify = %v, want ErrUnauthenticated", err)
			}
			if !strings.Contains(err.Error(), tc.reason) {
				t.Fatalf("Verify = %v, want a refusal for %q", err, tc.reason)
			}
			for _, v := range tc.header {
				if tok := strings.TrimPrefix(v, "Bearer "); len(tok) > 20 && strings.Contains(err.Error(), tok) {
					t.Fatal("error message contains the token")
				}
			}
		})
	}
	if n := f.transport.fetches.Load(); n != 1 {
		t.Errorf("certs fetched %d times, want 1 (cached per Cache-Control)", n)
	}
}

// swapPayload puts the payload of b under the header and signature of a.
func swapPayload(a, b string) string {
	pa, pb := strings.Split(a, "."), strings.Split(b, ".")
	return pa[0] + "." + pb[1] + "." + pa[2]
}

// TestReceiverWithVerifier: a refused token is a 401 and nothing is
// processed or dead-lettered, even for a poison body.
func TestReceiverWithVerifier(t *testing.T) {
	f := newOIDCFixture(t)
	reg := newRegistry(t)
	data, attrs := toMessage(t, testEvent(t, reg, "evt-auth"))
	body := wrappedBody(t, testSub, "m-auth", data, attrs, nil)
	tests := []struct {
		name       string
		auth       string
		path       string
		body       []byte
		wantStatus int
		wantCalls  int
	}{
		{"valid token", "Bearer " + sign(t, f.key, testKID, pushClaims()), "", body, 204, 1},
		{"wrong audience", "Bearer " + sign(t, f.key, testKID, with(func(c jwt.MapClaims) { c["aud"] = "x" })), "", body, 401, 0},
		{"wrong email", "Bearer " + sign(t, f.key, testKID, with(func(c jwt.MapClaims) { c["email"] = "x@y" })), "", body, 401, 0},
		{"expired", "Bearer " + sign(t, f.key, testKID, with(func(c jwt.MapClaims) { c["exp"] = time.Now().Add(-time.Hour).Unix() })), "", body, 401, 0},
		{"unsigned", "Bearer " + unsigned(pushClaims()), "", body, 401, 0},
		{"other key", "Bearer " + sign(t, f.other, testKID, pushClaims()), "", body, 401, 0},
		{"missing", "", "", body, 401, 0},
		{"poison body, no token", "", "", []byte("garbage"), 401, 0},
		{"unknown subscription, no token", "", "/push/secret-sub", body, 401, 0},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			rec := &recorder{}
			rc, err := NewReceiver(Config{
				Handlers:   map[string]bus.Handler{testSub: rec.handler(nil)},
				Validate:   reg.Validate,
				DeadLetter: rec.deadLetterFunc(nil),
				Verifier:   f.verifier,
			})
			if err != nil {
				t.Fatal(err)
			}
			h := http.Header{}
			if tc.auth != "" {
				h.Set("Authorization", tc.auth)
			}
			path := tc.path
			if path == "" {
				path = "/push/" + testSub
			}
			w := do(rc, http.MethodPost, path, h, tc.body)
			if w.Code != tc.wantStatus {
				t.Fatalf("status = %d, want %d", w.Code, tc.wantStatus)
			}
			if tc.wantStatus == 401 && !strings.HasPrefix(w.Header().Get("WWW-Authenticate"), "Bearer") {
				t.Errorf("WWW-Authenticate = %q", w.Header().Get("WWW-Authenticate"))
			}
			handled, dl := rec.snapshot()
			if len(handled) != tc.wantCalls || len(dl) != 0 {
				t.Fatalf("handled %d, dead-lettered %d; want %d, 0", len(handled), len(dl), tc.wantCalls)
			}
		})
	}
}

func TestNewOIDCVerifierRejectsBadConfig(t *testing.T) {
	for _, cfg := range []OIDCConfig{
		{ServiceAccountEmail: testPushSA},
		{Audiences: []string{""}, ServiceAccountEmail: testPushSA},
		{Audiences: []string{testAudience}},
	} {
		if _, err := NewOIDCVerifier(context.Background(), cfg); err == nil {
			t.Errorf("NewOIDCVerifier(%+v) accepted", cfg)
		}
	}
}
