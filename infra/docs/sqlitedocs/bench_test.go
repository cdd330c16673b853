package sqlitedocs

import (
	"database/sql"
	"fmt"
	"path/filepath"
	"testing"
	"time"

	"github.com/lethe-dev/lethe/infra/docs"
)

const benchDocs = 10_000

// benchStore opens a store with benchDocs documents of 512 bytes spread
// over 100 users, each with status, seq and expires_at fields.
// It seeds in one transaction (Put would fsync 10k times).
func benchStore(b *testing.B) *Driver {
	b.Helper()
	ctx := b.Context()
	s, err := OpenDriver(ctx, filepath.Join(b.TempDir(), "docs.db"))
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { s.Close() })
	data := make([]byte, 512)
	err = s.inTx(ctx, func(tx *sql.Tx) error {
		for i := range benchDocs {
			d := benchDoc(i, data)
			fields, err := docs.ValidateDoc(d)
			if err != nil {
				return err
			}
			d.Fields = fields
			if err := s.putTx(ctx, tx, d, nil, false); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		b.Fatal(err)
	}
	return s
}

func benchDoc(i int, data []byte) docs.Doc {
	status := "done"
	if (i/100)%10 == 0 {
		status = "pending"
	}
	return docs.Doc{
		Key:  docs.Key{User: fmt.Sprintf("user%03d", i%100), Collection: "segments", ID: fmt.Sprintf("c%04d#%d", i/100, i%7)},
		Data: data,
		Fields: map[string]any{
			"status":     status,
			"seq":        int64(i / 100),
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
		k := benchDoc(i%benchDocs, nil).Key
		if _, err := s.Get(b.Context(), k); err != nil {
			b.Fatal(err)
		}
		i++
	}
}

func BenchmarkGetParallel(b *testing.B) {
	s := benchStore(b)
	b.ResetTimer()
	b.RunParallel(func(pb *testing.PB) {
		i := 0
		for pb.Next() {
			if _, err := s.Get(b.Context(), benchDoc(i%benchDocs, nil).Key); err != nil {
				b.Error(err)
				return
			}
			i++
		}
	})
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
			Filters: []docs.Filter{{Field: "expires_at", Op: docs.Lt, Value: int64(1_700_005_000)}}},
	}
	for name, q := range queries {
		b.Run(name, func(b *testing.B) {
			for b.Loop() {
				got, err := s.Query(b.Context(), q, nil)
				if err != nil || len(got) == 0 {
					b.Fatalf("Query = %d docs, %v", len(got), err)
				}
			}
		})
	}
}

// BenchmarkDelete includes the WAL checkpoint each Delete does.
func BenchmarkDelete(b *testing.B) {
	s := benchStore(b)
	i := 0
	for b.Loop() {
		if err := s.Delete(b.Context(), benchDoc(i%benchDocs, nil).Key); err != nil {
			b.Fatal(err)
		}
		i++
	}
}

// BenchmarkDeleteMany deletes pages of 1000 documents (three indexed
// fields each) in one call, as a retention sweep does; it reports docs/s.
// Each page is seeded untimed in one transaction.
func BenchmarkDeleteMany(b *testing.B) {
	s := benchStore(b)
	ctx := b.Context()
	data := make([]byte, 512)
	const page = 1000
	next, deleted := benchDocs, 0
	var took time.Duration
	for b.Loop() {
		b.StopTimer()
		keys := make([]docs.Key, 0, page)
		err := s.inTx(ctx, func(tx *sql.Tx) error {
			for range page {
				d := benchDoc(next, data)
				next++
				fields, err := docs.ValidateDoc(d)
				if err != nil {
					return err
				}
				d.Fields = fields
				if err := s.putTx(ctx, tx, d, nil, false); err != nil {
					return err
				}
				keys = append(keys, d.Key)
			}
			return nil
		})
		if err != nil {
			b.Fatal(err)
		}
		b.StartTimer()
		start := time.Now()
		n, err := s.DeleteMany(ctx, keys)
		took += time.Since(start)
		if err != nil || n != page {
			b.Fatalf("DeleteMany = %d, %v", n, err)
		}
		deleted += n
	}
	b.ReportMetric(float64(deleted)/took.Seconds(), "docs/s")
}
