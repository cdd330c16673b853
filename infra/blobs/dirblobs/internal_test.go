package dirblobs

import (
	"bytes"
	"errors"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/lethe-dev/lethe/infra/blobs"
)

// TestDeletedDataNotInFiles: after Delete and DeletePrefix no file under
// the root holds the deleted bytes, and no directory keeps the user's
// pseudonym in its name.
func TestDeletedDataNotInFiles(t *testing.T) {
	ctx := t.Context()
	dir := t.TempDir()
	b, err := Open(dir)
	if err != nil {
		t.Fatal(err)
	}
	const marker = "MARKER-b10b-5e1f-do-not-keep"
	keep := []byte("KEEP-this-blob-9d2c")
	big := bytes.Repeat([]byte(marker), 50_000)
	writes := map[string][]byte{
		"users/pseudo1/audio/c1#0001": big,
		"users/pseudo1/audio/c1#0002": []byte(marker),
		"users/pseudo1/export/e1.zip": []byte(marker),
		"users/pseudo2/audio/c9#0001": []byte(marker),
		"users/keeper/audio/c1#0001":  keep,
	}
	for k, v := range writes {
		md := map[string]string{"note": marker}
		if bytes.Equal(v, keep) {
			md = nil
		}
		if _, err := b.Write(ctx, k, bytes.NewReader(v), blobs.WriteOptions{Metadata: md}); err != nil {
			t.Fatal(err)
		}
	}
	// A refused create-only write leaves nothing either.
	if _, err := b.Write(ctx, "users/keeper/audio/c1#0001", strings.NewReader(marker), blobs.WriteOptions{CreateOnly: true}); !errors.Is(err, blobs.ErrPrecondition) {
		t.Fatalf("CreateOnly = %v", err)
	}
	if err := b.Delete(ctx, "users/pseudo2/audio/c9#0001"); err != nil {
		t.Fatal(err)
	}
	if n, err := b.DeletePrefix(ctx, "users/pseudo1/"); err != nil || n != 3 {
		t.Fatalf("DeletePrefix = %d, %v", n, err)
	}
	if err := b.Close(); err != nil {
		t.Fatal(err)
	}
	foundKeep := false
	err = filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if strings.Contains(p, "pseudo") {
			t.Errorf("%s outlives the deleted objects", p)
		}
		if strings.Contains(d.Name(), tmpPrefix) {
			t.Errorf("temp file %s left behind", p)
		}
		if d.IsDir() {
			return nil
		}
		data, err := os.ReadFile(p)
		if err != nil {
			return err
		}
		if bytes.Contains(data, []byte(marker)) {
			t.Errorf("%s holds deleted data", p)
		}
		foundKeep = foundKeep || bytes.Contains(data, keep)
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if !foundKeep {
		t.Error("scan did not find the surviving object: scan is broken")
	}
}

// TestPermissions: 0600 files and 0700 directories, whatever the umask.
func TestPermissions(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "blobs")
	b, err := Open(dir)
	if err != nil {
		t.Fatal(err)
	}
	defer b.Close()
	if _, err := b.Write(t.Context(), "users/u1/a/b", strings.NewReader("x"), blobs.WriteOptions{}); err != nil {
		t.Fatal(err)
	}
	err = filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		info, err := d.Info()
		if err != nil {
			return err
		}
		if perm := info.Mode().Perm(); perm&0o077 != 0 {
			t.Errorf("%s has mode %v, want no group/other access", p, perm)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
}

// TestSymlinksStayInside: symlinks planted in the tree never let a key
// reach outside the root, for reading, writing or listing.
func TestSymlinksStayInside(t *testing.T) {
	ctx := t.Context()
	outside := t.TempDir()
	secret := filepath.Join(outside, "secret~")
	if err := os.WriteFile(secret, []byte("outside secret"), 0o600); err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	b, err := Open(dir)
	if err != nil {
		t.Fatal(err)
	}
	defer b.Close()
	// A directory symlink out of the root, and a file symlink to a file outside.
	if err := os.Symlink(outside, filepath.Join(dir, "users")); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink(secret, filepath.Join(dir, "leak~")); err != nil {
		t.Fatal(err)
	}
	if r, _, err := b.Read(ctx, "users/secret"); err == nil {
		data, _ := io.ReadAll(r)
		r.Close()
		t.Errorf("Read through a symlinked directory returned %q", data)
	}
	if r, _, err := b.Read(ctx, "leak"); err == nil {
		data, _ := io.ReadAll(r)
		r.Close()
		t.Errorf("Read of a symlinked file returned %q", data)
	}
	if _, err := b.Write(ctx, "users/planted", strings.NewReader("x"), blobs.WriteOptions{}); err == nil {
		t.Error("Write through a symlinked directory succeeded")
	}
	if _, err := os.Stat(filepath.Join(outside, "planted~")); err == nil {
		t.Error("a file was written outside the root")
	}
	if as, err := b.List(ctx, ""); err != nil || len(as) != 0 {
		t.Errorf("List = %v, %v; want nothing (symlinks are not objects)", as, err)
	}
	if n, err := b.DeletePrefix(ctx, "users/"); err != nil || n != 0 {
		t.Errorf("DeletePrefix through a symlink = %d, %v", n, err)
	}
	if _, err := os.Stat(secret); err != nil {
		t.Errorf("file outside the root was touched: %v", err)
	}
}

// TestStaleTempsRemoved: temp files of a crashed write are swept on Open;
// young ones (a write in progress elsewhere) are kept.
func TestStaleTempsRemoved(t *testing.T) {
	dir := t.TempDir()
	if err := os.MkdirAll(filepath.Join(dir, "users/u1"), 0o700); err != nil {
		t.Fatal(err)
	}
	stale := filepath.Join(dir, "users/u1", tmpPrefix+"stale")
	young := filepath.Join(dir, "users/u1", tmpPrefix+"young")
	for _, p := range []string{stale, young} {
		if err := os.WriteFile(p, []byte("partial"), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	old := time.Now().Add(-2 * staleTemp)
	if err := os.Chtimes(stale, old, old); err != nil {
		t.Fatal(err)
	}
	b, err := Open(dir)
	if err != nil {
		t.Fatal(err)
	}
	defer b.Close()
	if _, err := os.Stat(stale); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("stale temp file kept: %v", err)
	}
	if _, err := os.Stat(young); err != nil {
		t.Errorf("young temp file removed: %v", err)
	}
	if as, err := b.List(t.Context(), ""); err != nil || len(as) != 0 {
		t.Errorf("List = %v, %v; temp files are not objects", as, err)
	}
}

// TestCorruptFile: a truncated object file is an error, never short data.
func TestCorruptFile(t *testing.T) {
	dir := t.TempDir()
	b, err := Open(dir)
	if err != nil {
		t.Fatal(err)
	}
	defer b.Close()
	if _, err := b.Write(t.Context(), "x", bytes.NewReader(make([]byte, 1000)), blobs.WriteOptions{}); err != nil {
		t.Fatal(err)
	}
	p := filepath.Join(dir, "x~")
	info, _ := os.Stat(p)
	if err := os.Truncate(p, info.Size()-1); err != nil {
		t.Fatal(err)
	}
	if _, _, err := b.Read(t.Context(), "x"); !errors.Is(err, errCorrupt) {
		t.Errorf("Read of a truncated file = %v, want errCorrupt", err)
	}
}

func FuzzValidateKey(f *testing.F) {
	for _, s := range []string{"users/u1/a#1", "../x", "/etc/passwd", "a//b", `a\b`, "a/./b", "~", "a~"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, key string) {
		if blobs.ValidateKey(key) != nil {
			return
		}
		// Accepted keys are clean relative paths with no special names.
		if filepath.IsAbs(key) || filepath.Clean(key) != key || !filepath.IsLocal(key) ||
			strings.ContainsAny(key, "\\\x00~") || strings.HasPrefix(key, "../") {
			t.Fatalf("accepted %q", key)
		}
		// Every valid key is a valid prefix that lists it.
		if dir, partial := splitPrefix(key); !strings.HasSuffix(key, partial) || (dir != "." && !strings.HasPrefix(key, dir+"/")) {
			t.Fatalf("splitPrefix(%q) = %q, %q", key, dir, partial)
		}
	})
}

func FuzzDecodeHeader(f *testing.F) {
	h, _ := encodeHeader(meta{ContentType: "audio/wav", Metadata: map[string]string{"a": "b"}})
	f.Add(h)
	f.Add([]byte(magic))
	f.Fuzz(func(t *testing.T, data []byte) {
		m, size, hlen, err := decodeHeader(bytes.NewReader(data), int64(len(data)))
		if err != nil {
			return
		}
		if hlen+size != int64(len(data)) || hlen < int64(fixedHeader) {
			t.Fatalf("header %d + size %d != file %d", hlen, size, len(data))
		}
		_ = m
	})
}
