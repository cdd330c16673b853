package twilio_test

import (
	"context"
	"encoding/base64"
	"errors"
	"os"
	"path/filepath"
	"sync"
	"testing"

	"github.com/cloudevents/sdk-go/v2/event"

	"github.com/lethe-dev/lethe/app/audit"
	"github.com/lethe-dev/lethe/app/ingest"
	"github.com/lethe-dev/lethe/app/phones"
	"github.com/lethe-dev/lethe/app/records"
	"github.com/lethe-dev/lethe/events"
	"github.com/lethe-dev/lethe/infra/blobs/dirblobs"
	"github.com/lethe-dev/lethe/infra/docs"
	"github.com/lethe-dev/lethe/infra/keys"
	"github.com/lethe-dev/lethe/internal/testbus"
	"github.com/lethe-dev/lethe/workers/internal/workertest"
	"github.com/lethe-dev/lethe/workers/twilio"
)

const (
	account = "AC0123456789abcdef0123456789abcdef"
	callSID = "CA0123456789abcdef0123456789abcdef"
	recSID  = "RE0123456789abcdef0123456789abcdef"
	smsSID  = "SM0123456789abcdef0123456789abcdef"
	alice   = "1aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa"
	bob     = "1bbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb"
	aliceNo = "2aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa" // keyed hash of alice's number
)

// media is Twilio's recordings API as the worker sees it: 404 (not ready)
// for the first notReady fetches, then the audio; deletes are recorded.
type media struct {
	mu       sync.Mutex
	audio    map[string][]byte
	notReady int
	fetches  int
	deletes  []string
}

func (m *media) FetchRecording(_ context.Context, sid string) (twilio.Recording, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.fetches++
	if m.notReady > 0 {
		m.notReady--
		return twilio.Recording{}, twilio.ErrNotReady
	}
	a, ok := m.audio[sid]
	if !ok {
		return twilio.Recording{}, twilio.ErrNotReady
	}
	return twilio.Recording{Audio: a, ContentType: "audio/x-wav"}, nil
}

func (m *media) DeleteRecording(_ context.Context, sid string) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.deletes = append(m.deletes, sid)
	delete(m.audio, sid)
	return nil
}

type owners map[string]string

func (o owners) Owner(_ context.Context, hash string) (string, bool, error) {
	u, ok := o[hash]
	return u, ok, nil
}

type env struct {
	w     *twilio.Worker
	docs  docs.Store
	keys  *keys.Keyring
	bus   *testbus.Recorder
	media *media
	calls *phones.Calls
	reg   *events.Registry
	trail *audit.Log
}

func newEnv(t *testing.T) *env {
	t.Helper()
	st := workertest.Open(t)
	d, reg := st.Docs, st.Events
	b, err := dirblobs.Open(filepath.Join(st.Dir, "blobs"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { b.Close() })
	wav, err := os.ReadFile("../../testdata/speech-hello.wav")
	if err != nil {
		t.Fatal(err)
	}
	e := &env{docs: d, keys: st.Keys, bus: &testbus.Recorder{},
		media: &media{audio: map[string][]byte{recSID: wav}}, calls: &phones.Calls{Docs: d}, reg: reg, trail: &audit.Log{Docs: d}}
	in := &ingest.Intake{Docs: d, Blobs: b, Keys: e.keys, Bus: e.bus, Events: reg, Retention: records.Retention{AudioDays: 30, TranscriptDays: 365, VectorDays: 365, ExportDays: 7}}
	e.w = &twilio.Worker{Intake: in, Docs: d, Keys: e.keys, Media: e.media, Owners: owners{aliceNo: alice}, Calls: e.calls, Audit: e.trail, Events: reg}
	return e
}

func (e *env) recordingEvent(t *testing.T, user string) events.TwilioRecordingCompleted {
	return events.TwilioRecordingCompleted{User: user, AccountSID: account, CallSID: callSID, RecordingSID: recSID, DurationS: 3}
}

func (e *env) event(t *testing.T, id, typ, user string, data any) eventT {
	t.Helper()
	subject := "twilio/calls/" + callSID
	if user != "" {
		subject = events.Subject(user, "twilio")
	}
	ev, err := e.reg.NewWithID(id, typ, subject, data)
	if err != nil {
		t.Fatal(err)
	}
	return ev
}

func (e *env) smsEvent(t *testing.T, user, body string) eventT {
	t.Helper()
	id := events.DeriveID("twilio-sms", smsSID)
	sealed, err := e.keys.Seal(t.Context(), user, []byte(body), keys.AD(user, "events/"+events.TypeTwilioSMSReceived, id, "sealed_body"))
	if err != nil {
		t.Fatal(err)
	}
	return e.event(t, id, events.TypeTwilioSMSReceived, user, events.TwilioSMSReceived{User: user, AccountSID: account,
		MessageSID: smsSID, FromHash: aliceNo, SealedBody: base64.StdEncoding.EncodeToString(sealed)})
}

func (e *env) count(t *testing.T, user, coll string) int {
	t.Helper()
	ds, err := e.docs.Query(t.Context(), docs.Query{User: user, Collection: coll})
	if err != nil {
		t.Fatal(err)
	}
	return len(ds)
}

func (e *env) drops(t *testing.T) int {
	t.Helper()
	entries, _, err := e.trail.List(t.Context(), audit.Filter{})
	if err != nil {
		t.Fatal(err)
	}
	n := 0
	for _, en := range entries {
		if en.Action == "twilio.dropped" {
			n++
		}
	}
	return n
}

func TestSMSBecomesOneSearchableMemory(t *testing.T) {
	e := newEnv(t)
	ev := e.smsEvent(t, alice, "buy oat milk and call the plumber")
	for i := range 3 { // a replayed webhook, redelivered events
		if err := e.w.Handle(t.Context(), ev); err != nil {
			t.Fatalf("delivery %d: %v", i, err)
		}
	}
	if n := e.count(t, alice, records.Segments); n != 1 {
		t.Fatalf("%d segments, want 1", n)
	}
	if n := e.count(t, alice, records.Conversations); n != 1 {
		t.Fatalf("%d conversations, want 1", n)
	}
	pub := e.bus.All()
	if len(pub) == 0 || pub[0].Topic != events.TopicTranscripts {
		t.Fatalf("published %+v", pub)
	}
	for _, p := range pub {
		if p.Event.ID() != pub[0].Event.ID() {
			t.Fatal("replays published different transcript ids")
		}
	}
	// The segment is sealed under alice's key and opens to the body.
	segs, _ := e.docs.Query(t.Context(), docs.Query{User: alice, Collection: records.Segments})
	seg, _ := records.SegmentFrom(segs[0])
	text, err := e.keys.Open(t.Context(), alice, seg.SealedText, keys.AD(alice, records.Segments, segs[0].Key.ID, "text"))
	if err != nil || string(text) != "buy oat milk and call the plumber" {
		t.Fatalf("segment %q %v", text, err)
	}
}

func TestSMSFromANumberNoLongerOwnedKeepsNothing(t *testing.T) {
	e := newEnv(t)
	e.w.Owners = owners{aliceNo: bob} // bob verified it since
	if err := e.w.Handle(t.Context(), e.smsEvent(t, alice, "hello")); !errors.Is(err, events.ErrDropped) {
		t.Fatalf("got %v, want dropped", err)
	}
	e.w.Owners = owners{}
	if err := e.w.Handle(t.Context(), e.smsEvent(t, alice, "hello")); !errors.Is(err, events.ErrDropped) {
		t.Fatalf("got %v, want dropped", err)
	}
	if n := e.count(t, alice, records.Segments) + e.count(t, alice, records.Chunks); n != 0 {
		t.Fatalf("kept %d documents", n)
	}
	if len(e.bus.All()) != 0 || e.drops(t) != 2 {
		t.Fatalf("published %d, drops %d", len(e.bus.All()), e.drops(t))
	}
}

func TestRecordingFetchedSealedAndDeleted(t *testing.T) {
	e := newEnv(t)
	ctx := t.Context()
	if err := e.calls.Start(ctx, callSID, alice, "ringing"); err != nil {
		t.Fatal(err)
	}
	e.media.notReady = 2
	ev := e.event(t, events.DeriveID("twilio-recording", recSID), events.TypeTwilioRecordingDone, alice, e.recordingEvent(t, alice))
	for i := range 2 {
		err := e.w.Handle(ctx, ev)
		if err == nil || events.IsPermanent(err) || errors.Is(err, events.ErrDropped) {
			t.Fatalf("before ready, attempt %d: %v, want a retryable error", i, err)
		}
	}
	if err := e.w.Handle(ctx, ev); err != nil {
		t.Fatal(err)
	}
	pub := e.bus.All()
	if len(pub) != 1 || pub[0].Topic != events.TopicAudio {
		t.Fatalf("published %+v", pub)
	}
	var chunk events.ChunkReceived
	if err := e.reg.Decode(pub[0].Event, &chunk); err != nil || chunk.User != alice || chunk.Origin != ingest.OriginTwilio {
		t.Fatalf("chunk %+v %v", chunk, err)
	}
	if len(e.media.deletes) != 1 {
		t.Fatalf("deletes %v", e.media.deletes)
	}
	fetches := e.media.fetches
	// A replay neither fetches again (Twilio's copy is gone) nor adds.
	if err := e.w.Handle(ctx, ev); err != nil {
		t.Fatal(err)
	}
	if e.media.fetches != fetches || e.count(t, alice, records.Chunks) != 1 || len(e.bus.All()) != 1 {
		t.Fatalf("replay fetched %d more, chunks %d", e.media.fetches-fetches, e.count(t, alice, records.Chunks))
	}
}

func TestRecordingRefusals(t *testing.T) {
	tests := []struct {
		name  string
		setup func(t *testing.T, e *env)
		user  string
		want  func(error) bool
	}{
		{"call of another user", func(t *testing.T, e *env) { _ = e.calls.Start(t.Context(), callSID, bob, "ringing") }, alice,
			func(err error) bool { return errors.Is(err, events.ErrDropped) }},
		{"no call record", func(t *testing.T, e *env) {}, alice,
			func(err error) bool { return errors.Is(err, events.ErrDropped) }},
		{"Twilio refuses for good", func(t *testing.T, e *env) {
			_ = e.calls.Start(t.Context(), callSID, alice, "ringing")
			e.w.Media = refusing{}
		}, alice, events.IsPermanent},
		{"not audio", func(t *testing.T, e *env) {
			_ = e.calls.Start(t.Context(), callSID, alice, "ringing")
			e.media.audio[recSID] = []byte("<html>not a wav</html>")
		}, alice, events.IsPermanent},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			e := newEnv(t)
			tt.setup(t, e)
			ev := e.event(t, events.DeriveID("twilio-recording", recSID), events.TypeTwilioRecordingDone, tt.user, e.recordingEvent(t, tt.user))
			if err := e.w.Handle(t.Context(), ev); !tt.want(err) {
				t.Fatalf("got %v", err)
			}
			if e.count(t, alice, records.Chunks) != 0 || len(e.bus.All()) != 0 {
				t.Fatal("something was kept")
			}
		})
	}
}

type refusing struct{}

func (refusing) FetchRecording(context.Context, string) (twilio.Recording, error) {
	return twilio.Recording{}, twilio.ErrRejected
}
func (refusing) DeleteRecording(context.Context, string) error { return nil }

func TestKeepTwilioCopy(t *testing.T) {
	e := newEnv(t)
	e.w.KeepTwilioCopy = true
	_ = e.calls.Start(t.Context(), callSID, alice, "ringing")
	ev := e.event(t, events.DeriveID("twilio-recording", recSID), events.TypeTwilioRecordingDone, alice, e.recordingEvent(t, alice))
	if err := e.w.Handle(t.Context(), ev); err != nil {
		t.Fatal(err)
	}
	if len(e.media.deletes) != 0 {
		t.Fatalf("deleted %v with the copy kept", e.media.deletes)
	}
}

func TestCallStatus(t *testing.T) {
	e := newEnv(t)
	ctx := t.Context()
	_ = e.calls.Start(ctx, callSID, alice, "ringing")
	st := func(user, status string) eventT {
		return e.event(t, events.DeriveID("twilio-call", callSID, status), events.TypeTwilioCallStatus, user,
			events.TwilioCallStatus{User: user, AccountSID: account, CallSID: callSID, CallStatus: status, DurationS: 11})
	}
	for range 2 {
		if err := e.w.Handle(ctx, st(alice, "completed")); err != nil {
			t.Fatal(err)
		}
	}
	c, _, _ := e.calls.Get(ctx, callSID)
	if c.Status != "completed" || c.DurationS != 11 {
		t.Fatalf("call %+v", c)
	}
	for name, ev := range map[string]eventT{"another user": st(bob, "in-progress"), "no user": st("", "busy")} {
		if err := e.w.Handle(ctx, ev); !errors.Is(err, events.ErrDropped) {
			t.Fatalf("%s: %v", name, err)
		}
	}
	if c2, _, _ := e.calls.Get(ctx, callSID); c2 != c {
		t.Fatalf("call changed: %+v", c2)
	}
}

func TestTombstonedAndMalformed(t *testing.T) {
	e := newEnv(t)
	ctx := t.Context()
	ev := e.smsEvent(t, alice, "late")
	if err := e.docs.Put(ctx, docs.Doc{Key: records.TombstoneKey(alice), Data: []byte(`{}`)}); err != nil {
		t.Fatal(err)
	}
	if err := e.w.Handle(ctx, ev); !errors.Is(err, events.ErrDropped) {
		t.Fatalf("tombstoned: %v", err)
	}
	bad := ev.Clone()
	_ = bad.SetData("application/json", []byte(`{"user":"x"}`))
	if err := e.w.Handle(ctx, bad); !events.IsPermanent(err) {
		t.Fatalf("malformed: %v", err)
	}
	other := ev.Clone()
	other.SetType(events.TypeChunkReceived)
	if err := e.w.Handle(ctx, other); !events.IsPermanent(err) {
		t.Fatalf("wrong type: %v", err)
	}
}

type eventT = event.Event
