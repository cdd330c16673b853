package records

import (
	"strconv"

	"github.com/cloudevents/sdk-go/v2/event"

	"github.com/lethe-dev/lethe/events"
)

// ChunkEventID is the deterministic id of a chunk's event: a client retry or
// a reconciler re-drive publishes the same id, so consumers see one event.
func ChunkEventID(user, cid string, seq int, digest string) string {
	return events.DeriveID("chunk", user, cid, strconv.Itoa(seq), digest)
}

// ChunkReceivedEvent builds the audio.chunk.received event of a chunk record.
func ChunkReceivedEvent(reg *events.Registry, user string, c Chunk) (event.Event, error) {
	return reg.NewWithID(c.EventID, events.TypeChunkReceived,
		events.Subject(user, "conversations", c.ConversationID, "chunks", strconv.Itoa(c.Seq)),
		events.ChunkReceived{
			User:           user,
			ConversationID: c.ConversationID,
			Seq:            c.Seq,
			BlobKey:        c.BlobKey,
			ContentType:    c.ContentType,
			SampleRate:     c.SampleRate,
			Digest:         c.Digest,
			Size:           c.Size,
			Origin:         c.Origin,
			ReceivedAt:     c.ReceivedAt,
		})
}
