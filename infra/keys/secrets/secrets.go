// Package secrets keeps the process-wide keys (the uid pseudonym key, the
// log hash key, the export URL key) in the documents store, wrapped by the
// KEK, so every instance and every restart uses the same ones: a uid then
// maps to one stored user everywhere, and erasure finds all of it. Each is
// created once with a create-if-absent write; a loser of that race reads
// the winner's. Secrets are versioned so a later rotation can add v2 beside
// v1 instead of replacing it.
package secrets

import (
	"context"
	"crypto/rand"
	"encoding/json"
	"errors"
	"fmt"
	"regexp"
	"strconv"
	"strings"

	"github.com/lethe-dev/lethe/infra/docs"
	"github.com/lethe-dev/lethe/infra/keys"
)

// Names of the secrets lethe uses.
const (
	// UIDHMAC keys the pseudonym of a uid or phone number (the stored user).
	UIDHMAC = "uid-hmac"
	// LogHMAC keys the user hash logs carry (a different key, so logs do
	// not join to stored documents).
	LogHMAC = "log-hmac"
	// ExportURL signs export download URLs.
	ExportURL = "export-url"
)

// Size is the length of every secret.
const Size = 32

// Collection is the global documents collection holding the wrapped
// secrets; document id "<name>.v<version>".
const Collection = "secrets"

var nameRe = regexp.MustCompile(`^[a-z0-9][a-z0-9-]{0,62}$`)

// Store loads and creates secrets; safe for concurrent use.
type Store struct {
	docs docs.Store
	kek  keys.KEK
}

// New returns a Store keeping secrets in d, wrapped by kek.
func New(d docs.Store, kek keys.KEK) *Store { return &Store{docs: d, kek: kek} }

// Key is where the secret name at version is stored.
func Key(name string, version int) docs.Key {
	return docs.Key{Collection: Collection, ID: name + ".v" + strconv.Itoa(version)}
}

// secretDoc is the stored JSON.
type secretDoc struct {
	V       int    `json:"v"`
	Wrapped []byte `json:"wrapped"`
}

// ad binds a wrapped secret to its name and version: one moved to another
// document does not unwrap.
func ad(name string, version int) []byte {
	return []byte("lethe-secret|" + name + "|v" + strconv.Itoa(version))
}

// Get returns the secret name at version, creating it on first use. A
// stored secret that does not unwrap (another KEK, tampering) is an error,
// never replaced: replacing it would silently re-key every user.
func (s *Store) Get(ctx context.Context, name string, version int) ([]byte, error) {
	if !nameRe.MatchString(name) || version < 1 {
		return nil, fmt.Errorf("secrets: invalid name %q or version %d", name, version)
	}
	key := Key(name, version)
	d, err := s.docs.Get(ctx, key)
	switch {
	case errors.Is(err, docs.ErrNotFound):
		if d, err = s.create(ctx, name, version); err != nil {
			return nil, err
		}
	case err != nil:
		return nil, fmt.Errorf("docs.Get: %w", err)
	}
	return s.unwrap(ctx, d, name, version)
}

func (s *Store) create(ctx context.Context, name string, version int) (docs.Doc, error) {
	fresh := make([]byte, Size)
	if _, err := rand.Read(fresh); err != nil {
		return docs.Doc{}, fmt.Errorf("rand.Read: %w", err)
	}
	wrapped, err := s.kek.EncryptWithContext(ctx, fresh, ad(name, version))
	if err != nil {
		return docs.Doc{}, fmt.Errorf("kek.Encrypt: %w", err)
	}
	data, err := json.Marshal(secretDoc{V: 1, Wrapped: wrapped})
	if err != nil {
		return docs.Doc{}, fmt.Errorf("json.Marshal: %w", err)
	}
	d := docs.Doc{Key: Key(name, version), Data: data}
	err = s.docs.Create(ctx, d)
	if errors.Is(err, docs.ErrAlreadyExists) {
		// Another instance created it first: use theirs.
		if d, err = s.docs.Get(ctx, d.Key); err != nil {
			return docs.Doc{}, fmt.Errorf("docs.Get: %w", err)
		}
		return d, nil
	}
	if err != nil {
		return docs.Doc{}, fmt.Errorf("docs.Create: %w", err)
	}
	return d, nil
}

func (s *Store) unwrap(ctx context.Context, d docs.Doc, name string, version int) ([]byte, error) {
	var sd secretDoc
	if err := json.Unmarshal(d.Data, &sd); err != nil {
		return nil, fmt.Errorf("json.Unmarshal secret %s.v%d: %w", name, version, err)
	}
	if sd.V != 1 {
		return nil, fmt.Errorf("secrets: %s.v%d stored in format %d", name, version, sd.V)
	}
	secret, err := s.kek.DecryptWithContext(ctx, sd.Wrapped, ad(name, version))
	if err != nil {
		return nil, fmt.Errorf("kek.Decrypt secret %s.v%d (another KEK?): %w", name, version, err)
	}
	if len(secret) != Size {
		return nil, fmt.Errorf("secrets: %s.v%d holds %d bytes, want %d", name, version, len(secret), Size)
	}
	return secret, nil
}

// Rewrap wraps every stored secret again: unwrapped with from, wrapped
// with to (a KEK rotation; see keys.RewrapKeysets). Secrets that already
// unwrap with to are left as they are.
func Rewrap(ctx context.Context, d docs.Store, from, to keys.KEK) (int, error) {
	found, err := d.Query(ctx, docs.Query{Collection: Collection})
	if err != nil {
		return 0, fmt.Errorf("docs.Query secrets: %w", err)
	}
	n := 0
	for _, doc := range found {
		name, v, ok := strings.Cut(doc.Key.ID, ".v")
		version, err := strconv.Atoi(v)
		if !ok || err != nil || !nameRe.MatchString(name) || version < 1 {
			return n, fmt.Errorf("secrets: unexpected document %q", doc.Key.ID)
		}
		err = d.Update(ctx, doc.Key, func(cur *docs.Doc) (*docs.Doc, error) {
			if cur == nil {
				return nil, nil
			}
			var sd secretDoc
			if err := json.Unmarshal(cur.Data, &sd); err != nil || sd.V != 1 {
				return nil, fmt.Errorf("secrets: %s stored in an unknown format", doc.Key.ID)
			}
			secret, err := from.DecryptWithContext(ctx, sd.Wrapped, ad(name, version))
			if err != nil {
				if _, terr := to.DecryptWithContext(ctx, sd.Wrapped, ad(name, version)); terr == nil {
					same := *cur
					return &same, nil // done by an earlier run
				}
				return nil, fmt.Errorf("kek.Decrypt secret %s: %w", doc.Key.ID, err)
			}
			if sd.Wrapped, err = to.EncryptWithContext(ctx, secret, ad(name, version)); err != nil {
				return nil, fmt.Errorf("kek.Encrypt secret %s: %w", doc.Key.ID, err)
			}
			data, err := json.Marshal(sd)
			if err != nil {
				return nil, err
			}
			next := *cur
			next.Data = data
			return &next, nil
		})
		if err != nil {
			return n, err
		}
		n++
	}
	return n, nil
}
