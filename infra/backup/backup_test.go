package backup_test

import (
	"archive/tar"
	"bytes"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/tink-crypto/tink-go/v2/tink"

	"github.com/lethe-dev/lethe/infra/backup"
	"github.com/lethe-dev/lethe/infra/docs"
	"github.com/lethe-dev/lethe/infra/docs/sqlitedocs"
)

func newKey(t testing.TB) tink.StreamingAEAD {
	t.Helper()
	p := filepath.Join(t.TempDir(), "backup.key")
	if err := backup.GenerateKey(p); err != nil {
		t.Fatal(err)
	}
	k, err := backup.LoadKey(p)
	if err != nil {
		t.Fatal(err)
	}
	return k
}

// dataDir makes a data directory with a live SQLite store (left open, as
// lethe run would hold it), files in subdirectories and a temp file.
func dataDir(t *testing.T) (string, docs.Store) {
	t.Helper()
	dir := filepath.Join(t.TempDir(), "data")
	if err := os.Mkdir(dir, 0o700); err != nil {
		t.Fatal(err)
	}
	st, err := sqlitedocs.Open(t.Context(), filepath.Join(dir, "docs.db"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	if err := st.Put(t.Context(), docs.Doc{Key: docs.Key{User: "u1", Collection: "c", ID: "d1"}, Data: []byte(`{"v":1}`)}); err != nil {
		t.Fatal(err)
	}
	for name, body := range map[string]string{
		"blobs/users/u1/a~": "sealed audio", "vectors/u1.vec": "vectors", "keys/kek.json": "kek",
		"blobs/users/u1/~tmp-1": "half written",
	} {
		p := filepath.Join(dir, filepath.FromSlash(name))
		if err := os.MkdirAll(filepath.Dir(p), 0o700); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(p, []byte(body), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	return dir, st
}

func source(dir string) backup.Source {
	return backup.Source{Root: dir, SQLite: []string{"docs.db"}, Skip: func(rel string) bool { return strings.Contains(rel, "~tmp-") }}
}

func archive(t *testing.T, key tink.StreamingAEAD, dir string) []byte {
	t.Helper()
	var buf bytes.Buffer
	if _, err := backup.Create(t.Context(), &buf, key, source(dir), time.Now()); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes()
}

func TestRoundTrip(t *testing.T) {
	key := newKey(t)
	dir, st := dataDir(t)
	var buf bytes.Buffer
	m, err := backup.Create(t.Context(), &buf, key, source(dir), time.Now())
	if err != nil {
		t.Fatal(err)
	}
	// Written after the snapshot: not in the archive.
	if err := st.Put(t.Context(), docs.Doc{Key: docs.Key{User: "u1", Collection: "c", ID: "later"}, Data: []byte(`{}`)}); err != nil {
		t.Fatal(err)
	}
	if bytes.Contains(buf.Bytes(), []byte("sealed audio")) || bytes.Contains(buf.Bytes(), []byte("docs.db")) {
		t.Fatal("the archive holds plaintext")
	}
	out := filepath.Join(t.TempDir(), "restored")
	got, err := backup.Restore(t.Context(), bytes.NewReader(buf.Bytes()), key, out, false)
	if err != nil {
		t.Fatal(err)
	}
	if len(got.Files) != len(m.Files) || len(m.Files) != 4 {
		t.Fatalf("restored %d files, archived %d, want 4 (docs, blob, vector, kek): %+v", len(got.Files), len(m.Files), m.Files)
	}
	if b, err := os.ReadFile(filepath.Join(out, "blobs/users/u1/a~")); err != nil || string(b) != "sealed audio" {
		t.Fatalf("blob: %q %v", b, err)
	}
	if _, err := os.Stat(filepath.Join(out, "blobs/users/u1/~tmp-1")); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("temp file restored: %v", err)
	}
	if p, _ := backup.Pending(out); !p {
		t.Fatal("no pending marker after restore")
	}
	rs, err := sqlitedocs.Open(t.Context(), filepath.Join(out, "docs.db"))
	if err != nil {
		t.Fatal(err)
	}
	defer rs.Close()
	if _, err := rs.Get(t.Context(), docs.Key{User: "u1", Collection: "c", ID: "d1"}); err != nil {
		t.Fatalf("restored document: %v", err)
	}
	if _, err := rs.Get(t.Context(), docs.Key{User: "u1", Collection: "c", ID: "later"}); !errors.Is(err, docs.ErrNotFound) {
		t.Fatalf("document written after the backup: %v", err)
	}
	// Into a non-empty directory: refused, then forced.
	if _, err := backup.Restore(t.Context(), bytes.NewReader(buf.Bytes()), key, out, false); !errors.Is(err, backup.ErrNotEmpty) {
		t.Fatalf("restore over data: %v, want ErrNotEmpty", err)
	}
	if err := backup.ClearPending(out); err != nil {
		t.Fatal(err)
	}
	if _, err := backup.Restore(t.Context(), bytes.NewReader(buf.Bytes()), key, out, true); err != nil {
		t.Fatalf("forced restore: %v", err)
	}
	if p, _ := backup.Pending(out); !p {
		t.Fatal("no pending marker after forced restore")
	}
}

// TestRefused: a changed, truncated, foreign or wrongly keyed archive is
// refused and the target stays empty.
func TestRefused(t *testing.T) {
	key := newKey(t)
	dir, _ := dataDir(t)
	good := archive(t, key, dir)
	flip := func(at int) []byte {
		b := bytes.Clone(good)
		b[at] ^= 0x01
		return b
	}
	cases := map[string]struct {
		data []byte
		key  tink.StreamingAEAD
	}{
		"wrong key":            {good, newKey(t)},
		"byte changed (first)": {flip(len(backup.Magic) + 40), key},
		"byte changed (mid)":   {flip(len(good) / 2), key},
		"byte changed (last)":  {flip(len(good) - 1), key},
		"truncated":            {good[:len(good)-100], key},
		"truncated at a block": {good[:len(good)/2], key},
		"appended":             {append(bytes.Clone(good), 0), key},
		"no header":            {good[len(backup.Magic):], key},
		"empty":                {nil, key},
	}
	for name, c := range cases {
		t.Run(name, func(t *testing.T) {
			out := filepath.Join(t.TempDir(), "restored")
			_, err := backup.Restore(t.Context(), bytes.NewReader(c.data), c.key, out, false)
			if !errors.Is(err, backup.ErrRefused) {
				t.Fatalf("Restore = %v, want ErrRefused", err)
			}
			if entries, _ := os.ReadDir(filepath.Dir(out)); len(entries) != 0 {
				t.Fatalf("left %d entries behind", len(entries))
			}
		})
	}
}

// TestRefusesUnsafeEntries: even an archive made with the right key (a
// stolen key, a bug) cannot write outside the target or smuggle links.
func TestRefusesUnsafeEntries(t *testing.T) {
	key := newKey(t)
	cases := map[string]tar.Header{
		"parent":   {Typeflag: tar.TypeReg, Name: "../escape", Size: 1},
		"absolute": {Typeflag: tar.TypeReg, Name: "/tmp/escape", Size: 1},
		"symlink":  {Typeflag: tar.TypeSymlink, Name: "keys", Linkname: "/etc"},
		"unclean":  {Typeflag: tar.TypeReg, Name: "a/./b", Size: 1},
		"marker":   {Typeflag: tar.TypeReg, Name: backup.PendingFile, Size: 1},
	}
	for name, hdr := range cases {
		t.Run(name, func(t *testing.T) {
			var buf bytes.Buffer
			buf.WriteString(backup.Magic)
			enc, err := key.NewEncryptingWriter(&buf, []byte("lethe backup archive v1"))
			if err != nil {
				t.Fatal(err)
			}
			tw := tar.NewWriter(enc)
			if err := tw.WriteHeader(&hdr); err != nil {
				t.Fatal(err)
			}
			if hdr.Size > 0 {
				tw.Write([]byte("x"))
			}
			tw.Close()
			enc.Close()
			base := t.TempDir()
			_, err = backup.Restore(t.Context(), &buf, key, filepath.Join(base, "restored"), false)
			if !errors.Is(err, backup.ErrRefused) {
				t.Fatalf("Restore = %v, want ErrRefused", err)
			}
			if _, err := os.Stat(filepath.Join(base, "escape")); err == nil {
				t.Fatal("wrote outside the target")
			}
		})
	}
}

func TestLoadKeyRefusesWideMode(t *testing.T) {
	p := filepath.Join(t.TempDir(), "k")
	if err := backup.GenerateKey(p); err != nil {
		t.Fatal(err)
	}
	if err := backup.GenerateKey(p); err == nil {
		t.Fatal("GenerateKey overwrote a key")
	}
	if err := os.Chmod(p, 0o644); err != nil {
		t.Fatal(err)
	}
	if _, err := backup.LoadKey(p); err == nil {
		t.Fatal("LoadKey took a world-readable key")
	}
}

// TestStaleSnapshotRemoved: a snapshot left by a crashed backup (it may
// hold keysets of users erased since) is removed by the next backup and
// never archived.
func TestStaleSnapshotRemoved(t *testing.T) {
	key := newKey(t)
	dir, _ := dataDir(t)
	stale := filepath.Join(dir, ".lethe-backup-123", "db-0")
	if err := os.MkdirAll(filepath.Dir(stale), 0o700); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(stale, []byte("old snapshot"), 0o600); err != nil {
		t.Fatal(err)
	}
	var buf bytes.Buffer
	m, err := backup.Create(t.Context(), &buf, key, source(dir), time.Now())
	if err != nil {
		t.Fatal(err)
	}
	for _, f := range m.Files {
		if strings.Contains(f.Path, ".lethe-backup-") {
			t.Fatalf("archived %s", f.Path)
		}
	}
	entries, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range entries {
		if strings.HasPrefix(e.Name(), ".lethe-backup-") {
			t.Fatalf("%s left in the data dir", e.Name())
		}
	}
}

func TestCreateRefusesSymlinks(t *testing.T) {
	key := newKey(t)
	dir, _ := dataDir(t)
	if err := os.Symlink("/etc/passwd", filepath.Join(dir, "blobs", "link")); err != nil {
		t.Fatal(err)
	}
	var buf bytes.Buffer
	if _, err := backup.Create(t.Context(), &buf, key, source(dir), time.Now()); err == nil {
		t.Fatal("Create followed a symbolic link")
	}
}

// FuzzRestore: whatever follows the header, Restore refuses or restores
// inside its target, and never panics.
func FuzzRestore(f *testing.F) {
	key := newKey(f)
	f.Add([]byte(backup.Magic))
	f.Add(append([]byte(backup.Magic), bytes.Repeat([]byte{0}, 1024)...))
	f.Fuzz(func(t *testing.T, data []byte) {
		base := t.TempDir()
		_, err := backup.Restore(t.Context(), bytes.NewReader(data), key, filepath.Join(base, "r"), false)
		if err == nil {
			t.Fatal("random bytes restored")
		}
		entries, _ := os.ReadDir(base)
		if len(entries) != 0 {
			t.Fatalf("left %d entries", len(entries))
		}
	})
}
