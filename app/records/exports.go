package records

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"regexp"
	"time"

	"github.com/cloudevents/sdk-go/v2/event"

	"github.com/lethe-dev/lethe/events"
	"github.com/lethe-dev/lethe/infra/docs"
	"github.com/lethe-dev/lethe/infra/keys"
)

// Export states: pending → running → done | failed (done and failed are
// final).
const (
	ExportPending = "pending"
	ExportRunning = "running"
	ExportDone    = "done"
	ExportFailed  = "failed"
)

// FieldState is an export's indexed state.
const FieldState = "state"

var exportIDRe = regexp.MustCompile(`^[0-9a-f]{32}$`)

// ValidExportID reports whether id has the shape of an export id (32 hex).
func ValidExportID(id string) bool { return exportIDRe.MatchString(id) }

// NewExportID returns a random export id (also the request_id of its event).
func NewExportID() string { return randomID() }

// randomID is 128 random bits in hex: ids of documents the user creates,
// never derived from content.
func randomID() string {
	var b [16]byte
	_, _ = rand.Read(b[:]) // never fails (Go ≥ 1.24)
	return hex.EncodeToString(b[:])
}

// Export is one export request and, once done, its archive's summary. The
// manifest itself (every file with its SHA-256) is inside the archive: a
// user with many recordings would outgrow a document.
type Export struct {
	ID          string    `json:"id"`
	State       string    `json:"state"`
	RequestedBy string    `json:"requested_by"` // an audit actor
	CreatedAt   time.Time `json:"created_at"`
	UpdatedAt   time.Time `json:"updated_at"`
	// Attempt and LeaseUntil belong to the build running now: a
	// redelivery inside the lease waits, one after it rebuilds.
	Attempt    string    `json:"attempt,omitempty"`
	LeaseUntil time.Time `json:"lease_until,omitzero"`
	// Set when done.
	BlobKey       string         `json:"blob_key,omitempty"`
	ArchiveSize   int64          `json:"archive_size,omitempty"`
	ArchiveSHA256 string         `json:"archive_sha256,omitempty"` // hex, of the plaintext ZIP
	Files         int            `json:"files,omitempty"`          // entries of the manifest
	Counts        map[string]int `json:"counts,omitempty"`
	ExpiresAt     time.Time      `json:"expires_at,omitzero"` // when retention deletes the archive
	// Set when failed: a reason code, never content.
	Error string `json:"error,omitempty"`
}

// ExportKey is the document key of an export.
func ExportKey(user, id string) docs.Key { return docs.Key{User: user, Collection: Exports, ID: id} }

// ExportPrefix is the blob prefix of one export (what an expiry deletes).
func ExportPrefix(user, id string) string { return "users/" + user + "/exports/" + id }

// ExportBlobKey is where the sealed archive lives: under the user, so
// crypto-shredding and the erasure cover it.
func ExportBlobKey(user, id string) string { return ExportPrefix(user, id) + ".zip.sealed" }

// ExportAD is the associated data the archive is sealed with.
func ExportAD(user, blobKey string) []byte { return keys.AD(user, "blobs", blobKey, "export") }

// Doc encodes x for the store.
func (x Export) Doc(user string) (docs.Doc, error) {
	data, err := json.Marshal(x)
	if err != nil {
		return docs.Doc{}, fmt.Errorf("json.Marshal export: %w", err)
	}
	return docs.Doc{
		Key:  ExportKey(user, x.ID),
		Data: data,
		Fields: map[string]any{
			FieldCreatedAt: x.CreatedAt.UnixMilli(),
			FieldState:     x.State,
		},
	}, nil
}

// ExportFrom decodes an export document.
func ExportFrom(d docs.Doc) (Export, error) {
	var x Export
	if err := json.Unmarshal(d.Data, &x); err != nil {
		return x, fmt.Errorf("json.Unmarshal export %s: %w", d.Key.ID, err)
	}
	return x, nil
}

// RequestExport returns the user's export in progress (pending or running)
// or, when there is none, writes a new pending one (created true). One
// export at a time: asking again while one runs answers that one.
func RequestExport(ctx context.Context, store docs.Store, user, actor string, now time.Time) (Export, bool, error) {
	latest, err := store.Query(ctx, docs.Query{
		User: user, Collection: Exports, OrderBy: FieldCreatedAt, Desc: true, Limit: 1,
	})
	if err != nil {
		return Export{}, false, fmt.Errorf("docs.Query exports: %w", err)
	}
	if len(latest) == 1 {
		x, err := ExportFrom(latest[0])
		if err != nil {
			return Export{}, false, err
		}
		if x.State == ExportPending || x.State == ExportRunning {
			return x, false, nil
		}
	}
	now = now.UTC()
	x := Export{ID: NewExportID(), State: ExportPending, RequestedBy: actor, CreatedAt: now, UpdatedAt: now}
	d, err := x.Doc(user)
	if err != nil {
		return Export{}, false, err
	}
	if err := store.Create(ctx, d); err != nil {
		return Export{}, false, fmt.Errorf("docs.Create export: %w", err)
	}
	return x, true, nil
}

// ExportRequestedEvent is the event that asks the export worker to build x.
// Its id is derived from the export, so asking again republishes the same
// event and the worker's idempotence makes it one build.
func ExportRequestedEvent(reg *events.Registry, user string, x Export) (event.Event, error) {
	return reg.NewWithID(events.DeriveID("export", user, x.ID), events.TypeUserExportRequested,
		events.Subject(user, "exports", x.ID),
		events.UserExportRequested{User: user, RequestID: x.ID, RequestedAt: x.CreatedAt})
}
