package ingest_test

import (
	"errors"
	"strings"
	"testing"

	"github.com/lethe-dev/lethe/app/ingest"
	"github.com/lethe-dev/lethe/app/records"
	"github.com/lethe-dev/lethe/events"
	"github.com/lethe-dev/lethe/infra/docs"
	"github.com/lethe-dev/lethe/infra/keys"
)

func TestAcceptText(t *testing.T) {
	f := newFixture(t)
	user := userID(t, "alice")
	in := ingest.Text{User: user, ConversationID: "sms-1", Text: []byte("call the vet at noon"), Origin: ingest.OriginTwilio, Model: "twilio-sms"}
	res, err := f.in.AcceptText(t.Context(), in)
	if err != nil || res.Duplicate {
		t.Fatalf("first: %+v %v", res, err)
	}
	if res.Chunk.Status != records.StatusTranscribed || res.Chunk.BlobKey != "" {
		t.Fatalf("chunk %+v: want transcribed with no audio", res.Chunk)
	}
	seg, err := f.docs.Get(t.Context(), records.SegmentKey(user, "sms-1", 0))
	if err != nil {
		t.Fatal(err)
	}
	s, _ := records.SegmentFrom(seg)
	if text, err := f.keys.Open(t.Context(), user, s.SealedText, keys.AD(user, records.Segments, records.ChunkID("sms-1", 0), "text")); err != nil || string(text) != "call the vet at noon" {
		t.Fatalf("segment opens to %q (%v)", text, err)
	}
	// A replay writes nothing new and republishes the same event.
	again, err := f.in.AcceptText(t.Context(), in)
	if err != nil || !again.Duplicate {
		t.Fatalf("replay: %+v %v", again, err)
	}
	pub := f.bus.All()
	if len(pub) != 2 || pub[0].Topic != events.TopicTranscripts || pub[0].Event.ID() != pub[1].Event.ID() {
		t.Fatalf("published %+v", pub)
	}
	segs, _ := f.docs.Query(t.Context(), docs.Query{User: user, Collection: records.Segments})
	if len(segs) != 1 {
		t.Fatalf("%d segments", len(segs))
	}
	// Other text for the same conversation is a conflict.
	other := in
	other.Text = []byte("something else")
	if _, err := f.in.AcceptText(t.Context(), other); !errors.Is(err, ingest.ErrConflict) {
		t.Fatalf("other text: %v", err)
	}
}

func TestAcceptTextRejects(t *testing.T) {
	for name, in := range map[string]ingest.Text{
		"empty":     {ConversationID: "sms-2", Text: nil},
		"too long":  {ConversationID: "sms-2", Text: []byte(strings.Repeat("a", ingest.MaxText+1))},
		"not UTF-8": {ConversationID: "sms-2", Text: []byte{0xff, 0xfe}},
		"bad cid":   {ConversationID: "../x", Text: []byte("x")},
		"no user":   {ConversationID: "sms-2", Text: []byte("x")},
	} {
		t.Run(name, func(t *testing.T) {
			f := newFixture(t)
			if name != "no user" {
				in.User = userID(t, "alice")
			}
			if _, err := f.in.AcceptText(t.Context(), in); !errors.Is(err, ingest.ErrInvalidText) && !errors.Is(err, ingest.ErrInvalid) {
				t.Fatalf("got %v", err)
			}
			f.assertNothingStored(t)
		})
	}
}
