package upload_test

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/base64"
	"encoding/binary"
	"encoding/hex"
	"encoding/json"
	"errors"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"cloud.google.com/go/storage"
	"github.com/cloudevents/sdk-go/v2/event"
	"github.com/fsouza/fake-gcs-server/fakestorage"
	"google.golang.org/api/iterator"
	"google.golang.org/api/option"

	"github.com/lethe-dev/lethe/app/ingest"
	"github.com/lethe-dev/lethe/app/records"
	"github.com/lethe-dev/lethe/events"
	"github.com/lethe-dev/lethe/infra/blobs"
	"github.com/lethe-dev/lethe/infra/blobs/gcsblobs"
	"github.com/lethe-dev/lethe/infra/blobs/gcsblobs/fakegcs"
	"github.com/lethe-dev/lethe/infra/bus"
	"github.com/lethe-dev/lethe/infra/docs"
	"github.com/lethe-dev/lethe/infra/keys"
	"github.com/lethe-dev/lethe/workers/internal/workertest"
	"github.com/lethe-dev/lethe/workers/upload"
)

const (
	cid         = "conv-1"
	defaultMax  = 1 << 20
	contentWAV  = "audio/wav"
	testdataDir = "../../testdata"
)

// watched is the real upload bucket, counting what the worker asks of it.
type watched struct {
	blobs.Bucket
	reads, purges atomic.Int64
}

func (w *watched) ReadGeneration(ctx context.Context, key string, gen int64) (io.ReadCloser, blobs.Attrs, error) {
	w.reads.Add(1)
	return w.Bucket.ReadGeneration(ctx, key, gen)
}

func (w *watched) PurgeGeneration(ctx context.Context, key string, gen int64) error {
	w.purges.Add(1)
	return w.Bucket.PurgeGeneration(ctx, key, gen)
}

// logBuffer collects the worker's log lines (handlers may run concurrently).
type logBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (l *logBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.buf.Write(p)
}

func (l *logBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.buf.String()
}

// env is one worker over real adapters: fake-gcs-server holds one
// versioned bucket (as production's: uploads/ next to the sealed audio),
// the upload source and the Intake's blobs; SQLite docs, file-KEK keys and
// a recording bus.
type env struct {
	*workertest.Stores
	srv     *fakestorage.Server
	app     *storage.Client // the app's and Cloud Storage's own view
	bucket  string
	blobs   blobs.Bucket
	uploads *watched
	bus     *workertest.RecordingBus
	logs    *logBuffer
	now     time.Time
	decode  bus.Decoder
	w       *upload.Worker
}

func newEnv(t *testing.T) *env {
	t.Helper()
	srv := fakegcs.Start(t)
	name := fakegcs.BucketName(t)
	srv.CreateBucketWithOpts(fakestorage.CreateBucketOpts{Name: name, VersioningEnabled: true})
	b, err := gcsblobs.Open(t.Context(), gcsblobs.Config{Bucket: name, Endpoint: srv.URL()})
	if err != nil {
		t.Fatalf("gcsblobs.Open: %v", err)
	}
	t.Cleanup(func() { b.Close() })
	app, err := storage.NewClient(t.Context(), option.WithEndpoint(srv.URL()+"/storage/v1/"), option.WithoutAuthentication(), storage.WithJSONReads())
	if err != nil {
		t.Fatalf("storage.NewClient: %v", err)
	}
	t.Cleanup(func() { app.Close() })
	st := workertest.Open(t)
	e := &env{
		Stores: st, srv: srv, app: app, bucket: name, blobs: b,
		uploads: &watched{Bucket: b},
		bus:     &workertest.RecordingBus{},
		logs:    &logBuffer{},
		now:     time.Date(2026, 11, 3, 10, 0, 0, 0, time.UTC),
	}
	e.decode = upload.Decoder(st.Events, name, func() time.Time { return e.now })
	e.w = &upload.Worker{
		Intake: &ingest.Intake{
			Docs: st.Docs, Blobs: b, Keys: st.Keys, Bus: e.bus, Events: st.Events,
			Now: func() time.Time { return e.now },
		},
		Uploads:  e.uploads,
		Bucket:   name,
		Events:   st.Events,
		MaxBytes: defaultMax,
		Logger:   slog.New(slog.NewJSONHandler(e.logs, &slog.HandlerOptions{Level: slog.LevelDebug})),
	}
	return e
}

func readTestdata(t *testing.T, name string) []byte {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(testdataDir, name))
	if err != nil {
		t.Fatalf("read testdata: %v", err)
	}
	return b
}

func uploadKey(t *testing.T, user string, seq int) string {
	t.Helper()
	k, err := records.UploadKey(user, cid, seq)
	if err != nil {
		t.Fatalf("UploadKey: %v", err)
	}
	return k
}

// put does what the app's signed PUT does: a new generation of the upload
// object. It returns the object's attributes as Cloud Storage reports them.
func (e *env) put(t *testing.T, user string, seq int, body []byte, contentType string) *storage.ObjectAttrs {
	t.Helper()
	w := e.app.Bucket(e.bucket).Object(uploadKey(t, user, seq)).NewWriter(t.Context())
	w.ContentType = contentType
	if _, err := w.Write(body); err != nil {
		t.Fatalf("storage.Writer.Write: %v", err)
	}
	if err := w.Close(); err != nil {
		t.Fatalf("storage.Writer.Close: %v", err)
	}
	a, err := e.app.Bucket(e.bucket).Object(w.Attrs().Name).Generation(w.Attrs().Generation).Attrs(t.Context())
	if err != nil {
		t.Fatalf("storage.ObjectHandle.Attrs: %v", err)
	}
	return a
}

// notification is what Cloud Storage publishes for a (JSON_API_V1): the
// attributes and the object resource, int64 fields as strings, hashes in
// base64, and the fields the decoder ignores too.
func notification(a *storage.ObjectAttrs, eventType string) (map[string]string, map[string]any) {
	gen := strconv.FormatInt(a.Generation, 10)
	var crc [4]byte
	binary.BigEndian.PutUint32(crc[:], a.CRC32C)
	updated := a.Updated
	if updated.IsZero() {
		updated = a.Created
	}
	attrs := map[string]string{
		"notificationConfig": "projects/_/buckets/" + a.Bucket + "/notificationConfigs/1",
		"eventType":          eventType,
		"payloadFormat":      "JSON_API_V1",
		"bucketId":           a.Bucket,
		"objectId":           a.Name,
		"objectGeneration":   gen,
		"eventTime":          updated.UTC().Format(time.RFC3339Nano),
	}
	body := map[string]any{
		"kind":           "storage#object",
		"id":             a.Bucket + "/" + a.Name + "/" + gen,
		"selfLink":       "https://www.googleapis.com/storage/v1/b/" + a.Bucket + "/o/" + strings.ReplaceAll(a.Name, "/", "%2F"),
		"name":           a.Name,
		"bucket":         a.Bucket,
		"generation":     gen,
		"metageneration": strconv.FormatInt(max(a.Metageneration, 1), 10),
		"contentType":    a.ContentType,
		"timeCreated":    a.Created.UTC().Format(time.RFC3339Nano),
		"updated":        updated.UTC().Format(time.RFC3339Nano),
		"storageClass":   "STANDARD",
		"size":           strconv.FormatInt(a.Size, 10),
		"crc32c":         base64.StdEncoding.EncodeToString(crc[:]),
		"etag":           "CJ3u",
	}
	if len(a.MD5) == 16 {
		body["md5Hash"] = base64.StdEncoding.EncodeToString(a.MD5)
	}
	if len(a.Metadata) > 0 {
		body["metadata"] = a.Metadata
	}
	return attrs, body
}

func mustJSON(t testing.TB, v any) []byte {
	t.Helper()
	b, err := json.Marshal(v)
	if err != nil {
		t.Fatalf("json.Marshal: %v", err)
	}
	return b
}

// event decodes the finalize notification of a through the worker's
// decoder; edit, if not nil, changes the notification first.
func (e *env) event(t *testing.T, a *storage.ObjectAttrs, edit func(attrs map[string]string, body map[string]any)) event.Event {
	t.Helper()
	attrs, body := notification(a, "OBJECT_FINALIZE")
	if edit != nil {
		edit(attrs, body)
	}
	ev, err := bus.Decode(e.decode, mustJSON(t, body), attrs)
	if err != nil {
		t.Fatalf("Decoder: %v", err)
	}
	return ev
}

// exists reports whether generation gen of name is still in the bucket
// (live or noncurrent).
func (e *env) exists(t *testing.T, name string, gen int64) bool {
	t.Helper()
	_, err := e.app.Bucket(e.bucket).Object(name).Generation(gen).Attrs(t.Context())
	if errors.Is(err, storage.ErrObjectNotExist) {
		return false
	}
	if err != nil {
		t.Fatalf("storage.ObjectHandle.Attrs: %v", err)
	}
	return true
}

// versions counts every generation, live or noncurrent, under prefix.
func (e *env) versions(t *testing.T, prefix string) int {
	t.Helper()
	it := e.app.Bucket(e.bucket).Objects(t.Context(), &storage.Query{Prefix: prefix, Versions: true})
	n := 0
	for {
		_, err := it.Next()
		if errors.Is(err, iterator.Done) {
			return n
		}
		if err != nil {
			t.Fatalf("list versions: %v", err)
		}
		n++
	}
}

func (e *env) chunk(t *testing.T, user string, seq int) (records.Chunk, bool) {
	t.Helper()
	d, err := e.Docs.Get(t.Context(), records.ChunkKey(user, cid, seq))
	if errors.Is(err, docs.ErrNotFound) {
		return records.Chunk{}, false
	}
	if err != nil {
		t.Fatalf("docs.Get chunk: %v", err)
	}
	c, err := records.ChunkFrom(d)
	if err != nil {
		t.Fatalf("records.ChunkFrom: %v", err)
	}
	return c, true
}

// sealedAudio opens the chunk's sealed audio with the user's key.
func (e *env) sealedAudio(t *testing.T, user string, c records.Chunk) []byte {
	t.Helper()
	rc, _, err := e.blobs.Read(t.Context(), c.BlobKey)
	if err != nil {
		t.Fatalf("blobs.Read sealed audio: %v", err)
	}
	defer rc.Close()
	sealed, err := io.ReadAll(rc)
	if err != nil {
		t.Fatalf("read sealed audio: %v", err)
	}
	pt, err := e.Keys.Open(t.Context(), user, sealed, keys.AD(user, "blobs", c.BlobKey, "audio"))
	if err != nil {
		t.Fatalf("keys.Open sealed audio: %v", err)
	}
	return pt
}

func digest(b []byte) string {
	s := sha256.Sum256(b)
	return hex.EncodeToString(s[:])
}

// keyedDigest is the user's keyed digest of b, as the intake records it.
func (e *env) keyedDigest(t *testing.T, user string, b []byte) string {
	t.Helper()
	d, err := e.Keys.Digest(t.Context(), user, b)
	if err != nil {
		t.Fatalf("keys.Digest: %v", err)
	}
	return d
}

// handle runs the worker and checks that nothing it logged names the user
// or the object.
func (e *env) handle(t *testing.T, ev event.Event) error {
	t.Helper()
	err := e.w.Handle(t.Context(), ev)
	var p events.UploadFinalized
	if json.Unmarshal(ev.Data(), &p) == nil && p.User != "" {
		if logs := e.logs.String(); strings.Contains(logs, p.User) || (p.Object != "" && strings.Contains(logs, p.Object)) {
			t.Errorf("the worker logged the user hash or object name:\n%s", logs)
		}
		if err != nil && strings.Contains(err.Error(), p.User) {
			t.Errorf("error names the user hash: %v", err)
		}
	}
	return err
}

// checkChunkEvent asserts p is the audio.chunk.received of chunk c.
func checkChunkEvent(t *testing.T, e *env, p workertest.Published, user string, c records.Chunk) {
	t.Helper()
	if p.Topic != events.TopicAudio {
		t.Errorf("published on %q, want %q", p.Topic, events.TopicAudio)
	}
	var got events.ChunkReceived
	if err := e.Events.Decode(p.Event, &got); err != nil {
		t.Fatalf("published event does not decode: %v", err)
	}
	if p.Event.ID() != c.EventID || got.User != user || got.ConversationID != cid || got.Seq != c.Seq ||
		got.Digest != c.Digest || got.BlobKey != c.BlobKey || got.Origin != ingest.OriginUploadURL {
		t.Errorf("chunk event %s = %+v, want the record %+v", p.Event.ID(), got, c)
	}
}

// TestHandle runs each upload through decoder and worker over the real
// adapters and checks what is left: outcome, the upload generation, the
// chunk record and the events on the audio topic.
func TestHandle(t *testing.T) {
	hello := readTestdata(t, "speech-hello.wav")
	other := readTestdata(t, "speech-hello-22050.wav")

	// accept handles a fresh upload of body at seq and requires success.
	accept := func(t *testing.T, e *env, user string, seq int, body []byte) *storage.ObjectAttrs {
		t.Helper()
		a := e.put(t, user, seq, body, contentWAV)
		if err := e.handle(t, e.event(t, a, nil)); err != nil {
			t.Fatalf("first upload: %v", err)
		}
		return a
	}

	type result struct {
		ev  event.Event
		obj *storage.ObjectAttrs // the generation the event names
	}
	cases := []struct {
		name      string
		maxBytes  int64
		arrange   func(t *testing.T, e *env, user string) result
		want      workertest.Outcome
		wantErr   error // errors.Is target, if any
		purged    bool  // the named generation is gone afterwards
		untouched bool  // nothing read or purged at all
		events    int   // chunk events published in all
		record    bool  // a chunk record exists
		check     func(t *testing.T, e *env, user string, r result)
	}{
		{
			name: "happy path",
			arrange: func(t *testing.T, e *env, user string) result {
				a := e.put(t, user, 7, hello, contentWAV)
				return result{e.event(t, a, nil), a}
			},
			want: workertest.Acked, purged: true, events: 1, record: true,
			check: func(t *testing.T, e *env, user string, r result) {
				c, _ := e.chunk(t, user, 7)
				if c.Origin != ingest.OriginUploadURL || c.Status != records.StatusReceived ||
					c.Digest != e.keyedDigest(t, user, hello) || c.Size != int64(len(hello)) || c.ContentType != contentWAV ||
					c.SampleRate != 16000 || !c.Published || !c.ReceivedAt.Equal(e.now) {
					t.Errorf("chunk record = %+v", c)
				}
				if got := e.sealedAudio(t, user, c); !bytes.Equal(got, hello) {
					t.Errorf("sealed audio opens to %d bytes, not the %d uploaded", len(got), len(hello))
				}
				checkChunkEvent(t, e, e.bus.All()[0], user, c)
				if n := e.versions(t, r.obj.Name); n != 0 {
					t.Errorf("%d generations of the upload left (live or noncurrent), want none", n)
				}
				if n := e.uploads.reads.Load(); n != 1 {
					t.Errorf("%d reads of the upload, want 1", n)
				}
			},
		},
		{
			name: "replay of the same notification after success",
			arrange: func(t *testing.T, e *env, user string) result {
				a := accept(t, e, user, 7, hello)
				return result{e.event(t, a, nil), a}
			},
			want: workertest.Dropped, purged: true, events: 1, record: true,
		},
		{
			name: "same bytes uploaded again under a new generation",
			arrange: func(t *testing.T, e *env, user string) result {
				first := accept(t, e, user, 7, hello)
				a := e.put(t, user, 7, hello, contentWAV)
				if a.Generation == first.Generation {
					t.Fatal("the second upload has the first one's generation")
				}
				return result{e.event(t, a, nil), a}
			},
			want: workertest.Acked, purged: true, events: 1, record: true,
			check: func(t *testing.T, e *env, user string, r result) {
				if n := e.versions(t, r.obj.Name); n != 0 {
					t.Errorf("%d generations of the upload left, want none", n)
				}
			},
		},
		{
			name: "other bytes for an accepted seq",
			arrange: func(t *testing.T, e *env, user string) result {
				accept(t, e, user, 7, hello)
				a := e.put(t, user, 7, other, contentWAV)
				return result{e.event(t, a, nil), a}
			},
			want: workertest.Permanent, wantErr: ingest.ErrConflict, purged: true, events: 1, record: true,
			check: func(t *testing.T, e *env, user string, r result) {
				if c, _ := e.chunk(t, user, 7); c.Digest != e.keyedDigest(t, user, hello) {
					t.Error("the conflicting upload replaced the accepted chunk")
				}
			},
		},
		{
			name: "malformed audio",
			arrange: func(t *testing.T, e *env, user string) result {
				a := e.put(t, user, 7, append([]byte("RIFF\x00\x00\x00\x00WAVEjunk"), bytes.Repeat([]byte{0x55}, 4000)...), contentWAV)
				return result{e.event(t, a, nil), a}
			},
			want: workertest.Permanent, wantErr: ingest.ErrMalformedAudio, purged: true,
		},
		{
			name: "unsupported content type",
			arrange: func(t *testing.T, e *env, user string) result {
				a := e.put(t, user, 7, hello, "text/plain")
				return result{e.event(t, a, nil), a}
			},
			want: workertest.Permanent, wantErr: ingest.ErrUnsupportedType, purged: true,
		},
		{
			name:     "oversized by its size",
			maxBytes: int64(len(hello)) - 1,
			arrange: func(t *testing.T, e *env, user string) result {
				a := e.put(t, user, 7, hello, contentWAV)
				return result{e.event(t, a, nil), a}
			},
			want: workertest.Permanent, purged: true,
			check: func(t *testing.T, e *env, user string, r result) {
				if n := e.uploads.reads.Load(); n != 0 {
					t.Errorf("an oversized upload was read %d times", n)
				}
			},
		},
		{
			name:     "oversized by its bytes (size understated)",
			maxBytes: int64(len(hello)) - 1,
			arrange: func(t *testing.T, e *env, user string) result {
				a := e.put(t, user, 7, hello, contentWAV)
				return result{e.event(t, a, func(_ map[string]string, body map[string]any) { body["size"] = "1000" }), a}
			},
			want: workertest.Permanent, purged: true,
		},
		{
			name: "tombstoned user",
			arrange: func(t *testing.T, e *env, user string) result {
				a := e.put(t, user, 7, hello, contentWAV)
				e.Tombstone(t, user)
				return result{e.event(t, a, nil), a}
			},
			want: workertest.Dropped, purged: true,
			check: func(t *testing.T, e *env, user string, r result) {
				if e.HasKey(t, user) {
					t.Error("a key was created for an erased user")
				}
				if n := e.uploads.reads.Load(); n != 0 {
					t.Errorf("an erased user's upload was read %d times", n)
				}
			},
		},
		{
			name: "forged: another bucket",
			arrange: func(t *testing.T, e *env, user string) result {
				a := e.put(t, user, 7, hello, contentWAV)
				// Well-formed for a decoder of the other bucket; this
				// worker's bucket is not it.
				attrs, body := notification(a, "OBJECT_FINALIZE")
				attrs["bucketId"], body["bucket"] = "someone-elses-bucket", "someone-elses-bucket"
				ev, err := bus.Decode(upload.Decoder(e.Events, "someone-elses-bucket", nil), mustJSON(t, body), attrs)
				if err != nil {
					t.Fatalf("Decoder: %v", err)
				}
				return result{ev, a}
			},
			want: workertest.Permanent, untouched: true,
		},
		{
			name: "forged: payload user is not the object's (cross-user)",
			arrange: func(t *testing.T, e *env, user string) result {
				victim := workertest.UserID(t, "victim")
				a := e.put(t, victim, 7, hello, contentWAV)
				// A consistent event claiming user's name over victim's
				// object: subject and payload agree, the object does not.
				ev := workertest.WithAttr(workertest.WithData(t, e.event(t, a, nil), func(m map[string]any) { m["user"] = user }),
					func(ev *event.Event) { ev.SetSubject(events.Subject(user, "conversations", cid, "chunks", "7")) })
				if err := e.Events.Validate(ev); err != nil {
					t.Fatalf("forgery does not pass the registry, so it tests nothing here: %v", err)
				}
				return result{ev, a}
			},
			want: workertest.Permanent, untouched: true,
			check: func(t *testing.T, e *env, user string, r result) {
				victim := workertest.UserID(t, "victim")
				if _, ok := e.chunk(t, victim, 7); ok {
					t.Error("a chunk was recorded for the object's owner")
				}
				if e.HasKey(t, user) || e.HasKey(t, victim) {
					t.Error("a key was created")
				}
			},
		},
		{
			name: "forged: object of another seq",
			arrange: func(t *testing.T, e *env, user string) result {
				a := e.put(t, user, 7, hello, contentWAV)
				ev := workertest.WithAttr(workertest.WithData(t, e.event(t, a, nil), func(m map[string]any) { m["seq"] = 8 }),
					func(ev *event.Event) { ev.SetSubject(events.Subject(user, "conversations", cid, "chunks", "8")) })
				return result{ev, a}
			},
			want: workertest.Permanent, untouched: true,
		},
		{
			name: "crc32c differs from the bytes (read raced a rewrite)",
			arrange: func(t *testing.T, e *env, user string) result {
				a := e.put(t, user, 7, hello, contentWAV)
				return result{e.event(t, a, func(_ map[string]string, body map[string]any) { body["crc32c"] = "AAAAAA==" }), a}
			},
			want: workertest.Retryable,
		},
		{
			name: "size differs from the bytes",
			arrange: func(t *testing.T, e *env, user string) result {
				a := e.put(t, user, 7, hello, contentWAV)
				return result{e.event(t, a, func(_ map[string]string, body map[string]any) {
					body["size"] = strconv.FormatInt(a.Size-1, 10)
				}), a}
			},
			want: workertest.Retryable,
		},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			e := newEnv(t)
			if tc.maxBytes != 0 {
				e.w.MaxBytes = tc.maxBytes
			}
			user := workertest.UserID(t, "a")
			r := tc.arrange(t, e, user)
			reads, purges := e.uploads.reads.Load(), e.uploads.purges.Load()

			err := e.handle(t, r.ev)
			if got := workertest.Classify(err); got != tc.want {
				t.Fatalf("Handle = %v (%s), want %s", err, got, tc.want)
			}
			if tc.wantErr != nil && !errors.Is(err, tc.wantErr) {
				t.Errorf("Handle = %v, want %v", err, tc.wantErr)
			}
			if gone := !e.exists(t, r.obj.Name, r.obj.Generation); gone != tc.purged {
				t.Errorf("upload generation purged = %v, want %v", gone, tc.purged)
			}
			if tc.untouched {
				if n := e.uploads.reads.Load() - reads; n != 0 {
					t.Errorf("%d reads of the upload, want none", n)
				}
				if n := e.uploads.purges.Load() - purges; n != 0 {
					t.Errorf("%d purges, want none", n)
				}
			}
			pubs := e.bus.All()
			if len(pubs) != tc.events {
				t.Errorf("%d chunk events, want %d", len(pubs), tc.events)
			}
			if _, ok := e.chunk(t, user, 7); ok != tc.record {
				t.Errorf("chunk record exists = %v, want %v", ok, tc.record)
			}
			if !tc.record && e.versions(t, records.AudioPrefix(user)) != 0 {
				t.Error("sealed audio was stored for an upload that was not accepted")
			}
			if tc.check != nil {
				tc.check(t, e, user, r)
			}
		})
	}
}

// A bus that is down fails the accept after the record is written: the
// upload stays for the redelivery, which publishes the one event and purges.
func TestHandleBusFailure(t *testing.T) {
	e := newEnv(t)
	user := workertest.UserID(t, "a")
	hello := readTestdata(t, "speech-hello.wav")
	a := e.put(t, user, 3, hello, contentWAV)
	ev := e.event(t, a, nil)

	e.bus.SetFail(errors.New("pubsub unavailable"))
	err := e.handle(t, ev)
	if got := workertest.Classify(err); got != workertest.Retryable {
		t.Fatalf("Handle with the bus down = %v (%s), want retryable", err, got)
	}
	if !e.exists(t, a.Name, a.Generation) {
		t.Fatal("the upload was purged before its chunk was announced")
	}
	if n := len(e.bus.All()); n != 0 {
		t.Fatalf("%d events recorded by a failing bus", n)
	}

	e.bus.SetFail(nil)
	if err := e.handle(t, ev); err != nil {
		t.Fatalf("redelivery after the bus recovered: %v", err)
	}
	if e.exists(t, a.Name, a.Generation) {
		t.Error("the upload survived its accepted redelivery")
	}
	pubs := e.bus.All()
	if len(pubs) != 1 {
		t.Fatalf("%d chunk events, want 1", len(pubs))
	}
	c, ok := e.chunk(t, user, 3)
	if !ok || !c.Published {
		t.Fatalf("chunk record %+v (exists %v), want published", c, ok)
	}
	checkChunkEvent(t, e, pubs[0], user, c)
	if got := e.sealedAudio(t, user, c); !bytes.Equal(got, hello) {
		t.Error("sealed audio differs from the upload")
	}
}

// The same delivery handled concurrently (a redelivery racing the first)
// announces one chunk and leaves no plaintext.
func TestHandleConcurrentRedelivery(t *testing.T) {
	e := newEnv(t)
	user := workertest.UserID(t, "a")
	hello := readTestdata(t, "speech-hello.wav")
	a := e.put(t, user, 1, hello, contentWAV)
	ev := e.event(t, a, nil)
	const n = 4
	errs := make([]error, n)
	var wg sync.WaitGroup
	for i := range n {
		wg.Go(func() { errs[i] = e.w.Handle(t.Context(), ev) })
	}
	wg.Wait()
	for i, err := range errs {
		if got := workertest.Classify(err); got != workertest.Acked && got != workertest.Dropped && got != workertest.Retryable {
			t.Errorf("delivery %d = %v (%s)", i, err, got)
		}
	}
	// Whatever raced, one more redelivery settles it.
	if err := e.w.Handle(t.Context(), ev); err != nil && workertest.Classify(err) != workertest.Dropped {
		t.Fatalf("settling redelivery: %v", err)
	}
	if e.exists(t, a.Name, a.Generation) {
		t.Error("upload not purged")
	}
	ids := map[string]bool{}
	for _, p := range e.bus.All() {
		ids[p.Event.ID()] = true
	}
	if len(ids) != 1 {
		t.Errorf("%d distinct chunk event ids, want 1", len(ids))
	}
}

// Events the worker must refuse before touching anything: another event
// type, a payload that fails its schema.
func TestHandleRejectsMalformedEvents(t *testing.T) {
	e := newEnv(t)
	user := workertest.UserID(t, "a")
	a := e.put(t, user, 7, readTestdata(t, "speech-hello.wav"), contentWAV)
	valid := e.event(t, a, nil)
	chunkEv, err := records.ChunkReceivedEvent(e.Events, user, records.Chunk{
		ConversationID: cid, Seq: 7, Status: records.StatusReceived,
		BlobKey: records.AudioKey(user, cid, 7, digest([]byte("x"))), ContentType: contentWAV,
		Digest: digest([]byte("x")), Size: 1, Origin: ingest.OriginApp,
		EventID: events.NewID(), ReceivedAt: e.now,
	})
	if err != nil {
		t.Fatal(err)
	}
	cases := []struct {
		name string
		ev   event.Event
	}{
		{"another event type", chunkEv},
		{"unknown field", workertest.WithData(t, valid, func(m map[string]any) { m["uid"] = "alice" })},
		{"generation zero", workertest.WithData(t, valid, func(m map[string]any) { m["generation"] = 0 })},
		{"object outside uploads/", workertest.WithData(t, valid, func(m map[string]any) { m["object"] = "users/" + user + "/audio/x" })},
		{"object with traversal", workertest.WithData(t, valid, func(m map[string]any) {
			m["object"] = "uploads/" + user + "/../../" + cid + "/0000007"
		})},
		{"payload user differs from the subject", workertest.WithData(t, valid, func(m map[string]any) { m["user"] = workertest.UserID(t, "b") })},
		{"negative size", workertest.WithData(t, valid, func(m map[string]any) { m["size"] = -1 })},
		{"data not JSON", workertest.WithAttr(valid, func(ev *event.Event) { ev.DataEncoded = []byte("not json") })},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			reads, purges := e.uploads.reads.Load(), e.uploads.purges.Load()
			err := e.handle(t, tc.ev)
			if got := workertest.Classify(err); got != workertest.Permanent {
				t.Errorf("Handle = %v (%s), want permanent", err, got)
			}
			if e.uploads.reads.Load() != reads || e.uploads.purges.Load() != purges {
				t.Error("the upload was read or purged for a malformed event")
			}
			if !e.exists(t, a.Name, a.Generation) {
				t.Error("the upload is gone")
			}
			if n := len(e.bus.All()); n != 0 {
				t.Errorf("%d events published", n)
			}
		})
	}
}
