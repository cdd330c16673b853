package records

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	"github.com/lethe-dev/lethe/infra/docs"
)

// Lifecycle collections.
const (
	// Expiries is the expiry index: one document per stored item and
	// retention class, under the item's user, with the time it must be
	// gone. Sweeps read it ordered by expiry (never a scan of all data).
	Expiries = "expiries"
	// Settings holds per-user settings; the retention policy is one.
	Settings = "settings"
	// Notes are end-to-end encrypted notes (opaque client ciphertext).
	Notes = "notes"
	// Exports are export requests and their archives' status.
	Exports = "exports"
	// Erasures is global (an erasure outlives the user's documents): one
	// document per erasure request, the saga's state and its receipt.
	Erasures = "erasures"
)

// Retention classes: what an expiry deletes.
const (
	ClassAudio      = "audio"      // a chunk's sealed audio blob
	ClassTranscript = "transcript" // a chunk's segment document
	ClassVector     = "vector"     // a chunk's vector
	ClassExport     = "export"     // an export archive and its record
)

// FieldExpiresAt is the indexed expiry time (unix milliseconds). The class
// is in the data, not indexed: no query selects by it, and every index row
// is written when an item is stored and deleted when it expires.
const FieldExpiresAt = "expires_at"

// Expiry says that an item of a class must be gone by At. Ref names the
// item within the user: the chunk id (ChunkID) for audio, transcripts and
// vectors; the export id for exports.
type Expiry struct {
	Class string    `json:"class"`
	Ref   string    `json:"ref"`
	At    time.Time `json:"at"`
}

// ExpiryKey is the index document of one item and class.
func ExpiryKey(user, class, ref string) docs.Key {
	return docs.Key{User: user, Collection: Expiries, ID: class + ":" + ref}
}

// Doc encodes e for the store.
func (e Expiry) Doc(user string) (docs.Doc, error) {
	data, err := json.Marshal(e)
	if err != nil {
		return docs.Doc{}, fmt.Errorf("json.Marshal expiry: %w", err)
	}
	return docs.Doc{
		Key:    ExpiryKey(user, e.Class, e.Ref),
		Data:   data,
		Fields: map[string]any{FieldExpiresAt: e.At.UnixMilli()},
	}, nil
}

// ExpiryFrom decodes an expiry document.
func ExpiryFrom(d docs.Doc) (Expiry, error) {
	var e Expiry
	if err := json.Unmarshal(d.Data, &e); err != nil {
		return e, fmt.Errorf("json.Unmarshal expiry %s: %w", d.Key.ID, err)
	}
	return e, nil
}

// ScheduleExpiry records (or moves) the expiry of one item. Idempotent.
func ScheduleExpiry(ctx context.Context, store docs.Store, user string, e Expiry) error {
	d, err := e.Doc(user)
	if err != nil {
		return err
	}
	if err := store.Put(ctx, d); err != nil {
		return fmt.Errorf("docs.Put expiry: %w", err)
	}
	return nil
}

// Retention is a user's policy: how many days each class is kept. Audio 0
// means "delete once transcribed"; for the other classes 0 means "delete at
// the first sweep after the item is stored".
type Retention struct {
	AudioDays      int `json:"audio_days"`
	TranscriptDays int `json:"transcript_days"`
	VectorDays     int `json:"vector_days"`
	ExportDays     int `json:"export_days"`
}

// MaxRetentionDays bounds every class (100 years).
const MaxRetentionDays = 36500

// Validate checks the bounds.
func (r Retention) Validate() error {
	for name, v := range map[string]int{"audio_days": r.AudioDays, "transcript_days": r.TranscriptDays, "vector_days": r.VectorDays, "export_days": r.ExportDays} {
		if v < 0 || v > MaxRetentionDays {
			return fmt.Errorf("%s=%d: want 0..%d", name, v, MaxRetentionDays)
		}
	}
	return nil
}

// Days is the retention of class in days.
func (r Retention) Days(class string) int {
	switch class {
	case ClassAudio:
		return r.AudioDays
	case ClassTranscript:
		return r.TranscriptDays
	case ClassVector:
		return r.VectorDays
	default:
		return r.ExportDays
	}
}

// RetentionKey is where a user's policy lives.
func RetentionKey(user string) docs.Key {
	return docs.Key{User: user, Collection: Settings, ID: "retention"}
}

// ReadRetention returns the user's policy, or defaults when they set none.
func ReadRetention(ctx context.Context, store docs.Store, user string, defaults Retention) (Retention, error) {
	d, err := store.Get(ctx, RetentionKey(user))
	if errors.Is(err, docs.ErrNotFound) {
		return defaults, nil
	}
	if err != nil {
		return defaults, fmt.Errorf("docs.Get retention: %w", err)
	}
	return RetentionFrom(&d, defaults)
}

// RetentionFrom decodes a user's policy document (nil when the user set
// none, so defaults apply).
func RetentionFrom(d *docs.Doc, defaults Retention) (Retention, error) {
	if d == nil {
		return defaults, nil
	}
	var r Retention
	if err := json.Unmarshal(d.Data, &r); err != nil {
		return defaults, fmt.Errorf("json.Unmarshal retention: %w", err)
	}
	return r, nil
}

// WriteRetention stores the user's policy.
func WriteRetention(ctx context.Context, store docs.Store, user string, r Retention) error {
	if err := r.Validate(); err != nil {
		return fmt.Errorf("%w: %v", docs.ErrInvalid, err)
	}
	data, err := json.Marshal(r)
	if err != nil {
		return fmt.Errorf("json.Marshal retention: %w", err)
	}
	if err := store.Put(ctx, docs.Doc{Key: RetentionKey(user), Data: data}); err != nil {
		return fmt.Errorf("docs.Put retention: %w", err)
	}
	return nil
}

// ExpiresAt is when an item of class stored at t expires under r.
func (r Retention) ExpiresAt(class string, t time.Time) time.Time {
	return t.Add(time.Duration(r.Days(class)) * 24 * time.Hour)
}

// ReadExpiry returns the scheduled expiry of an item; ok is false when none
// is scheduled.
func ReadExpiry(ctx context.Context, store docs.Store, user, class, ref string) (e Expiry, ok bool, err error) {
	d, err := store.Get(ctx, ExpiryKey(user, class, ref))
	if errors.Is(err, docs.ErrNotFound) {
		return e, false, nil
	}
	if err != nil {
		return e, false, fmt.Errorf("docs.Get expiry: %w", err)
	}
	e, err = ExpiryFrom(d)
	return e, err == nil, err
}
