// Package pseudonym turns raw identifiers (Firebase uids, phone numbers)
// into keyed hashes, so document ids, blob paths, vector namespaces, key
// ids and logs never hold the raw value. Without the secret a pseudonym
// cannot be linked back to its uid, even by trying every known uid.
//
// A pseudonym names the secret's version in its first hex digit, so after
// a rotation (a v2 secret beside v1) stored users can still be told apart
// by the key that made them.
package pseudonym

import (
	"crypto/hmac"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
)

// Domain prefixes: the same string as a uid and as a phone number must not
// share a pseudonym.
const (
	userDomain  = "uid:"
	phoneDomain = "phone:"
)

// Pseudonymizer computes keyed hashes; safe for concurrent use.
type Pseudonymizer struct {
	version byte // one lowercase hex digit, 1-f
	secret  []byte
}

// MinSecretSize is the shortest secret New accepts.
const MinSecretSize = 16

// MaxVersion is the highest secret version a pseudonym can name (one hex
// digit; 0 is never used, so no pseudonym starts with 0).
const MaxVersion = 15

// New returns a Pseudonymizer keyed by the given version of the secret
// (copied). It panics on a secret shorter than MinSecretSize or a version
// outside 1..MaxVersion: a short key would make every pseudonym reversible
// by brute force, a wiring bug to stop at start.
func New(version int, secret []byte) *Pseudonymizer {
	if len(secret) < MinSecretSize {
		panic(fmt.Sprintf("pseudonym.New: secret of %d bytes, need at least %d", len(secret), MinSecretSize))
	}
	if version < 1 || version > MaxVersion {
		panic(fmt.Sprintf("pseudonym.New: version %d outside 1..%d", version, MaxVersion))
	}
	return &Pseudonymizer{version: "0123456789abcdef"[version], secret: append([]byte(nil), secret...)}
}

// User returns the pseudonym of a uid: 32 lowercase hex characters, the
// version digit then the first 31 hex digits of
// HMAC-SHA256(secret, "uid:"+uid).
func (p *Pseudonymizer) User(uid string) string { return p.hash(userDomain, uid) }

// Phone returns the pseudonym of an E.164 phone number, in the same form
// under the "phone:" domain.
func (p *Pseudonymizer) Phone(e164 string) string { return p.hash(phoneDomain, e164) }

func (p *Pseudonymizer) hash(domain, v string) string {
	m := hmac.New(sha256.New, p.secret)
	m.Write([]byte(domain))
	m.Write([]byte(v))
	return string(p.version) + hex.EncodeToString(m.Sum(nil)[:16])[:31]
}
