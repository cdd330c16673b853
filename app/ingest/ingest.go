// Package ingest accepts one audio chunk into the pipeline: it checks the
// audio, seals it under the user's key, stores it, writes the chunk record
// and the conversation, and announces the chunk on the audio topic. The
// edge (PUT chunk), the uploads worker (signed-URL uploads) and later
// sources (streams, Twilio recordings) all enter through Accept, so every
// chunk gets the same checks and the same idempotence on (user, cid, seq).
package ingest

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"mime"
	"strings"
	"time"

	"github.com/lethe-dev/lethe/app/records"
	"github.com/lethe-dev/lethe/events"
	"github.com/lethe-dev/lethe/infra/audio"
	"github.com/lethe-dev/lethe/infra/blobs"
	"github.com/lethe-dev/lethe/infra/docs"
	"github.com/lethe-dev/lethe/infra/keys"
)

// Origins of a chunk (the chunk event's origin field).
const (
	OriginApp       = "app"
	OriginStream    = "stream"
	OriginTwilio    = "twilio"
	OriginUploadURL = "upload-url"
)

// Outcomes of Accept that are the caller's fault; anything else it returns
// is a dependency failure worth retrying.
var (
	ErrInvalid          = errors.New("ingest: invalid chunk address")
	ErrUnsupportedType  = errors.New("ingest: unsupported media type")
	ErrUnsupportedAudio = errors.New("ingest: unsupported audio encoding")
	ErrMalformedAudio   = errors.New("ingest: audio does not decode as its declared type")
	ErrEmptyAudio       = errors.New("ingest: no audio")
	// ErrTooLong: the recording plays longer than audio.MaxDuration.
	ErrTooLong = fmt.Errorf("ingest: recording longer than %s", MaxDuration)
	// ErrConflict: the seq was already accepted with other bytes.
	ErrConflict = errors.New("ingest: seq already accepted with other bytes")
	// ErrTombstoned: the user is erased; nothing was stored.
	ErrTombstoned = keys.ErrTombstoned
)

// CallerFault reports whether err is an Accept outcome no retry can change
// (the chunk itself is at fault); ErrTombstoned is not one: callers drop it.
func CallerFault(err error) bool {
	for _, target := range []error{
		ErrInvalid, ErrUnsupportedType, ErrUnsupportedAudio,
		ErrMalformedAudio, ErrEmptyAudio, ErrConflict, ErrTooLong,
	} {
		if errors.Is(err, target) {
			return true
		}
	}
	return false
}

// MaxDuration is the longest recording Accept takes, by any route; the
// upload-url route refuses a longer declared duration before any byte is
// sent.
const MaxDuration = audio.MaxDuration

// acceptedTypes are the media types a chunk may have.
var acceptedTypes = map[string]bool{
	"audio/wav": true, "audio/wave": true, "audio/x-wav": true,
	"audio/l16": true, "audio/ogg": true, "audio/opus": true,
}

// AcceptedType reports whether contentType names an audio type chunks may
// have (its parameters are checked when the audio is decoded).
func AcceptedType(contentType string) bool {
	mt, _, err := mime.ParseMediaType(contentType)
	return err == nil && acceptedTypes[strings.ToLower(mt)]
}

// Intake holds what Accept needs.
type Intake struct {
	Docs   docs.Store
	Blobs  blobs.Bucket
	Keys   keys.Sealer
	Bus    events.Publisher
	Events *events.Registry
	Logger *slog.Logger // nil discards
	Now    func() time.Time
	// Retention is the policy of users who set none (configuration).
	Retention records.Retention
}

// Chunk is one chunk to accept; User is the keyed hash of the uid.
type Chunk struct {
	User           string
	ConversationID string
	Seq            int
	ContentType    string
	Audio          []byte
	Origin         string
	// Stream: the stream time of a chunk cut from a stream (OriginStream).
	Stream *records.StreamSpan
}

// Result says what Accept did.
type Result struct {
	Chunk records.Chunk
	// Duplicate: the same bytes were accepted before; no second chunk
	// (and, once published, no second event).
	Duplicate bool
}

// Accept makes c durable and announced, or returns why not. It returns
// only once the sealed audio, the chunk record and the event are durable.
// A retry with the same bytes is a Duplicate (it publishes the event if the
// first attempt stopped before that, with the same event id); other bytes
// for the same seq are ErrConflict.
func (in *Intake) Accept(ctx context.Context, c Chunk) (Result, error) {
	if !records.ValidConversationID(c.ConversationID) || c.Seq < 0 || c.Seq > records.MaxSeq || c.User == "" {
		return Result{}, ErrInvalid
	}
	if !AcceptedType(c.ContentType) {
		return Result{}, ErrUnsupportedType
	}
	if len(c.Audio) == 0 {
		return Result{}, ErrEmptyAudio
	}
	// Every byte is decoded once, a block at a time (a 35-minute recording
	// is never held as samples), so what is accepted here is what the
	// transcribe worker can decode: nothing accepted is lost later.
	// Longer than audio.MaxDuration is ErrTooLong.
	rate, dur, err := audio.Probe(c.ContentType, c.Audio)
	switch {
	case errors.Is(err, audio.ErrTooLong):
		return Result{}, ErrTooLong
	case errors.Is(err, audio.ErrUnsupported):
		return Result{}, ErrUnsupportedAudio
	case err != nil:
		return Result{}, ErrMalformedAudio
	case dur <= 0:
		// Probe reports an empty container as malformed; this keeps a
		// sample-less decode from becoming a chunk regardless.
		return Result{}, ErrEmptyAudio
	}
	// Keyed, not a plain hash: the digest names the blob and the event, and
	// must not outlive the user's key. Deterministic per user, so a retry
	// with the same bytes still finds its record.
	digest, err := in.Keys.Digest(ctx, c.User, c.Audio)
	if err != nil {
		return Result{}, fmt.Errorf("keys.Digest audio: %w", err)
	}

	key := records.ChunkKey(c.User, c.ConversationID, c.Seq)
	existing, err := in.Docs.Get(ctx, key)
	switch {
	case err == nil:
		return in.retry(ctx, c.User, existing, digest)
	case !errors.Is(err, docs.ErrNotFound):
		return Result{}, fmt.Errorf("docs.Get chunk: %w", err)
	}

	now := in.now()
	blobKey := records.AudioKey(c.User, c.ConversationID, c.Seq, digest)
	sealed, err := in.Keys.Seal(ctx, c.User, c.Audio, keys.AD(c.User, "blobs", blobKey, "audio"))
	if err != nil {
		return Result{}, fmt.Errorf("keys.Seal audio: %w", err)
	}
	// The digest is in the key, so an object already there holds these very
	// bytes (from an attempt that stopped before the record).
	_, err = in.Blobs.Write(ctx, blobKey, bytes.NewReader(sealed), blobs.WriteOptions{
		ContentType: "application/octet-stream", CreateOnly: true,
		Metadata: map[string]string{"sealed": "tink-aead"},
	})
	if err != nil && !errors.Is(err, blobs.ErrPrecondition) {
		return Result{}, fmt.Errorf("blobs.Write audio: %w", err)
	}
	chunk := records.Chunk{
		ConversationID: c.ConversationID, Seq: c.Seq, Status: records.StatusReceived,
		BlobKey: blobKey, ContentType: c.ContentType, SampleRate: rate,
		Digest: digest, Size: int64(len(c.Audio)), Origin: c.Origin,
		EventID: records.ChunkEventID(c.User, c.ConversationID, c.Seq, digest),
		// Marked before the event goes out, in the same commit as the
		// record: a third commit per chunk only to say "sent" cost as much
		// as the record. If the publish below fails the mark is taken
		// back; if the process dies between the two, the reconciler
		// re-drives the chunk (it is still "received"), so nothing is lost.
		Published:  true,
		ReceivedAt: now, UpdatedAt: now, Stream: c.Stream,
	}
	if err := in.record(ctx, c.User, chunk, now); err != nil {
		if errors.Is(err, docs.ErrAlreadyExists) {
			// A concurrent accept of the same seq won the race.
			if existing, gerr := in.Docs.Get(ctx, key); gerr == nil {
				return in.retry(ctx, c.User, existing, digest)
			}
		}
		return Result{}, err
	}
	if err := in.publish(ctx, c.User, chunk); err != nil {
		in.unmarkPublished(ctx, c.User, chunk)
		return Result{}, err
	}
	return Result{Chunk: chunk}, nil
}

// conversationTouchEvery: a conversation's updated_at is bumped by a chunk
// only when it is older than this, so a live recording (a chunk a second)
// does not rewrite its conversation on every chunk. Lists order by
// updated_at; a few seconds of lag there is invisible.
const conversationTouchEvery = 5 * time.Second

// record writes, in one transaction, the audio's expiry (a record never
// exists without it; audio kept 0 days is scheduled by the transcriber once
// its transcript exists), the chunk record (only if absent) and the
// conversation (created on its first chunk, its updated_at bumped after).
func (in *Intake) record(ctx context.Context, user string, chunk records.Chunk, now time.Time) error {
	doc, err := chunk.Doc(user)
	if err != nil {
		return fmt.Errorf("records.Chunk.Doc: %w", err)
	}
	read := []docs.Key{doc.Key, records.ConversationKey(user, chunk.ConversationID), records.RetentionKey(user)}
	err = in.Docs.Transact(ctx, read, func(cur []*docs.Doc) ([]docs.Write, error) {
		if cur[0] != nil {
			return nil, docs.ErrAlreadyExists
		}
		pol, err := records.RetentionFrom(cur[2], in.Retention)
		if err != nil {
			return nil, err
		}
		ws := make([]docs.Write, 0, 3)
		if pol.AudioDays > 0 {
			e := records.Expiry{Class: records.ClassAudio, Ref: records.ChunkID(chunk.ConversationID, chunk.Seq), At: pol.ExpiresAt(records.ClassAudio, now)}
			ed, err := e.Doc(user)
			if err != nil {
				return nil, err
			}
			ws = append(ws, docs.Write{Doc: ed})
		}
		ws = append(ws, docs.Write{Doc: doc, Create: true})
		conv, touch, err := touched(cur[1], chunk.ConversationID, now)
		if err != nil {
			return nil, err
		}
		if touch {
			cd, err := conv.Doc(user)
			if err != nil {
				return nil, err
			}
			ws = append(ws, docs.Write{Doc: cd})
		}
		return ws, nil
	})
	if err != nil {
		return fmt.Errorf("docs.Transact chunk: %w", err)
	}
	return nil
}

// touched returns the conversation cur (nil: none yet) becomes with a
// chunk at now, and whether it needs writing.
func touched(cur *docs.Doc, cid string, now time.Time) (records.Conversation, bool, error) {
	if cur == nil {
		return records.Conversation{ID: cid, CreatedAt: now, UpdatedAt: now}, true, nil
	}
	c, err := records.ConversationFrom(*cur)
	if err != nil {
		return c, false, err
	}
	if now.Sub(c.UpdatedAt) < conversationTouchEvery {
		return c, false, nil
	}
	c.UpdatedAt = now
	return c, true, nil
}

// unmarkPublished takes back the published mark of a chunk whose event did
// not go out, so a retry publishes it. Best effort: if it fails too, the
// reconciler re-drives the chunk.
func (in *Intake) unmarkPublished(ctx context.Context, user string, chunk records.Chunk) {
	err := in.Docs.Update(ctx, records.ChunkKey(user, chunk.ConversationID, chunk.Seq), func(cur *docs.Doc) (*docs.Doc, error) {
		if cur == nil {
			return nil, nil
		}
		c, err := records.ChunkFrom(*cur)
		if err != nil || !c.Published || c.Status != records.StatusReceived {
			return cur, err
		}
		c.Published = false
		d, err := c.Doc(user)
		return &d, err
	})
	if err != nil && in.Logger != nil {
		in.Logger.WarnContext(ctx, "could not take back a chunk's published mark; the reconciler re-drives it", "error", err.Error())
	}
}

// retry answers an accept of a seq that already has a record.
func (in *Intake) retry(ctx context.Context, user string, existing docs.Doc, digest string) (Result, error) {
	chunk, err := records.ChunkFrom(existing)
	if err != nil {
		return Result{}, fmt.Errorf("records.ChunkFrom: %w", err)
	}
	if chunk.Digest != digest {
		return Result{}, ErrConflict
	}
	if !chunk.Published {
		// The first attempt stopped after the record: publish now. The
		// event id is the same, so consumers see one event even if both
		// got out. Not for an erased user: nothing may start after the
		// tombstone.
		gone, err := records.Tombstoned(ctx, in.Docs, user)
		if err != nil {
			return Result{}, fmt.Errorf("records.Tombstoned: %w", err)
		}
		if gone {
			return Result{}, ErrTombstoned
		}
		// The first attempt may have stopped before the conversation
		// record, which is written before the event: write it now, or the
		// chunk is transcribed under a conversation that answers 404. With
		// the chunk's own time, a conversation already there is unchanged.
		if err := in.touchConversation(ctx, user, chunk.ConversationID, chunk.ReceivedAt); err != nil {
			return Result{}, fmt.Errorf("docs.Update conversation: %w", err)
		}
		if err := in.publish(ctx, user, chunk); err != nil {
			return Result{}, err
		}
		in.markPublished(ctx, user, chunk)
		chunk.Published = true
	}
	return Result{Chunk: chunk, Duplicate: true}, nil
}

func (in *Intake) publish(ctx context.Context, user string, chunk records.Chunk) error {
	ev, err := records.ChunkReceivedEvent(in.Events, user, chunk)
	if err != nil {
		return fmt.Errorf("records.ChunkReceivedEvent: %w", err)
	}
	if err := in.Bus.Publish(ctx, events.TopicAudio, ev); err != nil {
		// The record stays unpublished: a retry or the reconciler
		// publishes it. Nothing is lost, but it is not yet announced.
		return fmt.Errorf("bus.Publish chunk: %w", err)
	}
	return nil
}

// markPublished records that a retry got the chunk's event out.
func (in *Intake) markPublished(ctx context.Context, user string, chunk records.Chunk) {
	err := in.Docs.Update(ctx, records.ChunkKey(user, chunk.ConversationID, chunk.Seq), func(cur *docs.Doc) (*docs.Doc, error) {
		if cur == nil {
			return nil, nil
		}
		c, err := records.ChunkFrom(*cur)
		if err != nil || c.Published {
			return cur, err
		}
		c.Published = true
		d, err := c.Doc(user)
		return &d, err
	})
	if err != nil && in.Logger != nil {
		// The event is out; a retry would publish the same id again.
		in.Logger.WarnContext(ctx, "could not mark chunk published", "error", err.Error())
	}
}

// touchConversation creates the conversation record on its first chunk and
// bumps updated_at after.
func (in *Intake) touchConversation(ctx context.Context, user, cid string, now time.Time) error {
	return in.Docs.Update(ctx, records.ConversationKey(user, cid), func(cur *docs.Doc) (*docs.Doc, error) {
		c := records.Conversation{ID: cid, CreatedAt: now}
		if cur != nil {
			var err error
			if c, err = records.ConversationFrom(*cur); err != nil {
				return nil, err
			}
		}
		if now.After(c.UpdatedAt) {
			c.UpdatedAt = now
		}
		d, err := c.Doc(user)
		return &d, err
	})
}

func (in *Intake) now() time.Time {
	if in.Now == nil {
		return time.Now().UTC()
	}
	return in.Now().UTC()
}
