// Package gcpkek is the production key-encryption key: a Cloud KMS
// symmetric CryptoKey used through Tink's GCP KMS extension
// (tink-go-gcpkms), over gRPC. It wraps each user's keyset (a few hundred
// bytes) with the user id as associated data; nothing else goes to KMS.
//
// Cloud KMS keeps the key material; rotating the CryptoKey in KMS is safe,
// because every ciphertext names the version that made it.
package gcpkek

import (
	"bytes"
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"strings"

	"github.com/tink-crypto/tink-go-gcpkms/v2/integration/gcpkms"
	"github.com/tink-crypto/tink-go/v2/tink"
	"google.golang.org/api/option"
)

// ErrKeyURI: LETHE_KEK does not name a Cloud KMS CryptoKey.
var ErrKeyURI = errors.New("gcpkek: LETHE_KEK is not a Cloud KMS key URI")

// tinkPrefix is the scheme Tink's client expects; "gcpkms://" is lethe's
// shorter spelling in LETHE_KEK.
const tinkPrefix = "gcp-kms://"

const uriShape = "gcp-kms://projects/P/locations/L/keyRings/R/cryptoKeys/K"

// KEK is a Cloud KMS CryptoKey: a keys.KEK whose calls carry the caller's
// context to KMS, and a tink.AEAD for Tink's functions that take one.
// Close it at shutdown to release its gRPC connection.
type KEK struct {
	aead   tink.AEADWithContext
	client *gcpkms.Client
}

var _ tink.AEAD = (*KEK)(nil)

// Open connects to Cloud KMS and returns the key named by keyURI
// (gcp-kms://projects/P/locations/L/keyRings/R/cryptoKeys/K, or gcpkms://…)
// as a *KEK. opts go to the Cloud KMS client (credentials, endpoint);
// by default it uses Application Default Credentials.
//
// Open makes one Encrypt and one Decrypt call, so a missing key, a missing
// permission (the caller needs roles/cloudkms.cryptoKeyEncrypterDecrypter)
// or an unreachable KMS stops the process at startup rather than at the
// first user.
func Open(ctx context.Context, keyURI string, opts ...option.ClientOption) (*KEK, error) {
	uri, err := NormalizeURI(keyURI)
	if err != nil {
		return nil, err
	}
	client, err := gcpkms.NewClient(ctx, uri,
		gcpkms.WithTransport(gcpkms.TransportGRPC),
		gcpkms.WithGoogleAPIClientOptions(opts...))
	if err != nil {
		return nil, fmt.Errorf("gcpkms.NewClient: %w", err)
	}
	a, err := client.GetAEAD(uri)
	if err != nil {
		client.Close()
		return nil, fmt.Errorf("gcpkms.GetAEAD: %w", err)
	}
	// Over gRPC, Tink's AEAD takes a context (its plain Encrypt and
	// Decrypt use context.TODO); without one, calls would escape every
	// deadline.
	ac, ok := a.(tink.AEADWithContext)
	if !ok {
		client.Close()
		return nil, errors.New("gcpkek: Tink's Cloud KMS AEAD takes no context")
	}
	k := &KEK{aead: ac, client: client}
	if err := k.probe(ctx); err != nil {
		client.Close()
		return nil, err
	}
	return k, nil
}

// probe round-trips a random value through the key, within ctx.
func (k *KEK) probe(ctx context.Context) error {
	pt := make([]byte, 16)
	if _, err := rand.Read(pt); err != nil {
		return fmt.Errorf("rand.Read: %w", err)
	}
	ad := []byte("lethe/gcpkek/probe")
	ct, err := k.EncryptWithContext(ctx, pt, ad)
	if err != nil {
		return fmt.Errorf("gcpkek: probe: %w", err)
	}
	got, err := k.DecryptWithContext(ctx, ct, ad)
	if err != nil {
		return fmt.Errorf("gcpkek: probe: %w", err)
	}
	if !bytes.Equal(got, pt) {
		return errors.New("gcpkek: probe: Cloud KMS returned different data")
	}
	return nil
}

// EncryptWithContext encrypts plaintext (at most 64 KiB) bound to
// associatedData; the KMS call ends when ctx does.
func (k *KEK) EncryptWithContext(ctx context.Context, plaintext, associatedData []byte) ([]byte, error) {
	return wrap(ctx, "gcpkms.Encrypt")(k.aead.EncryptWithContext(ctx, plaintext, associatedData))
}

// DecryptWithContext decrypts ciphertext made by Encrypt with the same
// associatedData; the KMS call ends when ctx does.
func (k *KEK) DecryptWithContext(ctx context.Context, ciphertext, associatedData []byte) ([]byte, error) {
	return wrap(ctx, "gcpkms.Decrypt")(k.aead.DecryptWithContext(ctx, ciphertext, associatedData))
}

// Encrypt is EncryptWithContext without a deadline but the client's own
// (60 s per call), for Tink's functions that take a tink.AEAD. lethe's
// keyring uses the context methods.
func (k *KEK) Encrypt(plaintext, associatedData []byte) ([]byte, error) {
	return k.EncryptWithContext(context.Background(), plaintext, associatedData)
}

// Decrypt is DecryptWithContext as Encrypt is EncryptWithContext.
func (k *KEK) Decrypt(ciphertext, associatedData []byte) ([]byte, error) {
	return k.DecryptWithContext(context.Background(), ciphertext, associatedData)
}

// Close releases the connection to Cloud KMS.
func (k *KEK) Close() error {
	if err := k.client.Close(); err != nil {
		return fmt.Errorf("gcpkms.Close: %w", err)
	}
	return nil
}

// wrap names the failed call; when the call ended because ctx did, the
// context's error is wrapped too (gRPC's status error does not match it).
func wrap(ctx context.Context, call string) func([]byte, error) ([]byte, error) {
	return func(b []byte, err error) ([]byte, error) {
		switch {
		case err == nil:
			return b, nil
		case ctx.Err() != nil:
			return nil, fmt.Errorf("%s: %w (%w)", call, ctx.Err(), err)
		default:
			return nil, fmt.Errorf("%s: %w", call, err)
		}
	}
}

// NormalizeURI checks that s names a Cloud KMS CryptoKey
// (gcp-kms:// or gcpkms://, then projects/P/locations/L/keyRings/R/cryptoKeys/K)
// and returns it with Tink's gcp-kms:// scheme. A CryptoKeyVersion is
// refused: Decrypt takes the CryptoKey, and encrypting with the primary
// version lets KMS rotation work.
func NormalizeURI(s string) (string, error) {
	rest, ok := cutPrefixFold(s, tinkPrefix)
	if !ok {
		rest, ok = cutPrefixFold(s, "gcpkms://")
	}
	if !ok {
		return "", fmt.Errorf("%w: want %s (or gcpkms://…): unknown scheme", ErrKeyURI, uriShape)
	}
	parts := strings.Split(rest, "/")
	if len(parts) != 8 {
		return "", fmt.Errorf("%w: want %s: %d path segments, not 8", ErrKeyURI, uriShape, len(parts))
	}
	segments := []struct {
		collection string
		valid      func(string) bool
	}{
		{"projects", validProject},
		{"locations", validLocation},
		{"keyRings", validID},
		{"cryptoKeys", validID},
	}
	for i, seg := range segments {
		if parts[2*i] != seg.collection {
			return "", fmt.Errorf("%w: want %s: segment %d is not %q", ErrKeyURI, uriShape, 2*i+1, seg.collection)
		}
		if !seg.valid(parts[2*i+1]) {
			return "", fmt.Errorf("%w: want %s: invalid %s id", ErrKeyURI, uriShape, seg.collection)
		}
	}
	return tinkPrefix + rest, nil
}

func cutPrefixFold(s, prefix string) (string, bool) {
	if len(s) >= len(prefix) && strings.EqualFold(s[:len(prefix)], prefix) {
		return s[len(prefix):], true
	}
	return "", false
}

// validProject: a project id (lower case, digits, hyphens), a project
// number, or a domain-scoped id ("example.com:project").
func validProject(s string) bool {
	return validChars(s, 100, func(r rune) bool {
		return r >= 'a' && r <= 'z' || r >= '0' && r <= '9' || r == '-' || r == '.' || r == ':'
	})
}

// validLocation: "global", a region ("europe-west1") or a multi-region.
func validLocation(s string) bool {
	return validChars(s, 63, func(r rune) bool {
		return r >= 'a' && r <= 'z' || r >= '0' && r <= '9' || r == '-'
	})
}

// validID: Cloud KMS key ring and key ids, [a-zA-Z0-9_-]{1,63}.
func validID(s string) bool {
	return validChars(s, 63, func(r rune) bool {
		return r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || r == '-' || r == '_'
	})
}

func validChars(s string, max int, ok func(rune) bool) bool {
	if s == "" || len(s) > max {
		return false
	}
	for _, r := range s {
		if !ok(r) {
			return false
		}
	}
	return true
}
