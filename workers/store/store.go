// Package store is the worker that makes a segment searchable: it writes its
// vector into the user's namespace and marks the chunk indexed
// (embedding.created → final state).
package store

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"time"

	"github.com/cloudevents/sdk-go/v2/event"

	"github.com/lethe-dev/lethe/app/records"
	"github.com/lethe-dev/lethe/events"
	"github.com/lethe-dev/lethe/infra/docs"
	"github.com/lethe-dev/lethe/infra/keys"
	"github.com/lethe-dev/lethe/infra/vectors"
)

// Worker holds the ports the handler needs.
type Worker struct {
	Docs    docs.Store
	Keys    keys.Sealer
	Vectors vectors.Index
	Events  *events.Registry
	Now     func() time.Time
	// Retention is the policy of users who set none (configuration).
	Retention records.Retention
}

// ErrEmbedderMismatch: a vector from another embedder than the namespace's.
var ErrEmbedderMismatch = errors.New("store: embedder differs from the namespace's")

// Handle indexes one vector. Idempotent: the vector id is deterministic and
// upsert replaces.
func (w *Worker) Handle(ctx context.Context, e event.Event) error {
	var in events.EmbeddingCreated
	if err := w.Events.Decode(e, &in); err != nil {
		return err
	}
	if gone, err := records.Tombstoned(ctx, w.Docs, in.User); err != nil {
		return err
	} else if gone {
		return fmt.Errorf("store: user tombstoned: %w", events.ErrDropped)
	}
	chunkKey := records.ChunkKey(in.User, in.ConversationID, in.Seq)
	chunkDoc, err := w.Docs.Get(ctx, chunkKey)
	if errors.Is(err, docs.ErrNotFound) {
		return fmt.Errorf("store: chunk record gone: %w", events.ErrDropped)
	}
	if err != nil {
		return fmt.Errorf("docs.Get chunk: %w", err)
	}
	chunk, err := records.ChunkFrom(chunkDoc)
	if err != nil {
		return events.Permanent(err)
	}
	if chunk.Status == records.StatusFailed {
		return nil
	}
	if in.VectorID != records.VectorID(in.ConversationID, in.Seq) {
		return events.Permanentf("store: vector_id %q does not name conversation/seq", in.VectorID)
	}
	sealed, err := base64.StdEncoding.DecodeString(in.SealedVector)
	if err != nil {
		return events.Permanentf("store: sealed_vector: %v", err)
	}
	raw, err := w.Keys.Open(ctx, in.User, sealed, keys.AD(in.User, "events/"+events.TypeEmbeddingCreated, e.ID(), "sealed_vector"))
	if err != nil {
		return records.KeyFailure("keys.Open vector", err)
	}
	vec, err := events.DecodeVector(raw)
	if err != nil {
		return events.Permanent(err)
	}
	if len(vec) != in.Dim {
		return events.Permanentf("store: vector has %d dims, event says %d", len(vec), in.Dim)
	}
	if err := w.claimVectorSpace(ctx, in.User, records.VectorSpace{Embedder: in.Embedder, Dim: in.Dim}); err != nil {
		return err
	}
	// Text with no words embeds to the zero vector: nothing to search,
	// and the index refuses it, so the chunk is final without a vector.
	indexed := false
	if slices.ContainsFunc(vec, func(x float32) bool { return x != 0 }) {
		// Metadata holds no user content: ids, numbers and the embedder name.
		rec := vectors.Record{
			ID:     in.VectorID,
			Values: vec,
			Metadata: map[string]any{
				"conversation_id": in.ConversationID,
				"seq":             int64(in.Seq),
				"created_at":      chunk.ReceivedAt.Unix(),
				"embedder":        in.Embedder,
			},
		}
		if err := w.Vectors.Upsert(ctx, in.User, []vectors.Record{rec}); err != nil {
			if errors.Is(err, vectors.ErrInvalid) || errors.Is(err, vectors.ErrDimension) {
				return events.Permanent(fmt.Errorf("vectors.Upsert: %w", err))
			}
			return fmt.Errorf("vectors.Upsert: %w", err)
		}
		indexed = true
	}
	return w.record(ctx, in, indexed)
}

// record writes, in one transaction, when the vector must be gone (when
// there is one: its own retention, but never later than its transcript's,
// or a search would find what was said after the words are deleted) and
// the chunk's "indexed".
func (w *Worker) record(ctx context.Context, in events.EmbeddingCreated, indexed bool) error {
	ref := records.ChunkID(in.ConversationID, in.Seq)
	read := []docs.Key{
		records.ChunkKey(in.User, in.ConversationID, in.Seq),
		records.RetentionKey(in.User),
		records.ExpiryKey(in.User, records.ClassTranscript, ref),
	}
	err := w.Docs.Transact(ctx, read, func(cur []*docs.Doc) ([]docs.Write, error) {
		if cur[0] == nil {
			return nil, nil // erased since: nothing to mark
		}
		var ws []docs.Write
		if indexed {
			pol, err := records.RetentionFrom(cur[1], w.Retention)
			if err != nil {
				return nil, err
			}
			e := records.Expiry{Class: records.ClassVector, Ref: ref, At: pol.ExpiresAt(records.ClassVector, w.Now().UTC())}
			if cur[2] != nil {
				tr, err := records.ExpiryFrom(*cur[2])
				if err != nil {
					return nil, err
				}
				if tr.At.Before(e.At) {
					e.At = tr.At
				}
			}
			d, err := e.Doc(in.User)
			if err != nil {
				return nil, err
			}
			ws = append(ws, docs.Write{Doc: d})
		}
		c, err := records.ChunkFrom(*cur[0])
		if err != nil {
			return nil, err
		}
		if c.Status != records.StatusIndexed && c.Status != records.StatusFailed {
			c.Status, c.UpdatedAt = records.StatusIndexed, w.Now().UTC()
			d, err := c.Doc(in.User)
			if err != nil {
				return nil, err
			}
			ws = append(ws, docs.Write{Doc: d})
		}
		return ws, nil
	})
	if err != nil {
		return fmt.Errorf("docs.Transact chunk: %w", err)
	}
	return nil
}

// claimVectorSpace records the embedder of the user's namespace on first use
// and refuses vectors of any other (their scores would be meaningless).
func (w *Worker) claimVectorSpace(ctx context.Context, user string, want records.VectorSpace) error {
	// Claimed once per user, checked on every vector: a read, not a write
	// transaction, once the claim is there.
	d, err := w.Docs.Get(ctx, records.VectorSpaceKey(user))
	switch {
	case err == nil:
		err = sameSpace(d, want)
	case errors.Is(err, docs.ErrNotFound):
		err = w.Docs.Update(ctx, records.VectorSpaceKey(user), func(cur *docs.Doc) (*docs.Doc, error) {
			if cur != nil {
				return cur, sameSpace(*cur, want)
			}
			data, err := json.Marshal(want)
			if err != nil {
				return nil, err
			}
			return &docs.Doc{Key: records.VectorSpaceKey(user), Data: data, Fields: map[string]any{"embedder": want.Embedder}}, nil
		})
	}
	if errors.Is(err, ErrEmbedderMismatch) {
		return events.Permanent(err)
	}
	if err != nil {
		return fmt.Errorf("claim vectorspace: %w", err)
	}
	return nil
}

// sameSpace checks a claimed namespace against want.
func sameSpace(d docs.Doc, want records.VectorSpace) error {
	var have records.VectorSpace
	if err := json.Unmarshal(d.Data, &have); err != nil {
		return fmt.Errorf("json.Unmarshal vectorspace: %w", err)
	}
	if have != want {
		return fmt.Errorf("%w: namespace has %s/%d, event has %s/%d", ErrEmbedderMismatch, have.Embedder, have.Dim, want.Embedder, want.Dim)
	}
	return nil
}
