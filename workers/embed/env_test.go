package embed_test

import (
	"context"
	"encoding/base64"
	"strconv"
	"sync"
	"testing"

	"github.com/cloudevents/sdk-go/v2/event"

	"github.com/lethe-dev/lethe/app/records"
	"github.com/lethe-dev/lethe/events"
	"github.com/lethe-dev/lethe/infra/docs"
	embedport "github.com/lethe-dev/lethe/infra/embed"
	"github.com/lethe-dev/lethe/infra/embed/hashembed"
	"github.com/lethe-dev/lethe/infra/keys"
	"github.com/lethe-dev/lethe/workers/embed"
	"github.com/lethe-dev/lethe/workers/internal/workertest"
)

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
	*workertest.Stores
	docs     docs.Store
	keys     *keys.Keyring
	reg      *events.Registry
	bus      *workertest.RecordingBus
	embedder *countingEmbedder
	w        *embed.Worker
}

func newEnv(t *testing.T) *env {
	t.Helper()
	st := workertest.Open(t)
	e := &env{
		Stores:   st,
		docs:     st.Docs,
		keys:     st.Keys,
		reg:      st.Events,
		bus:      &workertest.RecordingBus{},
		embedder: &countingEmbedder{Embedder: hashembed.New()},
	}
	e.w = &embed.Worker{Docs: e.docs, Keys: e.keys, Embedder: e.embedder, Bus: e.bus, Events: e.reg}
	return e
}

// transcriptEvent builds the transcript.created the transcribe worker would
// publish: id derived from the chunk, text sealed for (user, that id).
func (e *env) transcriptEvent(t *testing.T, user, cid string, seq int, text string) event.Event {
	t.Helper()
	id := events.DeriveID("transcript", user, cid, strconv.Itoa(seq), events.DeriveID("sha", text))
	return e.transcriptEventSealed(t, id, user, cid, seq, e.Seal(t, user, []byte(text), keys.AD(user, "events/"+events.TypeTranscriptCreated, id, "sealed_text")))
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

// docCount counts the user's documents (the embed worker writes none).
func (e *env) docCount(t *testing.T, user string) int {
	t.Helper()
	n, err := e.docs.CountUser(t.Context(), user)
	if err != nil {
		t.Fatalf("CountUser: %v", err)
	}
	return n
}
