// Package blobtest is the conformance suite of the blob port. Every adapter
// (directory, Cloud Storage) runs it through a Harness; the suite is
// written against blobs.Bucket only.
//
// Prefixes are plain string prefixes, as in Cloud Storage: "users/u1"
// matches "users/u10/x"; callers end a prefix with "/" to mean one folder.
package blobtest

import (
	"bytes"
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"io"
	"maps"
	"math/rand/v2"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/lethe-dev/lethe/infra/blobs"
)

// Capabilities declares what differs between backends.
type Capabilities struct {
	// CreatedSlack is how far Attrs.Created may be from the local clock
	// around the write (server clocks, timestamp resolution).
	CreatedSlack time.Duration
}

// Harness makes buckets for one test. Each Harness has its own place (a
// directory, or a bucket or object prefix named from t.Name()).
type Harness interface {
	// MakeBucket opens a bucket on the harness's place, empty at first.
	MakeBucket(ctx context.Context) (blobs.Bucket, error)
	// Reopen closes b and opens the same place again (persistence tests).
	Reopen(ctx context.Context, b blobs.Bucket) (blobs.Bucket, error)
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
		{"NotFound", testNotFound},
		{"RoundTrip", testRoundTrip},
		{"Overwrite", testOverwrite},
		{"CreateOnly", testCreateOnly},
		{"ConcurrentCreateOnly", testConcurrentCreateOnly},
		{"AtomicOverwrite", testAtomicOverwrite},
		{"FailedWriteLeavesNothing", testFailedWrite},
		{"ObjectAndFolderSameName", testObjectAndFolder},
		{"List", testList},
		{"ListPage", testListPage},
		{"DeletePrefix", testDeletePrefix},
		{"InvalidKeys", testInvalidKeys},
		{"InvalidAttrs", testInvalidAttrs},
		{"Persistence", testPersistence},
		{"LargeBlob", testLargeBlob},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			tc.fn(t, newFixture(t, newHarness))
		})
	}
}

type fixture struct {
	ctx context.Context
	h   Harness
	b   blobs.Bucket
	// open: b is open (Reopen closed it and may have failed).
	open bool
}

func newFixture(t *testing.T, newHarness HarnessMaker) *fixture {
	t.Helper()
	ctx := t.Context()
	h, err := newHarness(ctx, t)
	if err != nil {
		t.Fatalf("newHarness: %v", err)
	}
	t.Cleanup(h.Close)
	b, err := h.MakeBucket(ctx)
	if err != nil {
		t.Fatalf("MakeBucket: %v", err)
	}
	f := &fixture{ctx: ctx, h: h, b: b, open: true}
	t.Cleanup(func() {
		if f.open {
			if err := f.b.Close(); err != nil {
				t.Errorf("Close: %v", err)
			}
		}
	})
	return f
}

func (f *fixture) reopen(t *testing.T) {
	t.Helper()
	b, err := f.h.Reopen(f.ctx, f.b)
	f.open = false
	if err != nil {
		t.Fatalf("Reopen: %v", err)
	}
	f.b, f.open = b, true
}

func (f *fixture) write(t *testing.T, key string, data []byte, opts blobs.WriteOptions) blobs.Attrs {
	t.Helper()
	a, err := f.b.Write(f.ctx, key, bytes.NewReader(data), opts)
	if err != nil {
		t.Fatalf("Write(%q): %v", key, err)
	}
	return a
}

func (f *fixture) read(t *testing.T, key string) ([]byte, blobs.Attrs) {
	t.Helper()
	r, a, err := f.b.Read(f.ctx, key)
	if err != nil {
		t.Fatalf("Read(%q): %v", key, err)
	}
	defer r.Close()
	data, err := io.ReadAll(r)
	if err != nil {
		t.Fatalf("Read(%q) body: %v", key, err)
	}
	return data, a
}

func (f *fixture) wantNotFound(t *testing.T, key string) {
	t.Helper()
	if r, _, err := f.b.Read(f.ctx, key); !errors.Is(err, blobs.ErrNotFound) {
		if err == nil {
			r.Close()
		}
		t.Errorf("Read(%q) = %v, want ErrNotFound", key, err)
	}
	if _, err := f.b.Attrs(f.ctx, key); !errors.Is(err, blobs.ErrNotFound) {
		t.Errorf("Attrs(%q) = %v, want ErrNotFound", key, err)
	}
}

func (f *fixture) wantContent(t *testing.T, key string, want []byte) {
	t.Helper()
	got, a := f.read(t, key)
	if !bytes.Equal(got, want) {
		t.Errorf("Read(%q) = %d bytes %q…, want %d bytes %q…", key, len(got), head(got), len(want), head(want))
	}
	if a.Size != int64(len(want)) {
		t.Errorf("Read(%q) size = %d, want %d", key, a.Size, len(want))
	}
}

func head(b []byte) []byte {
	if len(b) > 16 {
		return b[:16]
	}
	return b
}

func (f *fixture) listKeys(t *testing.T, prefix string) []string {
	t.Helper()
	as, err := f.b.List(f.ctx, prefix)
	if err != nil {
		t.Fatalf("List(%q): %v", prefix, err)
	}
	out := make([]string, len(as))
	for i, a := range as {
		out[i] = a.Key
	}
	return out
}

// wantAttrs compares everything but Created, which checkCreated bounds.
func wantAttrs(t *testing.T, what string, got, want blobs.Attrs) {
	t.Helper()
	if got.Key != want.Key || got.Size != want.Size || got.ContentType != want.ContentType {
		t.Errorf("%s: attrs = {%q %d %q}, want {%q %d %q}", what, got.Key, got.Size, got.ContentType, want.Key, want.Size, want.ContentType)
	}
	if len(got.Metadata) != len(want.Metadata) || (len(want.Metadata) > 0 && !maps.Equal(got.Metadata, want.Metadata)) {
		t.Errorf("%s: metadata = %v, want %v", what, got.Metadata, want.Metadata)
	}
}

func (f *fixture) checkCreated(t *testing.T, what string, got time.Time, before, after time.Time) {
	t.Helper()
	slack := f.h.Capabilities().CreatedSlack
	if got.Before(before.Add(-slack)) || got.After(after.Add(slack)) {
		t.Errorf("%s: Created = %v, want within [%v, %v] ± %v", what, got, before, after, slack)
	}
}

func testNotFound(t *testing.T, f *fixture) {
	f.wantNotFound(t, "missing")
	f.wantNotFound(t, "a/b/c")
	if err := f.b.Delete(f.ctx, "missing"); !errors.Is(err, blobs.ErrNotFound) {
		t.Errorf("Delete(missing) = %v, want ErrNotFound", err)
	}
	f.write(t, "users/u1/abc", []byte("x"), blobs.WriteOptions{})
	for _, k := range []string{"users/u1/ab", "users/u1/abcd", "users/u1", "users", "users/u1/abc/d", "users/u2/abc"} {
		f.wantNotFound(t, k)
	}
	if err := f.b.Delete(f.ctx, "users/u1"); !errors.Is(err, blobs.ErrNotFound) {
		t.Errorf("Delete(folder) = %v, want ErrNotFound", err)
	}
	f.wantContent(t, "users/u1/abc", []byte("x"))
	if got := f.listKeys(t, "nothing/"); len(got) != 0 {
		t.Errorf("List(nothing/) = %v", got)
	}
}

func testRoundTrip(t *testing.T, f *fixture) {
	all := make([]byte, 256*4)
	for i := range all {
		all[i] = byte(i)
	}
	cases := []struct {
		key   string
		data  []byte
		opts  blobs.WriteOptions
		ctype string
	}{
		{"users/u1/audio/c1#0001.opus", all, blobs.WriteOptions{
			ContentType: "audio/ogg; codecs=opus",
			Metadata:    map[string]string{"sha256": "abc123", "seq": "1", "Mixed-Case": "v a l u e"},
		}, "audio/ogg; codecs=opus"},
		{"empty", nil, blobs.WriteOptions{ContentType: "text/plain"}, "text/plain"},
		{"no-type", []byte("bytes"), blobs.WriteOptions{}, "application/octet-stream"},
		{"A-Z_0.9#:=-/x.y", []byte("charset"), blobs.WriteOptions{ContentType: "application/zip"}, "application/zip"},
		{strings.Repeat("s", 200) + "/" + strings.Repeat("t", 200), []byte("long"), blobs.WriteOptions{}, "application/octet-stream"},
	}
	for _, tc := range cases {
		want := blobs.Attrs{Key: tc.key, Size: int64(len(tc.data)), ContentType: tc.ctype, Metadata: tc.opts.Metadata}
		before := time.Now()
		wa := f.write(t, tc.key, tc.data, tc.opts)
		after := time.Now()
		wantAttrs(t, "Write "+tc.key, wa, want)
		f.checkCreated(t, "Write "+tc.key, wa.Created, before, after)

		got, ra := f.read(t, tc.key)
		if !bytes.Equal(got, tc.data) {
			t.Errorf("Read(%q) = %q…, want %q…", tc.key, head(got), head(tc.data))
		}
		wantAttrs(t, "Read "+tc.key, ra, want)
		aa, err := f.b.Attrs(f.ctx, tc.key)
		if err != nil {
			t.Fatalf("Attrs(%q): %v", tc.key, err)
		}
		wantAttrs(t, "Attrs "+tc.key, aa, want)
		if !aa.Created.Equal(ra.Created) {
			t.Errorf("Attrs(%q).Created = %v, Read's = %v", tc.key, aa.Created, ra.Created)
		}
		f.checkCreated(t, "Attrs "+tc.key, aa.Created, before, after)
	}
	// The bucket keeps no reference to the caller's metadata map.
	md := map[string]string{"k": "before"}
	f.write(t, "alias", []byte("x"), blobs.WriteOptions{Metadata: md})
	md["k"] = "after"
	if a, err := f.b.Attrs(f.ctx, "alias"); err != nil || a.Metadata["k"] != "before" {
		t.Errorf("Attrs(alias) = %v, %v; want metadata k=before", a.Metadata, err)
	}
	// Delete removes it; a second Delete is ErrNotFound.
	if err := f.b.Delete(f.ctx, "empty"); err != nil {
		t.Fatalf("Delete: %v", err)
	}
	f.wantNotFound(t, "empty")
	if err := f.b.Delete(f.ctx, "empty"); !errors.Is(err, blobs.ErrNotFound) {
		t.Errorf("second Delete = %v, want ErrNotFound", err)
	}
}

func testOverwrite(t *testing.T, f *fixture) {
	k := "users/u1/export/e1.zip"
	f.write(t, k, []byte("version one, longer"), blobs.WriteOptions{ContentType: "text/plain", Metadata: map[string]string{"old": "1", "v": "1"}})
	a := f.write(t, k, []byte("v2"), blobs.WriteOptions{ContentType: "application/zip", Metadata: map[string]string{"v": "2"}})
	want := blobs.Attrs{Key: k, Size: 2, ContentType: "application/zip", Metadata: map[string]string{"v": "2"}}
	wantAttrs(t, "Write", a, want)
	f.wantContent(t, k, []byte("v2"))
	ra, err := f.b.Attrs(f.ctx, k)
	if err != nil {
		t.Fatal(err)
	}
	wantAttrs(t, "Attrs", ra, want)
	if got := f.listKeys(t, "users/u1/"); len(got) != 1 || got[0] != k {
		t.Errorf("List after overwrite = %v, want [%s]", got, k)
	}
}

func testCreateOnly(t *testing.T, f *fixture) {
	k := "users/u1/audio/c1#0001"
	if _, err := f.b.Write(f.ctx, k, strings.NewReader("first"), blobs.WriteOptions{CreateOnly: true, ContentType: "audio/wav"}); err != nil {
		t.Fatalf("CreateOnly on absent: %v", err)
	}
	_, err := f.b.Write(f.ctx, k, strings.NewReader("second"), blobs.WriteOptions{CreateOnly: true, ContentType: "text/plain"})
	if !errors.Is(err, blobs.ErrPrecondition) {
		t.Fatalf("CreateOnly on existing = %v, want ErrPrecondition", err)
	}
	f.wantContent(t, k, []byte("first"))
	if a, err := f.b.Attrs(f.ctx, k); err != nil || a.ContentType != "audio/wav" {
		t.Errorf("Attrs after refused write = %+v, %v", a, err)
	}
	// Same name in another folder is another object.
	if _, err := f.b.Write(f.ctx, "users/u2/audio/c1#0001", strings.NewReader("u2"), blobs.WriteOptions{CreateOnly: true}); err != nil {
		t.Errorf("CreateOnly for another user: %v", err)
	}
	if err := f.b.Delete(f.ctx, k); err != nil {
		t.Fatal(err)
	}
	if _, err := f.b.Write(f.ctx, k, strings.NewReader("third"), blobs.WriteOptions{CreateOnly: true}); err != nil {
		t.Fatalf("CreateOnly after Delete: %v", err)
	}
	f.wantContent(t, k, []byte("third"))
	if got := f.listKeys(t, "users/u1/"); len(got) != 1 {
		t.Errorf("List = %v, want one object (no debris of the refused write)", got)
	}
}

func testConcurrentCreateOnly(t *testing.T, f *fixture) {
	const n = 10
	k := "users/u1/audio/race"
	errs := make([]error, n)
	var wg, allRead sync.WaitGroup
	allRead.Add(n)
	for i := range n {
		wg.Go(func() {
			data := bytes.Repeat([]byte{byte('a' + i)}, 64<<10)
			// Every writer holds its last read until all have read their
			// data, so the commits race as closely as they can.
			r := &barrierReader{r: bytes.NewReader(data), wg: &allRead}
			_, errs[i] = f.b.Write(f.ctx, k, r, blobs.WriteOptions{CreateOnly: true})
		})
	}
	wg.Wait()
	winner := -1
	for i, err := range errs {
		switch {
		case err == nil && winner >= 0:
			t.Errorf("writers %d and %d both won", winner, i)
		case err == nil:
			winner = i
		case !errors.Is(err, blobs.ErrPrecondition):
			t.Errorf("writer %d = %v, want nil or ErrPrecondition", i, err)
		}
	}
	if winner < 0 {
		t.Fatal("no writer won")
	}
	f.wantContent(t, k, bytes.Repeat([]byte{byte('a' + winner)}, 64<<10))
	if got := f.listKeys(t, ""); len(got) != 1 {
		t.Errorf("List = %v, want the one object", got)
	}
}

// barrierReader waits at EOF until every reader of wg got there.
type barrierReader struct {
	r    io.Reader
	wg   *sync.WaitGroup
	done bool
}

func (b *barrierReader) Read(p []byte) (int, error) {
	n, err := b.r.Read(p)
	if err == io.EOF && !b.done {
		b.done = true
		b.wg.Done()
		b.wg.Wait()
	}
	return n, err
}

// testAtomicOverwrite: readers racing overwrites see one whole version.
func testAtomicOverwrite(t *testing.T, f *fixture) {
	const size, versions = 256 << 10, 8
	k := "users/u1/atomic"
	f.write(t, k, bytes.Repeat([]byte{0}, size), blobs.WriteOptions{})
	var wg sync.WaitGroup
	done := make(chan struct{})
	wg.Go(func() {
		defer close(done)
		for v := 1; v <= versions; v++ {
			if _, err := f.b.Write(f.ctx, k, bytes.NewReader(bytes.Repeat([]byte{byte(v)}, size)), blobs.WriteOptions{}); err != nil {
				t.Errorf("Write v%d: %v", v, err)
				return
			}
		}
	})
	for range 2 {
		wg.Go(func() {
			for {
				select {
				case <-done:
					return
				default:
				}
				r, a, err := f.b.Read(f.ctx, k)
				if err != nil {
					t.Errorf("Read during overwrite: %v", err)
					return
				}
				data, err := io.ReadAll(r)
				r.Close()
				if err != nil {
					t.Errorf("Read body: %v", err)
					return
				}
				if len(data) != size || a.Size != size || !bytes.Equal(data, bytes.Repeat(data[:1], size)) {
					t.Errorf("Read saw a partial or mixed object (%d bytes, size %d)", len(data), a.Size)
					return
				}
			}
		})
	}
	wg.Wait()
	f.wantContent(t, k, bytes.Repeat([]byte{versions}, size))
}

type failingReader struct{ n int }

func (r *failingReader) Read(p []byte) (int, error) {
	if r.n <= 0 {
		return 0, errors.New("source failed")
	}
	n := min(len(p), r.n)
	for i := range n {
		p[i] = 'x'
	}
	r.n -= n
	return n, nil
}

func testFailedWrite(t *testing.T, f *fixture) {
	// A source that fails halfway: no object, or the old one intact.
	if _, err := f.b.Write(f.ctx, "users/u1/new", &failingReader{n: 100 << 10}, blobs.WriteOptions{}); err == nil {
		t.Fatal("Write from a failing reader succeeded")
	}
	f.wantNotFound(t, "users/u1/new")
	f.write(t, "users/u1/old", []byte("old"), blobs.WriteOptions{})
	if _, err := f.b.Write(f.ctx, "users/u1/old", &failingReader{n: 100 << 10}, blobs.WriteOptions{}); err == nil {
		t.Fatal("overwrite from a failing reader succeeded")
	}
	f.wantContent(t, "users/u1/old", []byte("old"))
	// A canceled context: nothing written.
	ctx, cancel := context.WithCancel(f.ctx)
	cancel()
	if _, err := f.b.Write(ctx, "users/u1/canceled", strings.NewReader("x"), blobs.WriteOptions{}); err == nil {
		t.Error("Write with a canceled context succeeded")
	}
	f.wantNotFound(t, "users/u1/canceled")
	if got := f.listKeys(t, ""); len(got) != 1 || got[0] != "users/u1/old" {
		t.Errorf("List = %v, want only users/u1/old", got)
	}
}

// testObjectAndFolder: as in Cloud Storage, "a" and "a/b" are two objects.
func testObjectAndFolder(t *testing.T, f *fixture) {
	f.write(t, "a/b", []byte("ab"), blobs.WriteOptions{})
	f.write(t, "a", []byte("a"), blobs.WriteOptions{})
	f.write(t, "a/b/c", []byte("abc"), blobs.WriteOptions{})
	f.wantContent(t, "a", []byte("a"))
	f.wantContent(t, "a/b", []byte("ab"))
	f.wantContent(t, "a/b/c", []byte("abc"))
	if got, want := f.listKeys(t, "a"), []string{"a", "a/b", "a/b/c"}; !equal(got, want) {
		t.Errorf("List(a) = %v, want %v", got, want)
	}
	if err := f.b.Delete(f.ctx, "a/b"); err != nil {
		t.Fatal(err)
	}
	f.wantContent(t, "a/b/c", []byte("abc"))
	f.wantContent(t, "a", []byte("a"))
	if got, want := f.listKeys(t, ""), []string{"a", "a/b/c"}; !equal(got, want) {
		t.Errorf("List() = %v, want %v", got, want)
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

var listKeys = []string{
	"users/u1",
	"users/u1/audio/c1#0001",
	"users/u1/audio/c1#0002",
	"users/u1/export/e1.zip",
	"users/u1-x/audio/c1",
	"users/u1.x",
	"users/u10/audio/c1#0001",
	"users/u2/audio/c1#0001",
	"other/u1/audio/c1#0001",
	"usersx",
}

func seedList(t *testing.T, f *fixture) {
	t.Helper()
	for i, k := range listKeys {
		f.write(t, k, []byte(k), blobs.WriteOptions{ContentType: "text/plain", Metadata: map[string]string{"i": fmt.Sprint(i)}})
	}
}

func testList(t *testing.T, f *fixture) {
	seedList(t, f)
	cases := []struct {
		prefix string
		want   []string
	}{
		{"users/u1/", []string{"users/u1/audio/c1#0001", "users/u1/audio/c1#0002", "users/u1/export/e1.zip"}},
		// A plain string prefix, sorted by bytes: '-' < '.' < '/' < '0'.
		{"users/u1", []string{"users/u1", "users/u1-x/audio/c1", "users/u1.x", "users/u1/audio/c1#0001", "users/u1/audio/c1#0002", "users/u1/export/e1.zip", "users/u10/audio/c1#0001"}},
		{"users/u1/audio/c1#000", []string{"users/u1/audio/c1#0001", "users/u1/audio/c1#0002"}},
		{"users/u1/audio/c1#0002", []string{"users/u1/audio/c1#0002"}},
		{"users/u10/", []string{"users/u10/audio/c1#0001"}},
		{"users/u2/", []string{"users/u2/audio/c1#0001"}},
		{"users/u3/", nil},
		{"users/", []string{"users/u1", "users/u1-x/audio/c1", "users/u1.x", "users/u1/audio/c1#0001", "users/u1/audio/c1#0002", "users/u1/export/e1.zip", "users/u10/audio/c1#0001", "users/u2/audio/c1#0001"}},
		{"users", []string{"users/u1", "users/u1-x/audio/c1", "users/u1.x", "users/u1/audio/c1#0001", "users/u1/audio/c1#0002", "users/u1/export/e1.zip", "users/u10/audio/c1#0001", "users/u2/audio/c1#0001", "usersx"}},
		{"", []string{"other/u1/audio/c1#0001", "users/u1", "users/u1-x/audio/c1", "users/u1.x", "users/u1/audio/c1#0001", "users/u1/audio/c1#0002", "users/u1/export/e1.zip", "users/u10/audio/c1#0001", "users/u2/audio/c1#0001", "usersx"}},
	}
	for _, tc := range cases {
		if got := f.listKeys(t, tc.prefix); !equal(got, tc.want) {
			t.Errorf("List(%q) = %v, want %v", tc.prefix, got, tc.want)
		}
	}
	// Listed attributes are the object's.
	as, err := f.b.List(f.ctx, "users/u1/export/")
	if err != nil || len(as) != 1 {
		t.Fatalf("List = %v, %v", as, err)
	}
	k := "users/u1/export/e1.zip"
	wantAttrs(t, "List", as[0], blobs.Attrs{Key: k, Size: int64(len(k)), ContentType: "text/plain", Metadata: map[string]string{"i": "3"}})
}

// pageKeys lists prefix page by page, limit at a time.
func (f *fixture) pageKeys(t *testing.T, prefix string, limit int) []string {
	t.Helper()
	var out []string
	cursor := ""
	for range len(listKeys) + 2 {
		page, next, err := f.b.ListPage(f.ctx, prefix, cursor, limit)
		if err != nil {
			t.Fatalf("ListPage(%q, %q, %d): %v", prefix, cursor, limit, err)
		}
		if len(page) > limit || (next != "" && len(page) != limit) {
			t.Fatalf("ListPage(%q, %q, %d) = %d objects, next %q", prefix, cursor, limit, len(page), next)
		}
		for _, a := range page {
			out = append(out, a.Key)
		}
		if next == "" {
			return out
		}
		cursor = next
	}
	t.Fatalf("ListPage(%q, %d) never ends", prefix, limit)
	return nil
}

func testListPage(t *testing.T, f *fixture) {
	seedList(t, f)
	for _, prefix := range []string{"", "users", "users/", "users/u1", "users/u1/", "users/u1/audio/c1#000", "users/u3/"} {
		want := f.listKeys(t, prefix)
		for _, limit := range []int{1, 2, 3, blobs.MaxPage} {
			if got := f.pageKeys(t, prefix, limit); !equal(got, want) {
				t.Errorf("pages of %d under %q = %v, want %v", limit, prefix, got, want)
			}
		}
	}
	// The cursor is a position, not an object: deleting the object it
	// names between pages loses nothing after it.
	page, next, err := f.b.ListPage(f.ctx, "users/u1/", "", 1)
	if err != nil || len(page) != 1 || next == "" {
		t.Fatalf("first page = %v, %q, %v", page, next, err)
	}
	if err := f.b.Delete(f.ctx, page[0].Key); err != nil {
		t.Fatal(err)
	}
	rest, _, err := f.b.ListPage(f.ctx, "users/u1/", next, blobs.MaxPage)
	if err != nil || len(rest) != 2 || rest[0].Key != "users/u1/audio/c1#0002" {
		t.Errorf("after the cursor's object went: %v, %v", rest, err)
	}
	for _, limit := range []int{0, -1, blobs.MaxPage + 1} {
		if _, _, err := f.b.ListPage(f.ctx, "users/", "", limit); err == nil {
			t.Errorf("ListPage(limit %d) accepted", limit)
		}
	}
	for _, cursor := range []string{"other/u1/audio/c1#0001", "../x", "users/"} {
		if _, _, err := f.b.ListPage(f.ctx, "users/", cursor, 1); !errors.Is(err, blobs.ErrInvalidKey) {
			t.Errorf("ListPage(cursor %q) = %v, want ErrInvalidKey", cursor, err)
		}
	}
}

// testInvalidAttrs: what Cloud Storage would refuse is refused on every
// adapter, before anything is stored.
func testInvalidAttrs(t *testing.T, f *fixture) {
	for name, opts := range map[string]blobs.WriteOptions{
		"metadata over 8 KiB":     {Metadata: map[string]string{"k": strings.Repeat("v", blobs.MaxMetadata)}},
		"empty metadata key":      {Metadata: map[string]string{"": "v"}},
		"metadata key with CR LF": {Metadata: map[string]string{"a\r\nb": "v"}},
		"metadata not UTF-8":      {Metadata: map[string]string{"k": "\xff"}},
		"content type with LF":    {ContentType: "text/plain\nX-Evil: 1"},
		"content type too long":   {ContentType: "text/" + strings.Repeat("x", blobs.MaxContentType)},
	} {
		if _, err := f.b.Write(f.ctx, "users/u1/a", strings.NewReader("x"), opts); err == nil {
			t.Errorf("Write with %s accepted", name)
		}
	}
	if got := f.listKeys(t, ""); len(got) != 0 {
		t.Errorf("List = %v after refused writes, want nothing", got)
	}
	// Without a content type, the default is stored.
	a := f.write(t, "users/u1/a", []byte("x"), blobs.WriteOptions{Metadata: map[string]string{"k": strings.Repeat("v", blobs.MaxMetadata-1)}})
	if a.ContentType != blobs.DefaultContentType {
		t.Errorf("content type %q, want %q", a.ContentType, blobs.DefaultContentType)
	}
}

func testDeletePrefix(t *testing.T, f *fixture) {
	seedList(t, f)
	n, err := f.b.DeletePrefix(f.ctx, "users/u1/")
	if err != nil || n != 3 {
		t.Fatalf("DeletePrefix(users/u1/) = %d, %v; want 3", n, err)
	}
	if got := f.listKeys(t, "users/u1/"); len(got) != 0 {
		t.Errorf("List after DeletePrefix = %v", got)
	}
	f.wantNotFound(t, "users/u1/audio/c1#0001")
	for _, k := range []string{"users/u1", "users/u1-x/audio/c1", "users/u1.x", "users/u10/audio/c1#0001", "users/u2/audio/c1#0001", "other/u1/audio/c1#0001"} {
		f.wantContent(t, k, []byte(k))
	}
	if n, err := f.b.DeletePrefix(f.ctx, "users/u1/"); err != nil || n != 0 {
		t.Errorf("second DeletePrefix = %d, %v; want 0", n, err)
	}
	// The whole bucket is never one call away.
	if _, err := f.b.DeletePrefix(f.ctx, ""); !errors.Is(err, blobs.ErrInvalidKey) {
		t.Errorf("DeletePrefix(\"\") = %v, want ErrInvalidKey", err)
	}
	// A string prefix: "users/u1" takes u1, u1-x, u1.x and u10.
	n, err = f.b.DeletePrefix(f.ctx, "users/u1")
	if err != nil || n != 4 {
		t.Errorf("DeletePrefix(users/u1) = %d, %v; want 4", n, err)
	}
	if got, want := f.listKeys(t, ""), []string{"other/u1/audio/c1#0001", "users/u2/audio/c1#0001", "usersx"}; !equal(got, want) {
		t.Errorf("List() = %v, want %v", got, want)
	}
	// Writing again under a deleted prefix works.
	f.write(t, "users/u1/audio/c1#0001", []byte("again"), blobs.WriteOptions{CreateOnly: true})
	f.wantContent(t, "users/u1/audio/c1#0001", []byte("again"))
}

var invalidKeys = []string{
	"", "/", ".", "..", "../x", "x/..", "/etc/passwd", "a/../../x", "a/./b", "./a",
	"a//b", "a/", "//a", `a\b`, `..\x`, "a\x00b", "a b", "é", "a\nb", "~", "a~", "a/~tmp-1",
	"a?b", "a*b", "a%2e%2e", strings.Repeat("a", 1025),
}

func testInvalidKeys(t *testing.T, f *fixture) {
	f.write(t, "a/b", []byte("ok"), blobs.WriteOptions{})
	for _, k := range invalidKeys {
		if _, err := f.b.Write(f.ctx, k, strings.NewReader("evil"), blobs.WriteOptions{}); !errors.Is(err, blobs.ErrInvalidKey) {
			t.Errorf("Write(%q) = %v, want ErrInvalidKey", k, err)
		}
		if _, err := f.b.Write(f.ctx, k, strings.NewReader("evil"), blobs.WriteOptions{CreateOnly: true}); !errors.Is(err, blobs.ErrInvalidKey) {
			t.Errorf("Write(%q, CreateOnly) = %v, want ErrInvalidKey", k, err)
		}
		if r, _, err := f.b.Read(f.ctx, k); !errors.Is(err, blobs.ErrInvalidKey) {
			if err == nil {
				r.Close()
			}
			t.Errorf("Read(%q) = %v, want ErrInvalidKey", k, err)
		}
		if _, err := f.b.Attrs(f.ctx, k); !errors.Is(err, blobs.ErrInvalidKey) {
			t.Errorf("Attrs(%q) = %v, want ErrInvalidKey", k, err)
		}
		if err := f.b.Delete(f.ctx, k); !errors.Is(err, blobs.ErrInvalidKey) {
			t.Errorf("Delete(%q) = %v, want ErrInvalidKey", k, err)
		}
	}
	for _, p := range []string{"../", "/", "/etc", "a//", "a//b", `a\`, "../x", "a/../", "./", "a\x00", strings.Repeat("a", 1025)} {
		if _, err := f.b.List(f.ctx, p); !errors.Is(err, blobs.ErrInvalidKey) {
			t.Errorf("List(%q) = %v, want ErrInvalidKey", p, err)
		}
		if _, err := f.b.DeletePrefix(f.ctx, p); !errors.Is(err, blobs.ErrInvalidKey) {
			t.Errorf("DeletePrefix(%q) = %v, want ErrInvalidKey", p, err)
		}
	}
	if got := f.listKeys(t, ""); !equal(got, []string{"a/b"}) {
		t.Errorf("List() after invalid writes = %v, want [a/b]", got)
	}
	f.wantContent(t, "a/b", []byte("ok"))
}

func testPersistence(t *testing.T, f *fixture) {
	before := time.Now()
	f.write(t, "users/u1/keep", []byte("kept"), blobs.WriteOptions{ContentType: "audio/wav", Metadata: map[string]string{"k": "v"}})
	after := time.Now()
	f.write(t, "users/u1/gone", []byte("gone"), blobs.WriteOptions{})
	if err := f.b.Delete(f.ctx, "users/u1/gone"); err != nil {
		t.Fatal(err)
	}
	f.reopen(t)
	f.wantContent(t, "users/u1/keep", []byte("kept"))
	f.wantNotFound(t, "users/u1/gone")
	a, err := f.b.Attrs(f.ctx, "users/u1/keep")
	if err != nil {
		t.Fatal(err)
	}
	wantAttrs(t, "Attrs after reopen", a, blobs.Attrs{Key: "users/u1/keep", Size: 4, ContentType: "audio/wav", Metadata: map[string]string{"k": "v"}})
	f.checkCreated(t, "Attrs after reopen", a.Created, before, after)
	if _, err := f.b.Write(f.ctx, "users/u1/keep", strings.NewReader("x"), blobs.WriteOptions{CreateOnly: true}); !errors.Is(err, blobs.ErrPrecondition) {
		t.Errorf("CreateOnly after reopen = %v, want ErrPrecondition", err)
	}
	if got := f.listKeys(t, "users/"); !equal(got, []string{"users/u1/keep"}) {
		t.Errorf("List after reopen = %v", got)
	}
}

func testLargeBlob(t *testing.T, f *fixture) {
	const size = 5<<20 + 123
	data := make([]byte, size)
	rng := rand.New(rand.NewPCG(1, 2))
	for i := range data {
		data[i] = byte(rng.Uint32())
	}
	// An io.Reader that is not a bytes.Reader, so nothing can shortcut it.
	a, err := f.b.Write(f.ctx, "users/u1/big", io.MultiReader(bytes.NewReader(data[:size/2]), bytes.NewReader(data[size/2:])), blobs.WriteOptions{ContentType: "audio/wav"})
	if err != nil {
		t.Fatal(err)
	}
	if a.Size != size {
		t.Errorf("Write size = %d, want %d", a.Size, size)
	}
	r, ra, err := f.b.Read(f.ctx, "users/u1/big")
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	h := sha256.New()
	n, err := io.Copy(h, r)
	if err != nil {
		t.Fatal(err)
	}
	if want := sha256.Sum256(data); n != size || ra.Size != size || !bytes.Equal(h.Sum(nil), want[:]) {
		t.Errorf("Read = %d bytes (attrs %d), sha256 mismatch or short; want %d", n, ra.Size, size)
	}
}
