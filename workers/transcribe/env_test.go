package transcribe_test

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"math"
	"path/filepath"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/cloudevents/sdk-go/v2/event"

	"github.com/lethe-dev/lethe/app/records"
	"github.com/lethe-dev/lethe/events"
	"github.com/lethe-dev/lethe/infra/audio"
	"github.com/lethe-dev/lethe/infra/blobs"
	"github.com/lethe-dev/lethe/infra/blobs/dirblobs"
	"github.com/lethe-dev/lethe/infra/docs"
	"github.com/lethe-dev/lethe/infra/keys"
	"github.com/lethe-dev/lethe/infra/stt"
	"github.com/lethe-dev/lethe/workers/internal/workertest"
	"github.com/lethe-dev/lethe/workers/transcribe"
)

// fakeSTT returns fixed text (or err) and counts calls.
type fakeSTT struct {
	mu      sync.Mutex
	text    string
	err     error
	calls   int
	samples int // length of the last PCM it was given
}

func (f *fakeSTT) Transcribe(_ context.Context, pcm audio.PCM) (stt.Transcript, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.calls++
	f.samples = len(pcm.Samples)
	if f.err != nil {
		return stt.Transcript{}, f.err
	}
	return stt.Transcript{Text: f.text, Model: "fake-stt-v1"}, nil
}

func (f *fakeSTT) set(text string, err error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.text, f.err = text, err
}

func (f *fakeSTT) count() int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.calls
}

func (f *fakeSTT) lastSamples() int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.samples
}

// env is one worker over real embedded adapters in a fresh directory.
type env struct {
	*workertest.Stores
	docs  docs.Store
	blobs blobs.Bucket
	keys  *keys.Keyring
	reg   *events.Registry
	bus   *workertest.RecordingBus
	stt   *fakeSTT
	now   time.Time
	w     *transcribe.Worker
}

const spokenText = "hello world this is a test of the memory pipeline"

func newEnv(t *testing.T) *env {
	t.Helper()
	st := workertest.Open(t)
	dir := st.Dir
	bucket, err := dirblobs.Open(filepath.Join(dir, "blobs"))
	if err != nil {
		t.Fatalf("dirblobs.Open: %v", err)
	}
	t.Cleanup(func() { bucket.Close() })
	e := &env{
		Stores: st,
		docs:   st.Docs,
		blobs:  bucket,
		keys:   st.Keys,
		reg:    st.Events,
		bus:    &workertest.RecordingBus{},
		stt:    &fakeSTT{text: spokenText},
		now:    time.Date(2026, 11, 3, 10, 0, 0, 0, time.UTC),
	}
	e.w = &transcribe.Worker{
		Docs: e.docs, Blobs: e.blobs, Keys: e.keys, STT: e.stt, Bus: e.bus, Events: e.reg,
		Now: func() time.Time { return e.now },
	}
	return e
}

// tone is n samples of a 440 Hz tone at 16 kHz, encoded as WAV.
func tone(n int) []byte {
	p := audio.PCM{SampleRate: 16000, Samples: make([]int16, n)}
	for i := range p.Samples {
		p.Samples[i] = int16(8000 * math.Sin(2*math.Pi*440*float64(i)/16000))
	}
	return audio.EncodeWAV(p)
}

// digest is a well-formed digest that is not the user's keyed one: for
// records of users without a key and for mismatches.
func digest(b []byte) string {
	s := sha256.Sum256(b)
	return hex.EncodeToString(s[:])
}

// keyedDigest is the user's keyed digest of b, as the edge records it.
func (e *env) keyedDigest(t *testing.T, user string, b []byte) string {
	t.Helper()
	d, err := e.keys.Digest(t.Context(), user, b)
	if err != nil {
		t.Fatalf("keys.Digest: %v", err)
	}
	return d
}

// seedChunk does what the edge does: seal the audio under the blob's
// associated data, write the blob, write the chunk record (received).
func (e *env) seedChunk(t *testing.T, user, cid string, seq int, body []byte, contentType string) records.Chunk {
	t.Helper()
	sum := e.keyedDigest(t, user, body)
	blobKey := records.AudioKey(user, cid, seq, sum)
	sealed, err := e.keys.Seal(t.Context(), user, body, keys.AD(user, "blobs", blobKey, "audio"))
	if err != nil {
		t.Fatalf("keys.Seal audio: %v", err)
	}
	if _, err := e.blobs.Write(t.Context(), blobKey, bytes.NewReader(sealed), blobs.WriteOptions{CreateOnly: true}); err != nil {
		t.Fatalf("blobs.Write: %v", err)
	}
	c := records.Chunk{
		ConversationID: cid, Seq: seq, Status: records.StatusReceived,
		BlobKey: blobKey, ContentType: contentType, SampleRate: 16000,
		Digest: sum, Size: int64(len(body)), Origin: "app",
		EventID:    records.ChunkEventID(user, cid, seq, sum),
		Published:  true,
		ReceivedAt: e.now.Add(-time.Minute), UpdatedAt: e.now.Add(-time.Minute),
	}
	e.putChunk(t, user, c)
	return c
}

func (e *env) putChunk(t *testing.T, user string, c records.Chunk) {
	t.Helper()
	d, err := c.Doc(user)
	if err != nil {
		t.Fatalf("Chunk.Doc: %v", err)
	}
	if err := e.docs.Put(t.Context(), d); err != nil {
		t.Fatalf("docs.Put chunk: %v", err)
	}
}

func (e *env) chunkEvent(t *testing.T, user string, c records.Chunk) event.Event {
	t.Helper()
	ev, err := records.ChunkReceivedEvent(e.reg, user, c)
	if err != nil {
		t.Fatalf("records.ChunkReceivedEvent: %v", err)
	}
	return ev
}

func (e *env) chunk(t *testing.T, user, cid string, seq int) records.Chunk {
	t.Helper()
	d, err := e.docs.Get(t.Context(), records.ChunkKey(user, cid, seq))
	if err != nil {
		t.Fatalf("docs.Get chunk: %v", err)
	}
	c, err := records.ChunkFrom(d)
	if err != nil {
		t.Fatalf("records.ChunkFrom: %v", err)
	}
	return c
}

func (e *env) chunkData(t *testing.T, user, cid string, seq int) []byte {
	t.Helper()
	d, err := e.docs.Get(t.Context(), records.ChunkKey(user, cid, seq))
	if errors.Is(err, docs.ErrNotFound) {
		return nil
	}
	if err != nil {
		t.Fatalf("docs.Get chunk: %v", err)
	}
	return d.Data
}

// segments returns every segment document of the user.
func (e *env) segments(t *testing.T, user string) []docs.Doc {
	t.Helper()
	ds, err := e.docs.Query(t.Context(), docs.Query{User: user, Collection: records.Segments})
	if err != nil {
		t.Fatalf("docs.Query segments: %v", err)
	}
	return ds
}

func wantTranscriptID(user, cid string, seq int, sum string) string {
	return events.DeriveID("transcript", user, cid, strconv.Itoa(seq), sum)
}
