package export

import (
	"archive/zip"
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"hash"
	"io"
	"mime"
	"strings"
	"time"

	"github.com/lethe-dev/lethe/app/audit"
	"github.com/lethe-dev/lethe/app/phones"
	"github.com/lethe-dev/lethe/app/records"
	"github.com/lethe-dev/lethe/infra/blobs"
	"github.com/lethe-dev/lethe/infra/docs"
	"github.com/lethe-dev/lethe/infra/keys"
)

// Names inside the archive.
const (
	FileManifest      = "manifest.json"
	FileConversations = "conversations.ndjson"
	FileChunks        = "chunks.ndjson"
	FileSegments      = "segments.ndjson"
	FileNotes         = "notes.ndjson"
	FileAudit         = "audit.ndjson"
	FileRetention     = "retention.json"
	AudioDir          = "audio/"
	// Format names the archive layout in the manifest.
	Format = "lethe-export/v1"
)

// DefaultPage is how many documents one query reads.
const DefaultPage = 200

// maxSealedAudio bounds one audio blob read back (the ingest limits are
// below it).
const maxSealedAudio = 96 << 20

// Manifest is manifest.json: every other file of the archive with its size
// and SHA-256 (hex), so the owner can check the archive is whole.
type Manifest struct {
	Format    string         `json:"format"`
	ExportID  string         `json:"export_id"`
	CreatedAt time.Time      `json:"created_at"`
	Files     []ManifestFile `json:"files"`
	Counts    map[string]int `json:"counts"`
}

// ManifestFile is one file of the archive.
type ManifestFile struct {
	Path   string `json:"path"`
	Size   int64  `json:"size"`
	SHA256 string `json:"sha256"`
}

// Lines of the NDJSON files.
type (
	chunkLine struct {
		ConversationID string    `json:"conversation_id"`
		Seq            int       `json:"seq"`
		Status         string    `json:"status"`
		ContentType    string    `json:"content_type"`
		SampleRate     int       `json:"sample_rate,omitempty"`
		Size           int64     `json:"size"`
		Origin         string    `json:"origin"`
		ReceivedAt     time.Time `json:"received_at"`
		UpdatedAt      time.Time `json:"updated_at"`
		FailReason     string    `json:"fail_reason,omitempty"`
		// Audio is the archive path of the original audio (its SHA-256 is
		// in the manifest); absent when retention already deleted it.
		Audio string `json:"audio,omitempty"`
	}
	segmentLine struct {
		ConversationID string    `json:"conversation_id"`
		Seq            int       `json:"seq"`
		Text           string    `json:"text"`
		Model          string    `json:"model"`
		DurationMS     int64     `json:"duration_ms"`
		CreatedAt      time.Time `json:"created_at"`
	}
	noteLine struct {
		ID string `json:"id"`
		// Ciphertext is the client's own ciphertext (base64), as it sent
		// it: only the client's key opens it.
		Ciphertext string    `json:"ciphertext"`
		CreatedAt  time.Time `json:"created_at"`
	}
)

// built is a finished archive.
type built struct {
	zip    []byte
	size   int64
	sha256 string
	files  int
	counts map[string]int
}

// archive writes files into a ZIP held in memory, bounded, recording each
// file's size and digest for the manifest.
type archive struct {
	out   *boundedBuffer
	zw    *zip.Writer
	files []ManifestFile
	when  time.Time
}

// file adds one file whose content fn writes; store skips compression
// (audio that is already compressed, or nearly incompressible PCM).
// FilePhones holds the user's proven phones (masked) and the records of
// their calls.
const FilePhones = "phones.ndjson"

func (a *archive) file(path string, store bool, fn func(w io.Writer) error) error {
	method := zip.Deflate
	if store {
		method = zip.Store
	}
	zf, err := a.zw.CreateHeader(&zip.FileHeader{Name: path, Method: method, Modified: a.when})
	if err != nil {
		return fmt.Errorf("zip.CreateHeader %s: %w", path, a.why(err))
	}
	hw := &hashingWriter{w: zf, h: sha256.New()}
	if err := fn(hw); err != nil {
		return a.why(err)
	}
	a.files = append(a.files, ManifestFile{Path: path, Size: hw.n, SHA256: hex.EncodeToString(hw.h.Sum(nil))})
	return nil
}

// why prefers ErrTooLarge to the zip writer's wrapping of it.
func (a *archive) why(err error) error {
	if a.out.over {
		return ErrTooLarge
	}
	return err
}

type hashingWriter struct {
	w io.Writer
	h hash.Hash
	n int64
}

func (hw *hashingWriter) Write(p []byte) (int, error) {
	n, err := hw.w.Write(p)
	hw.h.Write(p[:n])
	hw.n += int64(n)
	return n, err
}

// boundedBuffer is a bytes.Buffer that refuses to grow past max.
type boundedBuffer struct {
	buf  bytes.Buffer
	max  int64
	over bool
}

func (b *boundedBuffer) Write(p []byte) (int, error) {
	if int64(b.buf.Len())+int64(len(p)) > b.max {
		b.over = true
		return 0, ErrTooLarge
	}
	return b.buf.Write(p)
}

func bytesReader(b []byte) io.Reader { return bytes.NewReader(b) }

func ndjson(w io.Writer) *json.Encoder {
	enc := json.NewEncoder(w)
	enc.SetEscapeHTML(false)
	return enc
}

// build writes the whole archive of user.
func (w *Worker) build(ctx context.Context, user, id string, now time.Time) (built, error) {
	max := w.MaxBytes
	if max <= 0 {
		max = DefaultMaxBytes
	}
	out := &boundedBuffer{max: max}
	a := &archive{out: out, zw: zip.NewWriter(out), when: now.UTC()}
	counts := map[string]int{}

	// Conversations.
	err := a.file(FileConversations, false, func(f io.Writer) error {
		enc := ndjson(f)
		return w.eachConversation(ctx, user, func(c records.Conversation) error {
			counts["conversations"]++
			return enc.Encode(c)
		})
	})
	if err != nil {
		return built{}, err
	}
	w.progress("conversations", counts["conversations"])

	// Audio, one file per chunk whose audio is still kept.
	kept := map[string]string{} // chunk id → archive path
	err = w.eachConversation(ctx, user, func(c records.Conversation) error {
		return w.eachChunk(ctx, user, c.ID, func(ch records.Chunk) error {
			if ch.BlobKey == "" {
				return nil
			}
			plain, err := w.openAudio(ctx, user, ch.BlobKey, max)
			if errors.Is(err, blobs.ErrNotFound) {
				return nil // deleted by retention: the chunk line says so
			}
			if err != nil {
				return err
			}
			path := fmt.Sprintf("%s%s/%07d.%s", AudioDir, ch.ConversationID, ch.Seq, audioExt(ch.ContentType))
			if err := a.file(path, true, func(f io.Writer) error { _, err := f.Write(plain); return err }); err != nil {
				return err
			}
			kept[records.ChunkID(ch.ConversationID, ch.Seq)] = path
			counts["audio_files"]++
			return nil
		})
	})
	if err != nil {
		return built{}, err
	}
	w.progress("audio files", counts["audio_files"])

	// Chunks.
	err = a.file(FileChunks, false, func(f io.Writer) error {
		enc := ndjson(f)
		return w.eachConversation(ctx, user, func(c records.Conversation) error {
			return w.eachChunk(ctx, user, c.ID, func(ch records.Chunk) error {
				counts["chunks"]++
				return enc.Encode(chunkLine{
					ConversationID: ch.ConversationID, Seq: ch.Seq, Status: ch.Status,
					ContentType: ch.ContentType, SampleRate: ch.SampleRate,
					Size: ch.Size, Origin: ch.Origin, ReceivedAt: ch.ReceivedAt, UpdatedAt: ch.UpdatedAt,
					FailReason: ch.FailReason, Audio: kept[records.ChunkID(ch.ConversationID, ch.Seq)],
				})
			})
		})
	})
	if err != nil {
		return built{}, err
	}
	w.progress("chunks", counts["chunks"])

	// Segments, decrypted.
	err = a.file(FileSegments, false, func(f io.Writer) error {
		enc := ndjson(f)
		return w.eachConversation(ctx, user, func(c records.Conversation) error {
			return w.eachSegment(ctx, user, c.ID, func(id string, s records.Segment) error {
				text, err := w.Keys.Open(ctx, user, s.SealedText, keys.AD(user, records.Segments, id, "text"))
				if err != nil {
					return fmt.Errorf("keys.Open segment: %w", err)
				}
				counts["segments"]++
				return enc.Encode(segmentLine{s.ConversationID, s.Seq, string(text), s.Model, s.DurationMS, s.CreatedAt})
			})
		})
	})
	if err != nil {
		return built{}, err
	}
	w.progress("segments", counts["segments"])

	// Notes: our seal removed, the client's ciphertext left as it sent it.
	err = a.file(FileNotes, false, func(f io.Writer) error {
		enc := ndjson(f)
		return w.eachNote(ctx, user, func(n records.Note) error {
			ct, err := w.Keys.Open(ctx, user, n.Sealed, records.NoteAD(user, n.ID))
			if err != nil {
				return fmt.Errorf("keys.Open note: %w", err)
			}
			counts["notes"]++
			return enc.Encode(noteLine{n.ID, base64.StdEncoding.EncodeToString(ct), n.CreatedAt})
		})
	})
	if err != nil {
		return built{}, err
	}
	w.progress("notes", counts["notes"])

	// Phones: masked numbers (the numbers themselves are not kept) and
	// the records of calls from them.
	err = a.file(FilePhones, false, func(f io.Writer) error {
		enc := ndjson(f)
		ps, err := (&phones.Registry{Docs: w.Docs}).List(ctx, user)
		if err != nil {
			return err
		}
		for _, p := range ps {
			counts["phones"]++
			if err := enc.Encode(map[string]any{"kind": "phone", "id": p.ID, "masked": p.Masked, "verified": p.Verified, "created_at": p.CreatedAt}); err != nil {
				return err
			}
		}
		calls, err := (&phones.Calls{Docs: w.Docs}).ListByOwner(ctx, user)
		if err != nil {
			return err
		}
		for _, c := range calls {
			counts["calls"]++
			if err := enc.Encode(map[string]any{"kind": "call", "sid": c.SID, "status": c.Status, "duration_s": c.DurationS, "started_at": c.StartedAt}); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		return built{}, err
	}
	w.progress("phones", counts["phones"])

	// The audit trail's entries about the user.
	err = a.file(FileAudit, false, func(f io.Writer) error {
		enc := ndjson(f)
		log := &audit.Log{Docs: w.Docs}
		cursor := ""
		for {
			entries, next, err := log.List(ctx, audit.Filter{Subject: user, After: cursor, Limit: w.page()})
			if err != nil {
				return err
			}
			for _, e := range entries {
				counts["audit_entries"]++
				if err := enc.Encode(e); err != nil {
					return err
				}
			}
			if next == "" {
				return nil
			}
			cursor = next
		}
	})
	if err != nil {
		return built{}, err
	}
	w.progress("audit entries", counts["audit_entries"])

	policy, err := records.ReadRetention(ctx, w.Docs, user, w.Defaults)
	if err != nil {
		return built{}, err
	}
	err = a.file(FileRetention, false, func(f io.Writer) error {
		enc := json.NewEncoder(f)
		enc.SetIndent("", "  ")
		return enc.Encode(policy)
	})
	if err != nil {
		return built{}, err
	}

	m := Manifest{Format: Format, ExportID: id, CreatedAt: now.UTC(), Files: a.files, Counts: counts}
	mf, err := a.zw.CreateHeader(&zip.FileHeader{Name: FileManifest, Method: zip.Deflate, Modified: a.when})
	if err != nil {
		return built{}, a.why(err)
	}
	enc := json.NewEncoder(mf)
	enc.SetIndent("", "  ")
	if err := enc.Encode(m); err != nil {
		return built{}, a.why(err)
	}
	if err := a.zw.Close(); err != nil {
		return built{}, a.why(fmt.Errorf("zip.Close: %w", err))
	}
	sum := sha256.Sum256(out.buf.Bytes())
	return built{
		zip: out.buf.Bytes(), size: int64(out.buf.Len()), sha256: hex.EncodeToString(sum[:]),
		files: len(a.files), counts: counts,
	}, nil
}

// openAudio reads and opens one sealed audio blob (sealed as infra/ingest
// seals it).
func (w *Worker) openAudio(ctx context.Context, user, blobKey string, max int64) ([]byte, error) {
	rc, attrs, err := w.Blobs.Read(ctx, blobKey)
	if err != nil {
		return nil, err
	}
	defer rc.Close()
	if attrs.Size > max {
		return nil, ErrTooLarge
	}
	sealed, err := io.ReadAll(io.LimitReader(rc, maxSealedAudio+1))
	if err != nil {
		return nil, fmt.Errorf("blobs.Read audio: %w", err)
	}
	if len(sealed) > maxSealedAudio {
		return nil, fmt.Errorf("export: audio blob larger than %d bytes", maxSealedAudio)
	}
	plain, err := w.Keys.Open(ctx, user, sealed, keys.AD(user, "blobs", blobKey, "audio"))
	if err != nil {
		return nil, fmt.Errorf("keys.Open audio: %w", err)
	}
	return plain, nil
}

// audioExt names an audio file by its media type.
func audioExt(contentType string) string {
	mt, _, _ := mime.ParseMediaType(contentType)
	switch strings.ToLower(mt) {
	case "audio/ogg", "audio/opus":
		return "ogg"
	case "audio/l16":
		return "pcm"
	default:
		return "wav"
	}
}

// eachConversation pages the user's conversations by created_at. Ties on
// created_at are ordered by id, so a page restarts at the last time seen
// and skips the ids already seen at that time.
func (w *Worker) eachConversation(ctx context.Context, user string, fn func(records.Conversation) error) error {
	var last int64 = -1
	seenAtLast := map[string]bool{}
	for {
		q := docs.Query{User: user, Collection: records.Conversations, OrderBy: records.FieldCreatedAt,
			Limit: w.page() + len(seenAtLast)}
		if last >= 0 {
			q.Filters = []docs.Filter{{Field: records.FieldCreatedAt, Op: docs.Gte, Value: last}}
		}
		found, err := w.Docs.Query(ctx, q)
		if err != nil {
			return fmt.Errorf("docs.Query conversations: %w", err)
		}
		fresh := 0
		for _, d := range found {
			t, _ := d.Fields[records.FieldCreatedAt].(int64)
			if t == last && seenAtLast[d.Key.ID] {
				continue
			}
			c, err := records.ConversationFrom(d)
			if err != nil {
				return err
			}
			if err := fn(c); err != nil {
				return err
			}
			fresh++
			if t != last {
				last, seenAtLast = t, map[string]bool{}
			}
			seenAtLast[d.Key.ID] = true
		}
		if len(found) < q.Limit || fresh == 0 {
			return nil
		}
	}
}

// eachChunk pages the chunks of one conversation by seq.
func (w *Worker) eachChunk(ctx context.Context, user, cid string, fn func(records.Chunk) error) error {
	return w.eachOfConversation(ctx, user, records.Chunks, cid, func(d docs.Doc) error {
		c, err := records.ChunkFrom(d)
		if err != nil {
			return err
		}
		return fn(c)
	})
}

// eachSegment pages the segments of one conversation by seq.
func (w *Worker) eachSegment(ctx context.Context, user, cid string, fn func(id string, s records.Segment) error) error {
	return w.eachOfConversation(ctx, user, records.Segments, cid, func(d docs.Doc) error {
		s, err := records.SegmentFrom(d)
		if err != nil {
			return err
		}
		return fn(d.Key.ID, s)
	})
}

func (w *Worker) eachOfConversation(ctx context.Context, user, coll, cid string, fn func(docs.Doc) error) error {
	var last int64 = -1
	for {
		found, err := w.Docs.Query(ctx, docs.Query{
			User: user, Collection: coll, OrderBy: records.FieldSeq, Limit: w.page(),
			Filters: []docs.Filter{
				{Field: records.FieldConversation, Op: docs.Eq, Value: cid},
				{Field: records.FieldSeq, Op: docs.Gt, Value: last},
			},
		})
		if err != nil {
			return fmt.Errorf("docs.Query %s: %w", coll, err)
		}
		for _, d := range found {
			if err := fn(d); err != nil {
				return err
			}
			last, _ = d.Fields[records.FieldSeq].(int64)
		}
		if len(found) < w.page() {
			return nil
		}
	}
}

func (w *Worker) page() int {
	if w.Page > 0 {
		return w.Page
	}
	return DefaultPage
}

// eachNote pages the user's notes oldest first.
func (w *Worker) eachNote(ctx context.Context, user string, fn func(records.Note) error) error {
	after := ""
	for {
		q := docs.Query{User: user, Collection: records.Notes, OrderBy: records.FieldOrder, Limit: w.page()}
		if after != "" {
			q.Filters = []docs.Filter{{Field: records.FieldOrder, Op: docs.Gt, Value: after}}
		}
		found, err := w.Docs.Query(ctx, q)
		if err != nil {
			return fmt.Errorf("docs.Query notes: %w", err)
		}
		for _, d := range found {
			n, err := records.NoteFrom(d)
			if err != nil {
				return err
			}
			if err := fn(n); err != nil {
				return err
			}
			after, _ = d.Fields[records.FieldOrder].(string)
		}
		if len(found) < w.page() {
			return nil
		}
	}
}
