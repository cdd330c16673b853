// Package records is the data model of the pipeline in the documents store:
// conversations, chunks and segments, per user (the keyed hash of the uid).
// Stages share it because the stores are the truth and events only notify.
package records

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"regexp"
	"time"

	"github.com/lethe-dev/lethe/events"
	"github.com/lethe-dev/lethe/infra/docs"
	"github.com/lethe-dev/lethe/infra/keys"
)

// Collections.
const (
	Conversations = "conversations"
	Chunks        = "chunks"
	Segments      = "segments"
	VectorSpaces  = "vectorspace"
)

// Chunk states. received → transcribed → indexed are the happy path;
// indexed and failed are final.
const (
	StatusReceived    = "received"
	StatusTranscribed = "transcribed"
	StatusIndexed     = "indexed"
	StatusFailed      = "failed"
)

// Indexed field names.
const (
	FieldConversation = "conversation_id"
	FieldSeq          = "seq"
	FieldStatus       = "status"
	FieldUpdatedAt    = "updated_at" // unix milliseconds
	FieldCreatedAt    = "created_at" // unix milliseconds
)

var conversationIDRe = regexp.MustCompile(`^[A-Za-z0-9_-]{1,64}$`)

// MaxSeq bounds chunk sequence numbers (the event schema agrees).
const MaxSeq = 1_000_000

// ValidConversationID reports whether cid is acceptable as a conversation id:
// it appears in document ids, blob paths and vector ids, so it is a plain
// token, never free text.
func ValidConversationID(cid string) bool { return conversationIDRe.MatchString(cid) }

// ChunkID is the document id of chunk seq of conversation cid; zero-padded so
// ids sort by seq.
func ChunkID(cid string, seq int) string { return fmt.Sprintf("%s:%07d", cid, seq) }

// VectorID is the vector id of a segment: "<cid>#<seq>", so a conversation's
// vectors list by the prefix "<cid>#".
func VectorID(cid string, seq int) string { return fmt.Sprintf("%s#%07d", cid, seq) }

// VectorPrefix lists the vectors of one conversation.
func VectorPrefix(cid string) string { return cid + "#" }

// AudioPrefix is the blob prefix of a user's audio.
func AudioPrefix(user string) string { return "users/" + user + "/audio/" }

// AudioKey is the blob key of one chunk's sealed audio. The digest is part of
// the key so a conflicting upload for the same seq never overwrites the
// accepted one.
func AudioKey(user, cid string, seq int, digest string) string {
	return fmt.Sprintf("users/%s/audio/%s/%07d-%s.sealed", user, cid, seq, digest[:16])
}

// Chunk is the record of one accepted audio chunk.
type Chunk struct {
	ConversationID string    `json:"conversation_id"`
	Seq            int       `json:"seq"`
	Status         string    `json:"status"`
	BlobKey        string    `json:"blob_key"`
	ContentType    string    `json:"content_type"`
	SampleRate     int       `json:"sample_rate,omitempty"`
	Digest         string    `json:"digest"`
	Size           int64     `json:"size"`
	Origin         string    `json:"origin"`
	EventID        string    `json:"event_id"`
	Published      bool      `json:"published"`
	ReceivedAt     time.Time `json:"received_at"`
	UpdatedAt      time.Time `json:"updated_at"`
	FailReason     string    `json:"fail_reason,omitempty"`
	// Redriven counts reconciler re-drives; past a bound the chunk fails
	// rather than being re-driven forever.
	Redriven int `json:"redriven,omitempty"`
	// AudioDeletedAt is when a retention sweep deleted the audio (BlobKey
	// is then empty): readers and re-drives know it is gone on purpose.
	AudioDeletedAt time.Time `json:"audio_deleted_at,omitzero"`
	// Stream is the stream time a chunk cut from a WebSocket stream covers;
	// written with the record, so the last chunk says where a
	// reconnecting client resumes.
	Stream *StreamSpan `json:"stream,omitempty"`
}

// StreamSpan is a chunk's stretch of stream time, in milliseconds from the
// start of the stream: [StartMS, EndMS).
type StreamSpan struct {
	StartMS int64 `json:"start_ms"`
	EndMS   int64 `json:"end_ms"`
}

// ChunkKey is the document key of a chunk.
func ChunkKey(user, cid string, seq int) docs.Key {
	return docs.Key{User: user, Collection: Chunks, ID: ChunkID(cid, seq)}
}

// Doc encodes c for the store.
func (c Chunk) Doc(user string) (docs.Doc, error) {
	data, err := json.Marshal(c)
	if err != nil {
		return docs.Doc{}, fmt.Errorf("json.Marshal chunk: %w", err)
	}
	return docs.Doc{
		Key:  ChunkKey(user, c.ConversationID, c.Seq),
		Data: data,
		Fields: map[string]any{
			FieldConversation: c.ConversationID,
			FieldSeq:          int64(c.Seq),
			FieldStatus:       c.Status,
			FieldUpdatedAt:    c.UpdatedAt.UnixMilli(),
		},
	}, nil
}

// ChunkFrom decodes a chunk document.
func ChunkFrom(d docs.Doc) (Chunk, error) {
	var c Chunk
	if err := json.Unmarshal(d.Data, &c); err != nil {
		return c, fmt.Errorf("json.Unmarshal chunk %s: %w", d.Key.ID, err)
	}
	return c, nil
}

// Segment is the transcript of one chunk. The text is sealed with the user's
// key (associated data: user|segments|<id>|text).
type Segment struct {
	ConversationID string    `json:"conversation_id"`
	Seq            int       `json:"seq"`
	SealedText     []byte    `json:"sealed_text"`
	Model          string    `json:"model"`
	DurationMS     int64     `json:"duration_ms"`
	CreatedAt      time.Time `json:"created_at"`
}

// SegmentKey is the document key of a segment.
func SegmentKey(user, cid string, seq int) docs.Key {
	return docs.Key{User: user, Collection: Segments, ID: ChunkID(cid, seq)}
}

// Doc encodes s for the store.
func (s Segment) Doc(user string) (docs.Doc, error) {
	data, err := json.Marshal(s)
	if err != nil {
		return docs.Doc{}, fmt.Errorf("json.Marshal segment: %w", err)
	}
	return docs.Doc{
		Key:  SegmentKey(user, s.ConversationID, s.Seq),
		Data: data,
		Fields: map[string]any{
			FieldConversation: s.ConversationID,
			FieldSeq:          int64(s.Seq),
			FieldCreatedAt:    s.CreatedAt.UnixMilli(),
		},
	}, nil
}

// SegmentFrom decodes a segment document.
func SegmentFrom(d docs.Doc) (Segment, error) {
	var s Segment
	if err := json.Unmarshal(d.Data, &s); err != nil {
		return s, fmt.Errorf("json.Unmarshal segment %s: %w", d.Key.ID, err)
	}
	return s, nil
}

// Conversation is the summary record of a conversation.
type Conversation struct {
	ID        string    `json:"id"`
	CreatedAt time.Time `json:"created_at"`
	UpdatedAt time.Time `json:"updated_at"`
	Chunks    int       `json:"chunks"`  // accepted
	Indexed   int       `json:"indexed"` // searchable
}

// ConversationKey is the document key of a conversation.
func ConversationKey(user, cid string) docs.Key {
	return docs.Key{User: user, Collection: Conversations, ID: cid}
}

// Doc encodes c for the store.
func (c Conversation) Doc(user string) (docs.Doc, error) {
	data, err := json.Marshal(c)
	if err != nil {
		return docs.Doc{}, fmt.Errorf("json.Marshal conversation: %w", err)
	}
	return docs.Doc{
		Key:  ConversationKey(user, c.ID),
		Data: data,
		Fields: map[string]any{
			FieldCreatedAt: c.CreatedAt.UnixMilli(),
			FieldUpdatedAt: c.UpdatedAt.UnixMilli(),
		},
	}, nil
}

// ConversationFrom decodes a conversation document.
func ConversationFrom(d docs.Doc) (Conversation, error) {
	var c Conversation
	if err := json.Unmarshal(d.Data, &c); err != nil {
		return c, fmt.Errorf("json.Unmarshal conversation %s: %w", d.Key.ID, err)
	}
	return c, nil
}

// TombstoneKey marks a user who asked to be erased: the keyring's, which
// refuses keys to tombstoned users, so there is one.
func TombstoneKey(user string) docs.Key { return keys.TombstoneKey(user) }

// VectorSpaceKey records which embedder a user's vectors come from, so
// vectors of different embedders are never mixed in one namespace.
func VectorSpaceKey(user string) docs.Key {
	return docs.Key{User: user, Collection: VectorSpaces, ID: "default"}
}

// Tombstoned reports whether user asked to be erased. Every handler checks it
// first: a tombstone beats every late event.
func Tombstoned(ctx context.Context, store docs.Store, user string) (bool, error) {
	gone, err := keys.NewDocsKeysetStore(store).Tombstoned(ctx, user)
	if err != nil {
		return false, fmt.Errorf("records.Tombstoned: %w", err)
	}
	return gone, nil
}

// VectorSpace is what a user's vector namespace holds: vectors of one
// embedder, of one dimension.
type VectorSpace struct {
	Embedder string `json:"embedder"`
	Dim      int    `json:"dim"`
}

// ReadVectorSpace returns the user's vector space; ok is false before the
// first vector.
func ReadVectorSpace(ctx context.Context, store docs.Store, user string) (vs VectorSpace, ok bool, err error) {
	d, err := store.Get(ctx, VectorSpaceKey(user))
	if errors.Is(err, docs.ErrNotFound) {
		return vs, false, nil
	}
	if err != nil {
		return vs, false, fmt.Errorf("docs.Get vectorspace: %w", err)
	}
	if err := json.Unmarshal(d.Data, &vs); err != nil {
		return vs, false, fmt.Errorf("json.Unmarshal vectorspace: %w", err)
	}
	return vs, true, nil
}

// KeyFailure maps a failure of the user's keys to the handler outcome: a
// shredded or tombstoned user's events are dropped (acknowledged), a
// ciphertext that does not open is poison, anything else is retried.
func KeyFailure(call string, err error) error {
	switch {
	case errors.Is(err, keys.ErrNoKey) || errors.Is(err, keys.ErrTombstoned):
		return fmt.Errorf("%s: %w (%w)", call, events.ErrDropped, err)
	case errors.Is(err, keys.ErrDecrypt):
		return events.Permanent(fmt.Errorf("%s: %w", call, err))
	default:
		return fmt.Errorf("%s: %w", call, err)
	}
}

// SegmentParts holds, while a chunk is transcribed, the transcript of each
// piece it is cut into (audio.Segments): a redelivery after a crash or a
// recogniser failure part-way through a long recording reuses the pieces
// already done instead of recognising them again, and rewrites a piece
// under the same id, never a second copy. The transcribe worker deletes
// them once the chunk's segment holds their text.
const SegmentParts = "segment_parts"

// SegmentPart is the transcript of one piece of a chunk, sealed with the
// user's key (associated data: user|segment_parts|<id>|text).
type SegmentPart struct {
	ConversationID string `json:"conversation_id"`
	Seq            int    `json:"seq"`
	Part           int    `json:"part"`
	// Digest is the chunk's audio digest: a piece of other audio (a seq
	// erased and accepted again) is never reused.
	Digest     string    `json:"digest"`
	StartMS    int64     `json:"start_ms"`
	DurationMS int64     `json:"duration_ms"`
	SealedText []byte    `json:"sealed_text"`
	Model      string    `json:"model"`
	CreatedAt  time.Time `json:"created_at"`
}

// SegmentPartID is the document id of piece part of chunk seq.
func SegmentPartID(cid string, seq, part int) string {
	return fmt.Sprintf("%s:%04d", ChunkID(cid, seq), part)
}

// SegmentPartKey is the document key of a piece's transcript.
func SegmentPartKey(user, cid string, seq, part int) docs.Key {
	return docs.Key{User: user, Collection: SegmentParts, ID: SegmentPartID(cid, seq, part)}
}

// Doc encodes p for the store.
func (p SegmentPart) Doc(user string) (docs.Doc, error) {
	data, err := json.Marshal(p)
	if err != nil {
		return docs.Doc{}, fmt.Errorf("json.Marshal segment part: %w", err)
	}
	return docs.Doc{
		Key:  SegmentPartKey(user, p.ConversationID, p.Seq, p.Part),
		Data: data,
		Fields: map[string]any{
			FieldConversation: p.ConversationID,
			FieldSeq:          int64(p.Seq),
			FieldCreatedAt:    p.CreatedAt.UnixMilli(),
		},
	}, nil
}

// SegmentPartFrom decodes a segment part document.
func SegmentPartFrom(d docs.Doc) (SegmentPart, error) {
	var p SegmentPart
	if err := json.Unmarshal(d.Data, &p); err != nil {
		return p, fmt.Errorf("json.Unmarshal segment part %s: %w", d.Key.ID, err)
	}
	return p, nil
}
