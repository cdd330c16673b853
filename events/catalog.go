// Package events is lethe's event contract: CloudEvents 1.0 types, their Go
// payloads and JSON Schemas (embedded), constructors that fill every context
// attribute, and a strict decoder that turns anything malformed into a
// permanent error (poison goes to the dead-letter topic, never retried).
package events

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"fmt"
	"reflect"
	"strings"

	"github.com/cloudevents/sdk-go/v2/event"
)

// SchemaBaseURI prefixes every dataschema: DataSchema(t) = SchemaBaseURI + t + ".json".
const SchemaBaseURI = "https://lethe.dev/schemas/"

// MaxDataSize bounds the data of one event (bytes of JSON). Pub/Sub allows
// 10 MB per message; anything near this is a bug or an attack.
const MaxDataSize = 256 << 10

// AllTypes lists every event type, in a stable order.
func AllTypes() []string {
	return []string{
		TypeChunkReceived,
		TypeUploadFinalized,
		TypeTranscriptCreated,
		TypeEmbeddingCreated,
		TypeTwilioRecordingDone,
		TypeTwilioSMSReceived,
		TypeTwilioCallStatus,
		TypeRetentionSweep,
		TypeConversationErasure,
		TypeUserErasureRequested,
		TypeUserExportRequested,
	}
}

// AllTopics lists every topic (without the dead-letter topics).
func AllTopics() []string {
	return []string{TopicAudio, TopicUploads, TopicTranscripts, TopicEmbeddings, TopicTwilio, TopicLifecycle}
}

// TopicFor returns the topic an event type is published on.
func TopicFor(typ string) (string, bool) {
	switch typ {
	case TypeChunkReceived:
		return TopicAudio, true
	case TypeUploadFinalized:
		return TopicUploads, true
	case TypeTranscriptCreated:
		return TopicTranscripts, true
	case TypeEmbeddingCreated:
		return TopicEmbeddings, true
	case TypeTwilioRecordingDone, TypeTwilioSMSReceived, TypeTwilioCallStatus:
		return TopicTwilio, true
	case TypeRetentionSweep, TypeConversationErasure, TypeUserErasureRequested, TypeUserExportRequested:
		return TopicLifecycle, true
	}
	return "", false
}

// DeadLetterTopic names the topic that receives poison messages of topic.
func DeadLetterTopic(topic string) string { return topic + "-dead-letter" }

// DataSchema is the dataschema URI of an event type (also the `$id` of its
// embedded JSON Schema).
func DataSchema(typ string) string { return SchemaBaseURI + typ + ".json" }

// NewPayload returns a pointer to a zero payload of the Go type that carries
// typ (e.g. *ChunkReceived), or false for an unknown type.
func NewPayload(typ string) (any, bool) {
	switch typ {
	case TypeChunkReceived:
		return new(ChunkReceived), true
	case TypeUploadFinalized:
		return new(UploadFinalized), true
	case TypeTranscriptCreated:
		return new(TranscriptCreated), true
	case TypeEmbeddingCreated:
		return new(EmbeddingCreated), true
	case TypeTwilioRecordingDone:
		return new(TwilioRecordingCompleted), true
	case TypeTwilioSMSReceived:
		return new(TwilioSMSReceived), true
	case TypeTwilioCallStatus:
		return new(TwilioCallStatus), true
	case TypeRetentionSweep:
		return new(RetentionSweepRequested), true
	case TypeConversationErasure:
		return new(ConversationErasureRequested), true
	case TypeUserErasureRequested:
		return new(UserErasureRequested), true
	case TypeUserExportRequested:
		return new(UserExportRequested), true
	}
	return nil, false
}

// payloadType is the (non-pointer) Go type carrying typ.
func payloadType(typ string) (reflect.Type, bool) {
	p, ok := NewPayload(typ)
	if !ok {
		return nil, false
	}
	return reflect.TypeOf(p).Elem(), true
}

// isPayloadType reports whether t is the payload type of some event type.
func isPayloadType(t reflect.Type) bool {
	for _, typ := range AllTypes() {
		if pt, _ := payloadType(typ); pt == t {
			return true
		}
	}
	return false
}

// Subject builds "users/<user>/<parts...>" (user is the keyed hash of the
// uid, never the raw uid). With no parts it is "users/<user>".
func Subject(user string, parts ...string) string {
	var b strings.Builder
	b.WriteString("users/")
	b.WriteString(user)
	for _, p := range parts {
		b.WriteByte('/')
		b.WriteString(p)
	}
	return b.String()
}

// DeriveID derives a deterministic event id from parts, e.g.
// DeriveID(inputEventID, "transcribe"), so a stage that is redelivered its
// input publishes the same output id and consumers deduplicate on it. Parts
// are length-prefixed, so ("ab","c") and ("a","bc") differ. 32 hex chars.
func DeriveID(parts ...string) string {
	h := sha256.New()
	var n [8]byte
	for _, p := range parts {
		binary.BigEndian.PutUint64(n[:], uint64(len(p)))
		h.Write(n[:])
		h.Write([]byte(p))
	}
	return hex.EncodeToString(h.Sum(nil)[:16])
}

// NewID returns a random RFC 4122 version 4 UUID from crypto/rand.
func NewID() string {
	var b [16]byte
	// crypto/rand.Read never returns an error (it crashes the program on
	// failure, Go ≥ 1.24).
	_, _ = rand.Read(b[:])
	b[6] = (b[6] & 0x0f) | 0x40
	b[8] = (b[8] & 0x3f) | 0x80
	return fmt.Sprintf("%x-%x-%x-%x-%x", b[0:4], b[4:6], b[6:8], b[8:10], b[10:16])
}

// Publisher publishes an event on a topic, durably: it returns once the bus
// has it. The edge, the workers and the reconciler all publish through it
// (infra/bus.Bus implements it); it is the one declaration of that need.
type Publisher interface {
	Publish(ctx context.Context, topic string, e event.Event) error
}
