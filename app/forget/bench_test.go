package forget_test

import (
	"bytes"
	"fmt"
	"testing"
	"time"

	"github.com/lethe-dev/lethe/app/audit"
	"github.com/lethe-dev/lethe/app/forget"
	"github.com/lethe-dev/lethe/app/records"
	"github.com/lethe-dev/lethe/infra/blobs"
	"github.com/lethe-dev/lethe/infra/vectors"
)

// Issue target: erasing one user with 10,000 conversations, 100,000 vectors
// and 10,000 blobs on embedded adapters takes under 30 s, whatever other
// users hold.
const (
	benchConversations = 10_000
	benchVectors       = 100_000
	benchBlobs         = 10_000
)

// fill gives user the benchmark's data: a conversation, a chunk and a
// segment document per conversation, one blob per conversation, and ten
// vectors per conversation.
func (e *env) fill(b *testing.B, user string) {
	ctx := b.Context()
	now := time.Now().UTC()
	for i := range benchConversations {
		cid := fmt.Sprintf("c%05d", i)
		conv, _ := records.Conversation{ID: cid, CreatedAt: now, UpdatedAt: now}.Doc(user)
		chunk, _ := records.Chunk{ConversationID: cid, Status: records.StatusIndexed, UpdatedAt: now}.Doc(user)
		seg, _ := records.Segment{ConversationID: cid, SealedText: []byte("sealed"), CreatedAt: now}.Doc(user)
		if err := e.docs.Put(ctx, conv); err != nil {
			b.Fatal(err)
		}
		if err := e.docs.Put(ctx, chunk); err != nil {
			b.Fatal(err)
		}
		if err := e.docs.Put(ctx, seg); err != nil {
			b.Fatal(err)
		}
	}
	for i := range benchBlobs {
		key := fmt.Sprintf("users/%s/audio/c%05d/0000000-x.sealed", user, i)
		if _, err := e.blobs.Write(ctx, key, bytes.NewReader([]byte("sealed audio")), blobs.WriteOptions{}); err != nil {
			b.Fatal(err)
		}
	}
	const dim = 8
	batch := make([]vectors.Record, 0, 1000)
	for i := range benchVectors {
		v := make([]float32, dim)
		v[i%dim], v[(i+1)%dim] = 1, float32(i%7+1)
		batch = append(batch, vectors.Record{ID: records.VectorID(fmt.Sprintf("c%05d", i/10), i%10), Values: v})
		if len(batch) == cap(batch) {
			if err := e.vecs.Upsert(ctx, user, batch); err != nil {
				b.Fatal(err)
			}
			batch = batch[:0]
		}
	}
}

func BenchmarkEraseUser(b *testing.B) {
	for _, others := range []int{0, 1} {
		b.Run(fmt.Sprintf("other_users=%d", others), func(b *testing.B) {
			e := newEnv(b)
			for i := range others {
				e.fill(b, fmt.Sprintf("0%031d", i+1))
			}
			var last time.Time
			e.saga.Progress = func(er forget.Erasure, step string) {
				b.Logf("%s: %v", step, time.Since(last).Round(time.Millisecond))
				last = time.Now()
			}
			b.ResetTimer()
			for i := 0; i < b.N; i++ {
				user := fmt.Sprintf("f%031d", i)
				b.StopTimer()
				e.fill(b, user)
				b.StartTimer()
				last = time.Now()
				req, err := e.saga.Request(b.Context(), user, audit.ActorOperator)
				if err != nil {
					b.Fatal(err)
				}
				done, err := e.saga.Run(b.Context(), req.ID)
				if err != nil || done.State != forget.StateDone {
					b.Fatalf("erasure: %+v %v", done, err)
				}
				if c := done.Receipt.Stores[forget.StoreVectors]; c.Found != benchVectors || c.Remaining != 0 {
					b.Fatalf("vectors %+v", c)
				}
			}
			b.ReportMetric(float64(b.Elapsed().Milliseconds())/float64(b.N), "ms/erasure")
		})
	}
}
