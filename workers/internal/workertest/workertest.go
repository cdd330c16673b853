// Package workertest is what the workers' tests share: the embedded stores
// a handler runs over, a recording bus, and helpers to classify outcomes and
// forge events. Test support only; no worker imports it from non-test code.
package workertest

import (
	"encoding/json"
	"errors"
	"path/filepath"
	"testing"

	"github.com/cloudevents/sdk-go/v2/event"

	"github.com/lethe-dev/lethe/app/records"
	"github.com/lethe-dev/lethe/events"
	"github.com/lethe-dev/lethe/infra/docs"
	"github.com/lethe-dev/lethe/infra/docs/sqlitedocs"
	"github.com/lethe-dev/lethe/infra/keys"
	"github.com/lethe-dev/lethe/infra/keys/filekek"
	"github.com/lethe-dev/lethe/internal/testbus"
)

// Stores are real embedded adapters in a fresh directory of the test.
type Stores struct {
	Dir    string
	Docs   docs.Store
	Keys   *keys.Keyring
	Events *events.Registry
}

// Open opens Stores in t.TempDir(), closed at the end of the test.
func Open(t testing.TB) *Stores {
	t.Helper()
	dir := t.TempDir()
	store, err := sqlitedocs.Open(t.Context(), filepath.Join(dir, "docs.db"))
	if err != nil {
		t.Fatalf("sqlitedocs.Open: %v", err)
	}
	t.Cleanup(func() { store.Close() })
	kek, err := filekek.Open(filepath.Join(dir, "kek", "kek.bin"))
	if err != nil {
		t.Fatalf("filekek.Open: %v", err)
	}
	reg, err := events.NewRegistry()
	if err != nil {
		t.Fatalf("events.NewRegistry: %v", err)
	}
	return &Stores{Dir: dir, Docs: store, Keys: keys.NewKeyring(kek, keys.NewDocsKeysetStore(store), keys.Options{}), Events: reg}
}

// Seal seals pt for user with ad, failing the test on error.
func (s *Stores) Seal(t *testing.T, user string, pt, ad []byte) []byte {
	t.Helper()
	ct, err := s.Keys.Seal(t.Context(), user, pt, ad)
	if err != nil {
		t.Fatalf("keys.Seal: %v", err)
	}
	return ct
}

// HasKey reports whether user has a stored keyset.
func (s *Stores) HasKey(t *testing.T, user string) bool {
	t.Helper()
	_, err := s.Docs.Get(t.Context(), keys.KeysetKey(user))
	if errors.Is(err, docs.ErrNotFound) {
		return false
	}
	if err != nil {
		t.Fatalf("docs.Get keyset: %v", err)
	}
	return true
}

// Tombstone marks user erased.
func (s *Stores) Tombstone(t *testing.T, user string) {
	t.Helper()
	if err := s.Docs.Put(t.Context(), docs.Doc{Key: records.TombstoneKey(user), Data: []byte(`{}`)}); err != nil {
		t.Fatalf("docs.Put tombstone: %v", err)
	}
}

// UserID is a well-formed user (keyed-hash shape) unique to the test.
func UserID(t *testing.T, name string) string {
	return events.DeriveID("user", t.Name(), name)
}

// Published is one recorded publish; RecordingBus keeps what was
// published, and refuses (keeping nothing) after SetFail.
type (
	Published    = testbus.Published
	RecordingBus = testbus.Recorder
)

// Outcome is what the bus does with a handler's result.
type Outcome string

const (
	Acked     Outcome = "acked"
	Dropped   Outcome = "dropped"
	Permanent Outcome = "permanent"
	Retryable Outcome = "retryable"
)

// Classify maps a handler's error to its outcome, as the bus does.
func Classify(err error) Outcome {
	switch {
	case err == nil:
		return Acked
	case errors.Is(err, events.ErrDropped):
		return Dropped
	case events.IsPermanent(err):
		return Permanent
	default:
		return Retryable
	}
}

// WithData returns a copy of ev whose JSON data fn has edited (a forgery
// that keeps the sender's attributes).
func WithData(t *testing.T, ev event.Event, fn func(m map[string]any)) event.Event {
	t.Helper()
	out := ev.Clone()
	var m map[string]any
	if err := json.Unmarshal(ev.Data(), &m); err != nil {
		t.Fatalf("json.Unmarshal: %v", err)
	}
	fn(m)
	b, err := json.Marshal(m)
	if err != nil {
		t.Fatalf("json.Marshal: %v", err)
	}
	out.DataEncoded = b
	return out
}

// WithAttr returns a copy of ev that fn has edited.
func WithAttr(ev event.Event, fn func(e *event.Event)) event.Event {
	out := ev.Clone()
	fn(&out)
	return out
}
