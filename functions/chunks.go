package functions

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"io"
	"mime"
	"net/http"
	"strconv"
	"strings"

	"github.com/lethe-dev/lethe/events"
	"github.com/lethe-dev/lethe/infra/audio"
	"github.com/lethe-dev/lethe/infra/blobs"
	"github.com/lethe-dev/lethe/infra/docs"
	"github.com/lethe-dev/lethe/infra/keys"
	"github.com/lethe-dev/lethe/infra/records"
)

// acceptedAudio are the media types a chunk may have.
var acceptedAudio = map[string]bool{
	"audio/wav": true, "audio/wave": true, "audio/x-wav": true,
	"audio/l16": true, "audio/ogg": true, "audio/opus": true,
}

type chunkAccepted struct {
	ConversationID string `json:"conversation_id"`
	Seq            int    `json:"seq"`
	SHA256         string `json:"sha256"`
	Status         string `json:"status"` // accepted | duplicate
}

// putChunk accepts one audio chunk. 202 only once the sealed blob, the chunk
// record and the event are durable; a retry with the same bytes is a 202
// without a second event; other bytes for the same seq are a 409.
func (s *Server) putChunk(w http.ResponseWriter, r *http.Request) {
	ctx := r.Context()
	c := callerFrom(ctx)
	cid := r.PathValue("cid")
	if !records.ValidConversationID(cid) {
		writeError(w, http.StatusBadRequest, "invalid_conversation_id", "conversation id must match [A-Za-z0-9_-]{1,64}")
		return
	}
	seq, err := strconv.Atoi(r.PathValue("seq"))
	if err != nil || seq < 0 || seq > records.MaxSeq || strconv.Itoa(seq) != r.PathValue("seq") {
		writeError(w, http.StatusBadRequest, "invalid_seq", "seq must be an integer from 0 to 1000000")
		return
	}
	ct := r.Header.Get("Content-Type")
	mt, _, err := mime.ParseMediaType(ct)
	if err != nil || !acceptedAudio[strings.ToLower(mt)] {
		writeError(w, http.StatusUnsupportedMediaType, "unsupported_media_type", "send audio/wav, audio/L16;rate=N or audio/ogg;codecs=opus")
		return
	}
	if r.ContentLength > s.d.MaxChunkBytes {
		writeError(w, http.StatusRequestEntityTooLarge, "too_large", "the chunk is larger than the limit")
		return
	}
	body, err := io.ReadAll(http.MaxBytesReader(w, r.Body, s.d.MaxChunkBytes))
	if err != nil {
		var mbe *http.MaxBytesError
		if errors.As(err, &mbe) {
			writeError(w, http.StatusRequestEntityTooLarge, "too_large", "the chunk is larger than the limit")
			return
		}
		writeError(w, http.StatusBadRequest, "bad_body", "could not read the body")
		return
	}
	if len(body) == 0 {
		writeError(w, http.StatusBadRequest, "empty_body", "the chunk has no audio")
		return
	}
	pcm, err := audio.Decode(ct, bytes.Clone(body))
	switch {
	case errors.Is(err, audio.ErrUnsupported):
		writeError(w, http.StatusUnsupportedMediaType, "unsupported_audio", "this audio encoding is not supported")
		return
	case err != nil:
		writeError(w, http.StatusBadRequest, "malformed_audio", "the body does not decode as the declared audio type")
		return
	case len(pcm.Samples) == 0:
		writeError(w, http.StatusBadRequest, "empty_audio", "the chunk has no samples")
		return
	}
	sum := sha256.Sum256(body)
	digest := hex.EncodeToString(sum[:])

	key := records.ChunkKey(c.user, cid, seq)
	existing, err := s.d.Docs.Get(ctx, key)
	switch {
	case err == nil:
		s.retryChunk(w, r, existing, digest)
		return
	case !errors.Is(err, docs.ErrNotFound):
		s.unavailable(w, r, "docs.Get chunk", err)
		return
	}

	now := s.d.Now().UTC()
	blobKey := records.AudioKey(c.user, cid, seq, digest)
	sealed, err := s.d.Keys.Seal(ctx, c.user, body, keys.AD(c.user, "blobs", blobKey, "audio"))
	if errors.Is(err, keys.ErrTombstoned) {
		writeError(w, http.StatusForbidden, "erased", "this account has been erased")
		return
	}
	if err != nil {
		s.unavailable(w, r, "keys.Seal audio", err)
		return
	}
	// The digest is in the key, so an object already there holds these very
	// bytes (from an attempt that stopped before the record).
	_, err = s.d.Blobs.Write(ctx, blobKey, bytes.NewReader(sealed), blobs.WriteOptions{
		ContentType: "application/octet-stream", CreateOnly: true,
		Metadata: map[string]string{"sealed": "tink-aead"},
	})
	if err != nil && !errors.Is(err, blobs.ErrPrecondition) {
		s.unavailable(w, r, "blobs.Write audio", err)
		return
	}
	chunk := records.Chunk{
		ConversationID: cid, Seq: seq, Status: records.StatusReceived,
		BlobKey: blobKey, ContentType: ct, SampleRate: pcm.SampleRate,
		SHA256: digest, Size: int64(len(body)), Origin: "app",
		EventID:    records.ChunkEventID(c.user, cid, seq, digest),
		ReceivedAt: now, UpdatedAt: now,
	}
	doc, err := chunk.Doc(c.user)
	if err != nil {
		s.unavailable(w, r, "records.Chunk.Doc", err)
		return
	}
	if err := s.d.Docs.Create(ctx, doc); err != nil {
		if errors.Is(err, docs.ErrAlreadyExists) {
			// A concurrent upload of the same seq won the race.
			if existing, gerr := s.d.Docs.Get(ctx, key); gerr == nil {
				s.retryChunk(w, r, existing, digest)
				return
			}
		}
		s.unavailable(w, r, "docs.Create chunk", err)
		return
	}
	if err := s.touchConversation(r, c.user, cid, now); err != nil {
		s.unavailable(w, r, "docs.Update conversation", err)
		return
	}
	s.publishChunk(w, r, chunk, "accepted")
}

// retryChunk answers an upload of a seq that already has a record.
func (s *Server) retryChunk(w http.ResponseWriter, r *http.Request, existing docs.Doc, digest string) {
	chunk, err := records.ChunkFrom(existing)
	if err != nil {
		s.unavailable(w, r, "records.ChunkFrom", err)
		return
	}
	if chunk.SHA256 != digest {
		writeError(w, http.StatusConflict, "conflict", "this seq was already accepted with other bytes")
		return
	}
	if chunk.Published {
		writeJSON(w, http.StatusAccepted, chunkAccepted{chunk.ConversationID, chunk.Seq, chunk.SHA256, "duplicate"})
		return
	}
	// The first attempt stopped after the record: publish now. The event id
	// is the same, so consumers see one event even if both got out.
	s.publishChunk(w, r, chunk, "duplicate")
}

func (s *Server) publishChunk(w http.ResponseWriter, r *http.Request, chunk records.Chunk, status string) {
	ctx := r.Context()
	user := callerFrom(ctx).user
	ev, err := records.ChunkReceivedEvent(s.d.Events, user, chunk)
	if err != nil {
		s.unavailable(w, r, "records.ChunkReceivedEvent", err)
		return
	}
	if err := s.d.Bus.Publish(ctx, events.TopicAudio, ev); err != nil {
		// The record stays unpublished: a client retry or the reconciler
		// publishes it. Nothing is lost, but we cannot say "durable".
		s.unavailable(w, r, "bus.Publish chunk", err)
		return
	}
	err = s.d.Docs.Update(ctx, records.ChunkKey(user, chunk.ConversationID, chunk.Seq), func(cur *docs.Doc) (*docs.Doc, error) {
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
	if err != nil {
		// The event is out; a retry would publish the same id again.
		s.d.Logger.WarnContext(ctx, "could not mark chunk published", "error", err.Error())
	}
	writeJSON(w, http.StatusAccepted, chunkAccepted{chunk.ConversationID, chunk.Seq, chunk.SHA256, status})
}

func (s *Server) unavailable(w http.ResponseWriter, r *http.Request, call string, err error) {
	s.d.Logger.ErrorContext(r.Context(), "dependency failed", "call", call, "error", err.Error())
	writeError(w, http.StatusServiceUnavailable, "unavailable", "a dependency failed; retry later")
}
