package firestoredocs_test

import (
	"context"
	"fmt"
	"sync"
	"testing"

	"github.com/lethe-dev/lethe/infra/docs"
	"github.com/lethe-dev/lethe/infra/docs/firestoredocs"
)

// benchDocs is smaller than the embedded adapter's 10,000: every write is a
// round trip to the emulator.
const benchDocs = 2_000

// benchStore opens a store on the emulator (the benchmark is skipped
// without one) with benchDocs documents of 512 bytes spread over 20 users,
// each with status, seq and expires_at fields.
func benchStore(b *testing.B) docs.Store {
	b.Helper()
	host := emulatorHost(b)
	ctx := b.Context()
	cfg := firestoredocs.Config{ProjectID: projectFor(b.Name()), EmulatorHost: host}
	if err := resetProject(ctx, host, cfg.ProjectID); err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { _ = resetProject(context.Background(), host, cfg.ProjectID) })
	s, err := firestoredocs.Open(ctx, cfg)
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { s.Close() })
	data := make([]byte, 512)
	const writers = 8
	var wg sync.WaitGroup
	errs := make(chan error, writers)
	for w := range writers {
		wg.Go(func() {
			for i := w; i < benchDocs; i += writers {
				if err := s.Put(ctx, benchDoc(i, data)); err != nil {
					errs <- err
					return
				}
			}
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		b.Fatal(err)
	}
	return s
}

func benchDoc(i int, data []byte) docs.Doc {
	status := "done"
	if (i/20)%10 == 0 {
		status = "pending"
	}
	return docs.Doc{
		Key:  docs.Key{User: fmt.Sprintf("user%03d", i%20), Collection: "segments", ID: fmt.Sprintf("c%04d#%d", i/20, i%7)},
		Data: data,
		Fields: map[string]any{
			"status":     status,
			"seq":        int64(i / 20),
			"expires_at": int64(1_700_000_000 + i),
		},
	}
}

func BenchmarkPut(b *testing.B) {
	s := benchStore(b)
	data := make([]byte, 512)
	i := 0
	for b.Loop() {
		if err := s.Put(b.Context(), benchDoc(benchDocs+i, data)); err != nil {
			b.Fatal(err)
		}
		i++
	}
}

func BenchmarkGet(b *testing.B) {
	s := benchStore(b)
	i := 0
	for b.Loop() {
		if _, err := s.Get(b.Context(), benchDoc(i%benchDocs, nil).Key); err != nil {
			b.Fatal(err)
		}
		i++
	}
}

func BenchmarkUpdate(b *testing.B) {
	s := benchStore(b)
	i := 0
	for b.Loop() {
		k := benchDoc(i%benchDocs, nil).Key
		err := s.Update(b.Context(), k, func(cur *docs.Doc) (*docs.Doc, error) {
			next := *cur
			next.Fields = map[string]any{"status": "done", "seq": cur.Fields["seq"], "expires_at": cur.Fields["expires_at"]}
			return &next, nil
		})
		if err != nil {
			b.Fatal(err)
		}
		i++
	}
}

func BenchmarkQuery(b *testing.B) {
	s := benchStore(b)
	queries := map[string]docs.Query{
		// One user's pending segments (10 of the user's 100).
		"UserEq": {User: "user007", Collection: "segments",
			Filters: []docs.Filter{{Field: "status", Op: docs.Eq, Value: "pending"}}},
		// One user's last 10 by seq.
		"UserOrderLimit": {User: "user007", Collection: "segments", OrderBy: "seq", Desc: true, Limit: 10},
		// Retention sweep: the 100 oldest expired across all users.
		"AllUsersRange": {AllUsers: true, Collection: "segments", OrderBy: "expires_at", Limit: 100,
			Filters: []docs.Filter{{Field: "expires_at", Op: docs.Lt, Value: int64(1_700_001_000)}}},
		// Sorted in memory: a range on another field than the order.
		"UserRangeOtherOrder": {User: "user007", Collection: "segments", OrderBy: "expires_at", Limit: 10,
			Filters: []docs.Filter{{Field: "seq", Op: docs.Gte, Value: int64(50)}}},
	}
	for name, q := range queries {
		b.Run(name, func(b *testing.B) {
			for b.Loop() {
				got, err := s.Query(b.Context(), q)
				if err != nil || len(got) == 0 {
					b.Fatalf("Query = %d docs, %v", len(got), err)
				}
			}
		})
	}
}

// BenchmarkDeleteUser deletes a user of 100 documents in 1 collection; the
// timer stops while the user is written again.
func BenchmarkDeleteUser(b *testing.B) {
	s := benchStore(b)
	data := make([]byte, 512)
	for b.Loop() {
		b.StopTimer()
		for i := 7; i < benchDocs; i += 20 {
			if err := s.Put(b.Context(), benchDoc(i, data)); err != nil {
				b.Fatal(err)
			}
		}
		b.StartTimer()
		n, err := s.DeleteUser(b.Context(), "user007")
		if err != nil || n != benchDocs/20 {
			b.Fatalf("DeleteUser = %d, %v", n, err)
		}
	}
}
