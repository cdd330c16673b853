package export_test

import (
	"archive/zip"
	"bufio"
	"bytes"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/cloudevents/sdk-go/v2/event"

	"github.com/lethe-dev/lethe/app/audit"
	"github.com/lethe-dev/lethe/app/ingest"
	"github.com/lethe-dev/lethe/app/records"
	"github.com/lethe-dev/lethe/events"
	"github.com/lethe-dev/lethe/infra/blobs"
	"github.com/lethe-dev/lethe/infra/blobs/dirblobs"
	"github.com/lethe-dev/lethe/infra/docs"
	"github.com/lethe-dev/lethe/infra/keys"
	"github.com/lethe-dev/lethe/workers/export"
	"github.com/lethe-dev/lethe/workers/internal/workertest"
)

type env struct {
	*workertest.Stores
	blobs blobs.Bucket
	bus   *workertest.RecordingBus
	w     *export.Worker
	now   time.Time
}

func newEnv(t *testing.T) *env {
	t.Helper()
	s := workertest.Open(t)
	b, err := dirblobs.Open(filepath.Join(s.Dir, "blobs"))
	if err != nil {
		t.Fatalf("dirblobs.Open: %v", err)
	}
	e := &env{Stores: s, blobs: b, bus: &workertest.RecordingBus{}, now: time.Date(2026, 11, 30, 12, 0, 0, 0, time.UTC)}
	e.w = &export.Worker{
		Docs: s.Docs, Blobs: b, Keys: s.Keys, Events: s.Events,
		Defaults: records.Retention{ExportDays: 7}, Now: func() time.Time { return e.now },
	}
	return e
}

func readTestdata(t *testing.T, name string) []byte {
	t.Helper()
	b, err := os.ReadFile(filepath.Join("..", "..", "testdata", name))
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// upload accepts audio through the same intake as the edge.
func (e *env) upload(t *testing.T, user, cid string, seq int, contentType string, audio []byte) records.Chunk {
	t.Helper()
	in := &ingest.Intake{Docs: e.Docs, Blobs: e.blobs, Keys: e.Keys, Bus: e.bus, Events: e.Events, Now: func() time.Time { return e.now }}
	res, err := in.Accept(t.Context(), ingest.Chunk{User: user, ConversationID: cid, Seq: seq, ContentType: contentType, Audio: audio, Origin: ingest.OriginApp})
	if err != nil {
		t.Fatalf("ingest.Accept: %v", err)
	}
	return res.Chunk
}

// segment writes a transcript as the transcribe worker does.
func (e *env) segment(t *testing.T, user, cid string, seq int, text string) {
	t.Helper()
	id := records.ChunkID(cid, seq)
	s := records.Segment{ConversationID: cid, Seq: seq, Model: "test", DurationMS: 1000, CreatedAt: e.now,
		SealedText: e.Seal(t, user, []byte(text), keys.AD(user, records.Segments, id, "text"))}
	d, err := s.Doc(user)
	if err != nil {
		t.Fatal(err)
	}
	if err := e.Docs.Put(t.Context(), d); err != nil {
		t.Fatal(err)
	}
}

func (e *env) note(t *testing.T, user string, ct []byte) records.Note {
	t.Helper()
	n := records.Note{ID: records.NewNoteID(), CreatedAt: e.now}
	n.Sealed = e.Seal(t, user, ct, records.NoteAD(user, n.ID))
	d, err := n.Doc(user)
	if err != nil {
		t.Fatal(err)
	}
	if err := e.Docs.Create(t.Context(), d); err != nil {
		t.Fatal(err)
	}
	return n
}

// request writes a pending export and returns its event.
func (e *env) request(t *testing.T, user string) (records.Export, event.Event) {
	t.Helper()
	x, created, err := records.RequestExport(t.Context(), e.Docs, user, audit.UserActor(user), e.now)
	if err != nil || !created {
		t.Fatalf("records.RequestExport: created=%v err=%v", created, err)
	}
	ev, err := records.ExportRequestedEvent(e.Events, user, x)
	if err != nil {
		t.Fatal(err)
	}
	return x, ev
}

func (e *env) record(t *testing.T, user, id string) records.Export {
	t.Helper()
	d, err := e.Docs.Get(t.Context(), records.ExportKey(user, id))
	if err != nil {
		t.Fatalf("docs.Get export: %v", err)
	}
	x, err := records.ExportFrom(d)
	if err != nil {
		t.Fatal(err)
	}
	return x
}

// open reads the sealed archive back, as the download does.
func (e *env) open(t *testing.T, user string, x records.Export) *zip.Reader {
	t.Helper()
	rc, _, err := e.blobs.Read(t.Context(), x.BlobKey)
	if err != nil {
		t.Fatalf("blobs.Read: %v", err)
	}
	defer rc.Close()
	sealed, _ := io.ReadAll(rc)
	if bytes.HasPrefix(sealed, []byte("PK")) {
		t.Fatal("the archive is stored as a plain ZIP")
	}
	plain, err := e.Keys.Open(t.Context(), user, sealed, records.ExportAD(user, x.BlobKey))
	if err != nil {
		t.Fatalf("keys.Open archive: %v", err)
	}
	if sum := sha256.Sum256(plain); hex.EncodeToString(sum[:]) != x.ArchiveSHA256 || int64(len(plain)) != x.ArchiveSize {
		t.Fatal("archive digest or size differs from its record")
	}
	zr, err := zip.NewReader(bytes.NewReader(plain), int64(len(plain)))
	if err != nil {
		t.Fatalf("zip.NewReader: %v", err)
	}
	return zr
}

// files reads every file of the archive and checks the manifest against
// them: every listed file present with its size and SHA-256, nothing
// unlisted but the manifest.
func files(t *testing.T, zr *zip.Reader) (map[string][]byte, export.Manifest) {
	t.Helper()
	out := map[string][]byte{}
	for _, f := range zr.File {
		rc, err := f.Open()
		if err != nil {
			t.Fatalf("open %s: %v", f.Name, err)
		}
		b, err := io.ReadAll(rc)
		rc.Close()
		if err != nil {
			t.Fatalf("read %s: %v", f.Name, err)
		}
		if _, dup := out[f.Name]; dup {
			t.Fatalf("%s twice in the archive", f.Name)
		}
		out[f.Name] = b
	}
	var m export.Manifest
	if err := json.Unmarshal(out[export.FileManifest], &m); err != nil {
		t.Fatalf("manifest.json: %v", err)
	}
	listed := map[string]bool{}
	for _, mf := range m.Files {
		b, ok := out[mf.Path]
		if !ok {
			t.Errorf("manifest lists %s, absent from the archive", mf.Path)
			continue
		}
		sum := sha256.Sum256(b)
		if hex.EncodeToString(sum[:]) != mf.SHA256 || int64(len(b)) != mf.Size {
			t.Errorf("%s: size/sha256 differ from the manifest", mf.Path)
		}
		listed[mf.Path] = true
	}
	for name := range out {
		if name != export.FileManifest && !listed[name] {
			t.Errorf("%s is in the archive but not in the manifest", name)
		}
	}
	return out, m
}

func lines[T any](t *testing.T, b []byte) []T {
	t.Helper()
	var out []T
	sc := bufio.NewScanner(bytes.NewReader(b))
	sc.Buffer(nil, 1<<20)
	for sc.Scan() {
		var v T
		if err := json.Unmarshal(sc.Bytes(), &v); err != nil {
			t.Fatalf("ndjson line: %v", err)
		}
		out = append(out, v)
	}
	return out
}

func TestBuildArchive(t *testing.T) {
	e := newEnv(t)
	ctx := t.Context()
	alice, bob := workertest.UserID(t, "alice"), workertest.UserID(t, "bob")
	wav := readTestdata(t, "speech-hello.wav")
	opus := readTestdata(t, "speech-hello.opus")
	l16 := readTestdata(t, "speech-hello-16000.l16")
	e.upload(t, alice, "walk", 0, "audio/wav", wav)
	e.upload(t, alice, "walk", 1, "audio/ogg; codecs=opus", opus)
	e.upload(t, alice, "call", 0, "audio/L16;rate=16000", l16)
	e.segment(t, alice, "walk", 0, "hello from the walk")
	e.segment(t, alice, "call", 0, "a call about the dentist")
	clientCT := []byte{0, 1, 2, 250, 251, 252, 'n', 'o', 't', 'e'}
	n := e.note(t, alice, clientCT)
	if _, err := (&audit.Log{Docs: e.Docs}).Append(ctx, audit.Entry{Actor: audit.UserActor(alice), Action: audit.ActionNoteDeleted, Subject: alice, Ref: "notes/x"}); err != nil {
		t.Fatal(err)
	}
	// Bob's data must not leak into Alice's archive.
	bobWav := readTestdata(t, "speech-dentist.wav")
	e.upload(t, bob, "bobsecret", 0, "audio/wav", bobWav)
	e.segment(t, bob, "bobsecret", 0, "bob private words")
	e.note(t, bob, []byte("bob-note-ciphertext"))

	x, ev := e.request(t, alice)
	if err := e.w.Handle(ctx, ev); err != nil {
		t.Fatalf("Handle: %v", err)
	}
	x = e.record(t, alice, x.ID)
	if x.State != records.ExportDone || x.BlobKey != records.ExportBlobKey(alice, x.ID) {
		t.Fatalf("record = %+v, want done at %s", x, records.ExportBlobKey(alice, x.ID))
	}
	if want := e.now.Add(7 * 24 * time.Hour); !x.ExpiresAt.Equal(want) {
		t.Errorf("archive expires %v, want %v (7 export days)", x.ExpiresAt, want)
	}
	exp, ok, err := readExpiry(t, e, alice, x.ID)
	if err != nil || !ok || !exp.At.Equal(x.ExpiresAt) {
		t.Errorf("expiry index: %+v ok=%v err=%v, want the archive's expiry", exp, ok, err)
	}

	got, m := files(t, e.open(t, alice, x))
	for path, want := range map[string][]byte{
		"audio/walk/0000000.wav": wav, "audio/walk/0000001.ogg": opus, "audio/call/0000000.pcm": l16,
	} {
		if !bytes.Equal(got[path], want) {
			t.Errorf("%s is not byte-identical to the upload", path)
		}
	}
	for _, name := range []string{export.FileConversations, export.FileChunks, export.FileSegments, export.FileNotes, export.FileAudit, export.FileRetention, export.FilePhones} {
		if _, ok := got[name]; !ok {
			t.Errorf("%s missing", name)
		}
	}
	segs := lines[map[string]any](t, got[export.FileSegments])
	texts := map[string]bool{}
	for _, s := range segs {
		texts[s["text"].(string)] = true
	}
	if len(segs) != 2 || !texts["hello from the walk"] || !texts["a call about the dentist"] {
		t.Errorf("segments = %v, want both decrypted texts", segs)
	}
	notes := lines[map[string]any](t, got[export.FileNotes])
	if len(notes) != 1 || notes[0]["id"] != n.ID || notes[0]["ciphertext"] != base64.StdEncoding.EncodeToString(clientCT) {
		t.Errorf("notes = %v, want the client's ciphertext as sent", notes)
	}
	chunks := lines[map[string]any](t, got[export.FileChunks])
	if len(chunks) != 3 {
		t.Errorf("chunks = %d lines, want 3", len(chunks))
	}
	entries := lines[audit.Entry](t, got[export.FileAudit])
	if len(entries) == 0 {
		t.Error("audit.ndjson has none of the user's entries")
	}
	for _, en := range entries {
		if en.Subject != alice {
			t.Errorf("audit entry about another subject: %+v", en)
		}
	}
	if m.Counts["audio_files"] != 3 || m.Counts["segments"] != 2 || m.Counts["notes"] != 1 || m.Counts["conversations"] != 2 {
		t.Errorf("counts = %v", m.Counts)
	}
	for name, b := range got {
		for _, secret := range [][]byte{[]byte("bobsecret"), []byte("bob private words"), []byte(bob), []byte("bob-note")} {
			if bytes.Contains(b, secret) {
				t.Errorf("%s carries Bob's data", name)
			}
		}
		if mid := len(bobWav) / 2; bytes.Contains(b, bobWav[mid:mid+256]) {
			t.Errorf("%s carries Bob's audio", name)
		}
	}

	// The ready entry is in the trail, with counts.
	all, _, err := (&audit.Log{Docs: e.Docs}).List(ctx, audit.Filter{Subject: alice})
	if err != nil {
		t.Fatal(err)
	}
	ready := 0
	for _, en := range all {
		if en.Action == audit.ActionExportReady && en.Ref == "exports/"+x.ID && en.Counts["audio_files"] == 3 {
			ready++
		}
	}
	if ready != 1 {
		t.Errorf("%d export.ready entries, want 1", ready)
	}
}

func readExpiry(t *testing.T, e *env, user, id string) (records.Expiry, bool, error) {
	d, err := e.Docs.Get(t.Context(), records.ExpiryKey(user, records.ClassExport, id))
	if errors.Is(err, docs.ErrNotFound) {
		return records.Expiry{}, false, nil
	}
	if err != nil {
		return records.Expiry{}, false, err
	}
	x, err := records.ExpiryFrom(d)
	return x, err == nil, err
}

func TestPagingAcrossTiesAndPages(t *testing.T) {
	e := newEnv(t)
	ctx := t.Context()
	user := workertest.UserID(t, "u")
	// Pages of 7: 23 conversations created in the same millisecond (ties
	// on the paging field across pages) and one with 23 chunks and
	// segments, 16 notes and the audit trail.
	e.w.Page = 7
	const many = 23
	for i := range many {
		c := records.Conversation{ID: fmt.Sprintf("c%04d", i), CreatedAt: e.now, UpdatedAt: e.now}
		d, _ := c.Doc(user)
		if err := e.Docs.Put(ctx, d); err != nil {
			t.Fatal(err)
		}
	}
	big := records.Conversation{ID: "big", CreatedAt: e.now.Add(time.Second), UpdatedAt: e.now}
	d, _ := big.Doc(user)
	if err := e.Docs.Put(ctx, d); err != nil {
		t.Fatal(err)
	}
	for seq := range many {
		ch := records.Chunk{ConversationID: "big", Seq: seq, Status: records.StatusIndexed, ContentType: "audio/wav", UpdatedAt: e.now}
		cd, _ := ch.Doc(user)
		if err := e.Docs.Put(ctx, cd); err != nil {
			t.Fatal(err)
		}
		e.segment(t, user, "big", seq, fmt.Sprintf("words %d", seq))
	}
	for range 16 {
		e.note(t, user, []byte("ct"))
	}
	x, ev := e.request(t, user)
	if err := e.w.Handle(ctx, ev); err != nil {
		t.Fatalf("Handle: %v", err)
	}
	got, m := files(t, e.open(t, user, e.record(t, user, x.ID)))
	want := map[string]int{"conversations": many + 1, "chunks": many, "segments": many, "notes": 16}
	for k, v := range want {
		if m.Counts[k] != v {
			t.Errorf("counts[%s] = %d, want %d", k, m.Counts[k], v)
		}
	}
	seen := map[string]bool{}
	for _, c := range lines[records.Conversation](t, got[export.FileConversations]) {
		if seen[c.ID] {
			t.Errorf("conversation %s exported twice", c.ID)
		}
		seen[c.ID] = true
	}
	if len(seen) != many+1 {
		t.Errorf("%d distinct conversations, want %d", len(seen), many+1)
	}
}

func TestHandleOutcomes(t *testing.T) {
	cases := []struct {
		name string
		// setup prepares the user's export and returns the event to handle.
		setup func(t *testing.T, e *env, user string) event.Event
		want  workertest.Outcome
		state string // the record's state after, "" for no record
	}{
		{"tombstoned user is dropped", func(t *testing.T, e *env, user string) event.Event {
			_, ev := e.request(t, user)
			e.Tombstone(t, user)
			return ev
		}, workertest.Dropped, records.ExportPending},
		{"no record is dropped", func(t *testing.T, e *env, user string) event.Event {
			x, ev := e.request(t, user)
			if err := e.Docs.Delete(t.Context(), records.ExportKey(user, x.ID)); err != nil {
				t.Fatal(err)
			}
			return ev
		}, workertest.Dropped, ""},
		{"unknown field is poison", func(t *testing.T, e *env, user string) event.Event {
			_, ev := e.request(t, user)
			return workertest.WithData(t, ev, func(m map[string]any) { m["extra"] = 1 })
		}, workertest.Permanent, records.ExportPending},
		{"non-export request id is poison", func(t *testing.T, e *env, user string) event.Event {
			_, ev := e.request(t, user)
			return workertest.WithData(t, ev, func(m map[string]any) { m["request_id"] = "not-an-export-id" })
		}, workertest.Permanent, records.ExportPending},
		{"missing user is poison", func(t *testing.T, e *env, user string) event.Event {
			_, ev := e.request(t, user)
			return workertest.WithData(t, ev, func(m map[string]any) { delete(m, "user") })
		}, workertest.Permanent, records.ExportPending},
		{"other event type is poison", func(t *testing.T, e *env, user string) event.Event {
			e.request(t, user)
			ev, err := e.Events.New(events.TypeUserErasureRequested, events.Subject(user),
				events.UserErasureRequested{User: user, RequestID: "r1", RequestedAt: e.now})
			if err != nil {
				t.Fatal(err)
			}
			return ev
		}, workertest.Permanent, records.ExportPending},
		{"build in its lease is retried", func(t *testing.T, e *env, user string) event.Event {
			x, ev := e.request(t, user)
			setState(t, e, user, x.ID, records.ExportRunning, e.now.Add(time.Minute))
			return ev
		}, workertest.Retryable, records.ExportRunning},
		{"build past its lease is rebuilt", func(t *testing.T, e *env, user string) event.Event {
			x, ev := e.request(t, user)
			setState(t, e, user, x.ID, records.ExportRunning, e.now.Add(-time.Second))
			return ev
		}, workertest.Acked, records.ExportDone},
		{"too large fails the export, finally", func(t *testing.T, e *env, user string) event.Event {
			e.upload(t, user, "c", 0, "audio/wav", readTestdata(t, "speech-hello.wav"))
			e.w.MaxBytes = 4 << 10
			_, ev := e.request(t, user)
			return ev
		}, workertest.Acked, records.ExportFailed},
		{"unreadable transcript is poison and fails the export", func(t *testing.T, e *env, user string) event.Event {
			seg := records.Segment{ConversationID: "c", Seq: 0, SealedText: []byte("not sealed at all"), CreatedAt: e.now}
			conv := records.Conversation{ID: "c", CreatedAt: e.now, UpdatedAt: e.now}
			for _, doc := range []func(string) (docs.Doc, error){seg.Doc, conv.Doc} {
				d, _ := doc(user)
				if err := e.Docs.Put(t.Context(), d); err != nil {
					t.Fatal(err)
				}
			}
			e.Seal(t, user, []byte("x"), []byte("ad")) // the user has a key
			_, ev := e.request(t, user)
			return ev
		}, workertest.Permanent, records.ExportFailed},
		{"failed export is left alone", func(t *testing.T, e *env, user string) event.Event {
			x, ev := e.request(t, user)
			setState(t, e, user, x.ID, records.ExportFailed, time.Time{})
			return ev
		}, workertest.Acked, records.ExportFailed},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			e := newEnv(t)
			user := workertest.UserID(t, "u")
			ev := tc.setup(t, e, user)
			if got := workertest.Classify(e.w.Handle(t.Context(), ev)); got != tc.want {
				t.Fatalf("outcome = %s, want %s", got, tc.want)
			}
			found, err := e.Docs.Query(t.Context(), docs.Query{User: user, Collection: records.Exports})
			if err != nil {
				t.Fatal(err)
			}
			state := ""
			if len(found) == 1 {
				x, _ := records.ExportFrom(found[0])
				state = x.State
				if state == records.ExportFailed && tc.name == "too large fails the export, finally" && x.Error != "too_large" {
					t.Errorf("error = %q, want too_large", x.Error)
				}
			}
			if state != tc.state {
				t.Errorf("state = %q, want %q", state, tc.state)
			}
			list, _ := e.blobs.List(t.Context(), "users/"+user+"/exports/")
			if (state == records.ExportDone) != (len(list) == 1) {
				t.Errorf("%d archives stored for state %q", len(list), state)
			}
		})
	}
}

func setState(t *testing.T, e *env, user, id, state string, lease time.Time) {
	t.Helper()
	x := e.record(t, user, id)
	x.State, x.LeaseUntil, x.Attempt = state, lease, "someone-else"
	d, _ := x.Doc(user)
	if err := e.Docs.Put(t.Context(), d); err != nil {
		t.Fatal(err)
	}
}

func TestRedeliveryOfDoneExportDoesNothing(t *testing.T) {
	e := newEnv(t)
	ctx := t.Context()
	user := workertest.UserID(t, "u")
	e.upload(t, user, "c", 0, "audio/wav", readTestdata(t, "speech-hello.wav"))
	x, ev := e.request(t, user)
	if err := e.w.Handle(ctx, ev); err != nil {
		t.Fatal(err)
	}
	first := e.record(t, user, x.ID)
	before, err := e.blobs.Attrs(ctx, first.BlobKey)
	if err != nil {
		t.Fatal(err)
	}
	e.now = e.now.Add(time.Hour)
	if err := e.w.Handle(ctx, ev); err != nil {
		t.Fatalf("redelivery: %v", err)
	}
	after, _ := e.blobs.Attrs(ctx, first.BlobKey)
	second := e.record(t, user, x.ID)
	if !after.Created.Equal(before.Created) || second.UpdatedAt != first.UpdatedAt || second.ArchiveSHA256 != first.ArchiveSHA256 {
		t.Error("a redelivery of a done export rebuilt it")
	}
	entries, _, _ := (&audit.Log{Docs: e.Docs}).List(ctx, audit.Filter{Subject: user})
	ready := 0
	for _, en := range entries {
		if en.Action == audit.ActionExportReady {
			ready++
		}
	}
	if ready != 1 {
		t.Errorf("%d export.ready entries after a redelivery, want 1", ready)
	}
	// A new request while none is running is a new export.
	y, created, err := records.RequestExport(ctx, e.Docs, user, audit.UserActor(user), e.now)
	if err != nil || !created || y.ID == x.ID {
		t.Errorf("RequestExport after done: id %s created %v err %v, want a new export", y.ID, created, err)
	}
	// And asking again while that one is pending answers it.
	z, created, err := records.RequestExport(ctx, e.Docs, user, audit.UserActor(user), e.now.Add(time.Second))
	if err != nil || created || z.ID != y.ID {
		t.Errorf("RequestExport while pending: id %s created %v, want the pending %s", z.ID, created, y.ID)
	}
}

func TestAudioDeletedByRetentionIsLeftOut(t *testing.T) {
	e := newEnv(t)
	ctx := t.Context()
	user := workertest.UserID(t, "u")
	kept := e.upload(t, user, "c", 0, "audio/wav", readTestdata(t, "speech-hello.wav"))
	gone := e.upload(t, user, "c", 1, "audio/wav", readTestdata(t, "speech-dentist.wav"))
	if err := e.blobs.Delete(ctx, gone.BlobKey); err != nil {
		t.Fatal(err)
	}
	x, ev := e.request(t, user)
	if err := e.w.Handle(ctx, ev); err != nil {
		t.Fatal(err)
	}
	got, m := files(t, e.open(t, user, e.record(t, user, x.ID)))
	if _, ok := got["audio/c/0000001.wav"]; ok || m.Counts["audio_files"] != 1 {
		t.Errorf("deleted audio exported: counts %v", m.Counts)
	}
	for _, line := range lines[map[string]any](t, got[export.FileChunks]) {
		audio, _ := line["audio"].(string)
		switch line["seq"] {
		case float64(kept.Seq):
			if audio != "audio/c/0000000.wav" {
				t.Errorf("kept chunk: audio %q", audio)
			}
		case float64(gone.Seq):
			if audio != "" {
				t.Errorf("deleted chunk still names audio %q", audio)
			}
		}
	}
}
