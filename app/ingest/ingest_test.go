package ingest_test

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/lethe-dev/lethe/app/ingest"
	"github.com/lethe-dev/lethe/app/records"
	"github.com/lethe-dev/lethe/events"
	"github.com/lethe-dev/lethe/infra/audio"
	"github.com/lethe-dev/lethe/infra/blobs"
	"github.com/lethe-dev/lethe/infra/blobs/dirblobs"
	"github.com/lethe-dev/lethe/infra/docs"
	"github.com/lethe-dev/lethe/infra/docs/sqlitedocs"
	"github.com/lethe-dev/lethe/infra/keys"
	"github.com/lethe-dev/lethe/infra/keys/filekek"
	"github.com/lethe-dev/lethe/internal/testbus"
)

// published is one event handed to the bus.
// fixture is an Intake over real embedded stores in the test's directory.
type fixture struct {
	in    *ingest.Intake
	docs  docs.Store
	blobs blobs.Bucket
	keys  *keys.Keyring
	bus   *testbus.Recorder
	now   time.Time
}

func newFixture(t *testing.T) *fixture {
	t.Helper()
	dir := t.TempDir()
	store, err := sqlitedocs.Open(t.Context(), filepath.Join(dir, "docs.db"))
	if err != nil {
		t.Fatalf("sqlitedocs.Open: %v", err)
	}
	t.Cleanup(func() { store.Close() })
	kek, err := filekek.Open(filepath.Join(dir, "kek", "kek.bin"))
	if err != nil {
		t.Fatalf("filekek.Open: %v", err)
	}
	bucket, err := dirblobs.Open(filepath.Join(dir, "blobs"))
	if err != nil {
		t.Fatalf("dirblobs.Open: %v", err)
	}
	t.Cleanup(func() { bucket.Close() })
	reg, err := events.NewRegistry()
	if err != nil {
		t.Fatalf("events.NewRegistry: %v", err)
	}
	f := &fixture{
		docs: store, blobs: bucket, bus: &testbus.Recorder{},
		keys: keys.NewKeyring(kek, keys.NewDocsKeysetStore(store), keys.Options{}),
		now:  time.Date(2026, 3, 4, 5, 6, 7, 0, time.UTC),
	}
	f.in = &ingest.Intake{
		Docs: store, Blobs: bucket, Keys: f.keys, Bus: f.bus, Events: reg,
		Now: func() time.Time { return f.now },
	}
	return f
}

// userID is a user (keyed-hash shape) unique to the test.
func userID(t *testing.T, name string) string { return events.DeriveID("user", t.Name(), name) }

func speech(t *testing.T) []byte {
	t.Helper()
	b, err := os.ReadFile(filepath.Join("..", "..", "testdata", "speech-hello.wav"))
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// digest is the user's keyed digest of b, as the intake computes it.
func (f *fixture) digest(t *testing.T, user string, b []byte) string {
	t.Helper()
	d, err := f.keys.Digest(t.Context(), user, b)
	if err != nil {
		t.Fatalf("keys.Digest: %v", err)
	}
	return d
}

func (f *fixture) chunk(t *testing.T, user, cid string, seq int) (records.Chunk, bool) {
	t.Helper()
	d, err := f.docs.Get(t.Context(), records.ChunkKey(user, cid, seq))
	if errors.Is(err, docs.ErrNotFound) {
		return records.Chunk{}, false
	}
	if err != nil {
		t.Fatalf("docs.Get chunk: %v", err)
	}
	c, err := records.ChunkFrom(d)
	if err != nil {
		t.Fatal(err)
	}
	return c, true
}

// assertNothingStored: no record, no blob, no event, no conversation.
func (f *fixture) assertNothingStored(t *testing.T) {
	t.Helper()
	for _, coll := range []string{records.Chunks, records.Conversations} {
		found, err := f.docs.Query(t.Context(), docs.Query{AllUsers: true, Collection: coll})
		if err != nil {
			t.Fatal(err)
		}
		if len(found) != 0 {
			t.Errorf("%d %s records stored", len(found), coll)
		}
	}
	objs, err := f.blobs.List(t.Context(), "")
	if err != nil {
		t.Fatal(err)
	}
	if len(objs) != 0 {
		t.Errorf("%d blobs stored", len(objs))
	}
	if n := len(f.bus.All()); n != 0 {
		t.Errorf("%d events published", n)
	}
}

func TestAcceptNewChunk(t *testing.T) {
	f := newFixture(t)
	user := userID(t, "alice")
	wav := speech(t)
	res, err := f.in.Accept(t.Context(), ingest.Chunk{
		User: user, ConversationID: "c1", Seq: 4, ContentType: "audio/wav", Audio: wav, Origin: ingest.OriginUploadURL,
	})
	if err != nil {
		t.Fatal(err)
	}
	if res.Duplicate {
		t.Fatal("a new chunk is reported as a duplicate")
	}
	sum := f.digest(t, user, wav)
	// No plain hash of the audio names the blob or the event: it would
	// be a fingerprint that outlives the user's key.
	if plain := sha256.Sum256(wav); strings.Contains(res.Chunk.BlobKey+res.Chunk.EventID+res.Chunk.Digest, hex.EncodeToString(plain[:])[:16]) {
		t.Fatalf("the plain SHA-256 of the audio is in %+v", res.Chunk)
	}
	c, ok := f.chunk(t, user, "c1", 4)
	if !ok {
		t.Fatal("no chunk record")
	}
	want := records.Chunk{
		ConversationID: "c1", Seq: 4, Status: records.StatusReceived,
		BlobKey: records.AudioKey(user, "c1", 4, sum), ContentType: "audio/wav", SampleRate: 16000,
		Digest: sum, Size: int64(len(wav)), Origin: ingest.OriginUploadURL,
		EventID: records.ChunkEventID(user, "c1", 4, sum), Published: true,
		ReceivedAt: f.now, UpdatedAt: f.now,
	}
	if c != want {
		t.Fatalf("record\n%+v\nwant\n%+v", c, want)
	}
	if res.Chunk != want {
		t.Errorf("result chunk %+v, want the record as created", res.Chunk)
	}

	// The blob is sealed under the user's key, bound to its key.
	rc, attrs, err := f.blobs.Read(t.Context(), c.BlobKey)
	if err != nil {
		t.Fatalf("blobs.Read: %v", err)
	}
	sealed, err := io.ReadAll(rc)
	rc.Close()
	if err != nil {
		t.Fatal(err)
	}
	if bytes.Contains(sealed, wav[44:1044]) {
		t.Fatal("the blob holds plaintext PCM")
	}
	if attrs.Metadata["sealed"] != "tink-aead" {
		t.Errorf("blob metadata %v", attrs.Metadata)
	}
	plain, err := f.keys.Open(t.Context(), user, sealed, keys.AD(user, "blobs", c.BlobKey, "audio"))
	if err != nil || !bytes.Equal(plain, wav) {
		t.Fatalf("sealed blob does not open to the audio: %v", err)
	}
	if _, err := f.keys.Open(t.Context(), userID(t, "bob"), sealed, keys.AD(userID(t, "bob"), "blobs", c.BlobKey, "audio")); err == nil {
		t.Fatal("another user's key opens the blob")
	}

	evs := f.bus.All()
	if len(evs) != 1 {
		t.Fatalf("%d events, want 1", len(evs))
	}
	e := evs[0].Event
	if evs[0].Topic != events.TopicAudio || e.Type() != events.TypeChunkReceived || e.ID() != c.EventID ||
		e.Subject() != events.Subject(user, "conversations", "c1", "chunks", "4") {
		t.Fatalf("event %s on %s", e, evs[0].Topic)
	}
	var data events.ChunkReceived
	if err := json.Unmarshal(e.Data(), &data); err != nil {
		t.Fatal(err)
	}
	if data.User != user || data.BlobKey != c.BlobKey || data.Digest != sum || data.Origin != ingest.OriginUploadURL || data.Size != int64(len(wav)) {
		t.Fatalf("event data %+v", data)
	}

	d, err := f.docs.Get(t.Context(), records.ConversationKey(user, "c1"))
	if err != nil {
		t.Fatalf("no conversation record: %v", err)
	}
	conv, err := records.ConversationFrom(d)
	if err != nil || conv.ID != "c1" || !conv.CreatedAt.Equal(f.now) || !conv.UpdatedAt.Equal(f.now) {
		t.Fatalf("conversation %+v (%v)", conv, err)
	}
}

// TestAcceptIdempotence: the same bytes again are a duplicate with no
// second event; other bytes for the seq are a conflict and change nothing.
func TestAcceptIdempotence(t *testing.T) {
	f := newFixture(t)
	user := userID(t, "alice")
	wav := speech(t)
	first := ingest.Chunk{User: user, ConversationID: "c1", Seq: 0, ContentType: "audio/wav", Audio: wav, Origin: ingest.OriginApp}
	if _, err := f.in.Accept(t.Context(), first); err != nil {
		t.Fatal(err)
	}
	before, _ := f.chunk(t, user, "c1", 0)
	other := audio.EncodeWAV(audio.PCM{SampleRate: 16000, Samples: make([]int16, 1600)})
	other[len(other)-1] = 1

	tests := []struct {
		name    string
		c       ingest.Chunk
		wantErr error
		wantDup bool
	}{
		{"same bytes", first, nil, true},
		{"same bytes, other origin", func() ingest.Chunk { c := first; c.Origin = ingest.OriginUploadURL; return c }(), nil, true},
		{"other bytes", func() ingest.Chunk { c := first; c.Audio = other; return c }(), ingest.ErrConflict, false},
		{"other type and bytes", func() ingest.Chunk {
			c := first
			c.ContentType, c.Audio = "audio/L16;rate=16000", bytes.Repeat([]byte{0, 1}, 800)
			return c
		}(), ingest.ErrConflict, false},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			f.now = f.now.Add(time.Minute)
			res, err := f.in.Accept(t.Context(), tc.c)
			if !errors.Is(err, tc.wantErr) || (err == nil && res.Duplicate != tc.wantDup) {
				t.Fatalf("Accept = %+v, %v; want duplicate=%v, %v", res, err, tc.wantDup, tc.wantErr)
			}
			if err == nil && res.Chunk != before {
				t.Errorf("duplicate returned %+v, want the stored %+v", res.Chunk, before)
			}
			if after, _ := f.chunk(t, user, "c1", 0); after != before {
				t.Errorf("record changed: %+v", after)
			}
			if n := len(f.bus.All()); n != 1 {
				t.Errorf("%d events, want the first only", n)
			}
		})
	}
	objs, err := f.blobs.List(t.Context(), records.AudioPrefix(user))
	if err != nil {
		t.Fatal(err)
	}
	if len(objs) != 1 {
		t.Fatalf("%d blobs, want 1: a conflict must not store its bytes", len(objs))
	}
}

// TestAcceptPublishFailure: with the bus down Accept fails but keeps the
// record (unpublished); the retry publishes the same event id and marks
// the record published.
func TestAcceptPublishFailure(t *testing.T) {
	f := newFixture(t)
	user := userID(t, "alice")
	wav := speech(t)
	c := ingest.Chunk{User: user, ConversationID: "c1", Seq: 9, ContentType: "audio/wav", Audio: wav, Origin: ingest.OriginApp}
	down := errors.New("pubsub unavailable")
	f.bus.SetFail(down)
	_, err := f.in.Accept(t.Context(), c)
	if !errors.Is(err, down) {
		t.Fatalf("Accept with the bus down = %v, want the bus's error", err)
	}
	for _, caller := range []error{ingest.ErrInvalid, ingest.ErrConflict, ingest.ErrMalformedAudio, ingest.ErrTombstoned} {
		if errors.Is(err, caller) {
			t.Fatalf("a bus failure reads as the caller's fault (%v)", caller)
		}
	}
	rec, ok := f.chunk(t, user, "c1", 9)
	if !ok || rec.Published {
		t.Fatalf("record after the failed publish: %+v (present %v), want kept unpublished", rec, ok)
	}
	// Still down: the retry fails the same way and changes nothing.
	if _, err := f.in.Accept(t.Context(), c); !errors.Is(err, down) {
		t.Fatalf("retry while down = %v", err)
	}
	f.bus.SetFail(nil)
	res, err := f.in.Accept(t.Context(), c)
	if err != nil {
		t.Fatal(err)
	}
	if !res.Duplicate {
		t.Error("the retry is not reported as a duplicate of the stored chunk")
	}
	evs := f.bus.All()
	if len(evs) != 1 || evs[0].Event.ID() != rec.EventID || rec.EventID != records.ChunkEventID(user, "c1", 9, f.digest(t, user, wav)) {
		t.Fatalf("events %d (first id %v), want one with the record's id %s", len(evs), evs, rec.EventID)
	}
	if after, _ := f.chunk(t, user, "c1", 9); !after.Published {
		t.Fatal("the record is not marked published")
	}
	// Once published, another retry publishes nothing.
	if res, err := f.in.Accept(t.Context(), c); err != nil || !res.Duplicate {
		t.Fatalf("retry after publish = %+v, %v", res, err)
	}
	if n := len(f.bus.All()); n != 1 {
		t.Fatalf("%d events after a retry of a published chunk", n)
	}
}

// TestAcceptRetryAfterErasure: a chunk stored but never announced stays
// unannounced once its user is erased; the retry says erased.
func TestAcceptRetryAfterErasure(t *testing.T) {
	f := newFixture(t)
	user := userID(t, "alice")
	c := ingest.Chunk{User: user, ConversationID: "c1", Seq: 2, ContentType: "audio/wav", Audio: speech(t), Origin: ingest.OriginApp}
	f.bus.SetFail(errors.New("pubsub unavailable"))
	if _, err := f.in.Accept(t.Context(), c); err == nil {
		t.Fatal("Accept with the bus down succeeded")
	}
	f.bus.SetFail(nil)
	if err := f.docs.Put(t.Context(), docs.Doc{Key: records.TombstoneKey(user), Data: []byte(`{}`)}); err != nil {
		t.Fatal(err)
	}
	if _, err := f.in.Accept(t.Context(), c); !errors.Is(err, ingest.ErrTombstoned) {
		t.Fatalf("retry after erasure = %v, want ErrTombstoned", err)
	}
	if n := len(f.bus.All()); n != 0 {
		t.Fatalf("%d events published for an erased user", n)
	}
}

// TestAcceptRejects: bad input gets its error and stores nothing at all.
func TestAcceptRejects(t *testing.T) {
	wav := speech(t)
	rifx := bytes.Clone(wav)
	copy(rifx, "RIFX")
	headerOnly := audio.EncodeWAV(audio.PCM{SampleRate: 16000})
	tests := []struct {
		name   string
		user   string
		cid    string
		seq    int
		ctype  string
		body   []byte
		want   error
		before func(t *testing.T, f *fixture, user string)
	}{
		{name: "empty body", ctype: "audio/wav", body: nil, want: ingest.ErrEmptyAudio},
		{name: "not audio", ctype: "audio/wav", body: []byte("hello, this is text"), want: ingest.ErrMalformedAudio},
		{name: "truncated wav", ctype: "audio/wav", body: wav[:30], want: ingest.ErrMalformedAudio},
		{name: "wav header lies", ctype: "audio/wav", body: append([]byte("RIFF\xff\xff\xff\x7fWAVEfmt "), make([]byte, 40)...), want: ingest.ErrMalformedAudio},
		// audio.Decode reports a WAV without samples as malformed.
		{name: "wav without samples", ctype: "audio/wav", body: headerOnly, want: ingest.ErrMalformedAudio},
		{name: "wav as ogg", ctype: "audio/ogg;codecs=opus", body: wav, want: ingest.ErrMalformedAudio},
		{name: "L16 without rate", ctype: "audio/L16", body: make([]byte, 320), want: ingest.ErrMalformedAudio},
		{name: "big-endian RIFX", ctype: "audio/wav", body: rifx, want: ingest.ErrUnsupportedAudio},
		{name: "L16 at 1 kHz", ctype: "audio/L16;rate=1000", body: make([]byte, 320), want: ingest.ErrUnsupportedAudio},
		{name: "ogg vorbis", ctype: "audio/ogg;codecs=vorbis", body: wav, want: ingest.ErrUnsupportedAudio},
		// One second past the longest recording, as 8 kHz L16 (38 MB).
		{name: "longer than MaxDuration", ctype: "audio/L16;rate=8000", body: make([]byte, 2*8000*int(ingest.MaxDuration/time.Second+1)), want: ingest.ErrTooLong},
		{name: "mp3", ctype: "audio/mpeg", body: wav, want: ingest.ErrUnsupportedType},
		{name: "no content type", ctype: "", body: wav, want: ingest.ErrUnsupportedType},
		{name: "json", ctype: "application/json", body: []byte(`{}`), want: ingest.ErrUnsupportedType},
		{name: "empty cid", cid: "-", ctype: "audio/wav", body: wav, want: ingest.ErrInvalid},
		{name: "cid with slash", cid: "a/b", ctype: "audio/wav", body: wav, want: ingest.ErrInvalid},
		{name: "cid too long", cid: string(bytes.Repeat([]byte("a"), 65)), ctype: "audio/wav", body: wav, want: ingest.ErrInvalid},
		{name: "negative seq", seq: -1, ctype: "audio/wav", body: wav, want: ingest.ErrInvalid},
		{name: "seq too large", seq: records.MaxSeq + 1, ctype: "audio/wav", body: wav, want: ingest.ErrInvalid},
		{name: "no user", user: "-", ctype: "audio/wav", body: wav, want: ingest.ErrInvalid},
		{
			name: "tombstoned user", ctype: "audio/wav", body: wav, want: ingest.ErrTombstoned,
			before: func(t *testing.T, f *fixture, user string) {
				if err := f.docs.Put(t.Context(), docs.Doc{Key: records.TombstoneKey(user), Data: []byte(`{}`)}); err != nil {
					t.Fatal(err)
				}
			},
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			f := newFixture(t)
			user, cid := userID(t, "alice"), "c1"
			switch tc.user {
			case "-":
				user = ""
			case "":
			default:
				user = tc.user
			}
			switch tc.cid {
			case "-":
				cid = ""
			case "":
			default:
				cid = tc.cid
			}
			if tc.before != nil {
				tc.before(t, f, user)
			}
			_, err := f.in.Accept(t.Context(), ingest.Chunk{User: user, ConversationID: cid, Seq: tc.seq, ContentType: tc.ctype, Audio: tc.body, Origin: ingest.OriginApp})
			if !errors.Is(err, tc.want) {
				t.Fatalf("Accept = %v, want %v", err, tc.want)
			}
			f.assertNothingStored(t)
			if user != "" {
				if _, err := f.docs.Get(t.Context(), keys.KeysetKey(user)); !errors.Is(err, docs.ErrNotFound) {
					t.Fatalf("a key was created for refused input (%v)", err)
				}
			}
		})
	}
}

// TestAcceptConcurrent: simultaneous accepts of one chunk store it once;
// exactly one is new, and every event that gets out has the same id.
func TestAcceptConcurrent(t *testing.T) {
	f := newFixture(t)
	user := userID(t, "alice")
	wav := speech(t)
	c := ingest.Chunk{User: user, ConversationID: "c1", Seq: 1, ContentType: "audio/wav", Audio: wav, Origin: ingest.OriginApp}
	const n = 6
	results := make([]ingest.Result, n)
	errs := make([]error, n)
	var wg sync.WaitGroup
	for i := range n {
		wg.Go(func() { results[i], errs[i] = f.in.Accept(context.Background(), c) })
	}
	wg.Wait()
	fresh := 0
	for i := range n {
		if errs[i] != nil {
			t.Fatalf("accept %d: %v", i, errs[i])
		}
		if !results[i].Duplicate {
			fresh++
		}
	}
	if fresh != 1 {
		t.Fatalf("%d accepts report a new chunk, want 1", fresh)
	}
	rec, _ := f.chunk(t, user, "c1", 1)
	evs := f.bus.All()
	if len(evs) == 0 || !rec.Published {
		t.Fatalf("%d events, published %v", len(evs), rec.Published)
	}
	for _, e := range evs {
		if e.Event.ID() != rec.EventID {
			t.Fatalf("event id %s, want %s", e.Event.ID(), rec.EventID)
		}
	}
	objs, err := f.blobs.List(t.Context(), records.AudioPrefix(user))
	if err != nil || len(objs) != 1 {
		t.Fatalf("%d blobs (%v), want 1", len(objs), err)
	}
}

// failingTransactStore fails the next multi-document write, as a store
// that times out while committing the chunk record and its conversation.
type failingTransactStore struct {
	docs.Driver
	mu   sync.Mutex
	fail int
}

func (s *failingTransactStore) Transact(ctx context.Context, read []docs.Key, fn func(cur []*docs.Doc) ([]docs.Write, error)) error {
	s.mu.Lock()
	fail := s.fail > 0
	s.fail--
	s.mu.Unlock()
	if fail {
		return errors.New("firestore: deadline exceeded")
	}
	return s.Driver.Transact(ctx, read, fn)
}

// TestAcceptRecordIsAtomic: the chunk record, its audio expiry and its
// conversation are one write, so a failed write leaves none of them (a chunk
// is never transcribed under a conversation that answers 404) and the
// retry stores them as new.
func TestAcceptRecordIsAtomic(t *testing.T) {
	f := newFixture(t)
	f.in.Docs = docs.New(&failingTransactStore{Driver: f.docs.Driver(), fail: 1})
	f.in.Retention = records.Retention{AudioDays: 30, TranscriptDays: 30, VectorDays: 30, ExportDays: 7}
	user := userID(t, "alice")
	c := ingest.Chunk{User: user, ConversationID: "c1", Seq: 0, ContentType: "audio/wav", Audio: speech(t), Origin: ingest.OriginApp}
	if _, err := f.in.Accept(t.Context(), c); err == nil {
		t.Fatal("Accept with the record write failing succeeded")
	}
	if _, ok := f.chunk(t, user, "c1", 0); ok {
		t.Fatal("a chunk record after the failed write")
	}
	for _, k := range []docs.Key{records.ConversationKey(user, "c1"), records.ExpiryKey(user, records.ClassAudio, records.ChunkID("c1", 0))} {
		if _, err := f.docs.Get(t.Context(), k); !errors.Is(err, docs.ErrNotFound) {
			t.Fatalf("%s after the failed write: %v, want not found", k.Collection, err)
		}
	}
	if n := len(f.bus.All()); n != 0 {
		t.Fatalf("%d events published for a chunk that was not recorded", n)
	}
	res, err := f.in.Accept(t.Context(), c)
	if err != nil || res.Duplicate {
		t.Fatalf("retry = %+v, %v; want a new chunk", res, err)
	}
	for _, k := range []docs.Key{records.ConversationKey(user, "c1"), records.ExpiryKey(user, records.ClassAudio, records.ChunkID("c1", 0))} {
		if _, err := f.docs.Get(t.Context(), k); err != nil {
			t.Fatalf("%s after the retry: %v", k.Collection, err)
		}
	}
	if n := len(f.bus.All()); n != 1 {
		t.Fatalf("%d events after the retry, want 1", n)
	}
}

// TestAcceptRetryRepairsConversation: a chunk record without its
// conversation and never announced (left by a version that wrote them
// apart) is completed by the retry, so the conversation exists before the
// chunk's event is out.
func TestAcceptRetryRepairsConversation(t *testing.T) {
	f := newFixture(t)
	user := userID(t, "alice")
	wav := speech(t)
	c := ingest.Chunk{User: user, ConversationID: "c1", Seq: 0, ContentType: "audio/wav", Audio: wav, Origin: ingest.OriginApp}
	sum := f.digest(t, user, wav)
	half := records.Chunk{
		ConversationID: "c1", Seq: 0, Status: records.StatusReceived,
		BlobKey: records.AudioKey(user, "c1", 0, sum), ContentType: "audio/wav", SampleRate: 16000,
		Digest: sum, Size: int64(len(wav)), Origin: ingest.OriginApp,
		EventID: records.ChunkEventID(user, "c1", 0, sum), ReceivedAt: f.now, UpdatedAt: f.now,
	}
	d, err := half.Doc(user)
	if err != nil {
		t.Fatal(err)
	}
	if err := f.docs.Create(t.Context(), d); err != nil {
		t.Fatal(err)
	}
	res, err := f.in.Accept(t.Context(), c)
	if err != nil || !res.Duplicate {
		t.Fatalf("retry = %+v, %v; want a duplicate", res, err)
	}
	cd, err := f.docs.Get(t.Context(), records.ConversationKey(user, "c1"))
	if err != nil {
		t.Fatalf("conversation after the retry: %v", err)
	}
	conv, err := records.ConversationFrom(cd)
	if err != nil {
		t.Fatal(err)
	}
	if conv.ID != "c1" || !conv.CreatedAt.Equal(f.now) || !conv.UpdatedAt.Equal(f.now) {
		t.Fatalf("conversation after the retry: %+v, want c1 created and updated at %v", conv, f.now)
	}
	if n := len(f.bus.All()); n != 1 {
		t.Fatalf("%d events after the retry, want 1", n)
	}
	if after, _ := f.chunk(t, user, "c1", 0); !after.Published {
		t.Fatal("the record is not marked published after the retry published it")
	}
}

// TestCallerFault: every Accept outcome that is the chunk's own fault,
// wrapped or not, is one no retry changes; an erased user and a dependency
// failure are not.
func TestCallerFault(t *testing.T) {
	for _, tc := range []struct {
		err  error
		want bool
	}{
		{ingest.ErrInvalid, true},
		{fmt.Errorf("upload: %w", ingest.ErrTooLong), true},
		{ingest.ErrConflict, true},
		{ingest.ErrMalformedAudio, true},
		{ingest.ErrTombstoned, false},
		{errors.New("firestore: deadline exceeded"), false},
		{nil, false},
	} {
		if got := ingest.CallerFault(tc.err); got != tc.want {
			t.Errorf("CallerFault(%v) = %v, want %v", tc.err, got, tc.want)
		}
	}
}
