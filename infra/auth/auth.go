// Package auth verifies bearer ID tokens: Firebase ID tokens in production
// (RS256 against Google's JWKS), and in embedded mode tokens of a local
// issuer whose JWKS goes through the same verification code.
package auth

import (
	"context"
	"errors"
)

// ErrUnauthenticated: missing, malformed, expired or badly signed token.
var ErrUnauthenticated = errors.New("auth: unauthenticated")

// Identity is what a verified token proves.
type Identity struct {
	UID   string
	Roles []string
}

// Verifier checks a raw bearer token.
type Verifier interface {
	Verify(ctx context.Context, rawToken string) (Identity, error)
}
