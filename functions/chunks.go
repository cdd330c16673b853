package functions

import (
	"errors"
	"io"
	"net/http"
	"slices"
	"strconv"

	"github.com/lethe-dev/lethe/app/ingest"
	"github.com/lethe-dev/lethe/app/records"
)

type chunkAccepted struct {
	ConversationID string `json:"conversation_id"`
	Seq            int    `json:"seq"`
	Digest         string `json:"digest"`
	Status         string `json:"status"` // accepted | duplicate
}

// putChunk accepts one audio chunk. 202 only once the sealed blob, the chunk
// record and the event are durable; a retry with the same bytes is a 202
// without a second event; other bytes for the same seq are a 409.
func (s *Server) putChunk(w http.ResponseWriter, r *http.Request) {
	ctx := r.Context()
	c := callerFrom(ctx)
	cid, seq, ok := chunkAddress(w, r)
	if !ok {
		return
	}
	ct := r.Header.Get("Content-Type")
	if !ingest.AcceptedType(ct) {
		writeUnsupportedType(w)
		return
	}
	if r.ContentLength > s.d.MaxChunkBytes {
		writeError(w, http.StatusRequestEntityTooLarge, "too_large", "the chunk is larger than the limit")
		return
	}
	body, err := readBody(http.MaxBytesReader(w, r.Body, s.d.MaxChunkBytes), r.ContentLength)
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
	res, err := s.intake().Accept(ctx, ingest.Chunk{
		User: c.user, ConversationID: cid, Seq: seq, ContentType: ct, Audio: body, Origin: ingest.OriginApp,
	})
	if err != nil {
		s.chunkError(w, r, err)
		return
	}
	status := "accepted"
	if res.Duplicate {
		status = "duplicate"
	}
	writeJSON(w, http.StatusAccepted, chunkAccepted{res.Chunk.ConversationID, res.Chunk.Seq, res.Chunk.Digest, status})
}

// readBody reads all of body into one buffer sized from the request's
// Content-Length when it has one (already checked against the limit, which
// the MaxBytesReader around body enforces either way): io.ReadAll's
// doubling copied a chunk about three times over.
func readBody(body io.Reader, contentLength int64) ([]byte, error) {
	if contentLength <= 0 {
		return io.ReadAll(body)
	}
	// One byte more than announced, so the read that finds the end needs
	// no growth (bytes.Buffer would double first).
	buf := make([]byte, 0, contentLength+1)
	for {
		n, err := body.Read(buf[len(buf):cap(buf)])
		buf = buf[:len(buf)+n]
		switch {
		case err == io.EOF:
			return buf, nil
		case err != nil:
			return nil, err
		case len(buf) == cap(buf):
			buf = slices.Grow(buf, len(buf)) // longer than announced
		}
	}
}

// chunkAddress reads {cid} and {seq} of a chunk route, answering 400 when
// either is invalid.
func chunkAddress(w http.ResponseWriter, r *http.Request) (cid string, seq int, ok bool) {
	cid = r.PathValue("cid")
	if !records.ValidConversationID(cid) {
		writeError(w, http.StatusBadRequest, "invalid_conversation_id", "conversation id must match [A-Za-z0-9_-]{1,64}")
		return "", 0, false
	}
	seq, ok = parseSeq(r.PathValue("seq"))
	if !ok {
		writeError(w, http.StatusBadRequest, "invalid_seq", "seq must be an integer from 0 to 1000000")
		return "", 0, false
	}
	return cid, seq, true
}

func writeUnsupportedType(w http.ResponseWriter) {
	writeError(w, http.StatusUnsupportedMediaType, "unsupported_media_type", "send audio/wav, audio/L16;rate=N or audio/ogg;codecs=opus")
}

// parseSeq accepts the canonical decimal form of 0..records.MaxSeq.
func parseSeq(s string) (int, bool) {
	seq, err := strconv.Atoi(s)
	return seq, err == nil && seq >= 0 && seq <= records.MaxSeq && strconv.Itoa(seq) == s
}

func (s *Server) intake() *ingest.Intake {
	return &ingest.Intake{
		Docs: s.d.Docs, Blobs: s.d.Blobs, Keys: s.d.Keys, Bus: s.d.Bus,
		Events: s.d.Events, Logger: s.d.Logger, Now: s.d.Now,
		Retention: s.d.Retention,
	}
}

// chunkError answers a failed ingest.Accept.
func (s *Server) chunkError(w http.ResponseWriter, r *http.Request, err error) {
	switch {
	case errors.Is(err, ingest.ErrUnsupportedType):
		writeUnsupportedType(w)
	case errors.Is(err, ingest.ErrTooLong):
		writeError(w, http.StatusRequestEntityTooLarge, "too_long", "the recording plays longer than "+ingest.MaxDuration.String()+", the longest accepted")
	case errors.Is(err, ingest.ErrUnsupportedAudio):
		writeError(w, http.StatusUnsupportedMediaType, "unsupported_audio", "this audio encoding is not supported")
	case errors.Is(err, ingest.ErrMalformedAudio):
		writeError(w, http.StatusBadRequest, "malformed_audio", "the body does not decode as the declared audio type")
	case errors.Is(err, ingest.ErrEmptyAudio):
		writeError(w, http.StatusBadRequest, "empty_audio", "the chunk has no samples")
	case errors.Is(err, ingest.ErrInvalid):
		writeError(w, http.StatusBadRequest, "invalid_chunk", "invalid conversation id or seq")
	case errors.Is(err, ingest.ErrConflict):
		writeError(w, http.StatusConflict, "conflict", "this seq was already accepted with other bytes")
	case errors.Is(err, ingest.ErrTombstoned):
		writeError(w, http.StatusGone, "account_erased", "this account was erased")
	default:
		s.unavailable(w, r, "ingest.Accept", err)
	}
}

func (s *Server) unavailable(w http.ResponseWriter, r *http.Request, call string, err error) {
	s.d.Logger.ErrorContext(r.Context(), "dependency failed", "call", call, "error", err.Error())
	writeError(w, http.StatusServiceUnavailable, "unavailable", "a dependency failed; retry later")
}
