package records

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	"github.com/lethe-dev/lethe/infra/docs"
)

// StreamClaims is the global collection that says which user streams into
// a conversation id: a stream names its conversation in the URL, and one
// user must not be able to stream into, or learn the progress of, an id
// another user streams. Documents are keyed by a keyed hash of the id, so
// the collection holds no conversation id in clear.
const StreamClaims = "streamclaims"

// fieldOwner indexes a claim by its owner, so an erasure finds them.
const fieldOwner = "owner"

type streamClaim struct {
	Owner     string    `json:"owner"` // keyed hash of the uid
	CreatedAt time.Time `json:"created_at"`
}

// ClaimStream records user as the streamer of the conversation whose keyed
// hash is idHash, unless another user did first: it reports whether user
// owns it now.
func ClaimStream(ctx context.Context, store docs.Store, idHash, user string, now time.Time) (bool, error) {
	key := docs.Key{Collection: StreamClaims, ID: idHash}
	data, err := json.Marshal(streamClaim{Owner: user, CreatedAt: now})
	if err != nil {
		return false, fmt.Errorf("json.Marshal stream claim: %w", err)
	}
	err = store.Create(ctx, docs.Doc{Key: key, Data: data, Fields: map[string]any{fieldOwner: user}})
	if err == nil {
		return true, nil
	}
	if !errors.Is(err, docs.ErrAlreadyExists) {
		return false, fmt.Errorf("docs.Create stream claim: %w", err)
	}
	d, err := store.Get(ctx, key)
	if err != nil {
		return false, fmt.Errorf("docs.Get stream claim: %w", err)
	}
	var c streamClaim
	if err := json.Unmarshal(d.Data, &c); err != nil {
		return false, fmt.Errorf("json.Unmarshal stream claim: %w", err)
	}
	return c.Owner == user, nil
}

// LastChunk is the chunk with the highest seq of a conversation; ok is
// false when it has none.
func LastChunk(ctx context.Context, store docs.Store, user, cid string) (c Chunk, ok bool, err error) {
	found, err := store.Query(ctx, docs.Query{
		User: user, Collection: Chunks,
		Filters: []docs.Filter{{Field: FieldConversation, Op: docs.Eq, Value: cid}},
		OrderBy: FieldSeq, Desc: true, Limit: 1,
	})
	if err != nil {
		return Chunk{}, false, fmt.Errorf("docs.Query last chunk: %w", err)
	}
	if len(found) == 0 {
		return Chunk{}, false, nil
	}
	c, err = ChunkFrom(found[0])
	return c, err == nil, err
}

// StreamClaimsOf lists the keys of the stream claims user holds (an
// erasure deletes them with the user's other documents).
func StreamClaimsOf(ctx context.Context, store docs.Store, user string) ([]docs.Key, error) {
	var keys []docs.Key
	after := ""
	for {
		page, next, err := store.QueryPage(ctx, docs.Query{Collection: StreamClaims,
			Filters: []docs.Filter{{Field: fieldOwner, Op: docs.Eq, Value: user}}}, after)
		if err != nil {
			return nil, fmt.Errorf("docs.QueryPage stream claims: %w", err)
		}
		for _, d := range page {
			keys = append(keys, d.Key)
		}
		if next == "" {
			return keys, nil
		}
		after = next
	}
}
