package events

import (
	"strings"
	"testing"
	"time"

	"github.com/cloudevents/sdk-go/v2/event"
)

const (
	testUser  = "0123456789abcdef0123456789abcdef"
	testUser2 = "fedcba9876543210fedcba9876543210"
	testAC    = "AC0123456789abcdef0123456789abcdef"
	testCA    = "CA0123456789abcdef0123456789abcdef"
	testRE    = "RE0123456789abcdef0123456789abcdef"
	testSM    = "SM0123456789abcdef0123456789abcdef"
)

var testTime = time.Date(2026, 11, 3, 10, 4, 5, 123456000, time.UTC)

// example returns a valid payload (pointer) and subject for every type.
func example(t testing.TB, typ string) (any, string) {
	t.Helper()
	switch typ {
	case TypeChunkReceived:
		return &ChunkReceived{
			User: testUser, ConversationID: "conv-1", Seq: 3,
			BlobKey: "audio/" + testUser + "/conv-1/000003.wav", ContentType: "audio/L16;rate=16000",
			SampleRate: 16000, Digest: strings.Repeat("ab", 32), Size: 32000, Origin: "app", ReceivedAt: testTime,
		}, Subject(testUser, "conversations", "conv-1", "chunks", "3")
	case TypeUploadFinalized:
		return &UploadFinalized{
			User: testUser, ConversationID: "conv-1", Seq: 3, Bucket: "lethe-audio",
			Object: "uploads/" + testUser + "/conv-1/0000003", Generation: 1764000000000001,
			Size: 32044, ContentType: "audio/wav", CRC32C: 0xdeadbeef,
		}, Subject(testUser, "conversations", "conv-1", "chunks", "3")
	case TypeTranscriptCreated:
		return &TranscriptCreated{
			User: testUser, ConversationID: "conv-1", Seq: 3, SegmentID: "conv-1#3",
			SealedText: "AAECAwQFBgc=", Model: "pocketsphinx/en-us", DurationMS: 2000,
		}, Subject(testUser, "conversations", "conv-1")
	case TypeEmbeddingCreated:
		return &EmbeddingCreated{
			User: testUser, ConversationID: "conv-1", Seq: 3, VectorID: "conv-1#3",
			Embedder: "hash-384-v1", Dim: 384, SealedVector: "AAECAw==",
		}, Subject(testUser, "conversations", "conv-1")
	case TypeTwilioRecordingDone:
		return &TwilioRecordingCompleted{
			User: testUser, AccountSID: testAC, CallSID: testCA, RecordingSID: testRE,
			DurationS: 42,
		}, Subject(testUser, "twilio", "calls", testCA)
	case TypeTwilioSMSReceived:
		return &TwilioSMSReceived{
			User: testUser, AccountSID: testAC, MessageSID: testSM,
			FromHash: testUser2, SealedBody: "c2VhbGVk",
		}, Subject(testUser, "twilio", "messages", testSM)
	case TypeTwilioCallStatus:
		return &TwilioCallStatus{
			AccountSID: testAC, CallSID: testCA, CallStatus: CallStatusCompleted, DurationS: 42,
		}, "twilio/calls/" + testCA
	case TypeRetentionSweep:
		return &RetentionSweepRequested{RequestedAt: testTime}, "retention/sweep"
	case TypeConversationErasure:
		return &ConversationErasureRequested{
			User: testUser, ConversationID: "conv-1", RequestID: "req_1", RequestedAt: testTime,
		}, Subject(testUser, "conversations", "conv-1")
	case TypeUserErasureRequested:
		return &UserErasureRequested{User: testUser, RequestID: "req_1", RequestedAt: testTime}, Subject(testUser)
	case TypeUserExportRequested:
		return &UserExportRequested{User: testUser, RequestID: "req-2", RequestedAt: testTime}, Subject(testUser, "exports", "req-2")
	}
	t.Fatalf("no example for %s", typ)
	return nil, ""
}

func newTestRegistry(t testing.TB) *Registry {
	t.Helper()
	r, err := NewRegistry()
	if err != nil {
		t.Fatalf("NewRegistry: %v", err)
	}
	return r
}

// rawEvent builds an event with every attribute set but without validation,
// so tests can break one thing at a time.
func rawEvent(t testing.TB, typ, subject string, data []byte) event.Event {
	t.Helper()
	e := event.New()
	e.SetID("id-1")
	e.SetSource(Source)
	e.SetType(typ)
	e.SetSubject(subject)
	e.SetTime(testTime)
	e.SetDataSchema(DataSchema(typ))
	e.SetDataContentType(ContentTypeJSON)
	e.DataEncoded = data // verbatim: SetData would re-encode non-object bytes
	return e
}
