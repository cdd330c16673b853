package ingest

import (
	"context"
	"encoding/base64"
	"errors"
	"fmt"
	"strconv"
	"unicode/utf8"

	"github.com/lethe-dev/lethe/app/records"
	"github.com/lethe-dev/lethe/events"
	"github.com/lethe-dev/lethe/infra/docs"
	"github.com/lethe-dev/lethe/infra/keys"
)

// MaxText bounds a text memory (an SMS is at most 1,600 characters).
const MaxText = 16 << 10

// ErrInvalidText: empty, oversized or not UTF-8.
var ErrInvalidText = errors.New("ingest: invalid text")

// Text is a memory that arrives as text (an SMS): it skips speech-to-text
// and enters the pipeline where a transcript would, so it is embedded,
// searchable, exported, expired and erased like one.
type Text struct {
	User           string
	ConversationID string
	Text           []byte
	Origin         string
	// Model names the source in place of a recogniser ("twilio-sms").
	Model string
}

// AcceptText stores t as the sealed segment of chunk 0 of its conversation
// (a chunk record with no audio, already transcribed) and publishes the
// transcript event the embedder takes. Idempotent on (user, conversation):
// a replay republishes the same event id and writes nothing new; other
// text for the same conversation is ErrConflict.
func (in *Intake) AcceptText(ctx context.Context, t Text) (Result, error) {
	if !records.ValidConversationID(t.ConversationID) || t.User == "" {
		return Result{}, ErrInvalid
	}
	if len(t.Text) == 0 || len(t.Text) > MaxText || !utf8.Valid(t.Text) {
		return Result{}, ErrInvalidText
	}
	const seq = 0
	digest, err := in.Keys.Digest(ctx, t.User, t.Text)
	if err != nil {
		return Result{}, fmt.Errorf("keys.Digest text: %w", err)
	}
	segID := records.ChunkID(t.ConversationID, seq)
	if existing, err := in.Docs.Get(ctx, records.ChunkKey(t.User, t.ConversationID, seq)); err == nil {
		chunk, err := records.ChunkFrom(existing)
		if err != nil {
			return Result{}, fmt.Errorf("records.ChunkFrom: %w", err)
		}
		if chunk.Digest != digest {
			return Result{}, ErrConflict
		}
		if chunk.Status == records.StatusTranscribed {
			// The first attempt may have stopped before its event.
			if err := in.publishText(ctx, t, digest, segID); err != nil {
				return Result{}, err
			}
		}
		return Result{Chunk: chunk, Duplicate: true}, nil
	} else if !errors.Is(err, docs.ErrNotFound) {
		return Result{}, fmt.Errorf("docs.Get chunk: %w", err)
	}

	now := in.now()
	sealed, err := in.Keys.Seal(ctx, t.User, t.Text, keys.AD(t.User, records.Segments, segID, "text"))
	if err != nil {
		return Result{}, fmt.Errorf("keys.Seal text: %w", err)
	}
	seg := records.Segment{ConversationID: t.ConversationID, Seq: seq, SealedText: sealed, Model: t.Model, CreatedAt: now}
	sd, err := seg.Doc(t.User)
	if err != nil {
		return Result{}, fmt.Errorf("records.Segment.Doc: %w", err)
	}
	// The segment and its expiry before the chunk record: the record says
	// "accepted", so whatever it points to exists first.
	if err := in.Docs.Put(ctx, sd); err != nil {
		return Result{}, fmt.Errorf("docs.Put segment: %w", err)
	}
	pol, err := records.ReadRetention(ctx, in.Docs, t.User, in.Retention)
	if err != nil {
		return Result{}, fmt.Errorf("records.ReadRetention: %w", err)
	}
	if err := records.ScheduleExpiry(ctx, in.Docs, t.User, records.Expiry{Class: records.ClassTranscript, Ref: segID, At: pol.ExpiresAt(records.ClassTranscript, now)}); err != nil {
		return Result{}, fmt.Errorf("records.ScheduleExpiry transcript: %w", err)
	}
	chunk := records.Chunk{
		ConversationID: t.ConversationID, Seq: seq, Status: records.StatusTranscribed,
		ContentType: "text/plain", Digest: digest, Size: int64(len(t.Text)), Origin: t.Origin,
		// The chunk's own event id, as for audio: a reconciler re-drive
		// (a chunk event with no blob) reaches the transcriber, which finds
		// the segment and republishes this very transcript event.
		EventID: records.ChunkEventID(t.User, t.ConversationID, seq, digest), Published: true,
		ReceivedAt: now, UpdatedAt: now,
	}
	cd, err := chunk.Doc(t.User)
	if err != nil {
		return Result{}, fmt.Errorf("records.Chunk.Doc: %w", err)
	}
	if err := in.Docs.Create(ctx, cd); err != nil && !errors.Is(err, docs.ErrAlreadyExists) {
		return Result{}, fmt.Errorf("docs.Create chunk: %w", err)
	}
	if err := in.touchConversation(ctx, t.User, t.ConversationID, now); err != nil {
		return Result{}, fmt.Errorf("docs.Update conversation: %w", err)
	}
	if err := in.publishText(ctx, t, digest, segID); err != nil {
		return Result{}, err
	}
	return Result{Chunk: chunk}, nil
}

// transcriptEventID is the transcriber's id for a segment's event, so a
// re-drive through the transcriber republishes the very same event.
func transcriptEventID(user, cid string, seq int, digest string) string {
	return events.DeriveID("transcript", user, cid, strconv.Itoa(seq), digest)
}

func (in *Intake) publishText(ctx context.Context, t Text, digest, segID string) error {
	id := transcriptEventID(t.User, t.ConversationID, 0, digest)
	sealed, err := in.Keys.Seal(ctx, t.User, t.Text, keys.AD(t.User, "events/"+events.TypeTranscriptCreated, id, "sealed_text"))
	if err != nil {
		return fmt.Errorf("keys.Seal event: %w", err)
	}
	ev, err := in.Events.NewWithID(id, events.TypeTranscriptCreated,
		events.Subject(t.User, "conversations", t.ConversationID, "chunks", "0"),
		events.TranscriptCreated{
			User: t.User, ConversationID: t.ConversationID, Seq: 0, SegmentID: segID,
			SealedText: base64.StdEncoding.EncodeToString(sealed), Model: t.Model, DurationMS: 0,
		})
	if err != nil {
		return fmt.Errorf("events.New transcript: %w", err)
	}
	if err := in.Bus.Publish(ctx, events.TopicTranscripts, ev); err != nil {
		return fmt.Errorf("bus.Publish transcript: %w", err)
	}
	return nil
}
