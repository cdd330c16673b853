package sqlitedocs

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/lethe-dev/lethe/infra/docs"
)

// TestDeletedDataNotInFiles writes documents carrying a marker, deletes them
// (Delete, Update to nil and DeleteUser), and scans every file the store
// left (db, -wal, -shm) for the marker: secure_delete zeroes the freed
// database pages and the WAL is checkpointed and truncated.
func TestDeletedDataNotInFiles(t *testing.T) {
	ctx := t.Context()
	dir := t.TempDir()
	s, err := Open(ctx, filepath.Join(dir, "docs.db"))
	if err != nil {
		t.Fatal(err)
	}
	const marker = "MARKER-7f3a9c-do-not-keep"
	keep := []byte("KEEP-this-one-2b1e")
	// Survivors around the deleted rows, so the freed space sits in live pages.
	for i := range 50 {
		if err := s.Put(ctx, docs.Doc{Key: docs.Key{User: "u2", Collection: "segments", ID: fmt.Sprintf("k%03d", i)}, Data: keep}); err != nil {
			t.Fatal(err)
		}
	}
	big := bytes.Repeat([]byte(marker+" "), 2000) // spills to overflow pages
	for i := range 20 {
		for _, u := range []string{"u1", "u3"} {
			d := docs.Doc{
				Key:    docs.Key{User: u, Collection: "segments", ID: fmt.Sprintf("s%03d", i)},
				Data:   []byte(marker),
				Fields: map[string]any{"status": marker},
			}
			if i%5 == 0 {
				d.Data = big
			}
			if err := s.Put(ctx, d); err != nil {
				t.Fatal(err)
			}
		}
	}
	// Overwritten, then deleted.
	if err := s.Put(ctx, docs.Doc{Key: docs.Key{User: "u3", Collection: "segments", ID: "s000"}, Data: []byte(marker + "v2")}); err != nil {
		t.Fatal(err)
	}
	for i := range 20 {
		k := docs.Key{User: "u3", Collection: "segments", ID: fmt.Sprintf("s%03d", i)}
		if i%2 == 0 {
			err = s.Delete(ctx, k)
		} else {
			err = s.Update(ctx, k, func(*docs.Doc) (*docs.Doc, error) { return nil, nil })
		}
		if err != nil {
			t.Fatal(err)
		}
	}
	if n, err := s.DeleteUser(ctx, "u1"); err != nil || n != 20 {
		t.Fatalf("DeleteUser = %d, %v", n, err)
	}
	// Open: the files as they are while the store runs.
	scanDir(t, dir, []byte(marker), keep)
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	scanDir(t, dir, []byte(marker), keep)
}

// scanDir fails if any file under dir holds bad; it also checks that the
// survivors' bytes are found, so the scan itself is shown to work.
func scanDir(t *testing.T, dir string, bad, good []byte) {
	t.Helper()
	foundGood := false
	err := filepath.WalkDir(dir, func(p string, d os.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		b, err := os.ReadFile(p)
		if err != nil {
			return err
		}
		if bytes.Contains(b, bad) {
			t.Errorf("%s holds deleted data", filepath.Base(p))
		}
		// A fragment too: secure_delete must zero, not just unlink the cell.
		if bytes.Contains(b, bad[:12]) {
			t.Errorf("%s holds a fragment of deleted data", filepath.Base(p))
		}
		foundGood = foundGood || bytes.Contains(b, good)
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if !foundGood {
		t.Error("scan did not find the surviving documents: scan is broken")
	}
}

// TestQueryPlansUseIndexes: retention sweeps query one field across all
// users; they must be index range scans, never a scan of the table.
func TestQueryPlansUseIndexes(t *testing.T) {
	ctx := t.Context()
	s, err := Open(ctx, filepath.Join(t.TempDir(), "docs.db"))
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	cases := []struct {
		q         docs.Query
		wantIndex string
	}{
		{docs.Query{AllUsers: true, Collection: "segments", OrderBy: "expires_at",
			Filters: []docs.Filter{{Field: "expires_at", Op: docs.Lt, Value: int64(5)}}}, "fields_all"},
		{docs.Query{AllUsers: true, Collection: "segments",
			Filters: []docs.Filter{{Field: "expires_at", Op: docs.Lt, Value: int64(5)}}}, "fields_all"},
		{docs.Query{User: "u1", Collection: "segments", OrderBy: "seq", Desc: true, Limit: 10}, "fields_user"},
		{docs.Query{User: "u1", Collection: "segments",
			Filters: []docs.Filter{{Field: "status", Op: docs.Eq, Value: "pending"}}}, "INDEX fields_"},
		{docs.Query{AllUsers: true, Collection: "segments"}, "docs_coll"},
	}
	for _, tc := range cases {
		sqlText, args, err := buildQuery(tc.q)
		if err != nil {
			t.Fatal(err)
		}
		plan := explain(ctx, t, s, sqlText, args)
		t.Logf("%+v:\n%s", tc.q, plan)
		if tc.q.OrderBy != "" && strings.Contains(plan, "TEMP B-TREE") {
			t.Errorf("%+v: ordered query sorts instead of reading the index in order:\n%s", tc.q, plan)
		}
		if !strings.Contains(plan, tc.wantIndex) {
			t.Errorf("%+v: plan does not use %s:\n%s", tc.q, tc.wantIndex, plan)
		}
		for _, line := range strings.Split(plan, "\n") {
			if strings.HasPrefix(line, "SCAN ") && !strings.Contains(line, "INDEX") {
				t.Errorf("%+v: full scan in plan:\n%s", tc.q, plan)
			}
		}
	}
}

func explain(ctx context.Context, t *testing.T, s *Store, q string, args []any) string {
	t.Helper()
	rows, err := s.r.QueryContext(ctx, "EXPLAIN QUERY PLAN "+q, args...)
	if err != nil {
		t.Fatal(err)
	}
	defer rows.Close()
	var lines []string
	for rows.Next() {
		var id, parent, notused int
		var detail string
		if err := rows.Scan(&id, &parent, &notused, &detail); err != nil {
			t.Fatal(err)
		}
		lines = append(lines, detail)
	}
	return strings.Join(lines, "\n")
}

// FuzzValidateKey: key validation never panics, and whatever it accepts is
// safe to use as a Firestore path segment.
func FuzzValidateKey(f *testing.F) {
	for _, s := range []string{"u1", "", "a/b", "..", "__x__", "é", "a\x00b", strings.Repeat("x", 300)} {
		f.Add(s, "segments", s)
	}
	f.Fuzz(func(t *testing.T, user, coll, id string) {
		err := docs.ValidateKey(docs.Key{User: user, Collection: coll, ID: id})
		if err != nil {
			return
		}
		for _, s := range []string{coll, id} {
			if s == "" || len(s) > docs.MaxSegment || strings.ContainsAny(s, "/\\\x00 ") || s == "." || s == ".." {
				t.Fatalf("accepted %q", s)
			}
		}
	})
}

// FuzzDecodeFields: the fields column round-trips through encode/decode.
func FuzzDecodeFields(f *testing.F) {
	f.Add("s", "value", int64(-1))
	f.Fuzz(func(t *testing.T, name, sv string, iv int64) {
		in := map[string]any{"i": iv}
		if docs.ValidFieldName(name) && name != "i" {
			in[name] = sv
		}
		norm, err := docs.ValidateDoc(docs.Doc{Key: docs.Key{Collection: "c", ID: "i"}, Fields: in})
		if err != nil {
			return // invalid string value
		}
		enc, err := encodeFields(norm)
		if err != nil {
			t.Fatal(err)
		}
		out, err := decodeFields(enc)
		if err != nil {
			t.Fatal(err)
		}
		if len(out) != len(norm) {
			t.Fatalf("decoded %v, want %v", out, norm)
		}
		for k, v := range norm {
			if out[k] != v {
				t.Fatalf("field %q = %#v, want %#v", k, out[k], v)
			}
		}
	})
}

// TestUpdatePanicReleasesWriter: a panicking callback must not leave the
// write transaction open (it would block every later write).
func TestUpdatePanicReleasesWriter(t *testing.T) {
	ctx := t.Context()
	s, err := Open(ctx, filepath.Join(t.TempDir(), "docs.db"))
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	k := docs.Key{User: "u1", Collection: "c", ID: "x"}
	func() {
		defer func() {
			if recover() == nil {
				t.Error("panic not propagated")
			}
		}()
		_ = s.Update(ctx, k, func(*docs.Doc) (*docs.Doc, error) { panic("boom") })
	}()
	wctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	if err := s.Put(wctx, docs.Doc{Key: k, Data: []byte("after")}); err != nil {
		t.Fatalf("Put after a panicking Update: %v", err)
	}
}

// TestGroupCommitIsolatesFailures: concurrent writes share transactions,
// yet one that fails (an Update callback's error, a panic, a Create of an
// existing document) or whose caller gave up writes nothing and fails
// alone: every other write is committed, and each caller gets its own
// result.
func TestGroupCommitIsolatesFailures(t *testing.T) {
	ctx := t.Context()
	s, err := Open(ctx, filepath.Join(t.TempDir(), "docs.db"))
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	key := func(i int) docs.Key { return docs.Key{User: "u1", Collection: "c", ID: fmt.Sprintf("d%03d", i)} }
	if err := s.Put(ctx, docs.Doc{Key: key(0), Data: []byte("first")}); err != nil {
		t.Fatal(err)
	}
	errBoom := errors.New("boom")
	canceled, cancel := context.WithCancel(ctx)
	cancel()
	const n = 200
	results := make([]error, n)
	panics := make([]any, n)
	var wg sync.WaitGroup
	for i := range n {
		wg.Go(func() {
			defer func() { panics[i] = recover() }()
			doc := docs.Doc{Key: key(i), Data: fmt.Appendf(nil, "v%d", i)}
			switch i % 5 {
			case 0: // Create: d000 exists, the others do not
				results[i] = s.Create(ctx, doc)
			case 1:
				results[i] = s.Update(ctx, doc.Key, func(*docs.Doc) (*docs.Doc, error) { return &doc, errBoom })
			case 2:
				results[i] = s.Update(ctx, doc.Key, func(*docs.Doc) (*docs.Doc, error) { panic("callback") })
			case 3:
				results[i] = s.Put(canceled, doc)
			default:
				results[i] = s.Put(ctx, doc)
			}
		})
	}
	wg.Wait()
	for i := range n {
		got, gerr := s.Get(ctx, key(i))
		switch {
		case i == 0:
			if !errors.Is(results[i], docs.ErrAlreadyExists) || string(got.Data) != "first" {
				t.Errorf("Create of an existing doc: %v, data %q", results[i], got.Data)
			}
		case i%5 == 0 || i%5 == 4:
			if results[i] != nil || panics[i] != nil || string(got.Data) != fmt.Sprintf("v%d", i) {
				t.Errorf("write %d: %v %v, data %q (%v)", i, results[i], panics[i], got.Data, gerr)
			}
		case i%5 == 1:
			if !errors.Is(results[i], errBoom) || !errors.Is(gerr, docs.ErrNotFound) {
				t.Errorf("failed Update %d: %v, then Get %v", i, results[i], gerr)
			}
		case i%5 == 2:
			if panics[i] != "callback" || !errors.Is(gerr, docs.ErrNotFound) {
				t.Errorf("panicking Update %d: panic %v, then Get %v", i, panics[i], gerr)
			}
		case i%5 == 3:
			if !errors.Is(results[i], context.Canceled) || !errors.Is(gerr, docs.ErrNotFound) {
				t.Errorf("canceled Put %d: %v, then Get %v", i, results[i], gerr)
			}
		}
	}
}
