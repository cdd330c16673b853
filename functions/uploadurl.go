package functions

import (
	"context"
	"errors"
	"net/http"
	"strconv"
	"time"

	"github.com/lethe-dev/lethe/app/ingest"
	"github.com/lethe-dev/lethe/app/records"
	"github.com/lethe-dev/lethe/infra/docs"
)

// Defaults when Deps leaves MaxUploadBytes or UploadURLTTL zero.
const (
	DefaultMaxUploadBytes int64 = 64 << 20
	DefaultUploadURLTTL         = 15 * time.Minute
)

const (
	// maxUploadURLBody bounds the request: two short fields.
	maxUploadURLBody = 4 << 10
	// maxUploadContentType is the longest content type Cloud Storage
	// metadata takes here (gcsblobs refuses longer).
	maxUploadContentType = 256
)

// UploadSigner issues a URL for one PUT of the upload object of (userHash,
// cid, seq) straight to the bucket, bound to contentType and to a length
// of at most maxBytes, valid for ttl; headers are those the uploader must
// send exactly. gcsblobs.UploadSigner is the implementation. The URL is a
// bearer credential: never log it.
type UploadSigner interface {
	SignUpload(ctx context.Context, userHash, cid string, seq int, contentType string, maxBytes int64, ttl time.Duration) (string, map[string]string, error)
}

type uploadURLRequest struct {
	ContentType string `json:"content_type"`
	// A pointer, so a missing size is told from a zero one.
	Size *int64 `json:"size"`
	// DurationMS is how long the recording plays. Required: a size alone
	// cannot tell an hour of Opus (a few MB) from a minute of WAV, and a
	// recording past ingest.MaxDuration must be refused before it is
	// sent, not after (the uploads worker enforces the same limit on the
	// bytes that arrive).
	DurationMS *int64 `json:"duration_ms"`
}

type uploadURLResponse struct {
	URL            string            `json:"url"`
	Method         string            `json:"method"`
	Headers        map[string]string `json:"headers"`
	ExpiresAt      string            `json:"expires_at"` // RFC 3339, UTC
	MaxBytes       int64             `json:"max_bytes"`
	ConversationID string            `json:"conversation_id"`
	Seq            int               `json:"seq"`
}

// uploadURL issues a signed URL for a recording too large for one request
// (Cloud Run caps bodies at 32 MiB). The app PUTs the audio there; the
// bucket's finalize notification brings it into the pipeline through the
// same intake as putChunk, keyed by the same (user, cid, seq). The URL is
// bound to the declared content type and to lengths 0..size, so it cannot
// carry more than was declared here.
func (s *Server) uploadURL(w http.ResponseWriter, r *http.Request) {
	ctx := r.Context()
	c := callerFrom(ctx)
	if s.d.Uploads == nil {
		writeError(w, http.StatusNotImplemented, "not_configured", "signed uploads need Cloud Storage (LETHE_BLOBS=gcs)")
		return
	}
	cid, seq, ok := chunkAddress(w, r)
	if !ok {
		return
	}
	var req uploadURLRequest
	if !s.readJSON(w, r, uploadURLBody, &req) {
		return
	}
	if len(req.ContentType) > maxUploadContentType || !ingest.AcceptedType(req.ContentType) {
		writeUnsupportedType(w)
		return
	}
	if req.Size == nil || *req.Size <= 0 {
		writeError(w, http.StatusBadRequest, "invalid_size", "size must be the recording's length in bytes, at least 1")
		return
	}
	size, limit := *req.Size, s.maxUploadBytes()
	if size > limit {
		writeError(w, http.StatusRequestEntityTooLarge, "too_large", "the recording is larger than the limit of "+strconv.FormatInt(limit, 10)+" bytes")
		return
	}
	if req.DurationMS == nil || *req.DurationMS <= 0 {
		writeError(w, http.StatusBadRequest, "invalid_duration", "duration_ms must be how long the recording plays, in milliseconds, at least 1")
		return
	}
	if time.Duration(*req.DurationMS) > ingest.MaxDuration/time.Millisecond {
		writeError(w, http.StatusRequestEntityTooLarge, "too_long", "the recording plays longer than "+ingest.MaxDuration.String()+", the longest accepted; split it into chunks (seqs) of at most that")
		return
	}
	// A seq already accepted would only meet a conflict or a duplicate
	// after the whole upload: refuse it before any byte is sent.
	switch _, err := s.d.Docs.Get(ctx, records.ChunkKey(c.user, cid, seq)); {
	case err == nil:
		writeError(w, http.StatusConflict, "conflict", "this seq is already accepted; upload under the next seq")
		return
	case !errors.Is(err, docs.ErrNotFound):
		s.unavailable(w, r, "docs.Get chunk", err)
		return
	}
	ttl := s.uploadURLTTL()
	// Taken before signing, so the URL lives at least until expires_at.
	expires := s.d.Now().UTC().Add(ttl).Truncate(time.Second)
	url, headers, err := s.d.Uploads.SignUpload(ctx, c.user, cid, seq, req.ContentType, size, ttl)
	if err != nil {
		s.unavailable(w, r, "UploadSigner.SignUpload", err)
		return
	}
	writeJSON(w, http.StatusOK, uploadURLResponse{
		URL: url, Method: http.MethodPut, Headers: headers,
		ExpiresAt: expires.Format(time.RFC3339), MaxBytes: size,
		ConversationID: cid, Seq: seq,
	})
}

// uploadURLBody is the POST .../upload-url body. The schema checks the
// shape; the handler answers the type (415) and the size (400, 413) with
// their own codes.
var uploadURLBody = newBodySchema("upload_url", "https://lethe.dev/schemas/api/upload-url.json", `{
  "$schema": "https://json-schema.org/draft/2020-12/schema",
  "$id": "https://lethe.dev/schemas/api/upload-url.json",
  "type": "object",
  "additionalProperties": false,
  "properties": {
    "content_type": {"type": "string", "maxLength": 1024},
    "size": {"type": "integer"},
    "duration_ms": {"type": "integer"}
  }
}`, maxUploadURLBody, `the body must be one JSON object {"content_type": "...", "size": N, "duration_ms": N}`)

func (s *Server) maxUploadBytes() int64 {
	if s.d.MaxUploadBytes > 0 {
		return s.d.MaxUploadBytes
	}
	return DefaultMaxUploadBytes
}

func (s *Server) uploadURLTTL() time.Duration {
	if s.d.UploadURLTTL > 0 {
		return s.d.UploadURLTTL
	}
	return DefaultUploadURLTTL
}
