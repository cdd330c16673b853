// Package embed is the worker that turns a sealed transcript into a sealed
// vector: transcript.created → embedding.created. It writes nothing itself:
// embedding is a pure function of the segment, so a lost output is
// recomputed when the reconciler re-drives the segment.
package embed

import (
	"context"
	"encoding/base64"
	"fmt"
	"strconv"

	"github.com/cloudevents/sdk-go/v2/event"

	"github.com/lethe-dev/lethe/app/records"
	"github.com/lethe-dev/lethe/events"
	"github.com/lethe-dev/lethe/infra/docs"
	embedport "github.com/lethe-dev/lethe/infra/embed"
	"github.com/lethe-dev/lethe/infra/keys"
)

// Worker holds the ports the handler needs.
type Worker struct {
	Docs     docs.Store
	Keys     keys.Sealer
	Embedder embedport.Embedder
	Bus      events.Publisher
	Events   *events.Registry
}

// Handle embeds one segment.
func (w *Worker) Handle(ctx context.Context, e event.Event) error {
	var in events.TranscriptCreated
	if err := w.Events.Decode(e, &in); err != nil {
		return err
	}
	if gone, err := records.Tombstoned(ctx, w.Docs, in.User); err != nil {
		return err
	} else if gone {
		return fmt.Errorf("embed: user tombstoned: %w", events.ErrDropped)
	}
	sealed, err := base64.StdEncoding.DecodeString(in.SealedText)
	if err != nil {
		return events.Permanentf("embed: sealed_text: %v", err)
	}
	text, err := w.Keys.Open(ctx, in.User, sealed, keys.AD(in.User, "events/"+events.TypeTranscriptCreated, e.ID(), "sealed_text"))
	if err != nil {
		return records.KeyFailure("keys.Open transcript", err)
	}
	vecs, err := w.Embedder.Embed(ctx, []string{string(text)}, embedport.Passage)
	if err != nil {
		return fmt.Errorf("embedder.Embed: %w", err)
	}
	if len(vecs) != 1 || len(vecs[0]) != w.Embedder.Dim() {
		return fmt.Errorf("embedder.Embed: got %d vectors, want 1 of %d dims", len(vecs), w.Embedder.Dim())
	}
	id := events.DeriveID("embedding", in.User, in.ConversationID, strconv.Itoa(in.Seq), w.Embedder.ID())
	sealedVec, err := w.Keys.Seal(ctx, in.User, events.EncodeVector(vecs[0]), keys.AD(in.User, "events/"+events.TypeEmbeddingCreated, id, "sealed_vector"))
	if err != nil {
		return records.KeyFailure("keys.Seal vector", err)
	}
	out := events.EmbeddingCreated{
		User:           in.User,
		ConversationID: in.ConversationID,
		Seq:            in.Seq,
		VectorID:       records.VectorID(in.ConversationID, in.Seq),
		Embedder:       w.Embedder.ID(),
		Dim:            w.Embedder.Dim(),
		SealedVector:   base64.StdEncoding.EncodeToString(sealedVec),
	}
	ev, err := w.Events.NewWithID(id, events.TypeEmbeddingCreated,
		events.Subject(in.User, "conversations", in.ConversationID, "chunks", strconv.Itoa(in.Seq)), out)
	if err != nil {
		return events.Permanent(err)
	}
	if err := w.Bus.Publish(ctx, events.TopicEmbeddings, ev); err != nil {
		return fmt.Errorf("bus.Publish embedding: %w", err)
	}
	return nil
}
