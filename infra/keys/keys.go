// Package keys does envelope encryption per user: each user has an AEAD
// keyset (Tink AES256-GCM), wrapped by a KEK (Cloud KMS in production, a
// local key file in embedded mode) with the user id as associated data, and
// stored in the documents store beside a digest key for keyed content
// digests. Deleting them crypto-shreds everything sealed with the keyset
// (documents, blobs, event payloads, dead letters) and leaves no digest that
// could still be matched against known content.
package keys

import (
	"context"
	"errors"
	"strings"
)

var (
	// ErrTombstoned: the user asked to be erased; no key is ever created
	// (or used) for them again.
	ErrTombstoned = errors.New("keys: user is tombstoned")
	// ErrNoKey: the user has no key (never had one, or shredded).
	ErrNoKey = errors.New("keys: no key for user")
	// ErrDecrypt: ciphertext or associated data do not match.
	ErrDecrypt = errors.New("keys: decryption failed")
)

// Sealer seals and opens user content. user is the keyed hash of the uid.
type Sealer interface {
	// Seal encrypts with the user's data key, creating it on first use
	// (unless the user is tombstoned).
	Seal(ctx context.Context, user string, plaintext, ad []byte) ([]byte, error)
	// Open decrypts; ErrNoKey if the key is gone, ErrDecrypt on mismatch.
	Open(ctx context.Context, user string, ciphertext, ad []byte) ([]byte, error)
	// Digest returns a keyed digest of data (64 lowercase hex digits),
	// deterministic per user, under a key that Shred destroys with the
	// data key: a content fingerprint that does not outlive the user.
	// Like Seal it creates the user's keys on first use and refuses a
	// tombstoned user.
	Digest(ctx context.Context, user string, data []byte) (string, error)
}

// AD builds the associated data "user|collection|doc|field" so ciphertext
// moved to another user, collection, document or field fails to open.
func AD(user, collection, doc, field string) []byte {
	return []byte(strings.Join([]string{user, collection, doc, field}, "|"))
}
