package transcribe_test

import (
	"bytes"
	"encoding/base64"
	"errors"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/cloudevents/sdk-go/v2/event"

	"github.com/lethe-dev/lethe/app/records"
	"github.com/lethe-dev/lethe/events"
	"github.com/lethe-dev/lethe/infra/blobs"
	"github.com/lethe-dev/lethe/infra/keys"
	"github.com/lethe-dev/lethe/infra/stt/pocketsphinx"
	"github.com/lethe-dev/lethe/workers/internal/workertest"
	"github.com/lethe-dev/lethe/workers/transcribe"
)

const cid = "conv-1"

// checkTranscriptEvent asserts p is the transcript.created of chunk c and
// that its sealed text opens (for this user and this event id only) to text.
func checkTranscriptEvent(t *testing.T, e *env, p workertest.Published, user string, c records.Chunk, text string) {
	t.Helper()
	if p.Topic != events.TopicTranscripts {
		t.Errorf("topic = %q, want %q", p.Topic, events.TopicTranscripts)
	}
	ev := p.Event
	if ev.Type() != events.TypeTranscriptCreated {
		t.Errorf("type = %q", ev.Type())
	}
	if want := wantTranscriptID(user, c.ConversationID, c.Seq, c.Digest); ev.ID() != want {
		t.Errorf("id = %q, want %q (derived from user, conversation, seq, digest)", ev.ID(), want)
	}
	wantSubject := events.Subject(user, "conversations", c.ConversationID, "chunks", strconv.Itoa(c.Seq))
	if ev.Subject() != wantSubject {
		t.Errorf("subject = %q, want %q", ev.Subject(), wantSubject)
	}
	var got events.TranscriptCreated
	if err := e.reg.Decode(ev, &got); err != nil {
		t.Fatalf("published event does not decode: %v", err)
	}
	if got.User != user || got.ConversationID != c.ConversationID || got.Seq != c.Seq ||
		got.SegmentID != records.ChunkID(c.ConversationID, c.Seq) || got.Model != "fake-stt-v1" {
		t.Errorf("payload = %+v", got)
	}
	if text != "" && bytes.Contains(ev.Data(), []byte(text)) {
		t.Error("event data carries the transcript in plaintext")
	}
	sealed, err := base64.StdEncoding.DecodeString(got.SealedText)
	if err != nil {
		t.Fatalf("sealed_text: %v", err)
	}
	pt, err := e.keys.Open(t.Context(), user, sealed, keys.AD(user, "events/"+events.TypeTranscriptCreated, ev.ID(), "sealed_text"))
	if err != nil {
		t.Fatalf("open sealed_text: %v", err)
	}
	if string(pt) != text {
		t.Errorf("sealed_text opens to %q, want %q", pt, text)
	}
	// Bound to the event id: the same ciphertext under another id fails.
	if _, err := e.keys.Open(t.Context(), user, sealed, keys.AD(user, "events/"+events.TypeTranscriptCreated, "other-id", "sealed_text")); !errors.Is(err, keys.ErrDecrypt) {
		t.Errorf("sealed_text opened under another event id: %v", err)
	}
}

func TestHandleHappyPath(t *testing.T) {
	e := newEnv(t)
	user := workertest.UserID(t, "a")
	c := e.seedChunk(t, user, cid, 3, tone(1600), "audio/wav")

	if err := e.w.Handle(t.Context(), e.chunkEvent(t, user, c)); err != nil {
		t.Fatalf("Handle: %v", err)
	}
	if n := e.stt.count(); n != 1 {
		t.Errorf("STT calls = %d, want 1", n)
	}
	if n := e.stt.lastSamples(); n != 1600 {
		t.Errorf("STT got %d samples, want 1600", n)
	}
	got := e.chunk(t, user, cid, 3)
	if got.Status != records.StatusTranscribed || !got.UpdatedAt.Equal(e.now) {
		t.Errorf("chunk status %q updated %v, want transcribed at %v", got.Status, got.UpdatedAt, e.now)
	}
	segs := e.segments(t, user)
	if len(segs) != 1 {
		t.Fatalf("%d segments, want 1", len(segs))
	}
	seg, err := records.SegmentFrom(segs[0])
	if err != nil {
		t.Fatal(err)
	}
	if segs[0].Key != records.SegmentKey(user, cid, 3) || seg.ConversationID != cid || seg.Seq != 3 ||
		seg.Model != "fake-stt-v1" || seg.DurationMS != 100 || !seg.CreatedAt.Equal(e.now) {
		t.Errorf("segment %v = %+v", segs[0].Key, seg)
	}
	if bytes.Contains(segs[0].Data, []byte("hello world")) {
		t.Error("segment document holds the transcript in plaintext")
	}
	text, err := e.keys.Open(t.Context(), user, seg.SealedText, keys.AD(user, records.Segments, records.ChunkID(cid, 3), "text"))
	if err != nil || string(text) != spokenText {
		t.Errorf("segment text opens to %q, %v", text, err)
	}
	pubs := e.bus.All()
	if len(pubs) != 1 {
		t.Fatalf("%d events published, want 1", len(pubs))
	}
	checkTranscriptEvent(t, e, pubs[0], user, c, spokenText)
}

// Silence has nothing to search: the chunk is final (indexed) without a
// transcript event.
func TestHandleSilence(t *testing.T) {
	e := newEnv(t)
	user := workertest.UserID(t, "a")
	c := e.seedChunk(t, user, cid, 0, tone(800), "audio/wav")
	e.stt.set("", nil)
	if err := e.w.Handle(t.Context(), e.chunkEvent(t, user, c)); err != nil {
		t.Fatalf("Handle: %v", err)
	}
	if st := e.chunk(t, user, cid, 0).Status; st != records.StatusIndexed {
		t.Errorf("status = %q, want indexed", st)
	}
	if n := len(e.bus.All()); n != 0 {
		t.Errorf("%d events published for silence", n)
	}
	if n := len(e.segments(t, user)); n != 1 {
		t.Errorf("%d segments, want 1", n)
	}
}

// Every malformed, oversized or cross-user event is poison: permanent,
// and nothing is transcribed, written or published.
func TestHandleRejectsMalformed(t *testing.T) {
	e := newEnv(t)
	user := workertest.UserID(t, "a")
	other := workertest.UserID(t, "b")
	c := e.seedChunk(t, user, cid, 1, tone(1600), "audio/wav")
	valid := e.chunkEvent(t, user, c)
	before := e.chunkData(t, user, cid, 1)

	transcriptEv, err := e.reg.NewWithID(events.NewID(), events.TypeTranscriptCreated,
		events.Subject(user, "conversations", cid, "chunks", "1"),
		events.TranscriptCreated{User: user, ConversationID: cid, Seq: 1, SegmentID: records.ChunkID(cid, 1),
			SealedText: "AAAA", Model: "m", DurationMS: 1})
	if err != nil {
		t.Fatal(err)
	}

	cases := []struct {
		name string
		ev   event.Event
	}{
		{"unknown type", workertest.WithAttr(valid, func(e *event.Event) { e.SetType("dev.lethe.audio.chunk.nope.v1") })},
		{"wrong type for this worker", transcriptEv},
		{"bad user format", workertest.WithAttr(workertest.WithData(t, valid, func(m map[string]any) { m["user"] = "Alice" }),
			func(e *event.Event) { e.SetSubject("users/Alice/conversations/" + cid + "/chunks/1") })},
		{"upper-case user hash", workertest.WithAttr(workertest.WithData(t, valid, func(m map[string]any) { m["user"] = strings.ToUpper(user) }),
			func(e *event.Event) { e.SetSubject(events.Subject(strings.ToUpper(user), "conversations", cid)) })},
		{"unknown field", workertest.WithData(t, valid, func(m map[string]any) { m["transcript"] = "x" })},
		{"missing digest", workertest.WithData(t, valid, func(m map[string]any) { delete(m, "digest") })},
		{"missing user", workertest.WithData(t, valid, func(m map[string]any) { delete(m, "user") })},
		{"negative seq", workertest.WithData(t, valid, func(m map[string]any) { m["seq"] = -1 })},
		{"seq over bound", workertest.WithData(t, valid, func(m map[string]any) { m["seq"] = records.MaxSeq + 1 })},
		{"seq not integer", workertest.WithData(t, valid, func(m map[string]any) { m["seq"] = 1.5 })},
		{"digest not hex", workertest.WithData(t, valid, func(m map[string]any) { m["digest"] = strings.Repeat("Z", 64) })},
		{"unknown origin", workertest.WithData(t, valid, func(m map[string]any) { m["origin"] = "ftp" })},
		{"received_at not a date", workertest.WithData(t, valid, func(m map[string]any) { m["received_at"] = "yesterday at noon" })},
		{"blob_key traversal", workertest.WithData(t, valid, func(m map[string]any) { m["blob_key"] = "users/../../etc/passwd" })},
		{"conversation id with slash", workertest.WithData(t, valid, func(m map[string]any) { m["conversation_id"] = "a/b" })},
		{"oversized content_type", workertest.WithData(t, valid, func(m map[string]any) { m["content_type"] = "audio/" + strings.Repeat("x", 200) })},
		{"oversized blob_key", workertest.WithData(t, valid, func(m map[string]any) { m["blob_key"] = strings.Repeat("k", 600) })},
		{"oversized data", workertest.WithData(t, valid, func(m map[string]any) { m["blob_key"] = strings.Repeat("k", events.MaxDataSize) })},
		{"data not JSON", workertest.WithAttr(valid, func(e *event.Event) { e.DataEncoded = []byte("not json at all") })},
		{"data JSON array", workertest.WithAttr(valid, func(e *event.Event) { e.DataEncoded = []byte(`[1,2,3]`) })},
		{"trailing data", workertest.WithAttr(valid, func(e *event.Event) { e.DataEncoded = append(append([]byte(nil), valid.Data()...), []byte(`{}`)...) })},
		{"no data", workertest.WithAttr(valid, func(e *event.Event) { e.DataEncoded = nil })},
		{"missing subject", workertest.WithAttr(valid, func(e *event.Event) { e.SetSubject("") })},
		{"missing time", workertest.WithAttr(valid, func(e *event.Event) { e.SetTime(time.Time{}) })},
		{"missing dataschema", workertest.WithAttr(valid, func(e *event.Event) { e.SetDataSchema("") })},
		{"dataschema of another type", workertest.WithAttr(valid, func(e *event.Event) { e.SetDataSchema(events.DataSchema(events.TypeEmbeddingCreated)) })},
		{"wrong datacontenttype", workertest.WithAttr(valid, func(e *event.Event) { e.SetDataContentType("text/plain") })},
		{"id with spaces", workertest.WithAttr(valid, func(e *event.Event) { e.SetID("a b c") })},
		{"subject names another user", workertest.WithAttr(valid, func(e *event.Event) {
			e.SetSubject(events.Subject(other, "conversations", cid, "chunks", "1"))
		})},
		{"payload names another user than the subject", workertest.WithData(t, valid, func(m map[string]any) { m["user"] = other })},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			err := e.w.Handle(t.Context(), tc.ev)
			if got := workertest.Classify(err); got != workertest.Permanent {
				t.Errorf("Handle = %v (%s), want permanent", err, got)
			}
			if n := e.stt.count(); n != 0 {
				t.Errorf("STT called %d times", n)
			}
			if n := len(e.bus.All()); n != 0 {
				t.Errorf("%d events published", n)
			}
			if n := len(e.segments(t, user)) + len(e.segments(t, other)); n != 0 {
				t.Errorf("%d segments written", n)
			}
			if !bytes.Equal(e.chunkData(t, user, cid, 1), before) {
				t.Error("chunk record changed")
			}
			if e.HasKey(t, other) {
				t.Error("a key was created for the other user")
			}
		})
	}
}

// Forged inputs are dropped or poison, never written.
func TestHandleForged(t *testing.T) {
	t.Run("digest differs from the chunk record", func(t *testing.T) {
		e := newEnv(t)
		user := workertest.UserID(t, "a")
		c := e.seedChunk(t, user, cid, 1, tone(1600), "audio/wav")
		before := e.chunkData(t, user, cid, 1)
		ev := workertest.WithData(t, e.chunkEvent(t, user, c), func(m map[string]any) { m["digest"] = digest([]byte("other audio")) })
		if got := workertest.Classify(e.w.Handle(t.Context(), ev)); got != workertest.Dropped {
			t.Errorf("outcome %s, want dropped", got)
		}
		assertUntouched(t, e, user, 1, before)
	})

	t.Run("blob_key of the event is ignored for the record's", func(t *testing.T) {
		e := newEnv(t)
		user := workertest.UserID(t, "a")
		decoy := e.seedChunk(t, user, "decoy", 1, tone(3200), "audio/wav")
		c := e.seedChunk(t, user, cid, 1, tone(1600), "audio/wav")
		ev := workertest.WithData(t, e.chunkEvent(t, user, c), func(m map[string]any) { m["blob_key"] = decoy.BlobKey })
		if err := e.w.Handle(t.Context(), ev); err != nil {
			t.Fatalf("Handle: %v", err)
		}
		if n := e.stt.lastSamples(); n != 1600 {
			t.Errorf("transcribed %d samples: the event's blob_key was followed, not the record's", n)
		}
	})

	sealedFor := func(e *env, t *testing.T, c records.Chunk, user, adUser, adKey string) {
		t.Helper()
		rc, _, err := e.blobs.Read(t.Context(), c.BlobKey)
		if err != nil {
			t.Fatal(err)
		}
		rc.Close()
		body := tone(1600)
		sealed, err := e.keys.Seal(t.Context(), user, body, keys.AD(adUser, "blobs", adKey, "audio"))
		if err != nil {
			t.Fatal(err)
		}
		if _, err := e.blobs.Write(t.Context(), c.BlobKey, bytes.NewReader(sealed), blobs.WriteOptions{}); err != nil {
			t.Fatal(err)
		}
	}
	forgedBlobs := []struct {
		name string
		seal func(e *env, t *testing.T, c records.Chunk, user, other string)
	}{
		{"audio sealed with another user's key", func(e *env, t *testing.T, c records.Chunk, user, other string) {
			sealedFor(e, t, c, other, other, c.BlobKey)
		}},
		{"audio sealed for another user's associated data", func(e *env, t *testing.T, c records.Chunk, user, other string) {
			sealedFor(e, t, c, user, other, c.BlobKey)
		}},
		{"audio sealed for another blob", func(e *env, t *testing.T, c records.Chunk, user, other string) {
			sealedFor(e, t, c, user, user, c.BlobKey+"x")
		}},
		{"audio not ciphertext", func(e *env, t *testing.T, c records.Chunk, user, other string) {
			if _, err := e.blobs.Write(t.Context(), c.BlobKey, bytes.NewReader(tone(1600)), blobs.WriteOptions{}); err != nil {
				t.Fatal(err)
			}
		}},
	}
	for _, tc := range forgedBlobs {
		t.Run(tc.name, func(t *testing.T) {
			e := newEnv(t)
			user, other := workertest.UserID(t, "a"), workertest.UserID(t, "b")
			c := e.seedChunk(t, user, cid, 1, tone(1600), "audio/wav")
			e.seedChunk(t, other, cid, 1, tone(1600), "audio/wav") // other has a key
			tc.seal(e, t, c, user, other)
			before := e.chunkData(t, user, cid, 1)
			err := e.w.Handle(t.Context(), e.chunkEvent(t, user, c))
			if got := workertest.Classify(err); got != workertest.Permanent && got != workertest.Dropped {
				t.Errorf("Handle = %v (%s), want permanent or dropped", err, got)
			}
			assertUntouched(t, e, user, 1, before)
		})
	}
}

// assertUntouched: no STT call, no event, no segment, chunk record as before.
func assertUntouched(t *testing.T, e *env, user string, seq int, before []byte) {
	t.Helper()
	if n := e.stt.count(); n != 0 {
		t.Errorf("STT called %d times", n)
	}
	if n := len(e.bus.All()); n != 0 {
		t.Errorf("%d events published", n)
	}
	if n := len(e.segments(t, user)); n != 0 {
		t.Errorf("%d segments written", n)
	}
	if !bytes.Equal(e.chunkData(t, user, cid, seq), before) {
		t.Errorf("chunk record changed: %s", e.chunkData(t, user, cid, seq))
	}
}

func TestHandleReplay(t *testing.T) {
	t.Run("twice in a row", func(t *testing.T) {
		e := newEnv(t)
		user := workertest.UserID(t, "a")
		c := e.seedChunk(t, user, cid, 2, tone(1600), "audio/wav")
		ev := e.chunkEvent(t, user, c)
		if err := e.w.Handle(t.Context(), ev); err != nil {
			t.Fatal(err)
		}
		first := e.segments(t, user)
		e.now = e.now.Add(time.Hour)
		if err := e.w.Handle(t.Context(), ev); err != nil {
			t.Fatalf("redelivery: %v", err)
		}
		if n := e.stt.count(); n != 1 {
			t.Errorf("STT calls = %d: a redelivery transcribed again", n)
		}
		segs := e.segments(t, user)
		if len(segs) != 1 || !bytes.Equal(segs[0].Data, first[0].Data) {
			t.Errorf("segments after redelivery: %d, rewritten %v", len(segs), len(segs) == 1 && !bytes.Equal(segs[0].Data, first[0].Data))
		}
		pubs := e.bus.All()
		if len(pubs) != 2 {
			t.Fatalf("%d events, want the transcript republished once", len(pubs))
		}
		for _, p := range pubs {
			checkTranscriptEvent(t, e, p, user, c, spokenText)
		}
		if st := e.chunk(t, user, cid, 2).Status; st != records.StatusTranscribed {
			t.Errorf("status %q", st)
		}
	})

	t.Run("concurrently", func(t *testing.T) {
		e := newEnv(t)
		user := workertest.UserID(t, "a")
		c := e.seedChunk(t, user, cid, 2, tone(1600), "audio/wav")
		ev := e.chunkEvent(t, user, c)
		const n = 8
		errs := make([]error, n)
		var wg sync.WaitGroup
		for i := range n {
			wg.Go(func() { errs[i] = e.w.Handle(t.Context(), ev) })
		}
		wg.Wait()
		for i, err := range errs {
			if err != nil {
				t.Errorf("delivery %d: %v", i, err)
			}
		}
		if segs := e.segments(t, user); len(segs) != 1 {
			t.Errorf("%d segments, want 1", len(segs))
		}
		pubs := e.bus.All()
		if len(pubs) == 0 {
			t.Fatal("nothing published")
		}
		for _, p := range pubs {
			checkTranscriptEvent(t, e, p, user, c, spokenText)
		}
		if st := e.chunk(t, user, cid, 2).Status; st != records.StatusTranscribed {
			t.Errorf("status %q", st)
		}
	})

	for _, final := range []string{records.StatusIndexed, records.StatusFailed} {
		t.Run("after the chunk is "+final, func(t *testing.T) {
			e := newEnv(t)
			user := workertest.UserID(t, "a")
			c := e.seedChunk(t, user, cid, 2, tone(1600), "audio/wav")
			ev := e.chunkEvent(t, user, c)
			if err := e.w.Handle(t.Context(), ev); err != nil {
				t.Fatal(err)
			}
			// The store worker (or a failure) finished the chunk.
			done := e.chunk(t, user, cid, 2)
			done.Status = final
			e.putChunk(t, user, done)
			before := e.chunkData(t, user, cid, 2)
			if err := e.w.Handle(t.Context(), ev); err != nil {
				t.Fatalf("late redelivery: %v", err)
			}
			if !bytes.Equal(e.chunkData(t, user, cid, 2), before) {
				t.Errorf("late redelivery changed the chunk: %s", e.chunkData(t, user, cid, 2))
			}
			if n := len(e.bus.All()); n != 1 {
				t.Errorf("%d events, want only the first", n)
			}
			if n := e.stt.count(); n != 1 {
				t.Errorf("STT calls %d", n)
			}
		})
	}
}

func TestHandleCrossUser(t *testing.T) {
	e := newEnv(t)
	a, b := workertest.UserID(t, "a"), workertest.UserID(t, "b")
	c := e.seedChunk(t, a, cid, 1, tone(1600), "audio/wav")
	before := e.chunkData(t, a, cid, 1)

	t.Run("user B under A's subject", func(t *testing.T) {
		ev := workertest.WithData(t, e.chunkEvent(t, a, c), func(m map[string]any) { m["user"] = b })
		var in events.ChunkReceived
		if err := e.reg.Decode(ev, &in); !events.IsPermanent(err) {
			t.Errorf("Decode = %v, want permanent", err)
		}
		if got := workertest.Classify(e.w.Handle(t.Context(), ev)); got != workertest.Permanent {
			t.Errorf("outcome %s, want permanent", got)
		}
	})
	t.Run("user B naming A's conversation", func(t *testing.T) {
		// A fully consistent event for B that copies A's chunk.
		ev := e.chunkEvent(t, b, c)
		if got := workertest.Classify(e.w.Handle(t.Context(), ev)); got != workertest.Dropped {
			t.Errorf("outcome %s, want dropped", got)
		}
	})
	if n := e.stt.count(); n != 0 {
		t.Errorf("STT called %d times", n)
	}
	if n := len(e.bus.All()); n != 0 {
		t.Errorf("%d events published", n)
	}
	if !bytes.Equal(e.chunkData(t, a, cid, 1), before) {
		t.Error("A's chunk changed")
	}
	if n := len(e.segments(t, a)) + len(e.segments(t, b)); n != 0 {
		t.Errorf("%d segments written", n)
	}
	if e.HasKey(t, b) {
		t.Error("a key was created for B")
	}
}

func TestHandleTombstoned(t *testing.T) {
	t.Run("user with audio", func(t *testing.T) {
		e := newEnv(t)
		user := workertest.UserID(t, "a")
		c := e.seedChunk(t, user, cid, 1, tone(1600), "audio/wav")
		e.Tombstone(t, user)
		before := e.chunkData(t, user, cid, 1)
		if got := workertest.Classify(e.w.Handle(t.Context(), e.chunkEvent(t, user, c))); got != workertest.Dropped {
			t.Errorf("outcome %s, want dropped", got)
		}
		assertUntouched(t, e, user, 1, before)
	})
	t.Run("user without a key", func(t *testing.T) {
		e := newEnv(t)
		user := workertest.UserID(t, "a")
		sum := digest([]byte("x"))
		c := records.Chunk{ConversationID: cid, Seq: 1, Status: records.StatusReceived,
			BlobKey: records.AudioKey(user, cid, 1, sum), ContentType: "audio/wav", Digest: sum, Size: 1,
			Origin: "app", EventID: records.ChunkEventID(user, cid, 1, sum), ReceivedAt: e.now, UpdatedAt: e.now}
		e.putChunk(t, user, c)
		e.Tombstone(t, user)
		before := e.chunkData(t, user, cid, 1)
		if got := workertest.Classify(e.w.Handle(t.Context(), e.chunkEvent(t, user, c))); got != workertest.Dropped {
			t.Errorf("outcome %s, want dropped", got)
		}
		assertUntouched(t, e, user, 1, before)
		if e.HasKey(t, user) {
			t.Error("a key was created for a tombstoned user")
		}
	})
}

func TestHandleFailures(t *testing.T) {
	t.Run("STT error is retried, then succeeds", func(t *testing.T) {
		e := newEnv(t)
		user := workertest.UserID(t, "a")
		c := e.seedChunk(t, user, cid, 1, tone(1600), "audio/wav")
		ev := e.chunkEvent(t, user, c)
		before := e.chunkData(t, user, cid, 1)
		e.stt.set("", errors.New("recogniser crashed"))
		if got := workertest.Classify(e.w.Handle(t.Context(), ev)); got != workertest.Retryable {
			t.Errorf("outcome %s, want retryable", got)
		}
		if !bytes.Equal(e.chunkData(t, user, cid, 1), before) || len(e.segments(t, user)) != 0 || len(e.bus.All()) != 0 {
			t.Error("a failed transcription wrote or published")
		}
		e.stt.set(spokenText, nil)
		if err := e.w.Handle(t.Context(), ev); err != nil {
			t.Fatalf("redelivery: %v", err)
		}
		if pubs := e.bus.All(); len(pubs) != 1 {
			t.Errorf("%d events", len(pubs))
		}
	})

	t.Run("publish failure is retried without duplicates", func(t *testing.T) {
		e := newEnv(t)
		user := workertest.UserID(t, "a")
		c := e.seedChunk(t, user, cid, 1, tone(1600), "audio/wav")
		ev := e.chunkEvent(t, user, c)
		e.bus.SetFail(errors.New("bus down"))
		if got := workertest.Classify(e.w.Handle(t.Context(), ev)); got != workertest.Retryable {
			t.Errorf("outcome %s, want retryable", got)
		}
		// Durable before publishing: the segment and the status are there.
		if st := e.chunk(t, user, cid, 1).Status; st != records.StatusTranscribed {
			t.Errorf("status %q after a failed publish", st)
		}
		e.bus.SetFail(nil)
		if err := e.w.Handle(t.Context(), ev); err != nil {
			t.Fatalf("redelivery: %v", err)
		}
		if n := e.stt.count(); n != 1 {
			t.Errorf("STT calls %d: the redelivery transcribed again", n)
		}
		if n := len(e.segments(t, user)); n != 1 {
			t.Errorf("%d segments", n)
		}
		pubs := e.bus.All()
		if len(pubs) != 1 {
			t.Fatalf("%d events, want 1", len(pubs))
		}
		checkTranscriptEvent(t, e, pubs[0], user, c, spokenText)
	})

	t.Run("audio blob deleted", func(t *testing.T) {
		e := newEnv(t)
		user := workertest.UserID(t, "a")
		c := e.seedChunk(t, user, cid, 1, tone(1600), "audio/wav")
		if err := e.blobs.Delete(t.Context(), c.BlobKey); err != nil {
			t.Fatal(err)
		}
		before := e.chunkData(t, user, cid, 1)
		if got := workertest.Classify(e.w.Handle(t.Context(), e.chunkEvent(t, user, c))); got != workertest.Dropped {
			t.Errorf("outcome %s, want dropped", got)
		}
		assertUntouched(t, e, user, 1, before)
	})

	t.Run("chunk record deleted", func(t *testing.T) {
		e := newEnv(t)
		user := workertest.UserID(t, "a")
		c := e.seedChunk(t, user, cid, 1, tone(1600), "audio/wav")
		if err := e.docs.Delete(t.Context(), records.ChunkKey(user, cid, 1)); err != nil {
			t.Fatal(err)
		}
		if got := workertest.Classify(e.w.Handle(t.Context(), e.chunkEvent(t, user, c))); got != workertest.Dropped {
			t.Errorf("outcome %s, want dropped", got)
		}
		assertUntouched(t, e, user, 1, nil)
	})

	t.Run("key shredded", func(t *testing.T) {
		e := newEnv(t)
		user := workertest.UserID(t, "a")
		c := e.seedChunk(t, user, cid, 1, tone(1600), "audio/wav")
		if err := e.keys.Shred(t.Context(), user); err != nil {
			t.Fatal(err)
		}
		before := e.chunkData(t, user, cid, 1)
		if got := workertest.Classify(e.w.Handle(t.Context(), e.chunkEvent(t, user, c))); got != workertest.Dropped {
			t.Errorf("outcome %s, want dropped", got)
		}
		assertUntouched(t, e, user, 1, before)
	})

	poison := []struct {
		name   string
		body   []byte // what is sealed in the blob
		digest []byte // what the record's digest is of
	}{
		{"audio undecodable", []byte("RIFF but not really a wave file"), nil},
		{"audio digest mismatch", tone(1600), tone(1601)},
	}
	for _, tc := range poison {
		t.Run(tc.name, func(t *testing.T) {
			e := newEnv(t)
			user := workertest.UserID(t, "a")
			c := e.seedChunk(t, user, cid, 1, tc.body, "audio/wav")
			if tc.digest != nil {
				c.Digest = e.keyedDigest(t, user, tc.digest)
				e.putChunk(t, user, c)
			}
			ev := e.chunkEvent(t, user, c)
			if got := workertest.Classify(e.w.Handle(t.Context(), ev)); got != workertest.Permanent {
				t.Errorf("outcome %s, want permanent", got)
			}
			got := e.chunk(t, user, cid, 1)
			if got.Status != records.StatusFailed || got.FailReason == "" {
				t.Errorf("chunk %q (%q), want failed with a reason", got.Status, got.FailReason)
			}
			if e.stt.count() != 0 || len(e.bus.All()) != 0 || len(e.segments(t, user)) != 0 {
				t.Error("poison audio was transcribed, written or published")
			}
			// Final: a redelivery does nothing.
			if err := e.w.Handle(t.Context(), ev); err != nil {
				t.Errorf("redelivery of a failed chunk: %v", err)
			}
		})
	}
}

// One run through the real recogniser on the shipped sample.
func TestHandlePocketsphinx(t *testing.T) {
	ps, err := pocketsphinx.New(pocketsphinx.Config{TempDir: t.TempDir()})
	if err != nil {
		t.Fatalf("pocketsphinx.New: %v", err)
	}
	if err := ps.Check(); err != nil {
		t.Fatalf("pocketsphinx not installed: %v", err)
	}
	body, err := os.ReadFile(filepath.Join("..", "..", "testdata", "speech-hello.wav"))
	if err != nil {
		t.Fatal(err)
	}
	e := newEnv(t)
	w := &transcribe.Worker{Docs: e.docs, Blobs: e.blobs, Keys: e.keys, STT: ps, Bus: e.bus, Events: e.reg,
		Now: func() time.Time { return e.now }}
	user := workertest.UserID(t, "a")
	c := e.seedChunk(t, user, cid, 0, body, "audio/wav")
	if err := w.Handle(t.Context(), e.chunkEvent(t, user, c)); err != nil {
		t.Fatalf("Handle: %v", err)
	}
	segs := e.segments(t, user)
	if len(segs) != 1 {
		t.Fatalf("%d segments", len(segs))
	}
	seg, err := records.SegmentFrom(segs[0])
	if err != nil {
		t.Fatal(err)
	}
	text, err := e.keys.Open(t.Context(), user, seg.SealedText, keys.AD(user, records.Segments, records.ChunkID(cid, 0), "text"))
	if err != nil {
		t.Fatal(err)
	}
	for _, word := range []string{"hello", "world", "memory"} {
		if !strings.Contains(string(text), word) {
			t.Errorf("transcript %q lacks %q", text, word)
		}
	}
	if seg.DurationMS < 3200 || seg.DurationMS > 3300 {
		t.Errorf("duration %d ms, want ~3276", seg.DurationMS)
	}
	if st := e.chunk(t, user, cid, 0).Status; st != records.StatusTranscribed {
		t.Errorf("status %q", st)
	}
	pubs := e.bus.All()
	if len(pubs) != 1 || pubs[0].Event.ID() != wantTranscriptID(user, cid, 0, c.Digest) {
		t.Errorf("published %d events", len(pubs))
	}
}
