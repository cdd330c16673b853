package firestoredocs

import (
	"context"
	"fmt"
	"net/http"
	"slices"
	"strings"
	"testing"

	"github.com/lethe-dev/lethe/infra/docs"
	"github.com/lethe-dev/lethe/internal/emulators"
)

// offlineStore builds references without a server: the client connects
// lazily, and these tests never send a request.
func offlineStore(tb testing.TB) *Driver {
	tb.Helper()
	s, err := OpenDriver(context.Background(), Config{ProjectID: "offline", EmulatorHost: "127.0.0.1:1"})
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() { s.Close() })
	return s
}

func TestLayout(t *testing.T) {
	s := offlineStore(t)
	cases := []struct {
		key  docs.Key
		path string
	}{
		{docs.Key{User: "u1", Collection: "chunks", ID: "c#1"}, "users/u1/chunks/c#1"},
		{docs.Key{Collection: "tombstones", ID: "u1"}, "tombstones/u1"},
		{docs.Key{User: "users", Collection: "users", ID: "users"}, "users/users/users/users"},
	}
	for _, tc := range cases {
		r := s.ref(tc.key)
		if !strings.HasSuffix(r.Path, "/documents/"+tc.path) {
			t.Errorf("ref(%v) = %s, want …/documents/%s", tc.key, r.Path, tc.path)
		}
		if got, ok := keyFromRef(r); !ok || got != tc.key {
			t.Errorf("keyFromRef(%s) = %v, %v; want %v", tc.path, got, ok, tc.key)
		}
		if got := strings.Join(namePath(tc.key), "/"); got != tc.path {
			t.Errorf("namePath(%v) = %s, want %s", tc.key, got, tc.path)
		}
	}
	// Outside the layout.
	for _, p := range []string{"users/u1", "a/b/c/d", "users/u1/c/d/e/f"} {
		if k, ok := keyFromRef(s.c.Doc(p)); ok {
			t.Errorf("keyFromRef(%s) = %v, want not ok", p, k)
		}
	}
	// A global "users" collection would be the users' parents.
	if err := docs.ValidateKey(docs.Key{Collection: "users", ID: "u1"}); err == nil {
		t.Error("global users collection accepted")
	}
}

// FuzzKeyLayout: every valid key maps to a document whose name maps back
// to the same key.
func FuzzKeyLayout(f *testing.F) {
	f.Add("u1", "chunks", "c#1")
	f.Add("", "tombstones", "u1")
	f.Add("users", "users", "__x")
	f.Add("", "users", "u1")
	s := offlineStore(f)
	f.Fuzz(func(t *testing.T, user, coll, id string) {
		k := docs.Key{User: user, Collection: coll, ID: id}
		if docs.ValidateKey(k) != nil {
			return
		}
		got, ok := keyFromRef(s.ref(k))
		if !ok || got != k {
			t.Fatalf("keyFromRef(ref(%q)) = %q, %v", k, got, ok)
		}
	})
}

func TestCompareValues(t *testing.T) {
	ordered := []any{int64(-1 << 63), int64(-1), int64(0), int64(1<<53 + 1), int64(1<<63 - 1), "", "0", "A", "a", "é"}
	for i, a := range ordered {
		for j, b := range ordered {
			if got, want := compareValues(a, b), cmpInt(i, j); got != want {
				t.Errorf("compareValues(%#v, %#v) = %d, want %d", a, b, got, want)
			}
		}
	}
}

func cmpInt(a, b int) int {
	switch {
	case a < b:
		return -1
	case a > b:
		return 1
	}
	return 0
}

// TestSortMatchesFirestore checks the in-memory order (used for the
// queries Firestore cannot order) against Firestore's own, on the
// emulator: values of both types, ties across users and global documents.
func TestSortMatchesFirestore(t *testing.T) {
	host := emulators.Require(t, emulators.Firestore)
	ctx := t.Context()
	const project = "lethe-internal-sort"
	reset := func() {
		url := "http://" + host + "/emulator/v1/projects/" + project + "/databases/(default)/documents"
		req, err := http.NewRequest(http.MethodDelete, url, nil)
		if err != nil {
			t.Fatal(err)
		}
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatalf("emulator reset: %v", err)
		}
		resp.Body.Close()
	}
	reset()
	t.Cleanup(reset)
	s, err := OpenDriver(ctx, Config{ProjectID: project, EmulatorHost: host})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	const coll = "sorted"
	values := []any{int64(2), int64(-3), "b", "B", int64(2), "b", "", int64(1 << 40)}
	for _, u := range []string{"", "u1", "u10", "u2", "U", "u1-", "u1.x"} {
		for i, v := range values {
			for _, id := range []string{fmt.Sprintf("d%d", i), fmt.Sprintf("D-%d", i)} {
				d := docs.Doc{Key: docs.Key{User: u, Collection: coll, ID: id}, Fields: map[string]any{"v": v, "i": int64(i)}}
				if err := s.Put(ctx, d); err != nil {
					t.Fatal(err)
				}
			}
		}
	}
	for _, q := range []docs.Query{
		{AllUsers: true, Collection: coll, OrderBy: "v"},
		{AllUsers: true, Collection: coll, OrderBy: "v", Desc: true},
		{AllUsers: true, Collection: coll},
		{AllUsers: true, Collection: coll, OrderBy: "v", Filters: []docs.Filter{{Field: "v", Op: docs.Gte, Value: "B"}}},
		{User: "u1", Collection: coll, OrderBy: "v", Desc: true},
		{User: "u1", Collection: coll},
		{Collection: coll, OrderBy: "i"},
	} {
		native, err := s.buildQuery(q, nil, false)
		if err != nil || native.sort {
			t.Fatalf("%+v: native plan %v, sort %v", q, err, native.sort)
		}
		sorted, err := s.buildQuery(q, nil, true)
		if err != nil {
			t.Fatal(err)
		}
		want, err := s.run(ctx, native)
		if err != nil {
			t.Fatalf("%+v: %v", q, err)
		}
		got, err := s.run(ctx, sorted)
		if err != nil {
			t.Fatalf("%+v: %v", q, err)
		}
		if len(want) == 0 || !slices.EqualFunc(got, want, func(a, b docs.Doc) bool { return a.Key == b.Key }) {
			t.Errorf("%+v: in-memory order differs from Firestore's:\n got %v\nwant %v", q, keys(got), keys(want))
		}
	}
}

func keys(ds []docs.Doc) []string {
	out := make([]string, len(ds))
	for i, d := range ds {
		out[i] = strings.Join(namePath(d.Key), "/")
	}
	return out
}
