package store_test

import (
	"context"
	"encoding/base64"
	"errors"
	"path/filepath"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/cloudevents/sdk-go/v2/event"

	"github.com/lethe-dev/lethe/app/records"
	"github.com/lethe-dev/lethe/events"
	"github.com/lethe-dev/lethe/infra/docs"
	"github.com/lethe-dev/lethe/infra/embed/hashembed"
	"github.com/lethe-dev/lethe/infra/keys"
	"github.com/lethe-dev/lethe/infra/vectors"
	"github.com/lethe-dev/lethe/infra/vectors/flatvectors"
	"github.com/lethe-dev/lethe/workers/internal/workertest"
	"github.com/lethe-dev/lethe/workers/store"
)

// switchableIndex is the real index's driver with an Upsert that can be
// made to fail, as a vector service that is down.
type switchableIndex struct {
	vectors.Driver
	mu   sync.Mutex
	fail error
}

func (s *switchableIndex) Upsert(ctx context.Context, ns string, recs []vectors.Record) error {
	s.mu.Lock()
	err := s.fail
	s.mu.Unlock()
	if err != nil {
		return err
	}
	return s.Driver.Upsert(ctx, ns, recs)
}

func (s *switchableIndex) SetFail(err error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.fail = err
}

type env struct {
	*workertest.Stores
	docs docs.Store
	vecs vectors.Index
	sw   *switchableIndex
	keys *keys.Keyring
	reg  *events.Registry
	now  time.Time
	w    *store.Worker
}

func newEnv(t *testing.T) *env {
	t.Helper()
	st := workertest.Open(t)
	dir := st.Dir
	idx, err := flatvectors.Open(filepath.Join(dir, "vectors"))
	if err != nil {
		t.Fatalf("flatvectors.Open: %v", err)
	}
	t.Cleanup(func() { idx.Close() })
	e := &env{
		Stores: st,
		docs:   st.Docs,
		sw:     &switchableIndex{Driver: idx.Driver()},
		keys:   st.Keys,
		reg:    st.Events,
		now:    time.Date(2026, 11, 3, 10, 0, 0, 0, time.UTC),
	}
	e.vecs = vectors.New(e.sw)
	e.w = &store.Worker{Docs: e.docs, Keys: e.keys, Vectors: e.vecs, Events: e.reg, Now: func() time.Time { return e.now }}
	return e
}

// seedChunk writes the record of a transcribed chunk.
func (e *env) seedChunk(t *testing.T, user, cid string, seq int, status string) records.Chunk {
	t.Helper()
	sum := events.DeriveID("audio", user, cid, strconv.Itoa(seq)) + events.DeriveID("audio2", user, cid, strconv.Itoa(seq))
	c := records.Chunk{
		ConversationID: cid, Seq: seq, Status: status,
		BlobKey: records.AudioKey(user, cid, seq, sum), ContentType: "audio/wav", SampleRate: 16000,
		Digest: sum, Size: 3200, Origin: "app", EventID: records.ChunkEventID(user, cid, seq, sum), Published: true,
		ReceivedAt: e.now.Add(-time.Hour), UpdatedAt: e.now.Add(-time.Minute),
	}
	e.putChunk(t, user, c)
	return c
}

func (e *env) putChunk(t *testing.T, user string, c records.Chunk) {
	t.Helper()
	d, err := c.Doc(user)
	if err != nil {
		t.Fatal(err)
	}
	if err := e.docs.Put(t.Context(), d); err != nil {
		t.Fatalf("docs.Put chunk: %v", err)
	}
}

func (e *env) chunk(t *testing.T, user, cid string, seq int) records.Chunk {
	t.Helper()
	d, err := e.docs.Get(t.Context(), records.ChunkKey(user, cid, seq))
	if err != nil {
		t.Fatalf("docs.Get chunk: %v", err)
	}
	c, err := records.ChunkFrom(d)
	if err != nil {
		t.Fatal(err)
	}
	return c
}

func (e *env) chunkData(t *testing.T, user, cid string, seq int) []byte {
	t.Helper()
	d, err := e.docs.Get(t.Context(), records.ChunkKey(user, cid, seq))
	if errors.Is(err, docs.ErrNotFound) {
		return nil
	}
	if err != nil {
		t.Fatal(err)
	}
	return d.Data
}

func embeddingID(user, cid string, seq int) string {
	return events.DeriveID("embedding", user, cid, strconv.Itoa(seq), hashembed.ID)
}

func vectorAD(user, id string) []byte {
	return keys.AD(user, "events/"+events.TypeEmbeddingCreated, id, "sealed_vector")
}

// embeddingEvent is what the embed worker publishes for vec.
func (e *env) embeddingEvent(t *testing.T, user, cid string, seq int, vec []float32) event.Event {
	t.Helper()
	id := embeddingID(user, cid, seq)
	return e.embeddingEventSealed(t, id, user, cid, seq, hashembed.ID, len(vec), e.Seal(t, user, events.EncodeVector(vec), vectorAD(user, id)))
}

func (e *env) embeddingEventSealed(t *testing.T, id, user, cid string, seq int, embedder string, dim int, sealed []byte) event.Event {
	t.Helper()
	ev, err := e.reg.NewWithID(id, events.TypeEmbeddingCreated,
		events.Subject(user, "conversations", cid, "chunks", strconv.Itoa(seq)),
		events.EmbeddingCreated{User: user, ConversationID: cid, Seq: seq, VectorID: records.VectorID(cid, seq),
			Embedder: embedder, Dim: dim, SealedVector: base64.StdEncoding.EncodeToString(sealed)})
	if err != nil {
		t.Fatalf("NewWithID: %v", err)
	}
	return ev
}

func (e *env) count(t *testing.T, user string) int {
	t.Helper()
	n, err := e.vecs.Count(t.Context(), user)
	if err != nil {
		t.Fatalf("vectors.Count: %v", err)
	}
	return n
}

func (e *env) vectorSpace(t *testing.T, user string) (records.VectorSpace, bool) {
	t.Helper()
	vs, ok, err := records.ReadVectorSpace(t.Context(), e.docs, user)
	if err != nil {
		t.Fatal(err)
	}
	return vs, ok
}
