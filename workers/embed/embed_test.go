package embed_test

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/base64"
	"errors"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/cloudevents/sdk-go/v2/event"

	"github.com/lethe-dev/lethe/app/records"
	"github.com/lethe-dev/lethe/events"
	embedport "github.com/lethe-dev/lethe/infra/embed"
	"github.com/lethe-dev/lethe/infra/embed/hashembed"
	"github.com/lethe-dev/lethe/infra/keys"
	"github.com/lethe-dev/lethe/workers/internal/workertest"
)

const (
	cid  = "conv-1"
	text = "hello world this is a test of the memory pipeline"
)

// checkEmbeddingEvent asserts p is the embedding.created of (user, cid,
// seq) with the vector of text, sealed for this user and this event id.
func checkEmbeddingEvent(t *testing.T, e *env, p workertest.Published, user string, seq int) {
	t.Helper()
	if p.Topic != events.TopicEmbeddings {
		t.Errorf("topic = %q", p.Topic)
	}
	ev := p.Event
	if ev.Type() != events.TypeEmbeddingCreated {
		t.Errorf("type = %q", ev.Type())
	}
	wantID := events.DeriveID("embedding", user, cid, strconv.Itoa(seq), hashembed.ID)
	if ev.ID() != wantID {
		t.Errorf("id = %q, want %q", ev.ID(), wantID)
	}
	if want := events.Subject(user, "conversations", cid, "chunks", strconv.Itoa(seq)); ev.Subject() != want {
		t.Errorf("subject = %q, want %q", ev.Subject(), want)
	}
	var got events.EmbeddingCreated
	if err := e.reg.Decode(ev, &got); err != nil {
		t.Fatalf("published event does not decode: %v", err)
	}
	if got.User != user || got.ConversationID != cid || got.Seq != seq || got.VectorID != records.VectorID(cid, seq) ||
		got.Embedder != hashembed.ID || got.Dim != hashembed.Dim {
		t.Errorf("payload = %+v", got)
	}
	sealed, err := base64.StdEncoding.DecodeString(got.SealedVector)
	if err != nil {
		t.Fatal(err)
	}
	raw, err := e.keys.Open(t.Context(), user, sealed, keys.AD(user, "events/"+events.TypeEmbeddingCreated, ev.ID(), "sealed_vector"))
	if err != nil {
		t.Fatalf("open sealed_vector: %v", err)
	}
	vec, err := events.DecodeVector(raw)
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(vec, hashembed.Vector(text)) {
		t.Error("sealed vector is not the embedding of the transcript")
	}
}

func TestHandleHappyPath(t *testing.T) {
	e := newEnv(t)
	user := workertest.UserID(t, "a")
	ev := e.transcriptEvent(t, user, cid, 4, text)
	docsBefore := e.docCount(t, user)
	if err := e.w.Handle(t.Context(), ev); err != nil {
		t.Fatalf("Handle: %v", err)
	}
	pubs := e.bus.All()
	if len(pubs) != 1 {
		t.Fatalf("%d events, want 1", len(pubs))
	}
	checkEmbeddingEvent(t, e, pubs[0], user, 4)
	if n := e.docCount(t, user); n != docsBefore {
		t.Errorf("embed wrote %d documents; it writes none", n-docsBefore)
	}
}

func TestHandleRejectsMalformed(t *testing.T) {
	e := newEnv(t)
	user, other := workertest.UserID(t, "a"), workertest.UserID(t, "b")
	valid := e.transcriptEvent(t, user, cid, 1, text)
	chunkEv, err := e.reg.NewWithID(events.NewID(), events.TypeChunkReceived,
		events.Subject(user, "conversations", cid, "chunks", "1"),
		events.ChunkReceived{User: user, ConversationID: cid, Seq: 1, BlobKey: "users/x/audio/y", ContentType: "audio/wav",
			Digest: strings.Repeat("0", 64), Size: 1, Origin: "app", ReceivedAt: time.Now().UTC()})
	if err != nil {
		t.Fatal(err)
	}
	cases := []struct {
		name string
		ev   event.Event
	}{
		{"unknown type", workertest.WithAttr(valid, func(e *event.Event) { e.SetType("dev.lethe.transcript.deleted.v1") })},
		{"wrong type for this worker", chunkEv},
		{"bad user format", workertest.WithAttr(workertest.WithData(t, valid, func(m map[string]any) { m["user"] = "bob" }),
			func(e *event.Event) { e.SetSubject("users/bob/conversations/" + cid) })},
		{"unknown field", workertest.WithData(t, valid, func(m map[string]any) { m["text"] = text })},
		{"missing sealed_text", workertest.WithData(t, valid, func(m map[string]any) { delete(m, "sealed_text") })},
		{"missing segment_id", workertest.WithData(t, valid, func(m map[string]any) { delete(m, "segment_id") })},
		{"sealed_text not base64", workertest.WithData(t, valid, func(m map[string]any) { m["sealed_text"] = "!!!! not base64 ????" })},
		{"sealed_text bad padding", workertest.WithData(t, valid, func(m map[string]any) { m["sealed_text"] = "QUJD=" })},
		{"model with spaces", workertest.WithData(t, valid, func(m map[string]any) { m["model"] = "a model" })},
		{"negative duration", workertest.WithData(t, valid, func(m map[string]any) { m["duration_ms"] = -5 })},
		{"oversized sealed_text", workertest.WithData(t, valid, func(m map[string]any) { m["sealed_text"] = strings.Repeat("QUJD", 50001) })},
		{"oversized model", workertest.WithData(t, valid, func(m map[string]any) { m["model"] = strings.Repeat("m", 201) })},
		{"data not JSON", workertest.WithAttr(valid, func(e *event.Event) { e.DataEncoded = []byte("{user: nope") })},
		{"no data", workertest.WithAttr(valid, func(e *event.Event) { e.DataEncoded = nil })},
		{"missing subject", workertest.WithAttr(valid, func(e *event.Event) { e.SetSubject("") })},
		{"missing time", workertest.WithAttr(valid, func(e *event.Event) { e.SetTime(time.Time{}) })},
		{"missing dataschema", workertest.WithAttr(valid, func(e *event.Event) { e.SetDataSchema("") })},
		{"wrong datacontenttype", workertest.WithAttr(valid, func(e *event.Event) { e.SetDataContentType("application/xml") })},
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
			if n := len(e.bus.All()); n != 0 {
				t.Errorf("%d events published", n)
			}
			if n := e.embedder.count(); n != 0 {
				t.Errorf("embedder called %d times", n)
			}
			if e.HasKey(t, other) {
				t.Error("a key was created for the other user")
			}
		})
	}
}

func TestHandleForged(t *testing.T) {
	garbage := make([]byte, 64)
	rand.Read(garbage)
	cases := []struct {
		name  string
		build func(e *env, t *testing.T, user, other string) event.Event
	}{
		{"sealed with another user's key", func(e *env, t *testing.T, user, other string) event.Event {
			src := e.transcriptEvent(t, other, cid, 1, text)
			var in events.TranscriptCreated
			if err := e.reg.Decode(src, &in); err != nil {
				t.Fatal(err)
			}
			id := events.DeriveID("transcript", user, cid, "1", "x")
			return workertest.WithData(t, e.transcriptEventSealed(t, id, user, cid, 1, []byte("AAAAAAAA")), func(m map[string]any) {
				m["sealed_text"] = in.SealedText
			})
		}},
		{"sealed for another user's associated data", func(e *env, t *testing.T, user, other string) event.Event {
			id := events.DeriveID("transcript", user, cid, "1", "x")
			return e.transcriptEventSealed(t, id, user, cid, 1, e.Seal(t, user, []byte(text), keys.AD(other, "events/"+events.TypeTranscriptCreated, id, "sealed_text")))
		}},
		{"sealed for another event id", func(e *env, t *testing.T, user, other string) event.Event {
			id := events.DeriveID("transcript", user, cid, "1", "x")
			return e.transcriptEventSealed(t, id, user, cid, 1, e.Seal(t, user, []byte(text), keys.AD(user, "events/"+events.TypeTranscriptCreated, id+"0", "sealed_text")))
		}},
		{"replayed under a new id", func(e *env, t *testing.T, user, other string) event.Event {
			return workertest.WithAttr(e.transcriptEvent(t, user, cid, 1, text), func(ev *event.Event) { ev.SetID(events.NewID()) })
		}},
		{"sealed as the segment document", func(e *env, t *testing.T, user, other string) event.Event {
			id := events.DeriveID("transcript", user, cid, "1", "x")
			return e.transcriptEventSealed(t, id, user, cid, 1, e.Seal(t, user, []byte(text), keys.AD(user, records.Segments, records.ChunkID(cid, 1), "text")))
		}},
		{"garbage ciphertext", func(e *env, t *testing.T, user, other string) event.Event {
			e.Seal(t, user, []byte("x"), []byte("x")) // the user has a key
			return e.transcriptEventSealed(t, events.NewID(), user, cid, 1, garbage)
		}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			e := newEnv(t)
			user, other := workertest.UserID(t, "a"), workertest.UserID(t, "b")
			ev := tc.build(e, t, user, other)
			before := e.docCount(t, user)
			err := e.w.Handle(t.Context(), ev)
			if got := workertest.Classify(err); got != workertest.Permanent && got != workertest.Dropped {
				t.Errorf("Handle = %v (%s), want permanent or dropped", err, got)
			}
			if n := len(e.bus.All()); n != 0 {
				t.Errorf("%d events published", n)
			}
			if n := e.embedder.count(); n != 0 {
				t.Errorf("embedder called %d times on unopened text", n)
			}
			if n := e.docCount(t, user); n != before {
				t.Errorf("%d documents written", n-before)
			}
		})
	}
}

func TestHandleReplay(t *testing.T) {
	t.Run("twice in a row", func(t *testing.T) {
		e := newEnv(t)
		user := workertest.UserID(t, "a")
		ev := e.transcriptEvent(t, user, cid, 1, text)
		for i := range 2 {
			if err := e.w.Handle(t.Context(), ev); err != nil {
				t.Fatalf("delivery %d: %v", i, err)
			}
		}
		pubs := e.bus.All()
		if len(pubs) != 2 {
			t.Fatalf("%d events", len(pubs))
		}
		for _, p := range pubs {
			checkEmbeddingEvent(t, e, p, user, 1)
		}
	})
	t.Run("concurrently", func(t *testing.T) {
		e := newEnv(t)
		user := workertest.UserID(t, "a")
		ev := e.transcriptEvent(t, user, cid, 1, text)
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
		pubs := e.bus.All()
		if len(pubs) != n {
			t.Fatalf("%d events, want %d", len(pubs), n)
		}
		for _, p := range pubs {
			checkEmbeddingEvent(t, e, p, user, 1)
		}
	})
	t.Run("republished transcript (new nonce, same id)", func(t *testing.T) {
		e := newEnv(t)
		user := workertest.UserID(t, "a")
		// transcribe reseals on every republish: same id, other ciphertext.
		for range 2 {
			if err := e.w.Handle(t.Context(), e.transcriptEvent(t, user, cid, 1, text)); err != nil {
				t.Fatal(err)
			}
		}
		pubs := e.bus.All()
		if len(pubs) != 2 || pubs[0].Event.ID() != pubs[1].Event.ID() {
			t.Errorf("republished transcript gave ids %v", pubs)
		}
	})
}

func TestHandleCrossUser(t *testing.T) {
	e := newEnv(t)
	a, b := workertest.UserID(t, "a"), workertest.UserID(t, "b")
	evA := e.transcriptEvent(t, a, cid, 1, text)
	// B's event carrying A's sealed text, under A's id and subject user B.
	forged := workertest.WithData(t, workertest.WithAttr(evA, func(ev *event.Event) {
		ev.SetSubject(events.Subject(b, "conversations", cid, "chunks", "1"))
	}), func(m map[string]any) { m["user"] = b })
	if got := workertest.Classify(e.w.Handle(t.Context(), forged)); got != workertest.Permanent && got != workertest.Dropped {
		t.Errorf("outcome %s, want permanent or dropped", got)
	}
	if e.HasKey(t, b) {
		t.Error("a key was created for B")
	}
	// The subject still naming A while the payload names B.
	mixed := workertest.WithData(t, evA, func(m map[string]any) { m["user"] = b })
	var in events.TranscriptCreated
	if err := e.reg.Decode(mixed, &in); !events.IsPermanent(err) {
		t.Errorf("Decode = %v, want permanent", err)
	}
	if got := workertest.Classify(e.w.Handle(t.Context(), mixed)); got != workertest.Permanent {
		t.Errorf("outcome %s, want permanent", got)
	}
	if n := len(e.bus.All()); n != 0 {
		t.Errorf("%d events published", n)
	}
}

func TestHandleTombstoned(t *testing.T) {
	t.Run("user with a key", func(t *testing.T) {
		e := newEnv(t)
		user := workertest.UserID(t, "a")
		ev := e.transcriptEvent(t, user, cid, 1, text)
		e.Tombstone(t, user)
		if got := workertest.Classify(e.w.Handle(t.Context(), ev)); got != workertest.Dropped {
			t.Errorf("outcome %s, want dropped", got)
		}
		if n := len(e.bus.All()); n != 0 || e.embedder.count() != 0 {
			t.Errorf("%d events published, %d embeddings", n, e.embedder.count())
		}
	})
	t.Run("user without a key", func(t *testing.T) {
		e := newEnv(t)
		user, other := workertest.UserID(t, "a"), workertest.UserID(t, "b")
		// Well-formed ciphertext (sealed for someone else): the tombstone
		// must win before any key is looked up or made.
		ev := e.transcriptEventSealed(t, events.NewID(), user, cid, 1, e.Seal(t, other, []byte(text), []byte("x")))
		e.Tombstone(t, user)
		if got := workertest.Classify(e.w.Handle(t.Context(), ev)); got != workertest.Dropped {
			t.Errorf("outcome %s, want dropped", got)
		}
		if e.HasKey(t, user) {
			t.Error("a key was created for a tombstoned user")
		}
		if n := len(e.bus.All()); n != 0 {
			t.Errorf("%d events published", n)
		}
	})
	t.Run("key shredded", func(t *testing.T) {
		e := newEnv(t)
		user := workertest.UserID(t, "a")
		ev := e.transcriptEvent(t, user, cid, 1, text)
		if err := e.keys.Shred(t.Context(), user); err != nil {
			t.Fatal(err)
		}
		if got := workertest.Classify(e.w.Handle(t.Context(), ev)); got != workertest.Dropped {
			t.Errorf("outcome %s, want dropped", got)
		}
		if e.HasKey(t, user) {
			t.Error("a key was re-created for a shredded user")
		}
	})
}

func TestHandleFailures(t *testing.T) {
	t.Run("embedder error is retried", func(t *testing.T) {
		e := newEnv(t)
		user := workertest.UserID(t, "a")
		ev := e.transcriptEvent(t, user, cid, 1, text)
		e.embedder.set(errors.New("provider 503"))
		if got := workertest.Classify(e.w.Handle(t.Context(), ev)); got != workertest.Retryable {
			t.Errorf("outcome %s, want retryable", got)
		}
		e.embedder.set(nil)
		if err := e.w.Handle(t.Context(), ev); err != nil {
			t.Fatalf("redelivery: %v", err)
		}
		if pubs := e.bus.All(); len(pubs) != 1 {
			t.Errorf("%d events", len(pubs))
		}
	})
	t.Run("publish failure is retried without duplicates", func(t *testing.T) {
		e := newEnv(t)
		user := workertest.UserID(t, "a")
		ev := e.transcriptEvent(t, user, cid, 1, text)
		e.bus.SetFail(errors.New("bus down"))
		if got := workertest.Classify(e.w.Handle(t.Context(), ev)); got != workertest.Retryable {
			t.Errorf("outcome %s, want retryable", got)
		}
		e.bus.SetFail(nil)
		if err := e.w.Handle(t.Context(), ev); err != nil {
			t.Fatalf("redelivery: %v", err)
		}
		pubs := e.bus.All()
		if len(pubs) != 1 {
			t.Fatalf("%d events", len(pubs))
		}
		checkEmbeddingEvent(t, e, pubs[0], user, 1)
	})
}

// The published data never carries the text or the vector in the clear.
func TestHandleSealsOutput(t *testing.T) {
	e := newEnv(t)
	user := workertest.UserID(t, "a")
	if err := e.w.Handle(t.Context(), e.transcriptEvent(t, user, cid, 1, text)); err != nil {
		t.Fatal(err)
	}
	pubs := e.bus.All()
	if len(pubs) != 1 {
		t.Fatal("no event")
	}
	data := pubs[0].Event.Data()
	if bytes.Contains(data, []byte("hello")) || bytes.Contains(data, events.EncodeVector(hashembed.Vector(text))[:16]) {
		t.Error("embedding event leaks text or vector")
	}
	if strings.Contains(string(data), base64.StdEncoding.EncodeToString(events.EncodeVector(hashembed.Vector(text)))[:32]) {
		t.Error("embedding event carries the vector merely base64-encoded")
	}
}

// miscountingEmbedder answers with n vectors of dim floats whatever it is
// asked, as a provider with a bug or a changed model does.
type miscountingEmbedder struct {
	*hashembed.Embedder
	n, dim int
}

func (m *miscountingEmbedder) Embed(context.Context, []string, embedport.Kind) ([][]float32, error) {
	out := make([][]float32, m.n)
	for i := range out {
		out[i] = make([]float32, m.dim)
	}
	return out, nil
}

// TestHandleEmbedderWrongShape: a wrong number or size of vectors is a
// failed dependency (retried, then dead-lettered), never a panic or an
// embedding of the wrong size.
func TestHandleEmbedderWrongShape(t *testing.T) {
	for _, tc := range []struct {
		name   string
		n, dim int
	}{
		{"no vectors", 0, hashembed.Dim},
		{"two vectors", 2, hashembed.Dim},
		{"short vector", 1, hashembed.Dim - 1},
	} {
		t.Run(tc.name, func(t *testing.T) {
			e := newEnv(t)
			e.w.Embedder = &miscountingEmbedder{Embedder: hashembed.New(), n: tc.n, dim: tc.dim}
			ev := e.transcriptEvent(t, workertest.UserID(t, "a"), cid, 1, text)
			if got := workertest.Classify(e.w.Handle(t.Context(), ev)); got != workertest.Retryable {
				t.Errorf("outcome %s, want retryable", got)
			}
			if n := len(e.bus.All()); n != 0 {
				t.Errorf("%d events published", n)
			}
		})
	}
}
