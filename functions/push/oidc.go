package push

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"slices"
	"strings"
	"time"

	"google.golang.org/api/idtoken"
)

// ErrUnauthenticated wraps every refusal of OIDCVerifier.
var ErrUnauthenticated = errors.New("push: unauthenticated")

// Issuers of Google-signed ID tokens.
var googleIssuers = []string{"https://accounts.google.com", "accounts.google.com"}

const (
	// maxTokenLen bounds the bearer token read from a header (Google ID
	// tokens are about 1 KiB).
	maxTokenLen = 8 << 10
	// maxIssuedAtSkew tolerates a token issued slightly "in the future" by
	// a clock ahead of ours.
	maxIssuedAtSkew = 5 * time.Minute
)

// OIDCConfig configures an OIDCVerifier.
type OIDCConfig struct {
	// Audiences accepted in the aud claim (at least one): the audience set
	// on the push subscriptions' OIDC token, which defaults to each
	// subscription's push endpoint URL. Set one explicit audience on every
	// subscription and name it here.
	Audiences []string
	// ServiceAccountEmail is the service account the push subscriptions
	// sign as (pushConfig.oidcToken.serviceAccountEmail).
	ServiceAccountEmail string
	// HTTPClient fetches Google's signing keys
	// (https://www.googleapis.com/oauth2/v3/certs, cached per its
	// Cache-Control). Nil uses a default client. Tests inject keys here.
	HTTPClient *http.Client
	// Now is the clock for the iat check; nil means time.Now. (exp is
	// checked by idtoken against the real clock.)
	Now func() time.Time
}

// OIDCVerifier checks the Google-signed OIDC ID token Pub/Sub attaches to
// push requests (Authorization: Bearer). google.golang.org/api/idtoken
// verifies the RS256 signature against Google's published keys, aud and
// exp; it checks nothing else, so the verifier also requires alg RS256 (idtoken
// would take ES256 tokens signed by IAP's keys), iss of Google, email equal
// to the configured service account, email_verified true, and iat not in
// the future.
type OIDCVerifier struct {
	validator *idtoken.Validator
	audiences []string
	email     string
	now       func() time.Time
}

// NewOIDCVerifier returns a verifier for cfg.
func NewOIDCVerifier(ctx context.Context, cfg OIDCConfig) (*OIDCVerifier, error) {
	if len(cfg.Audiences) == 0 || slices.Contains(cfg.Audiences, "") {
		return nil, errors.New("push.NewOIDCVerifier: Audiences must be non-empty strings")
	}
	if cfg.ServiceAccountEmail == "" {
		return nil, errors.New("push.NewOIDCVerifier: ServiceAccountEmail is required")
	}
	var opts []idtoken.ClientOption
	if cfg.HTTPClient != nil {
		opts = append(opts, idtoken.WithHTTPClient(cfg.HTTPClient))
	}
	v, err := idtoken.NewValidator(ctx, opts...)
	if err != nil {
		return nil, fmt.Errorf("push.NewOIDCVerifier: idtoken.NewValidator: %w", err)
	}
	now := cfg.Now
	if now == nil {
		now = time.Now
	}
	return &OIDCVerifier{validator: v, audiences: slices.Clone(cfg.Audiences), email: cfg.ServiceAccountEmail, now: now}, nil
}

// Verify returns nil for a request carrying a valid token, an error wrapping
// ErrUnauthenticated otherwise. Errors never contain the token.
func (v *OIDCVerifier) Verify(r *http.Request) error {
	tok, err := bearerToken(r.Header)
	if err != nil {
		return err
	}
	alg, err := tokenAlg(tok)
	if err != nil {
		return err
	}
	// Pub/Sub signs with Google's service-account keys, always RS256.
	if alg != "RS256" {
		return fmt.Errorf("%w: token alg %q, want RS256", ErrUnauthenticated, truncate(alg, 16))
	}
	aud := ""
	if len(v.audiences) == 1 {
		aud = v.audiences[0]
	}
	p, err := v.validator.Validate(r.Context(), tok, aud)
	if err != nil {
		return fmt.Errorf("%w: idtoken.Validate: %w", ErrUnauthenticated, err)
	}
	if !slices.Contains(v.audiences, p.Audience) {
		return fmt.Errorf("%w: audience not accepted", ErrUnauthenticated)
	}
	if !slices.Contains(googleIssuers, p.Issuer) {
		return fmt.Errorf("%w: issuer is not Google", ErrUnauthenticated)
	}
	if email, _ := p.Claims["email"].(string); email != v.email {
		return fmt.Errorf("%w: email is not the push service account", ErrUnauthenticated)
	}
	if verified, _ := p.Claims["email_verified"].(bool); !verified {
		return fmt.Errorf("%w: email not verified", ErrUnauthenticated)
	}
	if p.IssuedAt == 0 || time.Unix(p.IssuedAt, 0).After(v.now().Add(maxIssuedAtSkew)) {
		return fmt.Errorf("%w: iat missing or in the future", ErrUnauthenticated)
	}
	return nil
}

// bearerToken returns the token of the one Authorization: Bearer header.
func bearerToken(h http.Header) (string, error) {
	vals := h.Values("Authorization")
	if len(vals) != 1 {
		return "", fmt.Errorf("%w: want one Authorization header, got %d", ErrUnauthenticated, len(vals))
	}
	scheme, tok, ok := strings.Cut(vals[0], " ")
	if !ok || !strings.EqualFold(scheme, "Bearer") {
		return "", fmt.Errorf("%w: Authorization is not a Bearer token", ErrUnauthenticated)
	}
	tok = strings.TrimSpace(tok)
	if tok == "" || len(tok) > maxTokenLen {
		return "", fmt.Errorf("%w: bearer token empty or too long", ErrUnauthenticated)
	}
	return tok, nil
}

// tokenAlg reads the alg of a JWT's (not yet verified) header.
func tokenAlg(tok string) (string, error) {
	seg, _, ok := strings.Cut(tok, ".")
	if !ok {
		return "", fmt.Errorf("%w: token is not a JWT", ErrUnauthenticated)
	}
	raw, err := base64.RawURLEncoding.DecodeString(seg)
	if err != nil {
		return "", fmt.Errorf("%w: token header is not base64url", ErrUnauthenticated)
	}
	var hdr struct {
		Alg string `json:"alg"`
	}
	if err := json.Unmarshal(raw, &hdr); err != nil {
		return "", fmt.Errorf("%w: token header is not JSON", ErrUnauthenticated)
	}
	return hdr.Alg, nil
}
