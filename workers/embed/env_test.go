package embed_test

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"path/filepath"
	"strconv"
	"sync"
	"testing"

	"github.com/cloudevents/sdk-go/v2/event"

	"github.com/lethe-dev/lethe/events"
	"github.com/lethe-dev/lethe/infra/docs"
	"github.com/lethe-dev/lethe/infra/docs/sqlitedocs"
	embedport "github.com/lethe-dev/lethe/infra/embed"
	"github.com/lethe-dev/lethe/infra/embed/hashembed"
	"github.com/lethe-dev/lethe/infra/keys"
	"github.com/lethe-dev/lethe/infra/keys/filekek"
	"github.com/lethe-dev/lethe/infra/records"
	"github.com/lethe-dev/lethe/workers/embed"
)

type published struct {
	topic string
	ev    event.Event
}

// recordingBus collects published events; with fail set it refuses them.
type recordingBus struct {
	mu   sync.Mutex
	evs  []published
	fail error
}

func (b *recordingBus) Publish(_ context.Context, topic string, e event.Event) error {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.fail != nil {
		return b.fail
	}
	b.evs = append(b.evs, published{topic, e.Clone()})
	return nil
}

func (b *recordingBus) setFail(err error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.fail = err
}

func (b *recordingBus) all() []published {
	b.mu.Lock()
	defer b.mu.Unlock()
	return append([]published(nil), b.evs...)
}

// countingEmbedder is the real hashing embedder with a switchable failure
// and a call counter.
type countingEmbedder struct {
	*hashembed.Embedder
	mu    sync.Mutex
	err   error
	calls int
}

func (c *countingEmbedder) Embed(ctx context.Context, texts []string, kind embedport.Kind) ([][]float32, error) {
	c.mu.Lock()
	c.calls++
	err := c.err
	c.mu.Unlock()
	if err != nil {
		return nil, err
	}
	return c.Embedder.Embed(ctx, texts, kind)
}

func (c *countingEmbedder) set(err error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.err = err
}

func (c *countingEmbedder) count() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.calls
}

type env struct {
	docs     *sqlitedocs.Store
	keys     *keys.Keyring
	reg      *events.Registry
	bus      *recordingBus
	embedder *countingEmbedder
	w        *embed.Worker
}

func newEnv(t *testing.T) *env {
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
	e := &env{
		docs:     store,
		keys:     keys.NewKeyring(kek, keys.NewDocsKeysetStore(store), keys.Options{}),
		reg:      reg,
		bus:      &recordingBus{},
		embedder: &countingEmbedder{Embedder: hashembed.New()},
	}
	e.w = &embed.Worker{Docs: e.docs, Keys: e.keys, Embedder: e.embedder, Bus: e.bus, Events: e.reg}
	return e
}

func userID(t *testing.T, name string) string {
	return events.DeriveID("user", t.Name(), name)
}

// transcriptEvent builds the transcript.created the transcribe worker would
// publish: id derived from the chunk, text sealed for (user, that id).
func (e *env) transcriptEvent(t *testing.T, user, cid string, seq int, text string) event.Event {
	t.Helper()
	id := events.DeriveID("transcript", user, cid, strconv.Itoa(seq), events.DeriveID("sha", text))
	return e.transcriptEventSealed(t, id, user, cid, seq, e.seal(t, user, []byte(text), keys.AD(user, "events/"+events.TypeTranscriptCreated, id, "sealed_text")))
}

func (e *env) seal(t *testing.T, user string, pt, ad []byte) []byte {
	t.Helper()
	ct, err := e.keys.Seal(t.Context(), user, pt, ad)
	if err != nil {
		t.Fatalf("keys.Seal: %v", err)
	}
	return ct
}

func (e *env) transcriptEventSealed(t *testing.T, id, user, cid string, seq int, sealed []byte) event.Event {
	t.Helper()
	ev, err := e.reg.NewWithID(id, events.TypeTranscriptCreated,
		events.Subject(user, "conversations", cid, "chunks", strconv.Itoa(seq)),
		events.TranscriptCreated{User: user, ConversationID: cid, Seq: seq, SegmentID: records.ChunkID(cid, seq),
			SealedText: base64.StdEncoding.EncodeToString(sealed), Model: "fake-stt-v1", DurationMS: 1000})
	if err != nil {
		t.Fatalf("NewWithID: %v", err)
	}
	return ev
}

func (e *env) hasKey(t *testing.T, user string) bool {
	t.Helper()
	_, err := e.docs.Get(t.Context(), keys.KeysetKey(user))
	if errors.Is(err, docs.ErrNotFound) {
		return false
	}
	if err != nil {
		t.Fatalf("docs.Get keyset: %v", err)
	}
	return true
}

func (e *env) tombstone(t *testing.T, user string) {
	t.Helper()
	if err := e.docs.Put(t.Context(), docs.Doc{Key: records.TombstoneKey(user), Data: []byte(`{}`)}); err != nil {
		t.Fatalf("docs.Put tombstone: %v", err)
	}
}

// docCount counts the user's documents (the embed worker writes none).
func (e *env) docCount(t *testing.T, user string) int {
	t.Helper()
	n, err := e.docs.CountUser(t.Context(), user)
	if err != nil {
		t.Fatalf("CountUser: %v", err)
	}
	return n
}

type outcome string

const (
	acked     outcome = "acked"
	dropped   outcome = "dropped"
	permanent outcome = "permanent"
	retryable outcome = "retryable"
)

func classify(err error) outcome {
	switch {
	case err == nil:
		return acked
	case errors.Is(err, events.ErrDropped):
		return dropped
	case events.IsPermanent(err):
		return permanent
	default:
		return retryable
	}
}

func withData(t *testing.T, ev event.Event, fn func(m map[string]any)) event.Event {
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

func withAttr(ev event.Event, fn func(e *event.Event)) event.Event {
	out := ev.Clone()
	fn(&out)
	return out
}
