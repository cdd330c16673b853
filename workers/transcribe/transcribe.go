// Package transcribe is the worker that turns an accepted audio chunk into a
// sealed transcript segment: audio.chunk.received → transcript.created.
package transcribe

import (
	"context"
	"encoding/base64"
	"errors"
	"fmt"
	"io"
	"strconv"
	"strings"
	"time"

	"github.com/cloudevents/sdk-go/v2/event"

	"github.com/lethe-dev/lethe/app/records"
	"github.com/lethe-dev/lethe/events"
	"github.com/lethe-dev/lethe/infra/audio"
	"github.com/lethe-dev/lethe/infra/blobs"
	"github.com/lethe-dev/lethe/infra/docs"
	"github.com/lethe-dev/lethe/infra/keys"
	"github.com/lethe-dev/lethe/infra/stt"
)

// DefaultMaxSealedAudio bounds a sealed audio blob read back: above the
// default ingest limits (64 MiB signed uploads) plus what sealing adds.
const DefaultMaxSealedAudio = 96 << 20

// Worker holds the ports the handler needs.
type Worker struct {
	Docs   docs.Store
	Blobs  blobs.Bucket
	Keys   keys.Sealer
	STT    stt.Transcriber
	Bus    events.Publisher
	Events *events.Registry
	Now    func() time.Time
	// Retention is the policy of users who set none (configuration).
	Retention records.Retention
	// MaxSealedAudio bounds the sealed audio read back (0: the default).
	// A larger blob fails its chunk as too large; it is never truncated.
	MaxSealedAudio int64
	// Cutting is how a chunk is cut into pieces for the recogniser (zero:
	// audio.DefaultCutting). Each piece is recognised and stored on its
	// own (records.SegmentPart), so memory is one piece of samples beside
	// the audio's bytes, and a retry redoes only the pieces not yet done.
	Cutting audio.Cutting
}

// Handle transcribes one chunk. Idempotent: the segment id and the next
// event id are derived from (user, conversation, seq, digest), so a
// redelivery rewrites the same segment and republishes the same event.
func (w *Worker) Handle(ctx context.Context, e event.Event) error {
	var in events.ChunkReceived
	if err := w.Events.Decode(e, &in); err != nil {
		return err
	}
	if gone, err := records.Tombstoned(ctx, w.Docs, in.User); err != nil {
		return err
	} else if gone {
		return fmt.Errorf("transcribe: user tombstoned: %w", events.ErrDropped)
	}
	chunkDoc, err := w.Docs.Get(ctx, records.ChunkKey(in.User, in.ConversationID, in.Seq))
	if errors.Is(err, docs.ErrNotFound) {
		// The edge writes the record before it publishes; no record means
		// the conversation was erased since.
		return fmt.Errorf("transcribe: chunk record gone: %w", events.ErrDropped)
	}
	if err != nil {
		return fmt.Errorf("docs.Get chunk: %w", err)
	}
	chunk, err := records.ChunkFrom(chunkDoc)
	if err != nil {
		return events.Permanent(err)
	}
	if chunk.Digest != in.Digest {
		return fmt.Errorf("transcribe: event digest does not match the accepted chunk: %w", events.ErrDropped)
	}
	switch chunk.Status {
	case records.StatusIndexed, records.StatusFailed:
		return nil
	case records.StatusTranscribed:
		// Done before; the next stage may not have heard. Republish.
		seg, err := w.Docs.Get(ctx, records.SegmentKey(in.User, in.ConversationID, in.Seq))
		if err == nil {
			s, err := records.SegmentFrom(seg)
			if err != nil {
				return events.Permanent(err)
			}
			// A crash after the chunk advanced may have left its pieces.
			if err := w.deleteParts(ctx, in); err != nil {
				return err
			}
			return w.publishTranscript(ctx, in, s)
		}
		if !errors.Is(err, docs.ErrNotFound) {
			return fmt.Errorf("docs.Get segment: %w", err)
		}
	}

	body, err := w.loadAudio(ctx, in, chunk)
	if err != nil {
		return err
	}
	tr, err := w.transcribePieces(ctx, in, chunk, body)
	if err != nil {
		return err
	}
	segID := records.ChunkID(in.ConversationID, in.Seq)
	sealed, err := w.Keys.Seal(ctx, in.User, []byte(tr.Text), keys.AD(in.User, records.Segments, segID, "text"))
	if err != nil {
		return records.KeyFailure("keys.Seal segment", err)
	}
	seg := records.Segment{
		ConversationID: in.ConversationID,
		Seq:            in.Seq,
		SealedText:     sealed,
		Model:          tr.Model,
		DurationMS:     tr.DurationMS,
		CreatedAt:      w.Now().UTC(),
	}
	// Silence has nothing to search: the chunk is final without an index.
	next := records.StatusTranscribed
	if tr.Text == "" {
		next = records.StatusIndexed
	}
	if err := w.record(ctx, in, seg, chunk.ReceivedAt, next); err != nil {
		return err
	}
	// The segment holds every piece's text now.
	if err := w.deleteParts(ctx, in); err != nil {
		return err
	}
	if next == records.StatusIndexed {
		return nil
	}
	return w.publishTranscript(ctx, in, seg)
}

// transcript is the text of a whole chunk, joined from its pieces.
type transcript struct {
	Text       string
	Model      string
	DurationMS int64
}

// transcribePieces cuts the chunk's audio into pieces (audio.Segments) and
// recognises each one not already stored as a records.SegmentPart, storing
// it before the next: a redelivery resumes where this attempt stopped, and
// writes a piece under the same id, never twice.
func (w *Worker) transcribePieces(ctx context.Context, in events.ChunkReceived, chunk records.Chunk, body []byte) (transcript, error) {
	s, err := audio.Open(chunk.ContentType, body)
	if err != nil {
		// The intake decoded it before accepting; failing now is poison.
		return transcript{}, w.fail(ctx, in, "audio does not decode")
	}
	cut := w.Cutting
	if cut.Max <= 0 {
		cut = audio.DefaultCutting
	}
	// Pieces come at the audio's own rate and are resampled only to be
	// recognised: a retry skips the pieces already done at the cost of
	// decoding them, not of resampling them too.
	rate := cut.Rate
	if rate <= 0 {
		rate = audio.STTRate
	}
	cut.Rate = 0
	var (
		out   transcript
		texts []string
	)
	for piece, err := range audio.Segments(s, cut) {
		if err != nil {
			// Final: the pieces done before the bad bytes go too.
			if err := w.deleteParts(ctx, in); err != nil {
				return transcript{}, err
			}
			return transcript{}, w.fail(ctx, in, "audio does not decode")
		}
		part, text, err := w.piece(ctx, in, piece, rate)
		if err != nil {
			return transcript{}, err
		}
		if text != "" {
			texts = append(texts, text)
		}
		if out.Model == "" {
			out.Model = part.Model
		}
		out.DurationMS = part.StartMS + part.DurationMS
	}
	out.Text = strings.Join(texts, " ")
	return out, nil
}

// piece returns the stored transcript of one piece, or recognises and
// stores it.
func (w *Worker) piece(ctx context.Context, in events.ChunkReceived, piece audio.Segment, rate int) (records.SegmentPart, string, error) {
	key := records.SegmentPartKey(in.User, in.ConversationID, in.Seq, piece.Index)
	ad := keys.AD(in.User, records.SegmentParts, key.ID, "text")
	startMS, durMS := piece.Start.Milliseconds(), audio.Duration(piece.PCM).Milliseconds()
	d, err := w.Docs.Get(ctx, key)
	switch {
	case err == nil:
		p, err := records.SegmentPartFrom(d)
		if err != nil {
			return records.SegmentPart{}, "", events.Permanent(err)
		}
		// Only a piece of these very bytes, cut the same way, is reused;
		// anything else is recognised again and overwritten.
		if p.Digest == in.Digest && p.StartMS == startMS && p.DurationMS == durMS {
			text, err := w.Keys.Open(ctx, in.User, p.SealedText, ad)
			if err != nil {
				return records.SegmentPart{}, "", records.KeyFailure("keys.Open segment part", err)
			}
			return p, string(text), nil
		}
	case !errors.Is(err, docs.ErrNotFound):
		return records.SegmentPart{}, "", fmt.Errorf("docs.Get segment part: %w", err)
	}
	tr, err := w.STT.Transcribe(ctx, audio.Resample(piece.PCM, rate))
	if err != nil {
		// Recogniser down or slow: retry. Nothing about the audio is wrong.
		return records.SegmentPart{}, "", fmt.Errorf("stt.Transcribe piece %d: %w", piece.Index, err)
	}
	text := strings.TrimSpace(tr.Text)
	sealed, err := w.Keys.Seal(ctx, in.User, []byte(text), ad)
	if err != nil {
		return records.SegmentPart{}, "", records.KeyFailure("keys.Seal segment part", err)
	}
	p := records.SegmentPart{
		ConversationID: in.ConversationID, Seq: in.Seq, Part: piece.Index, Digest: in.Digest,
		StartMS: startMS, DurationMS: durMS, SealedText: sealed, Model: tr.Model,
		CreatedAt: w.Now().UTC(),
	}
	pd, err := p.Doc(in.User)
	if err != nil {
		return records.SegmentPart{}, "", events.Permanent(err)
	}
	if err := w.Docs.Put(ctx, pd); err != nil {
		return records.SegmentPart{}, "", fmt.Errorf("docs.Put segment part: %w", err)
	}
	return p, text, nil
}

// deleteParts removes the chunk's piece transcripts once its segment holds
// them (idempotent: none left is done).
func (w *Worker) deleteParts(ctx context.Context, in events.ChunkReceived) error {
	for {
		found, err := w.Docs.Query(ctx, docs.Query{User: in.User, Collection: records.SegmentParts, Filters: []docs.Filter{
			{Field: records.FieldConversation, Op: docs.Eq, Value: in.ConversationID},
			{Field: records.FieldSeq, Op: docs.Eq, Value: int64(in.Seq)},
		}, Limit: 100})
		if err != nil {
			return fmt.Errorf("docs.Query segment parts: %w", err)
		}
		for _, d := range found {
			if err := w.Docs.Delete(ctx, d.Key); err != nil && !errors.Is(err, docs.ErrNotFound) {
				return fmt.Errorf("docs.Delete segment part: %w", err)
			}
		}
		if len(found) < 100 {
			return nil
		}
	}
}

// record writes, in one transaction, the segment, when the transcript
// must be gone and, for audio kept 0 days ("until transcribed"), that the
// audio may go now (audio kept longer that has no expiry yet, because the
// policy changed from 0 since intake, gets one from its arrival), and moves
// the chunk to next. One commit, not four: a redelivery after a crash finds
// either all of it or none.
func (w *Worker) record(ctx context.Context, in events.ChunkReceived, seg records.Segment, received time.Time, next string) error {
	segDoc, err := seg.Doc(in.User)
	if err != nil {
		return events.Permanent(err)
	}
	segID := records.ChunkID(in.ConversationID, in.Seq)
	read := []docs.Key{
		records.ChunkKey(in.User, in.ConversationID, in.Seq),
		records.RetentionKey(in.User),
		records.ExpiryKey(in.User, records.ClassAudio, segID),
	}
	err = w.Docs.Transact(ctx, read, func(cur []*docs.Doc) ([]docs.Write, error) {
		if cur[0] == nil {
			return nil, errChunkGone
		}
		pol, err := records.RetentionFrom(cur[1], w.Retention)
		if err != nil {
			return nil, err
		}
		at := seg.CreatedAt
		exps := []records.Expiry{{Class: records.ClassTranscript, Ref: segID, At: pol.ExpiresAt(records.ClassTranscript, at)}}
		if pol.AudioDays == 0 {
			exps = append(exps, records.Expiry{Class: records.ClassAudio, Ref: segID, At: at})
		} else if cur[2] == nil {
			exps = append(exps, records.Expiry{Class: records.ClassAudio, Ref: segID, At: pol.ExpiresAt(records.ClassAudio, received)})
		}
		ws := []docs.Write{{Doc: segDoc}}
		for _, e := range exps {
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
		if rank(c.Status) < rank(next) {
			c.Status, c.FailReason, c.UpdatedAt = next, "", w.Now().UTC()
			d, err := c.Doc(in.User)
			if err != nil {
				return nil, err
			}
			ws = append(ws, docs.Write{Doc: d})
		}
		return ws, nil
	})
	if errors.Is(err, errChunkGone) {
		return fmt.Errorf("transcribe: chunk record gone: %w", events.ErrDropped)
	}
	if err != nil {
		return fmt.Errorf("docs.Transact segment: %w", err)
	}
	return nil
}

// loadAudio reads, opens and checks the chunk's audio bytes. Memory: the
// sealed blob and the opened bytes (the AEAD is not streaming), bounded
// by MaxSealedAudio; the sealed copy is garbage once this returns.
func (w *Worker) loadAudio(ctx context.Context, in events.ChunkReceived, chunk records.Chunk) ([]byte, error) {
	if chunk.BlobKey == "" {
		// Deleted by a retention sweep: nothing left to transcribe.
		return nil, fmt.Errorf("transcribe: audio deleted by retention: %w", events.ErrDropped)
	}
	rc, attrs, err := w.Blobs.Read(ctx, chunk.BlobKey)
	if errors.Is(err, blobs.ErrNotFound) {
		return nil, fmt.Errorf("transcribe: audio blob gone: %w", events.ErrDropped)
	}
	if err != nil {
		return nil, fmt.Errorf("blobs.Read: %w", err)
	}
	limit := w.MaxSealedAudio
	if limit <= 0 {
		limit = DefaultMaxSealedAudio
	}
	if attrs.Size > limit {
		rc.Close()
		return nil, w.fail(ctx, in, "audio too large")
	}
	// One byte over the limit tells a larger blob (whatever its reported
	// size) from one that fits: cut short, it would fail to open and read
	// as tampering.
	sealed, err := io.ReadAll(io.LimitReader(rc, limit+1))
	rc.Close()
	if err != nil {
		return nil, fmt.Errorf("blobs.Read body: %w", err)
	}
	if int64(len(sealed)) > limit {
		return nil, w.fail(ctx, in, "audio too large")
	}
	body, err := w.Keys.Open(ctx, in.User, sealed, keys.AD(in.User, "blobs", chunk.BlobKey, "audio"))
	if err != nil {
		return nil, records.KeyFailure("keys.Open audio", err)
	}
	digest, err := w.Keys.Digest(ctx, in.User, body)
	if err != nil {
		return nil, records.KeyFailure("keys.Digest audio", err)
	}
	if digest != chunk.Digest {
		return nil, w.fail(ctx, in, "audio digest mismatch")
	}
	return body, nil
}

// fail marks the chunk failed (final) and returns a permanent error so the
// event is dead-lettered with the reason.
func (w *Worker) fail(ctx context.Context, in events.ChunkReceived, reason string) error {
	if err := w.advance(ctx, in, records.StatusFailed, reason); err != nil {
		return err
	}
	return events.Permanentf("transcribe %s: %s", records.ChunkID(in.ConversationID, in.Seq), reason)
}

// advance moves the chunk forward, never back (a late redelivery must not
// undo the store worker's "indexed").
func (w *Worker) advance(ctx context.Context, in events.ChunkReceived, status, reason string) error {
	err := w.Docs.Update(ctx, records.ChunkKey(in.User, in.ConversationID, in.Seq), func(cur *docs.Doc) (*docs.Doc, error) {
		if cur == nil {
			return nil, errChunkGone
		}
		c, err := records.ChunkFrom(*cur)
		if err != nil {
			return nil, err
		}
		if rank(c.Status) >= rank(status) {
			return cur, nil
		}
		c.Status, c.FailReason, c.UpdatedAt = status, reason, w.Now().UTC()
		d, err := c.Doc(in.User)
		return &d, err
	})
	if errors.Is(err, errChunkGone) {
		return fmt.Errorf("transcribe: chunk record gone: %w", events.ErrDropped)
	}
	if err != nil {
		return fmt.Errorf("docs.Update chunk: %w", err)
	}
	return nil
}

var errChunkGone = errors.New("chunk record gone")

func rank(status string) int {
	switch status {
	case records.StatusReceived:
		return 0
	case records.StatusTranscribed:
		return 1
	default: // indexed, failed: final
		return 2
	}
}

func (w *Worker) publishTranscript(ctx context.Context, in events.ChunkReceived, seg records.Segment) error {
	segID := records.ChunkID(in.ConversationID, in.Seq)
	text, err := w.Keys.Open(ctx, in.User, seg.SealedText, keys.AD(in.User, records.Segments, segID, "text"))
	if err != nil {
		return records.KeyFailure("keys.Open segment", err)
	}
	id := events.DeriveID("transcript", in.User, in.ConversationID, strconv.Itoa(in.Seq), in.Digest)
	sealed, err := w.Keys.Seal(ctx, in.User, text, keys.AD(in.User, "events/"+events.TypeTranscriptCreated, id, "sealed_text"))
	if err != nil {
		return records.KeyFailure("keys.Seal event", err)
	}
	out := events.TranscriptCreated{
		User:           in.User,
		ConversationID: in.ConversationID,
		Seq:            in.Seq,
		SegmentID:      segID,
		SealedText:     base64.StdEncoding.EncodeToString(sealed),
		Model:          seg.Model,
		DurationMS:     seg.DurationMS,
	}
	ev, err := w.Events.NewWithID(id, events.TypeTranscriptCreated,
		events.Subject(in.User, "conversations", in.ConversationID, "chunks", strconv.Itoa(in.Seq)), out)
	if err != nil {
		return events.Permanent(err)
	}
	if err := w.Bus.Publish(ctx, events.TopicTranscripts, ev); err != nil {
		return fmt.Errorf("bus.Publish transcript: %w", err)
	}
	return nil
}
