// Package jwtverify implements auth.Verifier for RS256 ID tokens checked
// against a JWKS: Firebase ID tokens (Google's JWKS, fetched and refreshed)
// in production, and the embedded local issuer's tokens (its JWKS as JSON
// bytes) through exactly the same code.
package jwtverify

import (
	"context"
	"crypto/rsa"
	"errors"
	"fmt"
	"net/http"
	"regexp"
	"time"

	"github.com/MicahParks/keyfunc/v3"
	"github.com/golang-jwt/jwt/v5"

	"github.com/lethe-dev/lethe/infra/auth"
)

// Firebase ID token parameters (https://firebase.google.com/docs/auth/admin/verify-id-tokens).
const (
	// GoogleSecureTokenJWKSURL serves the public keys that sign Firebase ID tokens.
	GoogleSecureTokenJWKSURL = "https://www.googleapis.com/service_accounts/v1/jwk/securetoken@system.gserviceaccount.com"
	firebaseIssuerPrefix     = "https://securetoken.google.com/"
)

// Limits. Firebase uids are at most 128 characters; a token far beyond a few
// KiB is not an ID token and is refused before any parsing.
const (
	MaxSubjectLen = 128
	MaxTokenLen   = 16 << 10
	maxKIDLen     = 256
	maxRoles      = 32
	minRSABits    = 2048
	// DefaultLeeway absorbs clock skew between the issuer and us.
	DefaultLeeway = 30 * time.Second
)

// FirebaseIssuer is the iss of Firebase ID tokens of a project; their aud is
// the project id itself.
func FirebaseIssuer(projectID string) string { return firebaseIssuerPrefix + projectID }

// Config configures a Verifier.
type Config struct {
	// Issuer is the exact required iss.
	Issuer string
	// Audience is the required aud (one of the token's audiences).
	Audience string
	// Keys resolves the verification key by the token's kid: see
	// KeysFromJWKSJSON and KeysFromURL.
	Keys keyfunc.Keyfunc
	// RolesClaim, if set, names a custom claim holding a list of role
	// strings (Firebase custom claims). Absent claim: no roles. Malformed
	// claim: the token is refused (fail closed).
	RolesClaim string
	// Leeway for exp, iat and auth_time; DefaultLeeway if zero, none if
	// negative.
	Leeway time.Duration
	// Now overrides the clock (tests).
	Now func() time.Time
}

// Verifier verifies RS256 ID tokens. Safe for concurrent use.
type Verifier struct {
	cfg    Config
	parser *jwt.Parser
}

var _ auth.Verifier = (*Verifier)(nil)

// New checks cfg and builds a Verifier.
func New(cfg Config) (*Verifier, error) {
	switch {
	case cfg.Issuer == "":
		return nil, errors.New("jwtverify.New: Issuer is required")
	case cfg.Audience == "":
		return nil, errors.New("jwtverify.New: Audience is required")
	case cfg.Keys == nil:
		return nil, errors.New("jwtverify.New: Keys is required")
	}
	switch {
	case cfg.Leeway == 0:
		cfg.Leeway = DefaultLeeway
	case cfg.Leeway < 0:
		cfg.Leeway = 0
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	p := jwt.NewParser(
		// Only RS256: refuses "none", HS256 with the public key as HMAC
		// secret (algorithm confusion) and everything else before any key
		// is looked up.
		jwt.WithValidMethods([]string{jwt.SigningMethodRS256.Alg()}),
		jwt.WithIssuer(cfg.Issuer),
		jwt.WithAudience(cfg.Audience),
		jwt.WithExpirationRequired(),
		jwt.WithIssuedAt(),
		jwt.WithLeeway(cfg.Leeway),
		jwt.WithTimeFunc(cfg.Now),
		jwt.WithStrictDecoding(),
	)
	return &Verifier{cfg: cfg, parser: p}, nil
}

// KeysFromJWKSJSON builds Keys from a JWK Set document (the local issuer).
func KeysFromJWKSJSON(jwks []byte) (keyfunc.Keyfunc, error) {
	k, err := keyfunc.NewJWKSetJSON(jwks)
	if err != nil {
		return nil, fmt.Errorf("keyfunc.NewJWKSetJSON: %w", err)
	}
	return k, nil
}

// KeysFromURL builds Keys from a remote JWK Set (GoogleSecureTokenJWKSURL for
// Firebase), fetched now and refreshed hourly and on an unknown kid
// (rate limited) until ctx ends. client may be nil (http.DefaultClient).
func KeysFromURL(ctx context.Context, url string, client *http.Client) (keyfunc.Keyfunc, error) {
	fail := false
	k, err := keyfunc.NewDefaultOverrideCtx(ctx, []string{url}, keyfunc.Override{
		Client:      client,
		HTTPTimeout: 10 * time.Second,
		// A JWKS we cannot fetch at start is a configuration error: say so
		// now rather than refuse every token later.
		NoErrorReturnFirstHTTPReq: &fail,
	})
	if err != nil {
		return nil, fmt.Errorf("keyfunc.NewDefaultOverrideCtx: %w", err)
	}
	return k, nil
}

// Verify checks rawToken and returns the identity it proves. Every failure
// wraps auth.ErrUnauthenticated; messages never contain token material.
func (v *Verifier) Verify(ctx context.Context, rawToken string) (auth.Identity, error) {
	if rawToken == "" {
		return auth.Identity{}, unauthenticated("no token", nil)
	}
	if len(rawToken) > MaxTokenLen {
		return auth.Identity{}, unauthenticated("token too large", nil)
	}
	claims := jwt.MapClaims{}
	tok, err := v.parser.ParseWithClaims(rawToken, claims, v.keyfunc(ctx))
	if err != nil {
		return auth.Identity{}, classify(err)
	}
	if !tok.Valid {
		return auth.Identity{}, unauthenticated("token invalid", nil)
	}
	sub, err := claims.GetSubject()
	if err != nil || sub == "" {
		return auth.Identity{}, unauthenticated("sub missing", nil)
	}
	if len(sub) > MaxSubjectLen {
		return auth.Identity{}, unauthenticated("sub too long", nil)
	}
	// Firebase: auth_time must be in the past. Optional for other issuers.
	if at, ok := claims["auth_time"]; ok {
		f, isNum := at.(float64)
		if !isNum || time.Unix(int64(f), 0).After(v.cfg.Now().Add(v.cfg.Leeway)) {
			return auth.Identity{}, unauthenticated("auth_time invalid", nil)
		}
	}
	roles, err := v.roles(claims)
	if err != nil {
		return auth.Identity{}, err
	}
	factor, err := secondFactor(claims)
	if err != nil {
		return auth.Identity{}, err
	}
	return auth.Identity{UID: sub, Roles: roles, SecondFactor: factor}, nil
}

// secondFactor reads firebase.sign_in_second_factor, which Firebase sets
// when the sign-in used a second factor. Absent: "". Malformed: the token is
// refused (fail closed), as for roles.
func secondFactor(claims jwt.MapClaims) (string, error) {
	fb, ok := claims["firebase"]
	if !ok || fb == nil {
		return "", nil
	}
	m, ok := fb.(map[string]any)
	if !ok {
		return "", unauthenticated("firebase claim malformed", nil)
	}
	raw, ok := m["sign_in_second_factor"]
	if !ok || raw == nil {
		return "", nil
	}
	f, ok := raw.(string)
	if !ok || !roleRE.MatchString(f) {
		return "", unauthenticated("second factor claim malformed", nil)
	}
	return f, nil
}

// keyfunc wraps Keys: it insists on a kid and an iat (jwt checks iat only
// when present) and accepts only RSA keys of at least 2048 bits.
func (v *Verifier) keyfunc(ctx context.Context) jwt.Keyfunc {
	inner := v.cfg.Keys.KeyfuncCtx(ctx)
	return func(t *jwt.Token) (any, error) {
		// Without a kid, keyfunc would try every key in the set; we want
		// one named key, as Firebase tokens always carry.
		kid, ok := t.Header["kid"].(string)
		if !ok || kid == "" || len(kid) > maxKIDLen {
			return nil, errNoKID
		}
		if iat, _ := t.Claims.GetIssuedAt(); iat == nil {
			return nil, errNoIAT
		}
		key, err := inner(t)
		if err != nil {
			return nil, errUnknownKey
		}
		pub, ok := key.(*rsa.PublicKey)
		if !ok || pub.N.BitLen() < minRSABits {
			return nil, errUnknownKey
		}
		return pub, nil
	}
}

var (
	errNoKID      = errors.New("kid missing")
	errNoIAT      = errors.New("iat missing")
	errUnknownKey = errors.New("no matching RSA key")
)

var roleRE = regexp.MustCompile(`^[A-Za-z0-9_.:-]{1,64}$`)

func (v *Verifier) roles(claims jwt.MapClaims) ([]string, error) {
	if v.cfg.RolesClaim == "" {
		return nil, nil
	}
	raw, ok := claims[v.cfg.RolesClaim]
	if !ok || raw == nil {
		return nil, nil
	}
	list, ok := raw.([]any)
	if !ok || len(list) > maxRoles {
		return nil, unauthenticated("roles claim malformed", nil)
	}
	roles := make([]string, 0, len(list))
	for _, r := range list {
		s, ok := r.(string)
		if !ok || !roleRE.MatchString(s) {
			return nil, unauthenticated("roles claim malformed", nil)
		}
		roles = append(roles, s)
	}
	return roles, nil
}

// classify maps a parse failure to a fixed reason. jwt's own sentinel is kept
// in the chain (errors.Is works) but never its formatted message, which
// could in principle quote header values.
func classify(err error) error {
	for _, c := range []struct {
		target error
		reason string
	}{
		{errNoKID, "kid missing"},
		{errNoIAT, "iat missing"},
		{errUnknownKey, "no matching key"},
		{jwt.ErrTokenMalformed, "token malformed"},
		{jwt.ErrTokenSignatureInvalid, "signature invalid"},
		{jwt.ErrTokenExpired, "token expired"},
		{jwt.ErrTokenUsedBeforeIssued, "token used before issued"},
		{jwt.ErrTokenNotValidYet, "token not valid yet"},
		{jwt.ErrTokenInvalidIssuer, "issuer mismatch"},
		{jwt.ErrTokenInvalidAudience, "audience mismatch"},
		{jwt.ErrTokenRequiredClaimMissing, "required claim missing"},
		{jwt.ErrTokenInvalidClaims, "claims invalid"},
		{jwt.ErrTokenUnverifiable, "token unverifiable"},
	} {
		if errors.Is(err, c.target) {
			return unauthenticated(c.reason, c.target)
		}
	}
	return unauthenticated("token invalid", nil)
}

func unauthenticated(reason string, sentinel error) error {
	if sentinel != nil {
		return &authError{reason: reason, sentinel: sentinel}
	}
	return &authError{reason: reason}
}

// authError is ErrUnauthenticated with a fixed reason.
type authError struct {
	reason   string
	sentinel error
}

func (e *authError) Error() string { return auth.ErrUnauthenticated.Error() + ": " + e.reason }
func (e *authError) Unwrap() []error {
	if e.sentinel != nil {
		return []error{auth.ErrUnauthenticated, e.sentinel}
	}
	return []error{auth.ErrUnauthenticated}
}
