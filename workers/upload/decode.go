package upload

import (
	"errors"
	"fmt"
	"strconv"
	"time"

	"github.com/cloudevents/sdk-go/v2/event"

	"github.com/lethe-dev/lethe/events"
	"github.com/lethe-dev/lethe/infra/blobs/gcsnotify"
	"github.com/lethe-dev/lethe/infra/bus"
)

// sourcePrefix + bucket is the event's source: the bucket that announced
// the upload, in the form Cloud Storage's own CloudEvents use.
const sourcePrefix = "//storage.googleapis.com/projects/_/buckets/"

// Decoder turns the upload bucket's Cloud Storage notification into a
// dev.lethe.audio.upload.finalized.v1 event. bucket is the configured upload
// bucket: a notification naming another is poison. Notifications of other
// event types (delete, archive, metadata update) wrap events.ErrDropped;
// anything malformed or outside the upload layout is permanent.
//
// The event id is derived from (bucket, object, generation): every
// redelivery of one upload is the same event, another upload to the same
// name is another.
func Decoder(reg *events.Registry, bucket string, now func() time.Time) bus.Decoder {
	if now == nil {
		now = time.Now
	}
	return func(data []byte, attrs map[string]string) (event.Event, error) {
		n, err := gcsnotify.ParseFinalizeNotification(bucket, attrs, data)
		switch {
		case errors.Is(err, gcsnotify.ErrNotFinalize):
			return event.Event{}, fmt.Errorf("upload.Decoder: %w: %w", events.ErrDropped, err)
		case err != nil:
			return event.Event{}, events.Permanent(fmt.Errorf("upload.Decoder: %w", err))
		}
		payload := events.UploadFinalized{
			User:           n.UserHash,
			ConversationID: n.ConversationID,
			Seq:            n.Seq,
			Bucket:         n.Bucket,
			Object:         n.Object,
			Generation:     n.Generation,
			Size:           n.Size,
			ContentType:    n.ContentType,
			CRC32C:         n.CRC32C,
		}
		id := events.DeriveID("gcs-upload", n.Bucket, n.Object, strconv.FormatInt(n.Generation, 10))
		e, err := reg.NewWithID(id, events.TypeUploadFinalized,
			events.Subject(n.UserHash, "conversations", n.ConversationID, "chunks", strconv.Itoa(n.Seq)), payload)
		if err != nil {
			// A notification the parser took but the schema refuses (a
			// content type beyond its bounds, say): poison all the same.
			return event.Event{}, events.Permanent(fmt.Errorf("upload.Decoder: %w", err))
		}
		e.SetSource(sourcePrefix + n.Bucket)
		e.SetTime(eventTime(attrs["eventTime"], now))
		// Source and time changed after NewWithID validated: check again,
		// so nothing leaves the decoder that a receiver would refuse.
		if err := reg.Validate(e); err != nil {
			return event.Event{}, events.Permanent(fmt.Errorf("upload.Decoder: %w", err))
		}
		return e, nil
	}
}

// eventTime is the notification's eventTime when it is an RFC 3339 time
// that encodes again (years 1970..9999 in UTC), else now.
func eventTime(attr string, now func() time.Time) time.Time {
	if t, err := time.Parse(time.RFC3339Nano, attr); err == nil {
		if t = t.UTC(); t.Year() >= 1970 && t.Year() <= 9999 {
			return t
		}
	}
	return now().UTC()
}
