package keys

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"

	"github.com/lethe-dev/lethe/infra/docs"
)

// DocsKeysetStore keeps wrapped keysets and digest keys in the documents
// store, at users/{user}/keys/dek, and reads erasure tombstones from the global
// tombstones collection (document id = user).
type DocsKeysetStore struct {
	docs docs.Store
}

var _ KeysetStore = (*DocsKeysetStore)(nil)

// NewDocsKeysetStore returns a KeysetStore over s.
func NewDocsKeysetStore(s docs.Store) *DocsKeysetStore { return &DocsKeysetStore{docs: s} }

// KeysetKey is where the user's wrapped keyset lives.
func KeysetKey(user string) docs.Key { return docs.Key{User: user, Collection: "keys", ID: "dek"} }

// TombstoneKey is where the user's erasure tombstone lives.
func TombstoneKey(user string) docs.Key {
	return docs.Key{User: "", Collection: "tombstones", ID: user}
}

// keysetDoc is the stored JSON; Data is JSON by the docs convention, and
// the version lets the wrapping change later: v1 holds the keyset only, v2
// adds the wrapped digest key.
type keysetDoc struct {
	V       int    `json:"v"`
	Wrapped []byte `json:"wrapped"`
	MAC     []byte `json:"mac,omitempty"`
}

func (s *DocsKeysetStore) Load(ctx context.Context, user string) (Wrapped, error) {
	d, err := s.docs.Get(ctx, KeysetKey(user))
	if errors.Is(err, docs.ErrNotFound) {
		return Wrapped{}, ErrNoKey
	}
	if err != nil {
		return Wrapped{}, fmt.Errorf("docs.Get: %w", err)
	}
	var kd keysetDoc
	if err := json.Unmarshal(d.Data, &kd); err != nil {
		return Wrapped{}, fmt.Errorf("json.Unmarshal keyset: %w", err)
	}
	switch {
	case kd.V == 1 && len(kd.Wrapped) > 0:
		return Wrapped{Keyset: kd.Wrapped}, nil
	case kd.V == 2 && len(kd.Wrapped) > 0 && len(kd.MAC) > 0:
		return Wrapped{Keyset: kd.Wrapped, MAC: kd.MAC}, nil
	}
	return Wrapped{}, fmt.Errorf("keys: stored keyset has version %d", kd.V)
}

func (s *DocsKeysetStore) CreateIfAbsent(ctx context.Context, user string, wrapped Wrapped) error {
	kd := keysetDoc{V: 2, Wrapped: wrapped.Keyset, MAC: wrapped.MAC}
	if len(wrapped.MAC) == 0 {
		kd.V = 1
	}
	data, err := json.Marshal(kd)
	if err != nil {
		return fmt.Errorf("json.Marshal: %w", err)
	}
	err = s.docs.Create(ctx, docs.Doc{Key: KeysetKey(user), Data: data})
	if errors.Is(err, docs.ErrAlreadyExists) {
		return ErrExists
	}
	if err != nil {
		return fmt.Errorf("docs.Create: %w", err)
	}
	return nil
}

func (s *DocsKeysetStore) Delete(ctx context.Context, user string) error {
	if err := s.docs.Delete(ctx, KeysetKey(user)); err != nil {
		return fmt.Errorf("docs.Delete: %w", err)
	}
	return nil
}

func (s *DocsKeysetStore) Tombstoned(ctx context.Context, user string) (bool, error) {
	_, err := s.docs.Get(ctx, TombstoneKey(user))
	if errors.Is(err, docs.ErrNotFound) {
		return false, nil
	}
	if err != nil {
		return false, fmt.Errorf("docs.Get: %w", err)
	}
	return true, nil
}
