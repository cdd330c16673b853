package store_test

import (
	"bytes"
	"crypto/rand"
	"encoding/json"
	"errors"
	"math"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/cloudevents/sdk-go/v2/event"

	"github.com/lethe-dev/lethe/app/records"
	"github.com/lethe-dev/lethe/events"
	"github.com/lethe-dev/lethe/infra/docs"
	"github.com/lethe-dev/lethe/infra/embed/hashembed"
	"github.com/lethe-dev/lethe/workers/internal/workertest"
)

const (
	cid  = "conv-1"
	text = "hello world this is a test of the memory pipeline"
)

func TestHandleHappyPath(t *testing.T) {
	e := newEnv(t)
	user := workertest.UserID(t, "a")
	c := e.seedChunk(t, user, cid, 5, records.StatusTranscribed)
	vec := hashembed.Vector(text)
	if err := e.w.Handle(t.Context(), e.embeddingEvent(t, user, cid, 5, vec)); err != nil {
		t.Fatalf("Handle: %v", err)
	}
	ids, err := e.vecs.ListIDs(t.Context(), user, records.VectorPrefix(cid))
	if err != nil {
		t.Fatal(err)
	}
	if len(ids) != 1 || ids[0] != records.VectorID(cid, 5) {
		t.Fatalf("ids = %v, want [%s]", ids, records.VectorID(cid, 5))
	}
	matches, err := e.vecs.Query(t.Context(), user, hashembed.Vector("memory pipeline"), 5, nil)
	if err != nil {
		t.Fatal(err)
	}
	if len(matches) != 1 || matches[0].ID != records.VectorID(cid, 5) || matches[0].Score <= 0 {
		t.Fatalf("query = %+v", matches)
	}
	md := matches[0].Metadata
	if md["conversation_id"] != cid || md["embedder"] != hashembed.ID || toInt(md["seq"]) != 5 ||
		toInt(md["created_at"]) != c.ReceivedAt.Unix() || len(md) != 4 {
		t.Errorf("metadata = %v", md)
	}
	for k, v := range md {
		if s, ok := v.(string); ok && strings.Contains(s, "hello") {
			t.Errorf("metadata %s carries content", k)
		}
	}
	got := e.chunk(t, user, cid, 5)
	if got.Status != records.StatusIndexed || !got.UpdatedAt.Equal(e.now) {
		t.Errorf("chunk %q at %v, want indexed at %v", got.Status, got.UpdatedAt, e.now)
	}
	if vs, ok := e.vectorSpace(t, user); !ok || vs != (records.VectorSpace{Embedder: hashembed.ID, Dim: hashembed.Dim}) {
		t.Errorf("vector space = %+v, %v", vs, ok)
	}
	// Another user sees nothing of it.
	if n := e.count(t, workertest.UserID(t, "b")); n != 0 {
		t.Errorf("other namespace holds %d vectors", n)
	}
}

func toInt(v any) int64 {
	switch x := v.(type) {
	case int64:
		return x
	case float64:
		return int64(x)
	case int:
		return int64(x)
	}
	return math.MinInt64
}

// assertNothing: no vector, the chunk as before, the namespace unclaimed.
func assertNothing(t *testing.T, e *env, user string, seq int, before []byte) {
	t.Helper()
	if n := e.count(t, user); n != 0 {
		t.Errorf("%d vectors written", n)
	}
	if !bytes.Equal(e.chunkData(t, user, cid, seq), before) {
		t.Errorf("chunk changed: %s", e.chunkData(t, user, cid, seq))
	}
	if vs, ok := e.vectorSpace(t, user); ok {
		t.Errorf("a rejected event claimed the user's vector space for %+v", vs)
	}
}

func TestHandleRejectsMalformed(t *testing.T) {
	e := newEnv(t)
	user, other := workertest.UserID(t, "a"), workertest.UserID(t, "b")
	e.seedChunk(t, user, cid, 1, records.StatusTranscribed)
	valid := e.embeddingEvent(t, user, cid, 1, hashembed.Vector(text))
	before := e.chunkData(t, user, cid, 1)
	transcriptEv, err := e.reg.NewWithID(events.NewID(), events.TypeTranscriptCreated,
		events.Subject(user, "conversations", cid, "chunks", "1"),
		events.TranscriptCreated{User: user, ConversationID: cid, Seq: 1, SegmentID: records.ChunkID(cid, 1),
			SealedText: "AAAA", Model: "m", DurationMS: 1})
	if err != nil {
		t.Fatal(err)
	}
	cases := []struct {
		name string
		ev   event.Event
	}{
		{"unknown type", workertest.WithAttr(valid, func(e *event.Event) { e.SetType("dev.lethe.embedding.created.v2") })},
		{"wrong type for this worker", transcriptEv},
		{"bad user format", workertest.WithAttr(workertest.WithData(t, valid, func(m map[string]any) { m["user"] = "x" }),
			func(e *event.Event) { e.SetSubject("users/x/conversations/" + cid) })},
		{"unknown field", workertest.WithData(t, valid, func(m map[string]any) { m["values"] = []float32{1, 2} })},
		{"missing sealed_vector", workertest.WithData(t, valid, func(m map[string]any) { delete(m, "sealed_vector") })},
		{"missing dim", workertest.WithData(t, valid, func(m map[string]any) { delete(m, "dim") })},
		{"vector_id not cid#seq shaped", workertest.WithData(t, valid, func(m map[string]any) { m["vector_id"] = "conv-1:0000001" })},
		{"dim zero", workertest.WithData(t, valid, func(m map[string]any) { m["dim"] = 0 })},
		{"dim over bound", workertest.WithData(t, valid, func(m map[string]any) { m["dim"] = 4097 })},
		{"embedder with spaces", workertest.WithData(t, valid, func(m map[string]any) { m["embedder"] = "hash embed" })},
		{"sealed_vector not base64", workertest.WithData(t, valid, func(m map[string]any) { m["sealed_vector"] = "@@@@" })},
		{"oversized sealed_vector", workertest.WithData(t, valid, func(m map[string]any) { m["sealed_vector"] = strings.Repeat("QUJD", 50001) })},
		{"oversized embedder", workertest.WithData(t, valid, func(m map[string]any) { m["embedder"] = strings.Repeat("e", 201) })},
		{"data not JSON", workertest.WithAttr(valid, func(e *event.Event) { e.DataEncoded = []byte("\x00\x01binary") })},
		{"no data", workertest.WithAttr(valid, func(e *event.Event) { e.DataEncoded = nil })},
		{"missing subject", workertest.WithAttr(valid, func(e *event.Event) { e.SetSubject("") })},
		{"missing time", workertest.WithAttr(valid, func(e *event.Event) { e.SetTime(time.Time{}) })},
		{"missing dataschema", workertest.WithAttr(valid, func(e *event.Event) { e.SetDataSchema("") })},
		{"subject names another user", workertest.WithAttr(valid, func(e *event.Event) {
			e.SetSubject(events.Subject(other, "conversations", cid, "chunks", "1"))
		})},
		{"payload names another user than the subject", workertest.WithData(t, valid, func(m map[string]any) { m["user"] = other })},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			err := e.w.Handle(t.Context(), tc.ev)
			if got := workertest.Classify(err); got != workertest.Permanent {
				t.Errorf("Handle = %v (%s), want permanent", err, got)
			}
			assertNothing(t, e, user, 1, before)
			if n := e.count(t, other); n != 0 {
				t.Errorf("%d vectors in the other namespace", n)
			}
			if e.HasKey(t, other) {
				t.Error("a key was created for the other user")
			}
		})
	}
}

func TestHandleForged(t *testing.T) {
	garbage := make([]byte, 48)
	rand.Read(garbage)
	vec := hashembed.Vector(text)
	cases := []struct {
		name  string
		build func(e *env, t *testing.T, user, other string) event.Event
	}{
		{"sealed with another user's key", func(e *env, t *testing.T, user, other string) event.Event {
			id := embeddingID(user, cid, 1)
			return e.embeddingEventSealed(t, id, user, cid, 1, hashembed.ID, hashembed.Dim, e.Seal(t, other, events.EncodeVector(vec), vectorAD(user, id)))
		}},
		{"sealed for another user's associated data", func(e *env, t *testing.T, user, other string) event.Event {
			id := embeddingID(user, cid, 1)
			return e.embeddingEventSealed(t, id, user, cid, 1, hashembed.ID, hashembed.Dim, e.Seal(t, user, events.EncodeVector(vec), vectorAD(other, id)))
		}},
		{"sealed for another event id", func(e *env, t *testing.T, user, other string) event.Event {
			id := embeddingID(user, cid, 1)
			return e.embeddingEventSealed(t, id, user, cid, 1, hashembed.ID, hashembed.Dim, e.Seal(t, user, events.EncodeVector(vec), vectorAD(user, embeddingID(user, cid, 2))))
		}},
		{"garbage ciphertext", func(e *env, t *testing.T, user, other string) event.Event {
			return e.embeddingEventSealed(t, events.NewID(), user, cid, 1, hashembed.ID, hashembed.Dim, garbage)
		}},
		{"garbage ciphertext from another embedder", func(e *env, t *testing.T, user, other string) event.Event {
			return e.embeddingEventSealed(t, events.NewID(), user, cid, 1, "evil-embedder-v1", 3, garbage)
		}},
		{"vector_id of another seq", func(e *env, t *testing.T, user, other string) event.Event {
			return workertest.WithData(t, e.embeddingEvent(t, user, cid, 1, vec), func(m map[string]any) { m["vector_id"] = records.VectorID(cid, 2) })
		}},
		{"vector_id of another conversation", func(e *env, t *testing.T, user, other string) event.Event {
			return workertest.WithData(t, e.embeddingEvent(t, user, cid, 1, vec), func(m map[string]any) { m["vector_id"] = records.VectorID("conv-2", 1) })
		}},
		{"vector_id without zero padding", func(e *env, t *testing.T, user, other string) event.Event {
			return workertest.WithData(t, e.embeddingEvent(t, user, cid, 1, vec), func(m map[string]any) { m["vector_id"] = cid + "#1" })
		}},
		{"fewer dimensions than declared", func(e *env, t *testing.T, user, other string) event.Event {
			id := embeddingID(user, cid, 1)
			return e.embeddingEventSealed(t, id, user, cid, 1, hashembed.ID, hashembed.Dim, e.Seal(t, user, events.EncodeVector(vec[:10]), vectorAD(user, id)))
		}},
		{"non-finite values", func(e *env, t *testing.T, user, other string) event.Event {
			bad := append([]float32(nil), vec...)
			bad[7] = float32(math.NaN())
			id := embeddingID(user, cid, 1)
			return e.embeddingEventSealed(t, id, user, cid, 1, hashembed.ID, hashembed.Dim, e.Seal(t, user, events.EncodeVector(bad), vectorAD(user, id)))
		}},
		{"partial float", func(e *env, t *testing.T, user, other string) event.Event {
			id := embeddingID(user, cid, 1)
			raw := append(events.EncodeVector(vec), 0x01)
			return e.embeddingEventSealed(t, id, user, cid, 1, hashembed.ID, hashembed.Dim, e.Seal(t, user, raw, vectorAD(user, id)))
		}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			e := newEnv(t)
			user, other := workertest.UserID(t, "a"), workertest.UserID(t, "b")
			e.seedChunk(t, user, cid, 1, records.StatusTranscribed)
			e.Seal(t, user, []byte("x"), []byte("x")) // both users have keys
			e.Seal(t, other, []byte("x"), []byte("x"))
			ev := tc.build(e, t, user, other)
			before := e.chunkData(t, user, cid, 1)
			err := e.w.Handle(t.Context(), ev)
			if got := workertest.Classify(err); got != workertest.Permanent && got != workertest.Dropped {
				t.Errorf("Handle = %v (%s), want permanent or dropped", err, got)
			}
			assertNothing(t, e, user, 1, before)
		})
	}
}

// A poison event must not lock the user's namespace to its embedder: the
// genuine vector that follows is still indexed.
func TestHandleForgedDoesNotClaimVectorSpace(t *testing.T) {
	e := newEnv(t)
	user := workertest.UserID(t, "a")
	e.seedChunk(t, user, cid, 1, records.StatusTranscribed)
	garbage := make([]byte, 48)
	rand.Read(garbage)
	forged := e.embeddingEventSealed(t, events.NewID(), user, cid, 1, "evil-embedder-v1", 3, garbage)
	if got := workertest.Classify(e.w.Handle(t.Context(), forged)); got != workertest.Permanent && got != workertest.Dropped {
		t.Fatalf("forged event: %s", got)
	}
	if err := e.w.Handle(t.Context(), e.embeddingEvent(t, user, cid, 1, hashembed.Vector(text))); err != nil {
		t.Fatalf("genuine event after a forged one: %v", err)
	}
	if n := e.count(t, user); n != 1 {
		t.Errorf("%d vectors", n)
	}
}

func TestHandleReplay(t *testing.T) {
	t.Run("twice in a row", func(t *testing.T) {
		e := newEnv(t)
		user := workertest.UserID(t, "a")
		e.seedChunk(t, user, cid, 1, records.StatusTranscribed)
		ev := e.embeddingEvent(t, user, cid, 1, hashembed.Vector(text))
		if err := e.w.Handle(t.Context(), ev); err != nil {
			t.Fatal(err)
		}
		first := e.chunkData(t, user, cid, 1)
		e.now = e.now.Add(time.Hour)
		if err := e.w.Handle(t.Context(), ev); err != nil {
			t.Fatalf("redelivery: %v", err)
		}
		if n := e.count(t, user); n != 1 {
			t.Errorf("%d vectors, want 1", n)
		}
		if !bytes.Equal(e.chunkData(t, user, cid, 1), first) {
			t.Error("redelivery rewrote the indexed chunk")
		}
	})
	t.Run("concurrently", func(t *testing.T) {
		e := newEnv(t)
		user := workertest.UserID(t, "a")
		e.seedChunk(t, user, cid, 1, records.StatusTranscribed)
		ev := e.embeddingEvent(t, user, cid, 1, hashembed.Vector(text))
		const n = 8
		errs := make([]error, n)
		var wg sync.WaitGroup
		for i := range n {
			wg.Go(func() { errs[i] = e.w.Handle(t.Context(), ev) })
		}
		wg.Wait()
		for i, err := range errs {
			if err != nil {
				t.Errorf("delivery %d: %v", i, err)
			}
		}
		if n := e.count(t, user); n != 1 {
			t.Errorf("%d vectors, want 1", n)
		}
		if st := e.chunk(t, user, cid, 1).Status; st != records.StatusIndexed {
			t.Errorf("status %q", st)
		}
	})
	t.Run("chunk already failed", func(t *testing.T) {
		e := newEnv(t)
		user := workertest.UserID(t, "a")
		e.seedChunk(t, user, cid, 1, records.StatusFailed)
		before := e.chunkData(t, user, cid, 1)
		if err := e.w.Handle(t.Context(), e.embeddingEvent(t, user, cid, 1, hashembed.Vector(text))); err != nil {
			t.Errorf("Handle: %v", err)
		}
		if n := e.count(t, user); n != 0 {
			t.Errorf("a failed chunk got %d vectors", n)
		}
		if !bytes.Equal(e.chunkData(t, user, cid, 1), before) {
			t.Error("failed chunk changed")
		}
	})
}

func TestHandleCrossUser(t *testing.T) {
	e := newEnv(t)
	a, b := workertest.UserID(t, "a"), workertest.UserID(t, "b")
	e.seedChunk(t, a, cid, 1, records.StatusTranscribed)
	if err := e.w.Handle(t.Context(), e.embeddingEvent(t, a, cid, 1, hashembed.Vector(text))); err != nil {
		t.Fatal(err)
	}
	aChunk := e.chunkData(t, a, cid, 1)

	// B names A's conversation: B has no such chunk.
	if got := workertest.Classify(e.w.Handle(t.Context(), e.embeddingEvent(t, b, cid, 1, hashembed.Vector("something else")))); got != workertest.Dropped {
		t.Errorf("outcome %s, want dropped", got)
	}
	// B in the payload, A in the subject.
	mixed := workertest.WithData(t, e.embeddingEvent(t, a, cid, 1, hashembed.Vector(text)), func(m map[string]any) { m["user"] = b })
	var in events.EmbeddingCreated
	if err := e.reg.Decode(mixed, &in); !events.IsPermanent(err) {
		t.Errorf("Decode = %v, want permanent", err)
	}
	if got := workertest.Classify(e.w.Handle(t.Context(), mixed)); got != workertest.Permanent {
		t.Errorf("outcome %s, want permanent", got)
	}
	if n := e.count(t, b); n != 0 {
		t.Errorf("B's namespace has %d vectors", n)
	}
	if n := e.count(t, a); n != 1 {
		t.Errorf("A's namespace has %d vectors", n)
	}
	if !bytes.Equal(e.chunkData(t, a, cid, 1), aChunk) {
		t.Error("A's chunk changed")
	}
	if _, ok := e.vectorSpace(t, b); ok {
		t.Error("B's vector space claimed")
	}
}

func TestHandleTombstoned(t *testing.T) {
	t.Run("user with a key", func(t *testing.T) {
		e := newEnv(t)
		user := workertest.UserID(t, "a")
		e.seedChunk(t, user, cid, 1, records.StatusTranscribed)
		ev := e.embeddingEvent(t, user, cid, 1, hashembed.Vector(text))
		e.Tombstone(t, user)
		before := e.chunkData(t, user, cid, 1)
		if got := workertest.Classify(e.w.Handle(t.Context(), ev)); got != workertest.Dropped {
			t.Errorf("outcome %s, want dropped", got)
		}
		assertNothing(t, e, user, 1, before)
	})
	t.Run("user without a key", func(t *testing.T) {
		e := newEnv(t)
		user, other := workertest.UserID(t, "a"), workertest.UserID(t, "b")
		e.seedChunk(t, user, cid, 1, records.StatusTranscribed)
		id := embeddingID(user, cid, 1)
		ev := e.embeddingEventSealed(t, id, user, cid, 1, hashembed.ID, hashembed.Dim, e.Seal(t, other, []byte("xxxx"), vectorAD(user, id)))
		e.Tombstone(t, user)
		before := e.chunkData(t, user, cid, 1)
		if got := workertest.Classify(e.w.Handle(t.Context(), ev)); got != workertest.Dropped {
			t.Errorf("outcome %s, want dropped", got)
		}
		assertNothing(t, e, user, 1, before)
		if e.HasKey(t, user) {
			t.Error("a key was created for a tombstoned user")
		}
	})
	t.Run("key shredded", func(t *testing.T) {
		e := newEnv(t)
		user := workertest.UserID(t, "a")
		e.seedChunk(t, user, cid, 1, records.StatusTranscribed)
		ev := e.embeddingEvent(t, user, cid, 1, hashembed.Vector(text))
		if err := e.keys.Shred(t.Context(), user); err != nil {
			t.Fatal(err)
		}
		if got := workertest.Classify(e.w.Handle(t.Context(), ev)); got != workertest.Dropped {
			t.Errorf("outcome %s, want dropped", got)
		}
		if n := e.count(t, user); n != 0 {
			t.Errorf("%d vectors", n)
		}
		if e.HasKey(t, user) {
			t.Error("key re-created")
		}
	})
}

func TestHandleEmbedderMismatch(t *testing.T) {
	for _, vs := range []records.VectorSpace{
		{Embedder: "text-embedding-3-small", Dim: hashembed.Dim},
		{Embedder: hashembed.ID, Dim: 768},
	} {
		t.Run(vs.Embedder, func(t *testing.T) {
			e := newEnv(t)
			user := workertest.UserID(t, "a")
			e.seedChunk(t, user, cid, 1, records.StatusTranscribed)
			data, err := json.Marshal(vs)
			if err != nil {
				t.Fatal(err)
			}
			if err := e.docs.Put(t.Context(), docs.Doc{Key: records.VectorSpaceKey(user), Data: data}); err != nil {
				t.Fatal(err)
			}
			before := e.chunkData(t, user, cid, 1)
			err = e.w.Handle(t.Context(), e.embeddingEvent(t, user, cid, 1, hashembed.Vector(text)))
			if got := workertest.Classify(err); got != workertest.Permanent {
				t.Errorf("Handle = %v (%s), want permanent", err, got)
			}
			if n := e.count(t, user); n != 0 {
				t.Errorf("%d vectors mixed into the namespace", n)
			}
			if !bytes.Equal(e.chunkData(t, user, cid, 1), before) {
				t.Error("chunk changed")
			}
			if got, _ := e.vectorSpace(t, user); got != vs {
				t.Errorf("vector space overwritten: %+v", got)
			}
		})
	}
}

func TestHandleFailures(t *testing.T) {
	t.Run("chunk record gone", func(t *testing.T) {
		e := newEnv(t)
		user := workertest.UserID(t, "a")
		if got := workertest.Classify(e.w.Handle(t.Context(), e.embeddingEvent(t, user, cid, 1, hashembed.Vector(text)))); got != workertest.Dropped {
			t.Errorf("outcome %s, want dropped", got)
		}
		assertNothing(t, e, user, 1, nil)
	})
	t.Run("vector index down is retried", func(t *testing.T) {
		e := newEnv(t)
		user := workertest.UserID(t, "a")
		e.seedChunk(t, user, cid, 1, records.StatusTranscribed)
		ev := e.embeddingEvent(t, user, cid, 1, hashembed.Vector(text))
		e.sw.SetFail(errors.New("503 from the index"))
		if got := workertest.Classify(e.w.Handle(t.Context(), ev)); got != workertest.Retryable {
			t.Errorf("outcome %s, want retryable", got)
		}
		if st := e.chunk(t, user, cid, 1).Status; st != records.StatusTranscribed {
			t.Errorf("status %q before the vector is stored", st)
		}
		e.sw.SetFail(nil)
		if err := e.w.Handle(t.Context(), ev); err != nil {
			t.Fatalf("redelivery: %v", err)
		}
		if n := e.count(t, user); n != 1 {
			t.Errorf("%d vectors", n)
		}
		if st := e.chunk(t, user, cid, 1).Status; st != records.StatusIndexed {
			t.Errorf("status %q", st)
		}
	})
}

// A transcript without a single word (e.g. "..." from a recogniser) embeds
// to the zero vector, which no index accepts. It has nothing to search, as
// silence: it must end final, not be retried until the dead letter.
func TestHandleZeroVector(t *testing.T) {
	e := newEnv(t)
	user := workertest.UserID(t, "a")
	e.seedChunk(t, user, cid, 1, records.StatusTranscribed)
	zero := hashembed.Vector("... ?!")
	for _, x := range zero {
		if x != 0 {
			t.Fatal("hashembed no longer maps punctuation to the zero vector; pick another input")
		}
	}
	err := e.w.Handle(t.Context(), e.embeddingEvent(t, user, cid, 1, zero))
	if got := workertest.Classify(err); got == workertest.Retryable {
		t.Errorf("Handle = %v: a zero vector is retried forever", err)
	}
	if n := e.count(t, user); n != 0 {
		t.Errorf("%d vectors", n)
	}
	if st := e.chunk(t, user, cid, 1).Status; st != records.StatusIndexed && st != records.StatusFailed {
		t.Errorf("status %q, want final", st)
	}
}
