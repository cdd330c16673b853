// Package export is the worker that builds a user's export archive
// (user.export.requested → a sealed ZIP under the user): one NDJSON file per
// collection, decrypted for the owner, the original audio, and a manifest
// with the SHA-256 of every file. The archive is sealed with the user's key
// at rest, so crypto-shredding and the erasure take it with everything else.
package export

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/cloudevents/sdk-go/v2/event"

	"github.com/lethe-dev/lethe/app/audit"
	"github.com/lethe-dev/lethe/app/records"
	"github.com/lethe-dev/lethe/events"
	"github.com/lethe-dev/lethe/infra/blobs"
	"github.com/lethe-dev/lethe/infra/docs"
	"github.com/lethe-dev/lethe/infra/keys"
)

// Defaults of the zero Worker.
const (
	DefaultMaxBytes = 1 << 30
	DefaultLease    = 10 * time.Minute
)

var (
	// ErrTooLarge: the archive would exceed MaxBytes; the export is failed.
	ErrTooLarge = errors.New("export: archive larger than the limit")
	// ErrInProgress: another build of the same export holds the lease.
	ErrInProgress = errors.New("export: a build of this export is in progress")
	// ErrGone: the export record does not exist (expired, erased, never).
	ErrGone = errors.New("export: no such export")
	// ErrTombstoned: the user asked to be erased; nothing is built.
	ErrTombstoned = errors.New("export: user is tombstoned")
)

// Failure reasons recorded on a failed export (codes, never content).
const (
	reasonTooLarge   = "too_large"
	reasonUnreadable = "unreadable_data"
)

// Worker holds the ports the handler needs.
type Worker struct {
	Docs   docs.Store
	Blobs  blobs.Bucket
	Keys   keys.Sealer
	Events *events.Registry
	// Defaults is the retention policy of users who set none (ExportDays
	// is how long the archive is kept).
	Defaults records.Retention
	// MaxBytes bounds the archive, which is held in memory while it is
	// built and sealed (default DefaultMaxBytes).
	MaxBytes int64
	// Lease is how long a build owns an export before a redelivery may
	// start it again (default DefaultLease); keep it above the handler
	// timeout.
	Lease time.Duration
	// Page is how many documents one query reads (default DefaultPage).
	Page int
	Now  func() time.Time
	// Progress, when set, hears each step of a build (the CLI prints it).
	Progress func(step string, n int)
}

// Handle builds the archive of one export request. Idempotent: a done or
// failed export is left alone, a build interrupted past its lease is
// started again, and one inside its lease is retried later.
func (w *Worker) Handle(ctx context.Context, e event.Event) error {
	var in events.UserExportRequested
	if err := w.Events.Decode(e, &in); err != nil {
		return err
	}
	if !records.ValidExportID(in.RequestID) {
		return events.Permanentf("export: request_id is not an export id")
	}
	_, err := w.Build(ctx, in.User, in.RequestID)
	switch {
	case err == nil, errors.Is(err, ErrTooLarge):
		// A too-large export is final: its record says failed/too_large.
		return nil
	case errors.Is(err, ErrTombstoned), errors.Is(err, ErrGone):
		return fmt.Errorf("export: %w (%w)", events.ErrDropped, err)
	}
	return err
}

// Build builds, seals and stores the archive of export id of user, then
// marks the export done, and returns its record. See Handle for retries.
func (w *Worker) Build(ctx context.Context, user, id string) (records.Export, error) {
	if gone, err := records.Tombstoned(ctx, w.Docs, user); err != nil {
		return records.Export{}, err
	} else if gone {
		return records.Export{}, ErrTombstoned
	}
	now := w.now()
	x, attempt, err := w.claim(ctx, user, id, now)
	if err != nil || attempt == "" {
		return x, err
	}
	built, err := w.build(ctx, user, id, now)
	switch {
	case errors.Is(err, ErrTooLarge):
		return w.fail(ctx, user, id, attempt, reasonTooLarge, err)
	case err != nil:
		err = records.KeyFailure("export", err)
		if events.IsPermanent(err) {
			return w.fail(ctx, user, id, attempt, reasonUnreadable, err)
		}
		w.release(ctx, user, id, attempt)
		return x, err
	}
	blobKey := records.ExportBlobKey(user, id)
	sealed, err := w.Keys.Seal(ctx, user, built.zip, records.ExportAD(user, blobKey))
	if err != nil {
		w.release(ctx, user, id, attempt)
		return x, records.KeyFailure("keys.Seal export", err)
	}
	built.zip = nil
	w.progress("sealed", len(sealed))
	_, err = w.Blobs.Write(ctx, blobKey, bytesReader(sealed), blobs.WriteOptions{
		ContentType: "application/octet-stream", Metadata: map[string]string{"sealed": "tink-aead"},
	})
	if err != nil {
		w.release(ctx, user, id, attempt)
		return x, fmt.Errorf("blobs.Write export: %w", err)
	}
	policy, err := records.ReadRetention(ctx, w.Docs, user, w.Defaults)
	if err != nil {
		w.release(ctx, user, id, attempt)
		return x, err
	}
	expires := policy.ExpiresAt(records.ClassExport, w.now())
	if err := records.ScheduleExpiry(ctx, w.Docs, user, records.Expiry{Class: records.ClassExport, Ref: id, At: expires}); err != nil {
		w.release(ctx, user, id, attempt)
		return x, err
	}
	// The trail first: a retried build may log twice, but a done export
	// never lacks its entry.
	log := &audit.Log{Docs: w.Docs, Now: w.Now}
	if _, err := log.Append(ctx, audit.Entry{
		Actor: audit.ActorSystem, Action: audit.ActionExportReady, Subject: user,
		Ref: "exports/" + id, Counts: built.counts,
	}); err != nil {
		w.release(ctx, user, id, attempt)
		return x, err
	}
	x, err = w.settle(ctx, user, id, attempt, func(x *records.Export) {
		x.State = records.ExportDone
		x.BlobKey = blobKey
		x.ArchiveSize = built.size
		x.ArchiveSHA256 = built.sha256
		x.Files = built.files
		x.Counts = built.counts
		x.ExpiresAt = expires.UTC()
	})
	if err != nil {
		return x, err
	}
	w.progress("done", int(built.size))
	return x, nil
}

// claim takes the build lease of a pending export, or of a running one whose
// lease ran out. attempt is "" when there is nothing to build (the export is
// already final); x is the record as claimed or found.
func (w *Worker) claim(ctx context.Context, user, id string, now time.Time) (x records.Export, attempt string, err error) {
	lease := w.Lease
	if lease <= 0 {
		lease = DefaultLease
	}
	mine := records.NewExportID()
	err = w.Docs.Update(ctx, records.ExportKey(user, id), func(cur *docs.Doc) (*docs.Doc, error) {
		attempt = ""
		if cur == nil {
			return nil, ErrGone
		}
		var err error
		if x, err = records.ExportFrom(*cur); err != nil {
			return nil, events.Permanent(err)
		}
		switch x.State {
		case records.ExportDone, records.ExportFailed:
			return cur, nil
		case records.ExportRunning:
			if now.Before(x.LeaseUntil) {
				return nil, ErrInProgress
			}
		}
		x.State, x.Attempt, x.LeaseUntil, x.UpdatedAt = records.ExportRunning, mine, now.Add(lease).UTC(), now.UTC()
		attempt = mine
		d, err := x.Doc(user)
		return &d, err
	})
	if err != nil && !errors.Is(err, ErrGone) && !errors.Is(err, ErrInProgress) && !events.IsPermanent(err) {
		err = fmt.Errorf("docs.Update export claim: %w", err)
	}
	return x, attempt, err
}

var errLeaseLost = errors.New("export: the build lost its lease to another")

// settle applies fn to the export if this attempt still holds it, clearing
// the lease.
func (w *Worker) settle(ctx context.Context, user, id, attempt string, fn func(x *records.Export)) (records.Export, error) {
	var x records.Export
	err := w.Docs.Update(ctx, records.ExportKey(user, id), func(cur *docs.Doc) (*docs.Doc, error) {
		if cur == nil {
			return nil, ErrGone
		}
		var err error
		if x, err = records.ExportFrom(*cur); err != nil {
			return nil, events.Permanent(err)
		}
		if x.State != records.ExportRunning || x.Attempt != attempt {
			return nil, errLeaseLost
		}
		fn(&x)
		x.Attempt, x.LeaseUntil, x.UpdatedAt = "", time.Time{}, w.now().UTC()
		d, err := x.Doc(user)
		return &d, err
	})
	if err != nil {
		return x, fmt.Errorf("docs.Update export: %w", err)
	}
	return x, nil
}

// fail marks the export failed with reason and returns cause.
func (w *Worker) fail(ctx context.Context, user, id, attempt, reason string, cause error) (records.Export, error) {
	x, err := w.settle(ctx, user, id, attempt, func(x *records.Export) {
		x.State, x.Error = records.ExportFailed, reason
	})
	if err != nil {
		return x, errors.Join(cause, err)
	}
	return x, cause
}

// release gives the lease back after a retryable failure, so the
// redelivery builds at once instead of waiting for the lease to run out.
// Best effort: a release that fails only delays the rebuild.
func (w *Worker) release(ctx context.Context, user, id, attempt string) {
	_, _ = w.settle(context.WithoutCancel(ctx), user, id, attempt, func(x *records.Export) {
		x.State = records.ExportPending
	})
}

func (w *Worker) progress(step string, n int) {
	if w.Progress != nil {
		w.Progress(step, n)
	}
}

func (w *Worker) now() time.Time {
	if w.Now == nil {
		return time.Now()
	}
	return w.Now()
}
