// Package localissuer is the embedded-mode identity provider: an RS256 key
// kept in a 0600 PEM file under the data directory, a JWKS of its public
// key, and tokens minted for `lethe token`. Its tokens are verified by
// jwtverify from that JWKS, the same code that verifies Firebase ID tokens.
// It must never be enabled in production (the startup guard refuses it).
package localissuer

import (
	"crypto/rand"
	"crypto/rsa"
	"crypto/sha256"
	"crypto/x509"
	"encoding/base64"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"math/big"
	"os"
	"path/filepath"
	"regexp"
	"time"

	"github.com/golang-jwt/jwt/v5"

	"github.com/lethe-dev/lethe/infra/auth"
	"github.com/lethe-dev/lethe/infra/auth/jwtverify"
)

// Token parameters of the local issuer.
const (
	IssuerURL  = "https://lethe.local/issuer"
	Audience   = "lethe-local"
	RolesClaim = "roles"
	// DefaultPath is the key file, relative to the data directory.
	DefaultPath = "auth/issuer.pem"
	// MaxTTL bounds minted tokens: long enough for a dev session, short
	// enough that a leaked one expires.
	MaxTTL  = 30 * 24 * time.Hour
	keyBits = 2048
)

// Issuer holds the signing key. Safe for concurrent use.
type Issuer struct {
	key  *rsa.PrivateKey
	kid  string
	jwks []byte
	now  func() time.Time
}

// Open loads the key at path, creating it (RSA-2048, PKCS#8 PEM, mode 0600,
// parent directories 0700) on first run. A key file readable by group or
// others is refused, as ssh does.
func Open(path string) (*Issuer, error) {
	key, err := loadOrCreate(path)
	if err != nil {
		return nil, err
	}
	return newIssuer(key)
}

func newIssuer(key *rsa.PrivateKey) (*Issuer, error) {
	jwk := map[string]string{
		"kty": "RSA",
		"n":   b64(key.N.Bytes()),
		"e":   b64(big.NewInt(int64(key.E)).Bytes()),
	}
	kid := thumbprint(jwk["e"], jwk["n"])
	jwk["kid"] = kid
	jwk["alg"] = jwt.SigningMethodRS256.Alg()
	jwk["use"] = "sig"
	jwks, err := json.Marshal(map[string]any{"keys": []any{jwk}})
	if err != nil {
		return nil, fmt.Errorf("localissuer: json.Marshal(jwks): %w", err)
	}
	return &Issuer{key: key, kid: kid, jwks: jwks, now: time.Now}, nil
}

func b64(b []byte) string { return base64.RawURLEncoding.EncodeToString(b) }

// thumbprint is the RFC 7638 JWK thumbprint of an RSA public key: SHA-256
// over the required members in lexicographic order, no whitespace.
func thumbprint(e, n string) string {
	sum := sha256.Sum256([]byte(`{"e":"` + e + `","kty":"RSA","n":"` + n + `"}`))
	return b64(sum[:])
}

func loadOrCreate(path string) (*rsa.PrivateKey, error) {
	key, err := load(path)
	if err == nil || !errors.Is(err, fs.ErrNotExist) {
		return key, err
	}
	if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
		return nil, fmt.Errorf("localissuer: os.MkdirAll: %w", err)
	}
	key, err = rsa.GenerateKey(rand.Reader, keyBits)
	if err != nil {
		return nil, fmt.Errorf("localissuer: rsa.GenerateKey: %w", err)
	}
	der, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		return nil, fmt.Errorf("localissuer: x509.MarshalPKCS8PrivateKey: %w", err)
	}
	data := pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: der})
	// Write a temp file, then hard-link it into place: the key file appears
	// whole or not at all, and if another process (lethe token racing
	// lethe run) created it first, the link fails and we use theirs.
	tmp, err := os.CreateTemp(filepath.Dir(path), ".issuer-*.tmp")
	if err != nil {
		return nil, fmt.Errorf("localissuer: os.CreateTemp: %w", err)
	}
	defer os.Remove(tmp.Name())
	if err := tmp.Chmod(0o600); err != nil {
		tmp.Close()
		return nil, fmt.Errorf("localissuer: chmod: %w", err)
	}
	if _, err := tmp.Write(data); err != nil {
		tmp.Close()
		return nil, fmt.Errorf("localissuer: write: %w", err)
	}
	if err := tmp.Sync(); err != nil {
		tmp.Close()
		return nil, fmt.Errorf("localissuer: fsync: %w", err)
	}
	if err := tmp.Close(); err != nil {
		return nil, fmt.Errorf("localissuer: close: %w", err)
	}
	if err := os.Link(tmp.Name(), path); err != nil {
		if errors.Is(err, fs.ErrExist) {
			return load(path)
		}
		return nil, fmt.Errorf("localissuer: os.Link: %w", err)
	}
	if d, err := os.Open(filepath.Dir(path)); err == nil {
		_ = d.Sync() // make the new name durable
		d.Close()
	}
	return key, nil
}

func load(path string) (*rsa.PrivateKey, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("localissuer: open key: %w", err)
	}
	defer f.Close()
	st, err := f.Stat()
	if err != nil {
		return nil, fmt.Errorf("localissuer: stat key: %w", err)
	}
	if !st.Mode().IsRegular() {
		return nil, fmt.Errorf("localissuer: key %s is not a regular file", path)
	}
	if perm := st.Mode().Perm(); perm&0o077 != 0 {
		return nil, fmt.Errorf("localissuer: key %s has mode %#o, want 0600 (chmod 600 it)", path, perm)
	}
	data, err := io.ReadAll(io.LimitReader(f, 64<<10))
	if err != nil {
		return nil, fmt.Errorf("localissuer: read key: %w", err)
	}
	block, _ := pem.Decode(data)
	if block == nil {
		return nil, fmt.Errorf("localissuer: key %s: no PEM block", path)
	}
	var parsed any
	switch block.Type {
	case "PRIVATE KEY":
		parsed, err = x509.ParsePKCS8PrivateKey(block.Bytes)
	case "RSA PRIVATE KEY":
		parsed, err = x509.ParsePKCS1PrivateKey(block.Bytes)
	default:
		return nil, fmt.Errorf("localissuer: key %s: unexpected PEM type %q", path, block.Type)
	}
	if err != nil {
		return nil, fmt.Errorf("localissuer: key %s: parse: %w", path, err)
	}
	key, ok := parsed.(*rsa.PrivateKey)
	if !ok {
		return nil, fmt.Errorf("localissuer: key %s is not RSA", path)
	}
	if key.N.BitLen() < keyBits {
		return nil, fmt.Errorf("localissuer: key %s has %d bits, want at least %d", path, key.N.BitLen(), keyBits)
	}
	if err := key.Validate(); err != nil {
		return nil, fmt.Errorf("localissuer: key %s: %w", path, err)
	}
	return key, nil
}

// KeyID is the kid of the signing key (its RFC 7638 thumbprint).
func (i *Issuer) KeyID() string { return i.kid }

// JWKS returns the JWK Set of the public key (serve it at
// /.well-known/jwks.json). The caller gets a copy.
func (i *Issuer) JWKS() []byte { return append([]byte(nil), i.jwks...) }

var uidRE = regexp.MustCompile(`^[A-Za-z0-9_.@:+-]{1,128}$`)

// Mint signs an ID token for uid valid for ttl (0 < ttl ≤ MaxTTL).
func (i *Issuer) Mint(uid string, ttl time.Duration) (string, error) {
	return i.MintWithRoles(uid, nil, ttl)
}

// MintWithRoles is Mint with a roles claim (RolesClaim).
func (i *Issuer) MintWithRoles(uid string, roles []string, ttl time.Duration) (string, error) {
	return i.MintWith(uid, MintOptions{Roles: roles}, ttl)
}

// MintOptions are the optional claims of MintWith.
type MintOptions struct {
	Roles []string
	// SecondFactor, when set, is put in firebase.sign_in_second_factor as
	// Firebase does for a sign-in with a second factor ("totp", "phone").
	SecondFactor string
}

// MintWith is Mint with optional claims.
func (i *Issuer) MintWith(uid string, o MintOptions, ttl time.Duration) (string, error) {
	roles := o.Roles
	if !uidRE.MatchString(uid) {
		return "", errors.New("localissuer.Mint: uid must be 1-128 of [A-Za-z0-9_.@:+-]")
	}
	if ttl <= 0 || ttl > MaxTTL {
		return "", fmt.Errorf("localissuer.Mint: ttl must be in (0, %v]", MaxTTL)
	}
	now := i.now().UTC()
	claims := jwt.MapClaims{
		"iss":       IssuerURL,
		"aud":       Audience,
		"sub":       uid,
		"iat":       now.Unix(),
		"auth_time": now.Unix(),
		"exp":       now.Add(ttl).Unix(),
	}
	if len(roles) > 0 {
		claims[RolesClaim] = roles
	}
	if o.SecondFactor != "" {
		claims["firebase"] = map[string]any{"sign_in_provider": "password", "sign_in_second_factor": o.SecondFactor}
	}
	t := jwt.NewWithClaims(jwt.SigningMethodRS256, claims)
	t.Header["kid"] = i.kid
	s, err := t.SignedString(i.key)
	if err != nil {
		return "", fmt.Errorf("localissuer.Mint: sign: %w", err)
	}
	return s, nil
}

// Verifier returns a jwtverify verifier over this issuer's JWKS JSON: the
// same path as Firebase verification, with the local iss/aud.
func (i *Issuer) Verifier() (auth.Verifier, error) {
	keys, err := jwtverify.KeysFromJWKSJSON(i.jwks)
	if err != nil {
		return nil, fmt.Errorf("localissuer.Verifier: %w", err)
	}
	v, err := jwtverify.New(jwtverify.Config{
		Issuer:     IssuerURL,
		Audience:   Audience,
		Keys:       keys,
		RolesClaim: RolesClaim,
	})
	if err != nil {
		return nil, fmt.Errorf("localissuer.Verifier: %w", err)
	}
	return v, nil
}
