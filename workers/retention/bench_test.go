package retention_test

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/lethe-dev/lethe/app/records"
	"github.com/lethe-dev/lethe/infra/docs"
	"github.com/lethe-dev/lethe/infra/vectors"
	"github.com/lethe-dev/lethe/workers/internal/workertest"
	"github.com/lethe-dev/lethe/workers/retention"
)

// BenchmarkSweep measures sweep throughput in expired items per second on
// the embedded adapters (SQLite, directory blobs, flat vectors). Each
// iteration seeds chunks over 20 users (untimed; 12,000 entries, three
// pages of the default size, for the main case) and sweeps them; the mix is what a policy produces: every chunk's transcript
// and vector, and, in "with-audio", its audio (one blob delete and one
// chunk-record update each, so it is slower per item).
func BenchmarkSweep(b *testing.B) {
	for _, tc := range []struct {
		name    string
		chunks  int
		classes []string
	}{
		{"transcripts+vectors", 6000, []string{records.ClassTranscript, records.ClassVector}},
		{"with-audio", 500, []string{records.ClassAudio, records.ClassTranscript, records.ClassVector}},
	} {
		b.Run(tc.name, func(b *testing.B) {
			benchChunks, benchUsers := tc.chunks, 20
			e := newEnv(b)
			items := 0
			var swept time.Duration
			for b.Loop() {
				b.StopTimer()
				seedBench(b, e, benchChunks, benchUsers, tc.classes)
				b.StartTimer()
				start := time.Now()
				rep, err := e.w.Sweep(context.Background(), retention.Options{})
				swept += time.Since(start)
				if err != nil {
					b.Fatal(err)
				}
				if want := benchChunks * len(tc.classes); rep.Counts[retention.CountExpiryDocs] != want {
					b.Fatalf("swept %d entries, want %d (%v)", rep.Counts[retention.CountExpiryDocs], want, rep.Counts)
				}
				items += rep.Counts[retention.CountExpiryDocs]
			}
			b.ReportMetric(float64(items)/swept.Seconds(), "items/s")
		})
	}
}

// seedBench writes n chunks' segments, vectors, audio and expiries in bulk
// (one vector upsert per user; documents through Put would fsync each).
func seedBench(b *testing.B, e *env, n, users int, classes []string) {
	b.Helper()
	ctx := context.Background()
	perUser := map[string][]vectors.Record{}
	var ds []docs.Doc
	for i := range n {
		u := workertest.UserID(&testing.T{}, fmt.Sprintf("bench-%d", i%users))
		cid, seq := "conv", i/users
		seg := records.Segment{ConversationID: cid, Seq: seq, SealedText: []byte("sealed"), CreatedAt: e.t0}
		d, err := seg.Doc(u)
		if err != nil {
			b.Fatal(err)
		}
		ds = append(ds, d)
		perUser[u] = append(perUser[u], vectors.Record{ID: records.VectorID(cid, seq), Values: []float32{1, float32(seq + 1), 0.5}})
		for _, class := range classes {
			x, err := records.Expiry{Class: class, Ref: records.ChunkID(cid, seq), At: e.t0.Add(-time.Duration(i) * time.Millisecond)}.Doc(u)
			if err != nil {
				b.Fatal(err)
			}
			ds = append(ds, x)
		}
		if classes[0] == records.ClassAudio {
			e.chunk(b, u, cid, seq) // the blob and the chunk record too
		}
	}
	putAll(b, e, ds)
	for u, recs := range perUser {
		if err := e.vecs.Upsert(ctx, u, recs); err != nil {
			b.Fatal(err)
		}
	}
}

// putAll writes ds.
func putAll(b *testing.B, e *env, ds []docs.Doc) {
	b.Helper()
	for _, d := range ds {
		if err := e.Docs.Put(context.Background(), d); err != nil {
			b.Fatal(err)
		}
	}
}
