// Package gcsnotify parses Cloud Storage's Pub/Sub notifications of the
// upload bucket (the JSON_API_V1 payload). It holds no storage client, so
// the uploads worker decodes notifications without importing an adapter.
package gcsnotify

import (
	"bytes"
	"encoding/base64"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"maps"
	"mime"
	"strconv"
	"unicode/utf8"

	"github.com/lethe-dev/lethe/app/records"
)

// The upload layout is records.UploadKey's; UploadsPrefix is kept for
// the notification's object prefix.
const (
	UploadsPrefix = records.UploadsPrefix
	// maxNotification bounds the object resource we parse: metadata is
	// at most 8 KiB, the rest is a few hundred bytes.
	maxNotification = 64 << 10
	// As Cloud Storage bounds them (and gcsblobs before writing).
	maxCType    = 256
	maxMetadata = 8 << 10
)

var (
	// ErrNotFinalize: a well-formed notification of another event type
	// (delete, archive, metadata update). Acknowledge and drop it.
	ErrNotFinalize = errors.New("gcsnotify: not an OBJECT_FINALIZE notification")
	// ErrInvalidNotification: malformed or outside the upload layout;
	// a permanent failure (poison), never retried.
	ErrInvalidNotification = errors.New("gcsnotify: invalid finalize notification")
)

// FinalizeNotification is one completed upload.
type FinalizeNotification struct {
	Bucket      string
	Object      string
	Generation  int64
	Size        int64
	ContentType string
	CRC32C      uint32
	Metadata    map[string]string
	// From the object name (see UploadsPrefix).
	UserHash       string
	ConversationID string
	Seq            int
}

// objectResource is the part of the JSON_API_V1 payload we use. Cloud
// Storage encodes int64 fields as strings; a number there is refused.
type objectResource struct {
	Kind        string            `json:"kind"`
	Name        string            `json:"name"`
	Bucket      string            `json:"bucket"`
	Generation  string            `json:"generation"`
	Size        string            `json:"size"`
	ContentType string            `json:"contentType"`
	CRC32C      string            `json:"crc32c"`
	MD5Hash     string            `json:"md5Hash"`
	Metadata    map[string]string `json:"metadata"`
}

// ParseFinalizeNotification validates a Cloud Storage Pub/Sub notification
// (message attributes and body) from bucket. Attributes and body must
// agree on bucket, object and generation. Other event types are
// ErrNotFinalize; anything malformed or outside the upload layout is
// ErrInvalidNotification. Errors never quote the object name or metadata.
func ParseFinalizeNotification(bucket string, attributes map[string]string, data []byte) (FinalizeNotification, error) {
	bad := func(what string) (FinalizeNotification, error) {
		return FinalizeNotification{}, fmt.Errorf("%w: %s", ErrInvalidNotification, what)
	}
	switch et := attributes["eventType"]; et {
	case "OBJECT_FINALIZE":
	case "OBJECT_DELETE", "OBJECT_ARCHIVE", "OBJECT_METADATA_UPDATE":
		return FinalizeNotification{}, ErrNotFinalize
	default:
		return bad("eventType")
	}
	if attributes["payloadFormat"] != "JSON_API_V1" {
		return bad("payloadFormat")
	}
	if bucket == "" || attributes["bucketId"] != bucket {
		return bad("bucketId")
	}
	objectID := attributes["objectId"]
	userHash, cid, seq, err := records.ParseUploadKey(objectID)
	if err != nil {
		return bad("object outside the upload layout")
	}
	gen, ok := parseCanonicalInt(attributes["objectGeneration"])
	if !ok || gen <= 0 {
		return bad("objectGeneration")
	}
	if len(data) > maxNotification {
		return bad("payload too large")
	}
	var o objectResource
	dec := json.NewDecoder(bytes.NewReader(data))
	if err := dec.Decode(&o); err != nil {
		return bad("payload is not an object resource")
	}
	if _, err := dec.Token(); !errors.Is(err, io.EOF) {
		return bad("trailing data after the object resource")
	}
	if o.Kind != "storage#object" || o.Name != objectID || o.Bucket != bucket {
		return bad("payload disagrees with attributes")
	}
	if g, ok := parseCanonicalInt(o.Generation); !ok || g != gen {
		return bad("payload generation disagrees with attributes")
	}
	size, ok := parseCanonicalInt(o.Size)
	if !ok || size <= 0 {
		return bad("size")
	}
	if _, _, err := mime.ParseMediaType(o.ContentType); err != nil || len(o.ContentType) > maxCType {
		return bad("contentType")
	}
	crc, err := base64.StdEncoding.Strict().DecodeString(o.CRC32C)
	if err != nil || len(crc) != 4 {
		return bad("crc32c")
	}
	// md5Hash is absent for composite objects; when present it is 16 bytes.
	if o.MD5Hash != "" {
		if m, err := base64.StdEncoding.Strict().DecodeString(o.MD5Hash); err != nil || len(m) != 16 {
			return bad("md5Hash")
		}
	}
	total := 0
	for k, v := range o.Metadata {
		if k == "" || !utf8.ValidString(k) || !utf8.ValidString(v) {
			return bad("metadata")
		}
		total += len(k) + len(v)
	}
	if total > maxMetadata {
		return bad("metadata too large")
	}
	var md map[string]string
	if len(o.Metadata) > 0 {
		md = maps.Clone(o.Metadata)
	}
	return FinalizeNotification{
		Bucket:         bucket,
		Object:         objectID,
		Generation:     gen,
		Size:           size,
		ContentType:    o.ContentType,
		CRC32C:         binary.BigEndian.Uint32(crc),
		Metadata:       md,
		UserHash:       userHash,
		ConversationID: cid,
		Seq:            seq,
	}, nil
}

// parseCanonicalInt accepts the decimal form Cloud Storage writes: digits
// only, no sign, no leading zeros, fits int64.
func parseCanonicalInt(s string) (int64, bool) {
	if s == "" || len(s) > 19 || (len(s) > 1 && s[0] == '0') {
		return 0, false
	}
	for i := 0; i < len(s); i++ {
		if s[i] < '0' || s[i] > '9' {
			return 0, false
		}
	}
	n, err := strconv.ParseInt(s, 10, 64)
	return n, err == nil
}
