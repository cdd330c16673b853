package retention_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/lethe-dev/lethe/app/audit"
	"github.com/lethe-dev/lethe/app/records"
	"github.com/lethe-dev/lethe/infra/blobs"
	"github.com/lethe-dev/lethe/infra/blobs/dirblobs"
	"github.com/lethe-dev/lethe/infra/docs"
	"github.com/lethe-dev/lethe/infra/vectors"
	"github.com/lethe-dev/lethe/infra/vectors/flatvectors"
	"github.com/lethe-dev/lethe/workers/internal/workertest"
	"github.com/lethe-dev/lethe/workers/retention"
)

// env is the sweeper over real embedded adapters in a fresh directory.
type env struct {
	*workertest.Stores
	blobs  blobs.Bucket
	faulty *faultyDriver // under blobs: fails deletes on demand
	vecs   vectors.Index
	w      *retention.Worker
	t0     time.Time
}

func newEnv(t testing.TB) *env {
	t.Helper()
	st := workertest.Open(t)
	bucket, err := dirblobs.Open(filepath.Join(st.Dir, "blobs"))
	if err != nil {
		t.Fatalf("dirblobs.Open: %v", err)
	}
	t.Cleanup(func() { bucket.Close() })
	idx, err := flatvectors.Open(filepath.Join(st.Dir, "vectors"))
	if err != nil {
		t.Fatalf("flatvectors.Open: %v", err)
	}
	t.Cleanup(func() { idx.Close() })
	faulty := &faultyDriver{Driver: bucket.Driver()}
	e := &env{Stores: st, blobs: blobs.New(faulty), faulty: faulty, vecs: idx,
		t0: time.Date(2026, 11, 3, 10, 0, 0, 0, time.UTC)}
	e.w = &retention.Worker{Docs: st.Docs, Blobs: e.blobs, Vectors: idx, Events: st.Events,
		Now: func() time.Time { return e.t0 }}
	return e
}

// chunk stores what the pipeline stores for one chunk of user, as the
// intake, transcriber and store worker do: sealed-looking audio and its
// chunk record, a segment, a vector. Expiries are scheduled separately.
func (e *env) chunk(t testing.TB, user, cid string, seq int) {
	t.Helper()
	ctx := context.Background()
	digest := fmt.Sprintf("%064x", seq+1)
	blobKey := records.AudioKey(user, cid, seq, digest)
	if _, err := e.blobs.Write(ctx, blobKey, bytes.NewReader([]byte("sealed audio")), blobs.WriteOptions{}); err != nil {
		t.Fatalf("blobs.Write: %v", err)
	}
	c := records.Chunk{ConversationID: cid, Seq: seq, Status: records.StatusIndexed, BlobKey: blobKey,
		Digest: digest, ReceivedAt: e.t0, UpdatedAt: e.t0}
	e.put(t, user, c)
	seg := records.Segment{ConversationID: cid, Seq: seq, SealedText: []byte("sealed"), CreatedAt: e.t0}
	e.put(t, user, seg)
	rec := vectors.Record{ID: records.VectorID(cid, seq), Values: []float32{1, float32(seq + 1), 0.5},
		Metadata: map[string]any{"conversation_id": cid}}
	if err := e.vecs.Upsert(ctx, user, []vectors.Record{rec}); err != nil {
		t.Fatalf("vectors.Upsert: %v", err)
	}
}

func (e *env) put(t testing.TB, user string, v interface {
	Doc(string) (docs.Doc, error)
}) {
	t.Helper()
	d, err := v.Doc(user)
	if err != nil {
		t.Fatal(err)
	}
	if err := e.Docs.Put(context.Background(), d); err != nil {
		t.Fatalf("docs.Put: %v", err)
	}
}

// expire schedules class of chunk (cid, seq) at at.
func (e *env) expire(t testing.TB, user, class, ref string, at time.Time) {
	t.Helper()
	if err := records.ScheduleExpiry(context.Background(), e.Docs, user, records.Expiry{Class: class, Ref: ref, At: at}); err != nil {
		t.Fatalf("records.ScheduleExpiry: %v", err)
	}
}

// state is what is left of one chunk.
type state struct {
	blob, blobKeyInRecord, segment, vector, record bool
	expiries                                       int
}

func (e *env) state(t testing.TB, user, cid string, seq int) state {
	t.Helper()
	ctx := context.Background()
	var s state
	if d, err := e.Docs.Get(ctx, records.ChunkKey(user, cid, seq)); err == nil {
		s.record = true
		c, err := records.ChunkFrom(d)
		if err != nil {
			t.Fatal(err)
		}
		s.blobKeyInRecord = c.BlobKey != ""
		if !s.blobKeyInRecord && c.AudioDeletedAt.IsZero() {
			t.Errorf("chunk %d: BlobKey cleared but no audio_deleted_at", seq)
		}
	}
	listed, err := e.blobs.List(ctx, fmt.Sprintf("%s%s/%07d-", records.AudioPrefix(user), cid, seq))
	if err != nil {
		t.Fatal(err)
	}
	s.blob = len(listed) > 0
	_, err = e.Docs.Get(ctx, records.SegmentKey(user, cid, seq))
	s.segment = err == nil
	ids, err := e.vecs.ListIDs(ctx, user, records.VectorID(cid, seq))
	if err != nil {
		t.Fatal(err)
	}
	s.vector = len(ids) > 0
	for _, class := range []string{records.ClassAudio, records.ClassTranscript, records.ClassVector} {
		if _, err := e.Docs.Get(ctx, records.ExpiryKey(user, class, records.ChunkID(cid, seq))); err == nil {
			s.expiries++
		}
	}
	return s
}

// audits returns the retention audit entries.
func (e *env) audits(t testing.TB) []audit.Entry {
	t.Helper()
	all, _, err := (&audit.Log{Docs: e.Docs}).List(context.Background(), audit.Filter{Limit: audit.MaxPage})
	if err != nil {
		t.Fatal(err)
	}
	var out []audit.Entry
	for _, a := range all {
		if a.Action == audit.ActionRetentionSweep {
			out = append(out, a)
		}
	}
	return out
}

// faultyDriver fails the failAt-th Delete (counting from 1) once.
type faultyDriver struct {
	blobs.Driver
	mu      sync.Mutex
	deletes int
	failAt  int
}

var errInjected = errors.New("injected blob store failure")

func (b *faultyDriver) Delete(ctx context.Context, key string) error {
	b.mu.Lock()
	b.deletes++
	fail := b.failAt > 0 && b.deletes == b.failAt
	b.mu.Unlock()
	if fail {
		return errInjected
	}
	return b.Driver.Delete(ctx, key)
}

func (b *faultyDriver) failOnce(n int) {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.deletes, b.failAt = 0, n
}
