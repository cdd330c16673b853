// Package docstest is the conformance suite of the documents port. Every
// adapter (SQLite, Firestore) runs it through a Harness; the suite is
// written against docs.Store only.
package docstest

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"maps"
	"math"
	"strings"
	"sync"
	"testing"

	"github.com/lethe-dev/lethe/infra/docs"
)

// Capabilities declares what differs between backends.
type Capabilities struct {
	// MaxDataSize is the largest Data (bytes) the store promises to accept;
	// Data of 4×MaxDataSize must fail with docs.ErrInvalid.
	MaxDataSize int
}

// Harness makes stores for one test. Each Harness has its own place (file,
// emulator project or collection prefix), named from the test's t.Name(),
// so tests can run in parallel against one backend.
type Harness interface {
	// MakeStore opens a store on the harness's place, empty at first.
	MakeStore(ctx context.Context) (docs.Store, error)
	// Reopen closes s and opens the same place again (persistence tests).
	Reopen(ctx context.Context, s docs.Store) (docs.Store, error)
	Capabilities() Capabilities
	// Close releases the place.
	Close()
}

// HarnessMaker makes a Harness for t.
type HarnessMaker func(ctx context.Context, t *testing.T) (Harness, error)

// RunConformanceTests runs the suite against the adapter newHarness makes.
func RunConformanceTests(t *testing.T, newHarness HarnessMaker) {
	t.Helper()
	tests := []struct {
		name string
		fn   func(t *testing.T, f *fixture)
	}{
		{"GetNotFound", testGetNotFound},
		{"PutGetRoundTrip", testPutGetRoundTrip},
		{"PutReplaces", testPutReplaces},
		{"KeyIsolation", testKeyIsolation},
		{"Create", testCreate},
		{"ConcurrentCreate", testConcurrentCreate},
		{"Update", testUpdate},
		{"ConcurrentUpdate", testConcurrentUpdate},
		{"Transact", testTransact},
		{"TransactAtomic", testTransactAtomic},
		{"TransactInvalid", testTransactInvalid},
		{"ConcurrentTransact", testConcurrentTransact},
		{"Delete", testDelete},
		{"DeleteMany", testDeleteMany},
		{"Query", testQuery},
		{"QueryAllUsers", testQueryAllUsers},
		{"QueryPage", testQueryPage},
		{"QueryPageInvalidCursor", testQueryPageInvalidCursor},
		{"DeleteUser", testDeleteUser},
		{"Persistence", testPersistence},
		{"InvalidKeys", testInvalidKeys},
		{"InvalidFields", testInvalidFields},
		{"InvalidQueries", testInvalidQueries},
		{"DataSize", testDataSize},
		{"CanceledContext", testCanceledContext},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			tc.fn(t, newFixture(t, newHarness))
		})
	}
}

// fixture holds the harness and the current store of one test.
type fixture struct {
	ctx context.Context
	h   Harness
	s   docs.Store
}

func newFixture(t *testing.T, newHarness HarnessMaker) *fixture {
	t.Helper()
	ctx := t.Context()
	h, err := newHarness(ctx, t)
	if err != nil {
		t.Fatalf("newHarness: %v", err)
	}
	f := &fixture{ctx: ctx, h: h}
	t.Cleanup(h.Close)
	s, err := h.MakeStore(ctx)
	if err != nil {
		t.Fatalf("MakeStore: %v", err)
	}
	f.s = s
	t.Cleanup(func() {
		if f.s.Valid() {
			if err := f.s.Close(); err != nil {
				t.Errorf("Close: %v", err)
			}
		}
	})
	return f
}

func (f *fixture) reopen(t *testing.T) {
	t.Helper()
	s, err := f.h.Reopen(f.ctx, f.s)
	f.s = docs.Store{}
	if err != nil {
		t.Fatalf("Reopen: %v", err)
	}
	f.s = s
}

func (f *fixture) put(t *testing.T, d docs.Doc) {
	t.Helper()
	if err := f.s.Put(f.ctx, d); err != nil {
		t.Fatalf("Put(%v): %v", d.Key, err)
	}
}

func (f *fixture) mustGet(t *testing.T, k docs.Key) docs.Doc {
	t.Helper()
	d, err := f.s.Get(f.ctx, k)
	if err != nil {
		t.Fatalf("Get(%v): %v", k, err)
	}
	return d
}

func (f *fixture) wantNotFound(t *testing.T, k docs.Key) {
	t.Helper()
	if _, err := f.s.Get(f.ctx, k); !errors.Is(err, docs.ErrNotFound) {
		t.Fatalf("Get(%v) = %v, want ErrNotFound", k, err)
	}
}

// wantDoc compares key, data and fields exactly (nil and empty are equal;
// an int64 field must come back as int64).
func wantDoc(t *testing.T, got, want docs.Doc) {
	t.Helper()
	if got.Key != want.Key {
		t.Errorf("key = %v, want %v", got.Key, want.Key)
	}
	if !bytes.Equal(got.Data, want.Data) {
		t.Errorf("%v: data = %q, want %q", want.Key, trunc(got.Data), trunc(want.Data))
	}
	wf := normFields(want.Fields)
	if len(got.Fields) != len(wf) {
		t.Errorf("%v: fields = %#v, want %#v", want.Key, got.Fields, wf)
		return
	}
	for k, wv := range wf {
		gv, ok := got.Fields[k]
		if !ok || gv != wv {
			t.Errorf("%v: field %q = %#v (%T), want %#v (%T)", want.Key, k, gv, gv, wv, wv)
		}
	}
}

func trunc(b []byte) []byte {
	if len(b) > 64 {
		return b[:64]
	}
	return b
}

// normFields converts int to int64, as stores must.
func normFields(m map[string]any) map[string]any {
	out := make(map[string]any, len(m))
	for k, v := range m {
		if i, ok := v.(int); ok {
			v = int64(i)
		}
		out[k] = v
	}
	return out
}

func ids(ds []docs.Doc) []string {
	out := make([]string, len(ds))
	for i, d := range ds {
		if d.Key.User != "" {
			out[i] = d.Key.User + "/" + d.Key.ID
		} else {
			out[i] = d.Key.ID
		}
	}
	return out
}

func key(user, coll, id string) docs.Key { return docs.Key{User: user, Collection: coll, ID: id} }

func testGetNotFound(t *testing.T, f *fixture) {
	f.wantNotFound(t, key("u1", "things", "missing"))
	f.wantNotFound(t, key("", "things", "missing"))
	f.put(t, docs.Doc{Key: key("u1", "things", "present"), Data: []byte("x")})
	f.wantNotFound(t, key("u1", "things", "presen"))
	f.wantNotFound(t, key("u1", "thing", "present"))
	f.wantNotFound(t, key("u2", "things", "present"))
	f.wantNotFound(t, key("", "things", "present"))
}

func testPutGetRoundTrip(t *testing.T, f *fixture) {
	all := make([]byte, 256)
	for i := range all {
		all[i] = byte(i)
	}
	cases := []docs.Doc{
		{Key: key("u1", "things", "bytes"), Data: all},
		{Key: key("u1", "things", "empty")},
		{Key: key("", "tombstones", "global-1"), Data: []byte(`{"a":1}`)},
		{Key: key("u1", "things", "fields"), Data: []byte(`{}`), Fields: map[string]any{
			"max":      int64(math.MaxInt64),
			"min":      int64(math.MinInt64),
			"zero":     int64(0),
			"neg":      int64(-1),
			"big":      int64(1<<53 + 1), // not representable as float64
			"plainint": 42,               // int is accepted and comes back int64
			"s":        "héllo, wörld ✓",
			"empty":    "",
			"digits":   "123",
		}},
		{Key: key("u1", "c_.:#-", "A-z_0.9:#x"), Data: []byte("charset")},
		{Key: key(strings.Repeat("u", 256), strings.Repeat("c", 256), strings.Repeat("i", 256)), Data: []byte("long")},
	}
	for _, d := range cases {
		f.put(t, d)
	}
	for _, d := range cases {
		wantDoc(t, f.mustGet(t, d.Key), d)
	}
	// The store must not keep a reference to the caller's slices or maps.
	d := docs.Doc{Key: key("u1", "things", "alias"), Data: []byte("before"), Fields: map[string]any{"s": "before"}}
	f.put(t, d)
	copy(d.Data, "after!")
	d.Fields["s"] = "after"
	got := f.mustGet(t, d.Key)
	wantDoc(t, got, docs.Doc{Key: d.Key, Data: []byte("before"), Fields: map[string]any{"s": "before"}})
}

func testPutReplaces(t *testing.T, f *fixture) {
	k := key("u1", "things", "a")
	f.put(t, docs.Doc{Key: k, Data: []byte("v1"), Fields: map[string]any{"status": "old", "gone": int64(1)}})
	f.put(t, docs.Doc{Key: k, Data: []byte("v2"), Fields: map[string]any{"status": "new"}})
	wantDoc(t, f.mustGet(t, k), docs.Doc{Key: k, Data: []byte("v2"), Fields: map[string]any{"status": "new"}})
	// The replaced values must be gone from the index too.
	for _, fl := range []docs.Filter{{Field: "status", Op: docs.Eq, Value: "old"}, {Field: "gone", Op: docs.Eq, Value: int64(1)}} {
		got, err := f.s.Query(f.ctx, docs.Query{User: "u1", Collection: "things", Filters: []docs.Filter{fl}})
		if err != nil {
			t.Fatalf("Query: %v", err)
		}
		if len(got) != 0 {
			t.Errorf("Query %v after replace = %v, want none", fl, ids(got))
		}
	}
}

func testKeyIsolation(t *testing.T, f *fixture) {
	keys := []docs.Key{
		key("u1", "a", "x"), key("u1", "b", "x"), key("u2", "a", "x"),
		key("u10", "a", "x"), key("", "a", "x"), key("u1", "a", "x1"),
	}
	for i, k := range keys {
		f.put(t, docs.Doc{Key: k, Data: fmt.Appendf(nil, "doc-%d", i)})
	}
	for i, k := range keys {
		wantDoc(t, f.mustGet(t, k), docs.Doc{Key: k, Data: fmt.Appendf(nil, "doc-%d", i)})
	}
	if err := f.s.Delete(f.ctx, keys[0]); err != nil {
		t.Fatalf("Delete: %v", err)
	}
	f.wantNotFound(t, keys[0])
	for i, k := range keys[1:] {
		wantDoc(t, f.mustGet(t, k), docs.Doc{Key: k, Data: fmt.Appendf(nil, "doc-%d", i+1)})
	}
}

func testCreate(t *testing.T, f *fixture) {
	k := key("", "idempotency", "event-1")
	first := docs.Doc{Key: k, Data: []byte("first"), Fields: map[string]any{"n": int64(1)}}
	if err := f.s.Create(f.ctx, first); err != nil {
		t.Fatalf("Create: %v", err)
	}
	err := f.s.Create(f.ctx, docs.Doc{Key: k, Data: []byte("second")})
	if !errors.Is(err, docs.ErrAlreadyExists) {
		t.Fatalf("second Create = %v, want ErrAlreadyExists", err)
	}
	wantDoc(t, f.mustGet(t, k), first)
	// Same id under another user or collection is another document.
	for _, other := range []docs.Key{key("u1", "idempotency", "event-1"), key("", "idempotency2", "event-1")} {
		if err := f.s.Create(f.ctx, docs.Doc{Key: other}); err != nil {
			t.Errorf("Create(%v): %v", other, err)
		}
	}
	if err := f.s.Delete(f.ctx, k); err != nil {
		t.Fatalf("Delete: %v", err)
	}
	if err := f.s.Create(f.ctx, docs.Doc{Key: k, Data: []byte("again")}); err != nil {
		t.Fatalf("Create after Delete: %v", err)
	}
	wantDoc(t, f.mustGet(t, k), docs.Doc{Key: k, Data: []byte("again")})
}

func testConcurrentCreate(t *testing.T, f *fixture) {
	const n = 10
	k := key("u1", "markers", "m")
	errs := make([]error, n)
	var wg sync.WaitGroup
	for i := range n {
		wg.Go(func() {
			errs[i] = f.s.Create(f.ctx, docs.Doc{Key: k, Data: fmt.Appendf(nil, "w%d", i)})
		})
	}
	wg.Wait()
	winner := -1
	for i, err := range errs {
		switch {
		case err == nil && winner >= 0:
			t.Errorf("Create %d and %d both succeeded", winner, i)
		case err == nil:
			winner = i
		case !errors.Is(err, docs.ErrAlreadyExists):
			t.Errorf("Create %d = %v, want nil or ErrAlreadyExists", i, err)
		}
	}
	if winner < 0 {
		t.Fatal("no Create succeeded")
	}
	wantDoc(t, f.mustGet(t, k), docs.Doc{Key: k, Data: fmt.Appendf(nil, "w%d", winner)})
}

func testUpdate(t *testing.T, f *fixture) {
	k := key("u1", "counters", "c")

	// Absent, fn returns nil: stays absent.
	calls := 0
	err := f.s.Update(f.ctx, k, func(cur *docs.Doc) (*docs.Doc, error) {
		calls++
		if cur != nil {
			t.Errorf("cur = %v, want nil", cur.Key)
		}
		return nil, nil
	})
	if err != nil || calls == 0 {
		t.Fatalf("Update (noop on absent) = %v after %d calls", err, calls)
	}
	f.wantNotFound(t, k)

	// Absent: create. The returned doc may leave Key empty.
	err = f.s.Update(f.ctx, k, func(cur *docs.Doc) (*docs.Doc, error) {
		if cur != nil {
			return nil, fmt.Errorf("cur = %v, want nil", cur.Key)
		}
		return &docs.Doc{Data: []byte("1"), Fields: map[string]any{"n": int64(1), "status": "new"}}, nil
	})
	if err != nil {
		t.Fatalf("Update (create): %v", err)
	}
	wantDoc(t, f.mustGet(t, k), docs.Doc{Key: k, Data: []byte("1"), Fields: map[string]any{"n": int64(1), "status": "new"}})

	// Present: modify what fn sees.
	err = f.s.Update(f.ctx, k, func(cur *docs.Doc) (*docs.Doc, error) {
		if cur == nil {
			return nil, errors.New("cur = nil, want the document")
		}
		wantDoc(t, *cur, docs.Doc{Key: k, Data: []byte("1"), Fields: map[string]any{"n": int64(1), "status": "new"}})
		next := *cur
		next.Data = append([]byte(nil), "2"...)
		next.Fields = maps.Clone(cur.Fields)
		next.Fields["n"] = cur.Fields["n"].(int64) + 1
		delete(next.Fields, "status")
		return &next, nil
	})
	if err != nil {
		t.Fatalf("Update (modify): %v", err)
	}
	wantDoc(t, f.mustGet(t, k), docs.Doc{Key: k, Data: []byte("2"), Fields: map[string]any{"n": int64(2)}})
	got, err := f.s.Query(f.ctx, docs.Query{User: "u1", Collection: "counters", Filters: []docs.Filter{{Field: "status", Op: docs.Eq, Value: "new"}}})
	if err != nil || len(got) != 0 {
		t.Errorf("Query removed field = %v, %v; want none", ids(got), err)
	}

	// An error from fn aborts with no write and comes back as is.
	errAbort := errors.New("abort")
	err = f.s.Update(f.ctx, k, func(cur *docs.Doc) (*docs.Doc, error) {
		return &docs.Doc{Key: k, Data: []byte("never")}, errAbort
	})
	if err != errAbort { //nolint:errorlint // "returned as is"
		t.Fatalf("Update (abort) = %v, want the fn's error as is", err)
	}
	wantDoc(t, f.mustGet(t, k), docs.Doc{Key: k, Data: []byte("2"), Fields: map[string]any{"n": int64(2)}})

	// An invalid document from fn: ErrInvalid, no write.
	err = f.s.Update(f.ctx, k, func(cur *docs.Doc) (*docs.Doc, error) {
		return &docs.Doc{Key: k, Data: []byte("bad"), Fields: map[string]any{"f": 1.5}}, nil
	})
	if !errors.Is(err, docs.ErrInvalid) {
		t.Fatalf("Update (invalid field) = %v, want ErrInvalid", err)
	}
	wantDoc(t, f.mustGet(t, k), docs.Doc{Key: k, Data: []byte("2"), Fields: map[string]any{"n": int64(2)}})

	// Present, fn returns nil: delete.
	err = f.s.Update(f.ctx, k, func(cur *docs.Doc) (*docs.Doc, error) {
		if cur == nil {
			return nil, errors.New("cur = nil before delete")
		}
		return nil, nil
	})
	if err != nil {
		t.Fatalf("Update (delete): %v", err)
	}
	f.wantNotFound(t, k)
}

func testConcurrentUpdate(t *testing.T, f *fixture) {
	const workers, each = 20, 5
	k := key("u1", "counters", "shared")
	var wg sync.WaitGroup
	errs := make(chan error, workers*each)
	for range workers {
		wg.Go(func() {
			for range each {
				errs <- f.s.Update(f.ctx, k, func(cur *docs.Doc) (*docs.Doc, error) {
					n := int64(0)
					if cur != nil {
						n = cur.Fields["n"].(int64)
					}
					n++
					return &docs.Doc{Key: k, Data: fmt.Appendf(nil, "%d", n), Fields: map[string]any{"n": n}}, nil
				})
			}
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		if err != nil {
			t.Errorf("Update: %v", err)
		}
	}
	want := int64(workers * each)
	wantDoc(t, f.mustGet(t, k), docs.Doc{Key: k, Data: fmt.Appendf(nil, "%d", want), Fields: map[string]any{"n": want}})
}

func testTransact(t *testing.T, f *fixture) {
	a, b, c := key("u1", "things", "a"), key("u1", "things", "b"), key("u2", "other", "c")
	f.put(t, docs.Doc{Key: c, Data: []byte("old c"), Fields: map[string]any{"status": "old", "gone": "soon"}})
	var seen []*docs.Doc
	err := f.s.Transact(f.ctx, []docs.Key{a, c}, func(cur []*docs.Doc) ([]docs.Write, error) {
		seen = cur
		return []docs.Write{
			{Doc: docs.Doc{Key: a, Data: []byte("new a"), Fields: map[string]any{"status": "new", "n": 1}}, Create: true},
			{Doc: docs.Doc{Key: b, Data: []byte("new b")}},
			// Replaced: "gone" is no longer indexed, "status" changed.
			{Doc: docs.Doc{Key: c, Data: []byte("new c"), Fields: map[string]any{"status": "new"}}},
		}, nil
	})
	if err != nil {
		t.Fatalf("Transact: %v", err)
	}
	if len(seen) != 2 || seen[0] != nil || seen[1] == nil || string(seen[1].Data) != "old c" {
		t.Fatalf("Transact read %v, want [nil, old c]", seen)
	}
	wantDoc(t, f.mustGet(t, a), docs.Doc{Key: a, Data: []byte("new a"), Fields: map[string]any{"status": "new", "n": int64(1)}})
	wantDoc(t, f.mustGet(t, b), docs.Doc{Key: b, Data: []byte("new b"), Fields: map[string]any{}})
	wantDoc(t, f.mustGet(t, c), docs.Doc{Key: c, Data: []byte("new c"), Fields: map[string]any{"status": "new"}})
	for _, tc := range []struct {
		user, coll string
		filter     docs.Filter
		want       int
	}{
		{"u2", "other", docs.Filter{Field: "gone", Op: docs.Eq, Value: "soon"}, 0},
		{"u2", "other", docs.Filter{Field: "status", Op: docs.Eq, Value: "old"}, 0},
		{"u2", "other", docs.Filter{Field: "status", Op: docs.Eq, Value: "new"}, 1},
		{"u1", "things", docs.Filter{Field: "n", Op: docs.Eq, Value: 1}, 1},
	} {
		got, err := f.s.Query(f.ctx, docs.Query{User: tc.user, Collection: tc.coll, Filters: []docs.Filter{tc.filter}})
		if err != nil || len(got) != tc.want {
			t.Errorf("Query %s %v = %v, %v; want %d", tc.coll, tc.filter, ids(got), err, tc.want)
		}
	}
	// A delete, and a write of a document it did not read.
	err = f.s.Transact(f.ctx, nil, func(cur []*docs.Doc) ([]docs.Write, error) {
		return []docs.Write{{Doc: docs.Doc{Key: a}, Delete: true}, {Doc: docs.Doc{Key: b}, Delete: true}}, nil
	})
	if err != nil {
		t.Fatalf("Transact delete: %v", err)
	}
	f.wantNotFound(t, a)
	f.wantNotFound(t, b)
}

// testTransactAtomic: a failed transaction writes nothing, whether fn fails
// or a Create finds a document (read first or not).
func testTransactAtomic(t *testing.T, f *fixture) {
	a, c := key("u1", "things", "a"), key("u1", "things", "c")
	f.put(t, docs.Doc{Key: c, Data: []byte("c")})
	boom := errors.New("boom")
	for _, tc := range []struct {
		name string
		read []docs.Key
		fn   func(cur []*docs.Doc) ([]docs.Write, error)
		want error
	}{
		{"fn fails", []docs.Key{a}, func([]*docs.Doc) ([]docs.Write, error) { return nil, boom }, boom},
		{"create over a read document", []docs.Key{c}, func([]*docs.Doc) ([]docs.Write, error) {
			return []docs.Write{{Doc: docs.Doc{Key: a, Data: []byte("a")}}, {Doc: docs.Doc{Key: c, Data: []byte("c2")}, Create: true}}, nil
		}, docs.ErrAlreadyExists},
		{"create over an unread document", nil, func([]*docs.Doc) ([]docs.Write, error) {
			return []docs.Write{{Doc: docs.Doc{Key: a, Data: []byte("a")}}, {Doc: docs.Doc{Key: c, Data: []byte("c2")}, Create: true}}, nil
		}, docs.ErrAlreadyExists},
	} {
		t.Run(tc.name, func(t *testing.T) {
			err := f.s.Transact(f.ctx, tc.read, tc.fn)
			if !errors.Is(err, tc.want) {
				t.Fatalf("Transact = %v, want %v", err, tc.want)
			}
			if tc.want == boom && err != boom {
				t.Errorf("fn's error came back as %v, want it as is", err)
			}
			f.wantNotFound(t, a)
			wantDoc(t, f.mustGet(t, c), docs.Doc{Key: c, Data: []byte("c"), Fields: map[string]any{}})
		})
	}
}

func testTransactInvalid(t *testing.T, f *fixture) {
	a := key("u1", "things", "a")
	tooMany := make([]docs.Key, docs.MaxTransactReads+1)
	for i := range tooMany {
		tooMany[i] = key("u1", "things", fmt.Sprintf("k%d", i))
	}
	ok := func([]*docs.Doc) ([]docs.Write, error) { return nil, nil }
	for _, tc := range []struct {
		name string
		read []docs.Key
		fn   func(cur []*docs.Doc) ([]docs.Write, error)
	}{
		{"too many reads", tooMany, ok},
		{"invalid read key", []docs.Key{key("u1", "a/b", "x")}, ok},
		{"same key twice", nil, func([]*docs.Doc) ([]docs.Write, error) {
			return []docs.Write{{Doc: docs.Doc{Key: a, Data: []byte("1")}}, {Doc: docs.Doc{Key: a, Data: []byte("2")}}}, nil
		}},
		{"create and delete", nil, func([]*docs.Doc) ([]docs.Write, error) {
			return []docs.Write{{Doc: docs.Doc{Key: a}, Create: true, Delete: true}}, nil
		}},
		{"invalid field", nil, func([]*docs.Doc) ([]docs.Write, error) {
			return []docs.Write{{Doc: docs.Doc{Key: a, Fields: map[string]any{"f": 1.5}}}}, nil
		}},
		{"too many writes", nil, func([]*docs.Doc) ([]docs.Write, error) {
			ws := make([]docs.Write, docs.MaxBatch+1)
			for i := range ws {
				ws[i] = docs.Write{Doc: docs.Doc{Key: key("u1", "things", fmt.Sprintf("w%d", i))}}
			}
			return ws, nil
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if err := f.s.Transact(f.ctx, tc.read, tc.fn); !errors.Is(err, docs.ErrInvalid) {
				t.Fatalf("Transact = %v, want docs.ErrInvalid", err)
			}
			f.wantNotFound(t, a)
		})
	}
}

// testConcurrentTransact: transactions that read and bump one counter and
// each create their own document lose no update and no document.
func testConcurrentTransact(t *testing.T, f *fixture) {
	const workers, each = 10, 4
	counter := key("u1", "counters", "shared")
	var wg sync.WaitGroup
	errs := make(chan error, workers*each)
	for w := range workers {
		wg.Go(func() {
			for i := range each {
				own := key("u1", "items", fmt.Sprintf("w%d-%d", w, i))
				errs <- f.s.Transact(f.ctx, []docs.Key{counter, own}, func(cur []*docs.Doc) ([]docs.Write, error) {
					n := int64(0)
					if cur[0] != nil {
						n = cur[0].Fields["n"].(int64)
					}
					n++
					return []docs.Write{
						{Doc: docs.Doc{Key: counter, Data: fmt.Appendf(nil, "%d", n), Fields: map[string]any{"n": n}}},
						{Doc: docs.Doc{Key: own, Data: []byte("x")}, Create: true},
					}, nil
				})
			}
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		if err != nil {
			t.Errorf("Transact: %v", err)
		}
	}
	want := int64(workers * each)
	wantDoc(t, f.mustGet(t, counter), docs.Doc{Key: counter, Data: fmt.Appendf(nil, "%d", want), Fields: map[string]any{"n": want}})
	got, err := f.s.Query(f.ctx, docs.Query{User: "u1", Collection: "items"})
	if err != nil || len(got) != workers*each {
		t.Fatalf("Query items = %d, %v; want %d", len(got), err, workers*each)
	}
}

func testDelete(t *testing.T, f *fixture) {
	k := key("u1", "things", "d")
	if err := f.s.Delete(f.ctx, k); err != nil {
		t.Fatalf("Delete absent: %v", err)
	}
	f.put(t, docs.Doc{Key: k, Data: []byte("x"), Fields: map[string]any{"status": "s"}})
	for i := range 2 {
		if err := f.s.Delete(f.ctx, k); err != nil {
			t.Fatalf("Delete #%d: %v", i, err)
		}
		f.wantNotFound(t, k)
	}
	got, err := f.s.Query(f.ctx, docs.Query{User: "u1", Collection: "things"})
	if err != nil || len(got) != 0 {
		t.Errorf("Query after Delete = %v, %v; want none", ids(got), err)
	}
}

func testDeleteMany(t *testing.T, f *fixture) {
	// Empty: nothing to do.
	if n, err := f.s.DeleteMany(f.ctx, nil); err != nil || n != 0 {
		t.Fatalf("DeleteMany(nil) = %d, %v", n, err)
	}
	// More than one Firestore batch, across users, collections and the
	// global user, with absent keys and a duplicate in the request.
	const many = docs.MaxBatch + 20
	var del []docs.Key
	for i := range many {
		k := key([]string{"u1", "u2", ""}[i%3], []string{"things", "expiries"}[i%2], fmt.Sprintf("d%04d", i))
		f.put(t, docs.Doc{Key: k, Data: []byte("x"), Fields: map[string]any{"expires_at": int64(i)}})
		del = append(del, k)
	}
	keep := []docs.Key{key("u1", "things", "keep"), key("u3", "things", "d0000"), key("u2", "expiries", "d0000")}
	for _, k := range keep {
		f.put(t, docs.Doc{Key: k, Data: []byte("k"), Fields: map[string]any{"expires_at": int64(0)}})
	}
	req := append(append([]docs.Key{}, del...), key("u1", "things", "absent"), del[3])
	n, err := f.s.DeleteMany(f.ctx, req)
	if err != nil || n != many {
		t.Fatalf("DeleteMany = %d, %v; want %d", n, err, many)
	}
	for _, k := range []docs.Key{del[0], del[1], del[2], del[many-1]} {
		f.wantNotFound(t, k)
	}
	for _, k := range keep {
		f.mustGet(t, k)
	}
	// The indexed fields went with the documents.
	got, err := f.s.Query(f.ctx, docs.Query{AllUsers: true, Collection: "expiries", OrderBy: "expires_at"})
	if err != nil || !equal(ids(got), []string{"u2/d0000"}) {
		t.Errorf("Query after DeleteMany = %v, %v; want [u2/d0000]", ids(got), err)
	}
	// Again: idempotent, nothing counted.
	if n, err := f.s.DeleteMany(f.ctx, del); err != nil || n != 0 {
		t.Errorf("second DeleteMany = %d, %v; want 0", n, err)
	}
	// One invalid key: refused before anything is deleted.
	n, err = f.s.DeleteMany(f.ctx, []docs.Key{keep[0], key("u1", "a/b", "x")})
	if !errors.Is(err, docs.ErrInvalid) || n != 0 {
		t.Errorf("DeleteMany with an invalid key = %d, %v; want ErrInvalid", n, err)
	}
	f.mustGet(t, keep[0])
}

// seedQuery writes, for users u1, u10, u2 and the global user, documents
// d0..d9 of "items" with n = i, status = even|odd, and expires_at; u1 also
// has documents without fields, with a string "n", and in another
// collection.
func seedQuery(t *testing.T, f *fixture) {
	t.Helper()
	for _, u := range []string{"u1", "u10", "u2", ""} {
		for i := range 10 {
			status := "even"
			if i%2 == 1 {
				status = "odd"
			}
			f.put(t, docs.Doc{
				Key:  key(u, "items", fmt.Sprintf("d%d", i)),
				Data: fmt.Appendf(nil, "%s-%d", u, i),
				Fields: map[string]any{
					"n":          int64(i),
					"status":     status,
					"expires_at": int64(1000*i) + int64(len(u)), // u1 and u2 tie: order by key
				},
			})
		}
	}
	f.put(t, docs.Doc{Key: key("u1", "items", "nofields"), Data: []byte("nf")})
	f.put(t, docs.Doc{Key: key("u1", "items", "strn"), Data: []byte("sn"), Fields: map[string]any{"n": "5", "status": "odd"}})
	f.put(t, docs.Doc{Key: key("u1", "other", "d1"), Data: []byte("other"), Fields: map[string]any{"n": int64(1), "status": "odd"}})
}

func testQuery(t *testing.T, f *fixture) {
	seedQuery(t, f)
	eq := func(fl string, v any) docs.Filter { return docs.Filter{Field: fl, Op: docs.Eq, Value: v} }
	cases := []struct {
		name string
		q    docs.Query
		want []string
	}{
		{"all by id", docs.Query{User: "u1", Collection: "items"},
			[]string{"u1/d0", "u1/d1", "u1/d2", "u1/d3", "u1/d4", "u1/d5", "u1/d6", "u1/d7", "u1/d8", "u1/d9", "u1/nofields", "u1/strn"}},
		{"all by id desc limit", docs.Query{User: "u1", Collection: "items", Desc: true, Limit: 3},
			[]string{"u1/strn", "u1/nofields", "u1/d9"}},
		{"eq string", docs.Query{User: "u1", Collection: "items", Filters: []docs.Filter{eq("status", "odd")}},
			[]string{"u1/d1", "u1/d3", "u1/d5", "u1/d7", "u1/d9", "u1/strn"}},
		{"eq int", docs.Query{User: "u1", Collection: "items", Filters: []docs.Filter{eq("n", int64(5))}},
			[]string{"u1/d5"}},
		{"eq plain int", docs.Query{User: "u1", Collection: "items", Filters: []docs.Filter{eq("n", 5)}},
			[]string{"u1/d5"}},
		{"eq string never matches int", docs.Query{User: "u1", Collection: "items", Filters: []docs.Filter{eq("n", "5")}},
			[]string{"u1/strn"}},
		{"lt", docs.Query{User: "u1", Collection: "items", Filters: []docs.Filter{{Field: "n", Op: docs.Lt, Value: int64(2)}}},
			[]string{"u1/d0", "u1/d1"}},
		{"lte", docs.Query{User: "u1", Collection: "items", Filters: []docs.Filter{{Field: "n", Op: docs.Lte, Value: int64(2)}}},
			[]string{"u1/d0", "u1/d1", "u1/d2"}},
		{"gt int excludes strings", docs.Query{User: "u1", Collection: "items", Filters: []docs.Filter{{Field: "n", Op: docs.Gt, Value: int64(7)}}},
			[]string{"u1/d8", "u1/d9"}},
		{"gte", docs.Query{User: "u1", Collection: "items", Filters: []docs.Filter{{Field: "n", Op: docs.Gte, Value: int64(8)}}},
			[]string{"u1/d8", "u1/d9"}},
		{"lt string excludes ints", docs.Query{User: "u1", Collection: "items", Filters: []docs.Filter{{Field: "n", Op: docs.Lt, Value: "9"}}},
			[]string{"u1/strn"}},
		{"range", docs.Query{User: "u1", Collection: "items", Filters: []docs.Filter{
			{Field: "n", Op: docs.Gte, Value: int64(3)}, {Field: "n", Op: docs.Lt, Value: int64(6)}}},
			[]string{"u1/d3", "u1/d4", "u1/d5"}},
		{"range and eq", docs.Query{User: "u1", Collection: "items", Filters: []docs.Filter{
			{Field: "n", Op: docs.Gte, Value: int64(3)}, {Field: "n", Op: docs.Lt, Value: int64(8)}, eq("status", "even")}},
			[]string{"u1/d4", "u1/d6"}},
		{"order asc", docs.Query{User: "u1", Collection: "items", OrderBy: "expires_at", Filters: []docs.Filter{{Field: "n", Op: docs.Lt, Value: int64(3)}}},
			[]string{"u1/d0", "u1/d1", "u1/d2"}},
		{"order desc limit", docs.Query{User: "u1", Collection: "items", OrderBy: "n", Desc: true, Limit: 3, Filters: []docs.Filter{{Field: "n", Op: docs.Lt, Value: int64(100)}}},
			[]string{"u1/d9", "u1/d8", "u1/d7"}},
		{"order skips docs without the field, ints before strings", docs.Query{User: "u1", Collection: "items", OrderBy: "n"},
			[]string{"u1/d0", "u1/d1", "u1/d2", "u1/d3", "u1/d4", "u1/d5", "u1/d6", "u1/d7", "u1/d8", "u1/d9", "u1/strn"}},
		{"order ties broken by key", docs.Query{User: "u1", Collection: "items", OrderBy: "status", Limit: 7},
			[]string{"u1/d0", "u1/d2", "u1/d4", "u1/d6", "u1/d8", "u1/d1", "u1/d3"}},
		{"order desc ties broken by key desc", docs.Query{User: "u1", Collection: "items", OrderBy: "status", Desc: true, Limit: 3},
			[]string{"u1/strn", "u1/d9", "u1/d7"}},
		{"limit", docs.Query{User: "u1", Collection: "items", OrderBy: "n", Limit: 2},
			[]string{"u1/d0", "u1/d1"}},
		{"unknown field", docs.Query{User: "u1", Collection: "items", Filters: []docs.Filter{eq("nope", "x")}},
			nil},
		{"unknown collection", docs.Query{User: "u1", Collection: "nothing"},
			nil},
		{"collection isolation", docs.Query{User: "u1", Collection: "other"},
			[]string{"u1/d1"}},
		{"user isolation u10", docs.Query{User: "u10", Collection: "items", Filters: []docs.Filter{eq("n", int64(1))}},
			[]string{"u10/d1"}},
		{"unknown user", docs.Query{User: "u3", Collection: "items"},
			nil},
		{"global only", docs.Query{Collection: "items", Filters: []docs.Filter{{Field: "n", Op: docs.Gte, Value: int64(8)}}},
			[]string{"d8", "d9"}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			got, err := f.s.Query(f.ctx, tc.q)
			if err != nil {
				t.Fatalf("Query: %v", err)
			}
			if g := ids(got); !equal(g, tc.want) {
				t.Errorf("Query = %v, want %v", g, tc.want)
			}
			for _, d := range got {
				if d.Key.Collection != tc.q.Collection {
					t.Errorf("%v: collection = %q", d.Key, d.Key.Collection)
				}
				if !tc.q.AllUsers && d.Key.User != tc.q.User {
					t.Errorf("%v: user %q leaked into a query for %q", d.Key, d.Key.User, tc.q.User)
				}
			}
		})
	}
	// Results carry data and fields.
	got, err := f.s.Query(f.ctx, docs.Query{User: "u2", Collection: "items", Filters: []docs.Filter{eq("n", int64(3))}})
	if err != nil || len(got) != 1 {
		t.Fatalf("Query u2 n=3 = %v, %v", ids(got), err)
	}
	wantDoc(t, got[0], docs.Doc{Key: key("u2", "items", "d3"), Data: []byte("u2-3"),
		Fields: map[string]any{"n": int64(3), "status": "odd", "expires_at": int64(3002)}})
}

func testQueryAllUsers(t *testing.T, f *fixture) {
	seedQuery(t, f)
	cases := []struct {
		name string
		q    docs.Query
		want []string
	}{
		{"expired, oldest first", docs.Query{AllUsers: true, Collection: "items", OrderBy: "expires_at",
			Filters: []docs.Filter{{Field: "expires_at", Op: docs.Lt, Value: int64(1003)}}},
			[]string{"d0", "u1/d0", "u2/d0", "u10/d0", "d1", "u1/d1", "u2/d1"}},
		{"newest first with limit", docs.Query{AllUsers: true, Collection: "items", OrderBy: "expires_at", Desc: true, Limit: 3},
			[]string{"u10/d9", "u2/d9", "u1/d9"}},
		{"by key", docs.Query{AllUsers: true, Collection: "items", Filters: []docs.Filter{{Field: "n", Op: docs.Eq, Value: int64(4)}}},
			[]string{"d4", "u1/d4", "u10/d4", "u2/d4"}},
		{"other collection", docs.Query{AllUsers: true, Collection: "other"},
			[]string{"u1/d1"}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			got, err := f.s.Query(f.ctx, tc.q)
			if err != nil {
				t.Fatalf("Query: %v", err)
			}
			if g := ids(got); !equal(g, tc.want) {
				t.Errorf("Query = %v, want %v", g, tc.want)
			}
		})
	}
}

// testQueryPage pages every kind of query (by key, by a field with ties,
// mixed int and string values, descending, across users with global
// documents, a range on another field than the order) one, two and three
// documents at a time: the pages together are the whole result in order,
// each page but the last is full, and the last has no next cursor.
func testQueryPage(t *testing.T, f *fixture) {
	seedQuery(t, f)
	lt := func(fl string, v int64) docs.Filter { return docs.Filter{Field: fl, Op: docs.Lt, Value: v} }
	queries := map[string]docs.Query{
		"by id":                  {User: "u1", Collection: "items"},
		"by id desc":             {User: "u1", Collection: "items", Desc: true},
		"by status ties":         {User: "u1", Collection: "items", OrderBy: "status"},
		"by status desc ties":    {User: "u1", Collection: "items", OrderBy: "status", Desc: true},
		"ints then strings":      {User: "u1", Collection: "items", OrderBy: "n"},
		"ints then strings desc": {User: "u1", Collection: "items", OrderBy: "n", Desc: true},
		"filtered order":         {User: "u2", Collection: "items", OrderBy: "n", Filters: []docs.Filter{lt("n", 7)}},
		"range on another field": {User: "u1", Collection: "items", OrderBy: "status",
			Filters: []docs.Filter{lt("n", 8)}},
		"all users by key":      {AllUsers: true, Collection: "items", Filters: []docs.Filter{{Field: "n", Op: docs.Eq, Value: int64(4)}}},
		"all users expiry":      {AllUsers: true, Collection: "items", OrderBy: "expires_at", Filters: []docs.Filter{lt("expires_at", 4000)}},
		"all users expiry desc": {AllUsers: true, Collection: "items", OrderBy: "expires_at", Desc: true},
		"global":                {Collection: "items", OrderBy: "n"},
	}
	for name, q := range queries {
		t.Run(name, func(t *testing.T) {
			full, err := f.s.Query(f.ctx, q)
			if err != nil {
				t.Fatalf("Query: %v", err)
			}
			if len(full) < 4 {
				t.Fatalf("Query = %v: too few documents to page", ids(full))
			}
			for size := 1; size <= 3; size++ {
				pq := q
				pq.Limit = size
				var got []docs.Doc
				cursor, pages := "", 0
				for {
					page, next, err := f.s.QueryPage(f.ctx, pq, cursor)
					if err != nil {
						t.Fatalf("QueryPage(size %d, page %d): %v", size, pages, err)
					}
					pages++
					if pages > len(full)+1 {
						t.Fatalf("size %d: more pages than documents: the cursor does not advance", size)
					}
					got = append(got, page...)
					if next == "" {
						break
					}
					if len(page) != size {
						t.Fatalf("size %d: page %d holds %d with a next cursor", size, pages, len(page))
					}
					cursor = next
				}
				if g, w := ids(got), ids(full); !equal(g, w) {
					t.Errorf("size %d: pages = %v, want %v", size, g, w)
				}
				if want := (len(full) + size - 1) / size; pages != want {
					t.Errorf("size %d: %d pages, want %d", size, pages, want)
				}
			}
		})
	}
	// Query with a limit above one page reads several.
	got, err := f.s.Query(f.ctx, docs.Query{AllUsers: true, Collection: "items", Limit: 3})
	if err != nil || len(got) != 3 {
		t.Errorf("Query limit 3 = %v, %v", ids(got), err)
	}
}

// testQueryPageInvalidCursor: a cursor is outside input: anything but one
// QueryPage returned for a query of the same shape is ErrInvalid.
func testQueryPageInvalidCursor(t *testing.T, f *fixture) {
	seedQuery(t, f)
	ordered := docs.Query{User: "u1", Collection: "items", OrderBy: "n", Limit: 2}
	byKey := docs.Query{User: "u1", Collection: "items", Limit: 2}
	_, okOrdered, err := f.s.QueryPage(f.ctx, ordered, "")
	if err != nil || okOrdered == "" {
		t.Fatalf("QueryPage = %q, %v", okOrdered, err)
	}
	_, okByKey, err := f.s.QueryPage(f.ctx, byKey, "")
	if err != nil || okByKey == "" {
		t.Fatalf("QueryPage = %q, %v", okByKey, err)
	}
	cases := map[string]struct {
		q      docs.Query
		cursor string
	}{
		"not base64":            {ordered, "!!!"},
		"not json":              {ordered, "bm90IGpzb24"},
		"ordered cursor by key": {byKey, okOrdered},
		"key cursor ordered":    {ordered, okByKey},
		"bad id":                {byKey, "eyJ1IjoidTEiLCJkIjoiYS9iIn0"},                    // {"u":"u1","d":"a/b"}
		"both values":           {ordered, "eyJpIjoxLCJzIjoieCIsInUiOiJ1MSIsImQiOiJkMSJ9"}, // {"i":1,"s":"x",...}
		"too long":              {ordered, strings.Repeat("A", 5000)},
	}
	for name, tc := range cases {
		t.Run(name, func(t *testing.T) {
			if page, _, err := f.s.QueryPage(f.ctx, tc.q, tc.cursor); !errors.Is(err, docs.ErrInvalid) {
				t.Errorf("QueryPage = %v, %v; want ErrInvalid", ids(page), err)
			}
		})
	}
}

func equal(a, b []string) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i] != b[i] {
			return false
		}
	}
	return true
}

func testDeleteUser(t *testing.T, f *fixture) {
	seedQuery(t, f) // u1: 12 in items + 1 in other
	f.put(t, docs.Doc{Key: key("u1", "keys", "keyset"), Data: []byte("k")})
	const u1Docs = 14
	counts := map[string]int{"u1": u1Docs, "u10": 10, "u2": 10, "u3": 0}
	for u, want := range counts {
		n, err := f.s.CountUser(f.ctx, u)
		if err != nil || n != want {
			t.Fatalf("CountUser(%s) = %d, %v; want %d", u, n, err, want)
		}
	}
	n, err := f.s.DeleteUser(f.ctx, "u1")
	if err != nil || n != u1Docs {
		t.Fatalf("DeleteUser(u1) = %d, %v; want %d", n, err, u1Docs)
	}
	counts["u1"] = 0
	for u, want := range counts {
		n, err := f.s.CountUser(f.ctx, u)
		if err != nil || n != want {
			t.Errorf("after DeleteUser: CountUser(%s) = %d, %v; want %d", u, n, err, want)
		}
	}
	f.wantNotFound(t, key("u1", "keys", "keyset"))
	f.wantNotFound(t, key("u1", "items", "d0"))
	for _, q := range []docs.Query{
		{User: "u1", Collection: "items"},
		{User: "u1", Collection: "items", OrderBy: "n"},
		{AllUsers: true, Collection: "other"},
	} {
		got, err := f.s.Query(f.ctx, q)
		if err != nil || len(got) != 0 {
			t.Errorf("Query %+v after DeleteUser = %v, %v; want none", q, ids(got), err)
		}
	}
	got, err := f.s.Query(f.ctx, docs.Query{AllUsers: true, Collection: "items", Filters: []docs.Filter{{Field: "n", Op: docs.Eq, Value: int64(0)}}})
	if err != nil || !equal(ids(got), []string{"d0", "u10/d0", "u2/d0"}) {
		t.Errorf("others after DeleteUser = %v, %v", ids(got), err)
	}
	// Again: nothing left.
	if n, err := f.s.DeleteUser(f.ctx, "u1"); err != nil || n != 0 {
		t.Errorf("second DeleteUser = %d, %v; want 0", n, err)
	}
	// The global collections are nobody's: refused.
	if _, err := f.s.DeleteUser(f.ctx, ""); !errors.Is(err, docs.ErrInvalid) {
		t.Errorf("DeleteUser(\"\") = %v, want ErrInvalid", err)
	}
	if _, err := f.s.CountUser(f.ctx, ""); !errors.Is(err, docs.ErrInvalid) {
		t.Errorf("CountUser(\"\") = %v, want ErrInvalid", err)
	}
	if _, err := f.s.DeleteUser(f.ctx, "u/1"); !errors.Is(err, docs.ErrInvalid) {
		t.Errorf("DeleteUser(u/1) = %v, want ErrInvalid", err)
	}
	f.mustGet(t, key("", "items", "d0"))
}

func testPersistence(t *testing.T, f *fixture) {
	kept := []docs.Doc{
		{Key: key("u1", "things", "a"), Data: []byte("aaa"), Fields: map[string]any{"n": int64(math.MaxInt64), "s": "x"}},
		{Key: key("", "markers", "m"), Data: []byte("m")},
	}
	for _, d := range kept {
		f.put(t, d)
	}
	gone := key("u1", "things", "gone")
	f.put(t, docs.Doc{Key: gone, Data: []byte("g")})
	if err := f.s.Delete(f.ctx, gone); err != nil {
		t.Fatalf("Delete: %v", err)
	}
	f.reopen(t)
	for _, d := range kept {
		wantDoc(t, f.mustGet(t, d.Key), d)
	}
	f.wantNotFound(t, gone)
	got, err := f.s.Query(f.ctx, docs.Query{User: "u1", Collection: "things", Filters: []docs.Filter{{Field: "s", Op: docs.Eq, Value: "x"}}})
	if err != nil || !equal(ids(got), []string{"u1/a"}) {
		t.Errorf("Query after reopen = %v, %v", ids(got), err)
	}
	if err := f.s.Create(f.ctx, kept[1]); !errors.Is(err, docs.ErrAlreadyExists) {
		t.Errorf("Create after reopen = %v, want ErrAlreadyExists", err)
	}
	// Writes after reopen persist too.
	f.put(t, docs.Doc{Key: key("u1", "things", "b"), Data: []byte("b")})
	f.reopen(t)
	f.mustGet(t, key("u1", "things", "b"))
	if n, err := f.s.CountUser(f.ctx, "u1"); err != nil || n != 2 {
		t.Errorf("CountUser after reopen = %d, %v; want 2", n, err)
	}
}

var invalidKeys = []docs.Key{
	key("u1", "", "id"),
	key("u1", "c", ""),
	key("u1", "a/b", "id"),
	key("u1", "c", "a/b"),
	key("u1", "c", "/"),
	key("u/1", "c", "id"),
	key("u1", "c", "."),
	key("u1", "c", ".."),
	key("u1", "..", "id"),
	key("u1", "c", "__reserved__"),
	key("u1", "c", strings.Repeat("x", 257)),
	key("u1", strings.Repeat("x", 257), "id"),
	key(strings.Repeat("x", 257), "c", "id"),
	key("u1", "c", "has space"),
	key("u1", "c", "nul\x00"),
	key("u1", "c", "é"),
	key("u1", "c", `back\slash`),
	key("u1", "c", "a?b"),
}

func testInvalidKeys(t *testing.T, f *fixture) {
	for _, k := range invalidKeys {
		t.Run(fmt.Sprintf("%q", k.User+"|"+k.Collection+"|"+k.ID), func(t *testing.T) {
			if _, err := f.s.Get(f.ctx, k); !errors.Is(err, docs.ErrInvalid) {
				t.Errorf("Get = %v, want ErrInvalid", err)
			}
			if err := f.s.Put(f.ctx, docs.Doc{Key: k}); !errors.Is(err, docs.ErrInvalid) {
				t.Errorf("Put = %v, want ErrInvalid", err)
			}
			if err := f.s.Create(f.ctx, docs.Doc{Key: k}); !errors.Is(err, docs.ErrInvalid) {
				t.Errorf("Create = %v, want ErrInvalid", err)
			}
			if err := f.s.Delete(f.ctx, k); !errors.Is(err, docs.ErrInvalid) {
				t.Errorf("Delete = %v, want ErrInvalid", err)
			}
			called := false
			err := f.s.Update(f.ctx, k, func(*docs.Doc) (*docs.Doc, error) {
				called = true
				return &docs.Doc{}, nil
			})
			if !errors.Is(err, docs.ErrInvalid) || called {
				t.Errorf("Update = %v (fn called: %v), want ErrInvalid before fn", err, called)
			}
		})
	}
	// Update may not move a document to another key.
	k := key("u1", "c", "id")
	err := f.s.Update(f.ctx, k, func(*docs.Doc) (*docs.Doc, error) {
		return &docs.Doc{Key: key("u2", "c", "id")}, nil
	})
	if !errors.Is(err, docs.ErrInvalid) {
		t.Errorf("Update to another key = %v, want ErrInvalid", err)
	}
	f.wantNotFound(t, k)
	f.wantNotFound(t, key("u2", "c", "id"))
}

func testInvalidFields(t *testing.T, f *fixture) {
	bad := map[string]map[string]any{
		"float":         {"f": 1.5},
		"float integer": {"f": float64(2)},
		"bool":          {"f": true},
		"nil":           {"f": nil},
		"bytes":         {"f": []byte("x")},
		"uint64":        {"f": uint64(1)},
		"map":           {"f": map[string]any{"a": "b"}},
		"slice":         {"f": []string{"a"}},
		"empty name":    {"": "x"},
		"dotted name":   {"a.b": "x"},
		"slash name":    {"a/b": "x"},
		"reserved name": {"__name__": "x"},
	}
	k := key("u1", "c", "id")
	for name, fields := range bad {
		t.Run(name, func(t *testing.T) {
			if err := f.s.Put(f.ctx, docs.Doc{Key: k, Fields: fields}); !errors.Is(err, docs.ErrInvalid) {
				t.Errorf("Put = %v, want ErrInvalid", err)
			}
			if err := f.s.Create(f.ctx, docs.Doc{Key: k, Fields: fields}); !errors.Is(err, docs.ErrInvalid) {
				t.Errorf("Create = %v, want ErrInvalid", err)
			}
			f.wantNotFound(t, k)
		})
	}
}

func testInvalidQueries(t *testing.T, f *fixture) {
	f.put(t, docs.Doc{Key: key("u1", "c", "id"), Fields: map[string]any{"n": int64(1)}})
	bad := map[string]docs.Query{
		"no collection":      {User: "u1"},
		"bad collection":     {User: "u1", Collection: "a/b"},
		"bad user":           {User: "u/1", Collection: "c"},
		"user and all users": {User: "u1", AllUsers: true, Collection: "c"},
		"negative limit":     {User: "u1", Collection: "c", Limit: -1},
		"bad op":             {User: "u1", Collection: "c", Filters: []docs.Filter{{Field: "n", Op: "!=", Value: int64(1)}}},
		"float value":        {User: "u1", Collection: "c", Filters: []docs.Filter{{Field: "n", Op: docs.Eq, Value: 1.0}}},
		"nil value":          {User: "u1", Collection: "c", Filters: []docs.Filter{{Field: "n", Op: docs.Eq}}},
		"bad field":          {User: "u1", Collection: "c", Filters: []docs.Filter{{Field: "a.b", Op: docs.Eq, Value: "x"}}},
		"bad order by":       {User: "u1", Collection: "c", OrderBy: "a/b"},
	}
	for name, q := range bad {
		t.Run(name, func(t *testing.T) {
			if got, err := f.s.Query(f.ctx, q); !errors.Is(err, docs.ErrInvalid) {
				t.Errorf("Query = %v, %v; want ErrInvalid", ids(got), err)
			}
		})
	}
}

func testDataSize(t *testing.T, f *fixture) {
	max := f.h.Capabilities().MaxDataSize
	if max <= 0 {
		t.Fatal("harness declares no MaxDataSize")
	}
	k := key("u1", "big", "ok")
	data := bytes.Repeat([]byte{0xA5, 0x00, 0x5A}, max/3+1)[:max]
	f.put(t, docs.Doc{Key: k, Data: data})
	wantDoc(t, f.mustGet(t, k), docs.Doc{Key: k, Data: data})
	tooBig := key("u1", "big", "too")
	if err := f.s.Put(f.ctx, docs.Doc{Key: tooBig, Data: make([]byte, 4*max)}); !errors.Is(err, docs.ErrInvalid) {
		t.Errorf("Put of 4×MaxDataSize = %v, want ErrInvalid", err)
	}
	f.wantNotFound(t, tooBig)
}

func testCanceledContext(t *testing.T, f *fixture) {
	ctx, cancel := context.WithCancel(f.ctx)
	cancel()
	k := key("u1", "c", "canceled")
	if err := f.s.Put(ctx, docs.Doc{Key: k}); err == nil {
		t.Error("Put with canceled context succeeded")
	}
	if _, err := f.s.Get(ctx, k); err == nil {
		t.Error("Get with canceled context succeeded")
	}
	// A backend may or may not run fn before it notices; it writes nothing.
	if err := f.s.Update(ctx, k, func(*docs.Doc) (*docs.Doc, error) { return &docs.Doc{}, nil }); err == nil {
		t.Error("Update with canceled context succeeded")
	}
	f.wantNotFound(t, k)
}
