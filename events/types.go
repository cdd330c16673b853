package events

import "time"

// Source is the CloudEvents `source` of every event lethe emits.
const Source = "//lethe.dev/pipeline"

// Event types. Versioned: dev.lethe.<noun>.<verb>.v1.
const (
	TypeChunkReceived        = "dev.lethe.audio.chunk.received.v1"
	TypeUploadFinalized      = "dev.lethe.audio.upload.finalized.v1"
	TypeTranscriptCreated    = "dev.lethe.transcript.created.v1"
	TypeEmbeddingCreated     = "dev.lethe.embedding.created.v1"
	TypeTwilioRecordingDone  = "dev.lethe.twilio.recording.completed.v1"
	TypeTwilioSMSReceived    = "dev.lethe.twilio.sms.received.v1"
	TypeTwilioCallStatus     = "dev.lethe.twilio.call.status.v1"
	TypeRetentionSweep       = "dev.lethe.retention.sweep.requested.v1"
	TypeConversationErasure  = "dev.lethe.conversation.erasure.requested.v1"
	TypeUserErasureRequested = "dev.lethe.user.erasure.requested.v1"
	TypeUserExportRequested  = "dev.lethe.user.export.requested.v1"
)

// Topics. Each has a dead-letter topic named DeadLetterTopic(topic).
const (
	TopicAudio       = "audio"
	TopicTranscripts = "transcripts"
	TopicEmbeddings  = "embeddings"
	TopicTwilio      = "twilio"
	TopicLifecycle   = "lifecycle"
	// TopicUploads receives the upload bucket's Cloud Storage notifications
	// (not CloudEvents: the uploads worker decodes them).
	TopicUploads = "gcs-uploads"
)

// ChunkReceived: an audio chunk is durable in the blob store (sealed) and its
// chunk record is written. Carries no user content.
type ChunkReceived struct {
	User           string    `json:"user"` // keyed hash of the uid
	ConversationID string    `json:"conversation_id"`
	Seq            int       `json:"seq"`
	BlobKey        string    `json:"blob_key"`
	ContentType    string    `json:"content_type"`
	SampleRate     int       `json:"sample_rate,omitempty"`
	Digest         string    `json:"digest"` // keyed digest of the plaintext audio (keys.Sealer.Digest)
	Size           int64     `json:"size"`
	Origin         string    `json:"origin"` // app | stream | twilio | upload-url
	ReceivedAt     time.Time `json:"received_at"`
}

// UploadFinalized: a recording PUT through a signed upload URL is complete
// in the upload bucket (plaintext, short-lived). Nobody publishes it: the
// uploads worker decodes the bucket's Cloud Storage notification into it,
// then seals the audio into the pipeline as a chunk (origin upload-url).
type UploadFinalized struct {
	User           string `json:"user"`
	ConversationID string `json:"conversation_id"`
	Seq            int    `json:"seq"`
	Bucket         string `json:"bucket"`
	Object         string `json:"object"`
	Generation     int64  `json:"generation"`
	Size           int64  `json:"size"`
	ContentType    string `json:"content_type"`
	CRC32C         uint32 `json:"crc32c"`
}

// TranscriptCreated: the segment document is written. The text travels sealed
// with the user's key (base64 of the AEAD ciphertext).
type TranscriptCreated struct {
	User           string `json:"user"`
	ConversationID string `json:"conversation_id"`
	Seq            int    `json:"seq"`
	SegmentID      string `json:"segment_id"`
	SealedText     string `json:"sealed_text"`
	Model          string `json:"model"`
	DurationMS     int64  `json:"duration_ms"`
}

// EmbeddingCreated: the vector of one segment, sealed (vectors leak content).
type EmbeddingCreated struct {
	User           string `json:"user"`
	ConversationID string `json:"conversation_id"`
	Seq            int    `json:"seq"`
	VectorID       string `json:"vector_id"` // "<cid>#<seq>"
	Embedder       string `json:"embedder"`
	Dim            int    `json:"dim"`
	SealedVector   string `json:"sealed_vector"`
}

// TwilioRecordingCompleted: Twilio finished a call recording. The twilio
// worker fetches the audio by its SID from the configured Twilio host (with
// the account's credentials, which never travel in events; never from a URL
// the webhook carried) and feeds it into the audio pipeline.
type TwilioRecordingCompleted struct {
	User         string `json:"user"`
	AccountSID   string `json:"account_sid"`   // AC + 32 hex
	CallSID      string `json:"call_sid"`      // CA + 32 hex
	RecordingSID string `json:"recording_sid"` // RE + 32 hex
	DurationS    int    `json:"duration_s"`
}

// TwilioSMSReceived: an inbound SMS/MMS. The sender's number travels only as a
// keyed hash; the body is sealed with the user's key.
type TwilioSMSReceived struct {
	User       string `json:"user"`
	AccountSID string `json:"account_sid"`
	MessageSID string `json:"message_sid"` // SM or MM + 32 hex
	FromHash   string `json:"from_hash"`   // keyed hash of the E.164 number, 32 hex
	SealedBody string `json:"sealed_body"` // base64 of the AEAD ciphertext
}

// Twilio call statuses (the CallStatus webhook parameter).
const (
	CallStatusQueued     = "queued"
	CallStatusRinging    = "ringing"
	CallStatusInProgress = "in-progress"
	CallStatusCompleted  = "completed"
	CallStatusBusy       = "busy"
	CallStatusFailed     = "failed"
	CallStatusNoAnswer   = "no-answer"
	CallStatusCanceled   = "canceled"
)

// TwilioCallStatus: a call status callback. User is empty when the call is not
// (yet) attributed to a user; the subject then names the call, not a user.
type TwilioCallStatus struct {
	User       string `json:"user,omitempty"`
	AccountSID string `json:"account_sid"`
	CallSID    string `json:"call_sid"`
	CallStatus string `json:"call_status"` // one of the CallStatus* constants
	DurationS  int    `json:"duration_s"`
}

// RetentionSweepRequested: sweep expired data, for every user or (User set)
// for one.
type RetentionSweepRequested struct {
	RequestedAt time.Time `json:"requested_at"`
	User        string    `json:"user,omitempty"`
}

// ConversationErasureRequested: erase one conversation everywhere.
type ConversationErasureRequested struct {
	User           string    `json:"user"`
	ConversationID string    `json:"conversation_id"`
	RequestID      string    `json:"request_id"`
	RequestedAt    time.Time `json:"requested_at"`
}

// UserErasureRequested: erase the user everywhere (the erasure saga).
type UserErasureRequested struct {
	User        string    `json:"user"`
	RequestID   string    `json:"request_id"`
	RequestedAt time.Time `json:"requested_at"`
}

// UserExportRequested: build the user's export archive.
type UserExportRequested struct {
	User        string    `json:"user"`
	RequestID   string    `json:"request_id"`
	RequestedAt time.Time `json:"requested_at"`
}
