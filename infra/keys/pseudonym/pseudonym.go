// Package pseudonym turns raw identifiers (Firebase uids, phone numbers)
// into keyed hashes, so document ids, blob paths, vector namespaces, key
// ids and logs never hold the raw value. Without the secret a pseudonym
// cannot be linked back to its uid, even by trying every known uid.
package pseudonym

import (
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
)

// SecretSize is the length of the secret LoadOrCreateSecret makes.
const SecretSize = 32

// Domain prefixes: the same string as a uid and as a phone number must not
// share a pseudonym.
const (
	userDomain  = "uid:"
	phoneDomain = "phone:"
)

// LoadOrCreateSecret reads the secret at path, creating it (32 random
// bytes, mode 0600, directory 0700) on first run. It refuses a file that
// group or others can access, or of the wrong size.
func LoadOrCreateSecret(path string) ([]byte, error) {
	if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
		return nil, fmt.Errorf("os.MkdirAll: %w", err)
	}
	secret, err := readPrivate(path)
	if errors.Is(err, fs.ErrNotExist) {
		fresh := make([]byte, SecretSize)
		if _, err := rand.Read(fresh); err != nil {
			return nil, fmt.Errorf("rand.Read: %w", err)
		}
		if err := linkNew(path, fresh); err != nil {
			return nil, err
		}
		// Re-read: another process may have won the race to create it.
		secret, err = readPrivate(path)
	}
	if err != nil {
		return nil, err
	}
	if len(secret) != SecretSize {
		return nil, fmt.Errorf("pseudonym: %s holds %d bytes, want %d", path, len(secret), SecretSize)
	}
	return secret, nil
}

func readPrivate(path string) ([]byte, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("os.Open: %w", err)
	}
	defer f.Close()
	st, err := f.Stat()
	if err != nil {
		return nil, fmt.Errorf("file.Stat: %w", err)
	}
	if !st.Mode().IsRegular() {
		return nil, fmt.Errorf("pseudonym: %s is not a regular file", path)
	}
	if perm := st.Mode().Perm(); perm&0o077 != 0 {
		return nil, fmt.Errorf("pseudonym: %s has mode %v, readable beyond its owner: chmod 600 it", path, perm)
	}
	b, err := io.ReadAll(io.LimitReader(f, SecretSize+1))
	if err != nil {
		return nil, fmt.Errorf("file.Read: %w", err)
	}
	return b, nil
}

// linkNew writes data to a temp file and hard-links it to path, which fails
// harmlessly if path already exists.
func linkNew(path string, data []byte) error {
	dir := filepath.Dir(path)
	f, err := os.CreateTemp(dir, ".secret-*") // mode 0600
	if err != nil {
		return fmt.Errorf("os.CreateTemp: %w", err)
	}
	defer os.Remove(f.Name())
	defer f.Close()
	if _, err := f.Write(data); err != nil {
		return fmt.Errorf("file.Write: %w", err)
	}
	if err := f.Sync(); err != nil {
		return fmt.Errorf("file.Sync: %w", err)
	}
	if err := os.Link(f.Name(), path); err != nil && !errors.Is(err, fs.ErrExist) {
		return fmt.Errorf("os.Link: %w", err)
	}
	d, err := os.Open(dir)
	if err != nil {
		return fmt.Errorf("os.Open: %w", err)
	}
	defer d.Close()
	if err := d.Sync(); err != nil {
		return fmt.Errorf("dir.Sync: %w", err)
	}
	return nil
}

// Pseudonymizer computes keyed hashes; safe for concurrent use.
type Pseudonymizer struct {
	secret []byte
}

// MinSecretSize is the shortest secret New accepts.
const MinSecretSize = 16

// New returns a Pseudonymizer keyed by secret (copied). It panics on a
// secret shorter than MinSecretSize: a short or empty key would make every
// pseudonym reversible by brute force, a wiring bug to stop at start.
func New(secret []byte) *Pseudonymizer {
	if len(secret) < MinSecretSize {
		panic(fmt.Sprintf("pseudonym.New: secret of %d bytes, need at least %d", len(secret), MinSecretSize))
	}
	return &Pseudonymizer{secret: append([]byte(nil), secret...)}
}

// User returns the pseudonym of a uid: 32 lowercase hex characters, the
// first 16 bytes of HMAC-SHA256(secret, "uid:"+uid).
func (p *Pseudonymizer) User(uid string) string { return p.hash(userDomain, uid) }

// Phone returns the pseudonym of an E.164 phone number, in the same form
// under the "phone:" domain.
func (p *Pseudonymizer) Phone(e164 string) string { return p.hash(phoneDomain, e164) }

func (p *Pseudonymizer) hash(domain, v string) string {
	m := hmac.New(sha256.New, p.secret)
	m.Write([]byte(domain))
	m.Write([]byte(v))
	return hex.EncodeToString(m.Sum(nil)[:16])
}
