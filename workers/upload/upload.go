// Package upload is the worker that brings recordings uploaded through a
// signed URL into the pipeline: the upload bucket's finalize notification
// (decoded by Decoder into dev.lethe.audio.upload.finalized.v1) →
// ingest.Intake.Accept (origin upload-url) → audio.chunk.received.
//
// The upload bucket holds plaintext. Every outcome that is final for an
// upload (accepted, duplicate, rejected, user erased) purges the generation
// it read, so plaintext never outlives its handling; outcomes that will be
// retried keep it, because the retry needs it.
package upload

import (
	"context"
	"errors"
	"fmt"
	"hash/crc32"
	"io"
	"log/slog"

	"github.com/cloudevents/sdk-go/v2/event"

	"github.com/lethe-dev/lethe/app/ingest"
	"github.com/lethe-dev/lethe/app/records"
	"github.com/lethe-dev/lethe/events"
	"github.com/lethe-dev/lethe/infra/blobs"
)

var castagnoli = crc32.MakeTable(crc32.Castagnoli)

// Source is the upload bucket (blobs.Bucket satisfies it on an adapter with
// blobs.Generations; elsewhere its calls fail with blobs.ErrUnsupported).
type Source interface {
	// ReadGeneration reads one generation; blobs.ErrNotFound when it is gone.
	ReadGeneration(ctx context.Context, key string, generation int64) (io.ReadCloser, blobs.Attrs, error)
	// PurgeGeneration deletes one generation for good; blobs.ErrNotFound
	// when it is gone already.
	PurgeGeneration(ctx context.Context, key string, generation int64) error
}

var _ Source = blobs.Bucket{}

// Worker holds what Handle needs.
type Worker struct {
	Intake   *ingest.Intake
	Uploads  Source
	Bucket   string // the upload bucket; events naming another are poison
	Events   *events.Registry
	MaxBytes int64        // largest upload accepted
	Logger   *slog.Logger // nil discards
}

// Handle accepts one finalized upload as an audio chunk and purges it.
//
// Idempotent: the chunk is keyed on (user, conversation, seq) and Accept
// answers a repeat of the same bytes as Duplicate, so a redelivery, or the
// same bytes uploaded again, announce one chunk; a redelivery after the
// purge finds the generation gone and is dropped.
func (w *Worker) Handle(ctx context.Context, e event.Event) error {
	var p events.UploadFinalized
	if err := w.Events.Decode(e, &p); err != nil {
		return err
	}
	if w.MaxBytes <= 0 {
		// Wiring bug, not the upload's fault: keep it for a fixed worker.
		return errors.New("upload: Worker.MaxBytes not set")
	}
	log := w.logger().With(slog.String("event_id", e.ID()), slog.Int64("size", p.Size))

	// 1. The event must name an upload of the user it claims, in our
	// bucket. Nothing is read or purged for a forgery: the object may be
	// someone else's upload in flight.
	if p.Bucket != w.Bucket {
		log.WarnContext(ctx, "upload refused", slog.String("reason", "bucket mismatch"))
		return events.Permanentf("upload: event names another bucket than the upload bucket")
	}
	if key, err := records.UploadKey(p.User, p.ConversationID, p.Seq); err != nil || key != p.Object {
		log.WarnContext(ctx, "upload refused", slog.String("reason", "object mismatch"))
		return events.Permanentf("upload: object name does not match the event's user, conversation and seq")
	}

	// 2. Too large by the bucket's own account: never read it.
	if p.Size > w.MaxBytes {
		return w.reject(ctx, log, p, fmt.Errorf("upload: %d bytes, limit %d: too large", p.Size, w.MaxBytes))
	}

	// 3. An erased user's upload is discarded unread.
	if gone, err := records.Tombstoned(ctx, w.Intake.Docs, p.User); err != nil {
		return err
	} else if gone {
		if err := w.purge(ctx, p); err != nil {
			return err
		}
		log.InfoContext(ctx, "upload dropped", slog.String("reason", "user tombstoned"))
		return fmt.Errorf("upload: user tombstoned: %w", events.ErrDropped)
	}

	// 4. Read exactly the generation the notification announced.
	body, err := w.read(ctx, p)
	if err != nil {
		if errors.Is(err, errTooLarge) {
			return w.reject(ctx, log, p, fmt.Errorf("upload: more than %d bytes: too large", w.MaxBytes))
		}
		if errors.Is(err, events.ErrDropped) {
			log.InfoContext(ctx, "upload dropped", slog.String("reason", "generation gone"))
		}
		return err
	}

	// 5. Accept it as a chunk, with the edge's checks and idempotence.
	res, err := w.Intake.Accept(ctx, ingest.Chunk{
		User: p.User, ConversationID: p.ConversationID, Seq: p.Seq,
		ContentType: p.ContentType, Audio: body, Origin: ingest.OriginUploadURL,
	})
	switch {
	case errors.Is(err, ingest.ErrTombstoned):
		if err := w.purge(ctx, p); err != nil {
			return err
		}
		log.InfoContext(ctx, "upload dropped", slog.String("reason", "user tombstoned"))
		return fmt.Errorf("upload: user tombstoned: %w", events.ErrDropped)
	case ingest.CallerFault(err):
		return w.reject(ctx, log, p, fmt.Errorf("upload: %w", err))
	case err != nil:
		// A dependency failed: keep the upload for the redelivery.
		return fmt.Errorf("ingest.Accept: %w", err)
	}

	// 6. Sealed, recorded and announced: the plaintext goes. A failure
	// here is retried; the redelivery is a Duplicate and purges again.
	if err := w.purge(ctx, p); err != nil {
		return err
	}
	log.InfoContext(ctx, "upload accepted", slog.Bool("duplicate", res.Duplicate))
	return nil
}

// errTooLarge: the generation holds more than MaxBytes.
var errTooLarge = errors.New("upload: too large")

// read returns the generation's bytes, checked against the notification.
func (w *Worker) read(ctx context.Context, p events.UploadFinalized) ([]byte, error) {
	rc, _, err := w.Uploads.ReadGeneration(ctx, p.Object, p.Generation)
	if errors.Is(err, blobs.ErrNotFound) {
		// Purged after an earlier delivery succeeded, or deleted: nothing
		// left to do.
		return nil, fmt.Errorf("upload: generation gone: %w", events.ErrDropped)
	}
	if err != nil {
		return nil, fmt.Errorf("blobs.ReadGeneration: %w", err)
	}
	defer rc.Close()
	body, err := io.ReadAll(io.LimitReader(rc, w.MaxBytes+1))
	if err != nil {
		return nil, fmt.Errorf("blobs.ReadGeneration body: %w", err)
	}
	if int64(len(body)) > w.MaxBytes {
		return nil, errTooLarge
	}
	// A generation never changes, so a mismatch means the read raced
	// something (a rewrite, a fault between us and the bucket): retry,
	// and the redelivery reads the right bytes or finds them gone.
	if int64(len(body)) != p.Size {
		return nil, fmt.Errorf("upload: read %d bytes, notification says %d", len(body), p.Size)
	}
	if crc32.Checksum(body, castagnoli) != p.CRC32C {
		return nil, errors.New("upload: CRC32C of the bytes read differs from the notification's")
	}
	return body, nil
}

// reject purges an upload that can never be accepted and returns reason as
// a permanent error (dead-lettered with it). If the purge fails the result
// is retryable instead: the plaintext must not be left behind by an
// acknowledged message.
func (w *Worker) reject(ctx context.Context, log *slog.Logger, p events.UploadFinalized, reason error) error {
	if err := w.purge(ctx, p); err != nil {
		// The purge error is not logged: storage errors may quote the
		// object name, which carries the user hash.
		log.WarnContext(ctx, "rejected upload not purged, will retry", slog.String("reason", reason.Error()))
		return err
	}
	log.WarnContext(ctx, "upload rejected", slog.String("reason", reason.Error()))
	return events.Permanent(reason)
}

// purge deletes the generation; one already gone counts as deleted.
func (w *Worker) purge(ctx context.Context, p events.UploadFinalized) error {
	err := w.Uploads.PurgeGeneration(ctx, p.Object, p.Generation)
	if err != nil && !errors.Is(err, blobs.ErrNotFound) {
		return fmt.Errorf("blobs.PurgeGeneration: %w", err)
	}
	return nil
}

func (w *Worker) logger() *slog.Logger {
	if w.Logger == nil {
		return slog.New(slog.DiscardHandler)
	}
	return w.Logger
}
