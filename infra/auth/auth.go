// Package auth verifies bearer ID tokens: Firebase ID tokens in production
// (RS256 against Google's JWKS), and in embedded mode tokens of a local
// issuer whose JWKS goes through the same verification code.
package auth

import (
	"context"
	"errors"
	"slices"
)

// ErrUnauthenticated: missing, malformed, expired or badly signed token.
var ErrUnauthenticated = errors.New("auth: unauthenticated")

// RoleAdmin is the role (from the token's roles custom claim) that admin
// routes require.
const RoleAdmin = "admin"

// Identity is what a verified token proves.
type Identity struct {
	UID   string
	Roles []string
	// SecondFactor names the second factor the user signed in with
	// (Firebase's firebase.sign_in_second_factor: "phone", "totp"); empty
	// for a single-factor sign-in.
	SecondFactor string
}

// HasRole reports whether the identity holds role.
func (id Identity) HasRole(role string) bool { return slices.Contains(id.Roles, role) }

// Verifier checks a raw bearer token.
type Verifier interface {
	Verify(ctx context.Context, rawToken string) (Identity, error)
}
