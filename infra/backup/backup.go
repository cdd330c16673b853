// Package backup makes and restores one encrypted archive of an embedded
// install's data directory: a consistent snapshot of the SQLite documents
// (VACUUM INTO, safe while lethe runs), the blob and vector files (each
// replaced atomically by its adapter, so a copy is never torn), and the
// key material as it is stored. The archive is a tar stream sealed with a
// Tink streaming AEAD keyset the operator holds, so a changed, truncated
// or re-keyed archive is refused before anything is put in place.
//
// A restore never brings back an erased user by itself: the caller
// replays the erasure journal (app/forget) before the install serves.
// Until then the restored directory carries a pending marker that the
// serving commands refuse.
package backup

import (
	"archive/tar"
	"bufio"
	"bytes"
	"context"
	"crypto/rand"
	"crypto/sha256"
	"database/sql"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"maps"
	"net/url"
	"os"
	"path"
	"path/filepath"
	"slices"
	"strings"
	"time"

	"github.com/tink-crypto/tink-go/v2/insecurecleartextkeyset"
	"github.com/tink-crypto/tink-go/v2/keyset"
	"github.com/tink-crypto/tink-go/v2/streamingaead"
	"github.com/tink-crypto/tink-go/v2/tink"

	_ "modernc.org/sqlite" // driver "sqlite", for VACUUM INTO
)

// Magic opens every archive, in the clear, so a wrong file is named as
// such; everything after it is ciphertext.
const Magic = "LETHE-BACKUP-1\n"

// associatedData binds the ciphertext to this format.
var associatedData = []byte("lethe backup archive v1")

// ManifestName is the archive's last entry.
const ManifestName = "MANIFEST.json"

// PendingFile marks a restored directory whose erasure journal has not
// been replayed yet.
const PendingFile = "RESTORE-PENDING"

// Errors a caller can tell apart.
var (
	ErrNotEmpty = errors.New("backup: the target directory is not empty")
	ErrRefused  = errors.New("backup: archive refused (not a lethe backup, wrong key, or changed)")
)

// Source is what a backup copies.
type Source struct {
	// Root is the data directory.
	Root string
	// SQLite names the databases under Root (relative paths) to snapshot
	// with VACUUM INTO; their -wal, -shm and -journal files are not copied.
	SQLite []string
	// Skip, when set, leaves out files (relative, slash-separated paths)
	// such as an adapter's temp files.
	Skip func(rel string) bool
}

// File is one manifest line.
type File struct {
	Path   string `json:"path"`
	Size   int64  `json:"size"`
	SHA256 string `json:"sha256"`
}

// Manifest lists what an archive holds.
type Manifest struct {
	Format    int       `json:"format"`
	CreatedAt time.Time `json:"created_at"`
	Files     []File    `json:"files"`
}

// Bytes is the total size of the files.
func (m Manifest) Bytes() int64 {
	var n int64
	for _, f := range m.Files {
		n += f.Size
	}
	return n
}

// GenerateKey writes a new backup key (a Tink AES256-GCM-HKDF-1MB
// streaming AEAD keyset) to path, which must not exist, readable by its
// owner only. The operator keeps it away from the machine whose data it
// protects: an archive is as safe as this file.
func GenerateKey(path string) error {
	h, err := keyset.NewHandle(streamingaead.AES256GCMHKDF1MBKeyTemplate())
	if err != nil {
		return fmt.Errorf("keyset.NewHandle: %w", err)
	}
	var buf bytes.Buffer
	if err := insecurecleartextkeyset.Write(h, keyset.NewJSONWriter(&buf)); err != nil {
		return fmt.Errorf("insecurecleartextkeyset.Write: %w", err)
	}
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
	if err != nil {
		return fmt.Errorf("os.OpenFile: %w", err)
	}
	if _, err := f.Write(buf.Bytes()); err != nil {
		f.Close()
		return fmt.Errorf("file.Write: %w", err)
	}
	if err := f.Sync(); err != nil {
		f.Close()
		return fmt.Errorf("file.Sync: %w", err)
	}
	return f.Close()
}

// maxKeyFile bounds what LoadKey reads.
const maxKeyFile = 64 << 10

// LoadKey reads a backup key, refusing a file others can read.
func LoadKey(path string) (tink.StreamingAEAD, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("os.Open: %w", err)
	}
	defer f.Close()
	st, err := f.Stat()
	if err != nil {
		return nil, fmt.Errorf("file.Stat: %w", err)
	}
	if !st.Mode().IsRegular() || st.Mode().Perm()&0o077 != 0 {
		return nil, fmt.Errorf("backup key %s: want a regular file of mode 0600 (is %v)", path, st.Mode())
	}
	data, err := io.ReadAll(io.LimitReader(f, maxKeyFile+1))
	if err != nil || len(data) > maxKeyFile {
		return nil, fmt.Errorf("backup key %s: unreadable or too large", path)
	}
	h, err := insecurecleartextkeyset.Read(keyset.NewJSONReader(bytes.NewReader(data)))
	if err != nil {
		return nil, fmt.Errorf("insecurecleartextkeyset.Read: %w", err)
	}
	s, err := streamingaead.New(h)
	if err != nil {
		return nil, fmt.Errorf("streamingaead.New: %w", err)
	}
	return s, nil
}

// Create writes an archive of src to w and returns its manifest.
func Create(ctx context.Context, w io.Writer, key tink.StreamingAEAD, src Source, now time.Time) (Manifest, error) {
	m := Manifest{Format: 1, CreatedAt: now.UTC()}
	// The snapshots are made inside the data dir (writable, and as
	// private as the data), in a directory the walk leaves out. One left
	// by a crash holds wrapped keysets of users erased since: remove it.
	if err := removeStaleSnapshots(src.Root); err != nil {
		return m, err
	}
	tmp, err := os.MkdirTemp(src.Root, snapshotDirPrefix)
	if err != nil {
		return m, fmt.Errorf("os.MkdirTemp: %w", err)
	}
	defer os.RemoveAll(tmp)
	// Documents first: blobs and vectors copied after them may hold more
	// than the documents name (harmless), never less.
	snaps := map[string]string{}
	for i, rel := range src.SQLite {
		dst := filepath.Join(tmp, fmt.Sprintf("db-%d", i))
		if err := snapshotSQLite(ctx, filepath.Join(src.Root, rel), dst); err != nil {
			return m, err
		}
		snaps[filepath.ToSlash(rel)] = dst
	}
	if _, err := io.WriteString(w, Magic); err != nil {
		return m, fmt.Errorf("write archive: %w", err)
	}
	enc, err := key.NewEncryptingWriter(w, associatedData)
	if err != nil {
		return m, fmt.Errorf("streamingaead.NewEncryptingWriter: %w", err)
	}
	bw := bufio.NewWriterSize(enc, 1<<20)
	tw := tar.NewWriter(bw)
	add := func(rel, full string) error {
		if err := ctx.Err(); err != nil {
			return err
		}
		f, err := os.Open(full)
		if errors.Is(err, fs.ErrNotExist) {
			return nil // deleted since the walk (an erasure, a sweep)
		}
		if err != nil {
			return fmt.Errorf("os.Open: %w", err)
		}
		defer f.Close()
		st, err := f.Stat()
		if err != nil {
			return fmt.Errorf("file.Stat: %w", err)
		}
		if err := tw.WriteHeader(&tar.Header{Typeflag: tar.TypeReg, Name: rel, Size: st.Size(), Mode: 0o600, ModTime: st.ModTime().UTC(), Format: tar.FormatPAX}); err != nil {
			return fmt.Errorf("tar.WriteHeader: %w", err)
		}
		h := sha256.New()
		if n, err := io.CopyN(io.MultiWriter(tw, h), f, st.Size()); err != nil {
			return fmt.Errorf("copy %s (%d of %d bytes): %w", rel, n, st.Size(), err)
		}
		m.Files = append(m.Files, File{Path: rel, Size: st.Size(), SHA256: hex.EncodeToString(h.Sum(nil))})
		return nil
	}
	for _, rel := range slices.Sorted(maps.Keys(snaps)) {
		if err := add(rel, snaps[rel]); err != nil {
			return m, err
		}
	}
	skipSQLite := map[string]bool{}
	for rel := range snaps {
		for _, suffix := range []string{"", "-wal", "-shm", "-journal"} {
			skipSQLite[rel+suffix] = true
		}
	}
	err = filepath.WalkDir(src.Root, func(full string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, err := filepath.Rel(src.Root, full)
		if err != nil {
			return err
		}
		rel = filepath.ToSlash(rel)
		switch {
		case d.IsDir() && strings.HasPrefix(d.Name(), snapshotDirPrefix):
			return filepath.SkipDir
		case d.IsDir():
			return nil
		case d.Type()&fs.ModeSymlink != 0:
			return fmt.Errorf("backup: %s is a symbolic link; the data directory holds none", rel)
		case !d.Type().IsRegular(), skipSQLite[rel], rel == PendingFile, src.Skip != nil && src.Skip(rel):
			return nil
		}
		return add(rel, full)
	})
	if err != nil {
		return m, fmt.Errorf("walk %s: %w", src.Root, err)
	}
	mj, err := json.MarshalIndent(m, "", " ")
	if err != nil {
		return m, err
	}
	if err := tw.WriteHeader(&tar.Header{Typeflag: tar.TypeReg, Name: ManifestName, Size: int64(len(mj)), Mode: 0o600, ModTime: m.CreatedAt, Format: tar.FormatPAX}); err != nil {
		return m, fmt.Errorf("tar.WriteHeader: %w", err)
	}
	if _, err := tw.Write(mj); err != nil {
		return m, fmt.Errorf("tar.Write: %w", err)
	}
	if err := tw.Close(); err != nil {
		return m, fmt.Errorf("tar.Close: %w", err)
	}
	if err := bw.Flush(); err != nil {
		return m, fmt.Errorf("write archive: %w", err)
	}
	if err := enc.Close(); err != nil {
		return m, fmt.Errorf("close archive: %w", err)
	}
	return m, nil
}

// snapshotDirPrefix names the temporary directory of a backup in
// progress; one backup runs at a time.
const snapshotDirPrefix = ".lethe-backup-"

func removeStaleSnapshots(root string) error {
	entries, err := os.ReadDir(root)
	if err != nil {
		return fmt.Errorf("os.ReadDir: %w", err)
	}
	for _, e := range entries {
		if e.IsDir() && strings.HasPrefix(e.Name(), snapshotDirPrefix) {
			if err := os.RemoveAll(filepath.Join(root, e.Name())); err != nil {
				return fmt.Errorf("os.RemoveAll: %w", err)
			}
		}
	}
	return nil
}

// snapshotSQLite writes a consistent copy of the database at src to dst
// with VACUUM INTO, which reads in one transaction: a writer in another
// process (lethe run) goes on meanwhile.
func snapshotSQLite(ctx context.Context, src, dst string) error {
	if _, err := os.Stat(src); err != nil {
		return fmt.Errorf("documents database: %w", err)
	}
	abs, err := filepath.Abs(src)
	if err != nil {
		return fmt.Errorf("filepath.Abs: %w", err)
	}
	dsn := (&url.URL{Scheme: "file", Path: filepath.ToSlash(abs)}).String() + "?_pragma=busy_timeout(10000)"
	db, err := sql.Open("sqlite", dsn)
	if err != nil {
		return fmt.Errorf("sql.Open: %w", err)
	}
	defer db.Close()
	if _, err := db.ExecContext(ctx, "VACUUM INTO ?", dst); err != nil {
		return fmt.Errorf("sqlite VACUUM INTO: %w", err)
	}
	return nil
}

// Restore reads an archive from r into dir, which must be absent or
// empty unless force (then its contents are replaced). Files go to a
// staging directory beside dir, and only an archive read to its
// authenticated end, whose files match its manifest, is moved into place,
// with PendingFile in it. A changed, truncated or wrongly keyed archive
// returns ErrRefused and leaves dir as it was.
func Restore(ctx context.Context, r io.Reader, key tink.StreamingAEAD, dir string, force bool) (Manifest, error) {
	var m Manifest
	dir = filepath.Clean(dir)
	empty, err := isEmpty(dir)
	if err != nil {
		return m, err
	}
	if !empty && !force {
		return m, fmt.Errorf("%w: %s (restore into an empty directory, or force)", ErrNotEmpty, dir)
	}
	magic := make([]byte, len(Magic))
	if _, err := io.ReadFull(r, magic); err != nil || string(magic) != Magic {
		return m, fmt.Errorf("%w: no lethe backup header", ErrRefused)
	}
	dec, err := key.NewDecryptingReader(r, associatedData)
	if err != nil {
		return m, fmt.Errorf("%w: %v", ErrRefused, err)
	}
	var rnd [8]byte
	_, _ = rand.Read(rnd[:])
	staging := dir + ".restore-" + hex.EncodeToString(rnd[:])
	if err := os.MkdirAll(filepath.Dir(dir), 0o700); err != nil {
		return m, fmt.Errorf("os.MkdirAll: %w", err)
	}
	if err := os.Mkdir(staging, 0o700); err != nil {
		return m, fmt.Errorf("os.Mkdir: %w", err)
	}
	moved := false
	defer func() {
		if !moved {
			os.RemoveAll(staging)
		}
	}()
	if m, err = extract(ctx, dec, staging); err != nil {
		return m, err
	}
	if err := os.WriteFile(filepath.Join(staging, PendingFile), []byte("run: lethe erasures reapply\n"), 0o600); err != nil {
		return m, fmt.Errorf("os.WriteFile: %w", err)
	}
	if err := os.RemoveAll(dir); err != nil {
		return m, fmt.Errorf("os.RemoveAll: %w", err)
	}
	if err := os.Rename(staging, dir); err != nil {
		return m, fmt.Errorf("os.Rename: %w", err)
	}
	moved = true
	return m, nil
}

func isEmpty(dir string) (bool, error) {
	entries, err := os.ReadDir(dir)
	if errors.Is(err, fs.ErrNotExist) {
		return true, nil
	}
	if err != nil {
		return false, fmt.Errorf("os.ReadDir: %w", err)
	}
	return len(entries) == 0, nil
}

// extract unpacks the decrypted tar stream under staging and checks it
// against its manifest. Every byte it sees has been authenticated; the
// path checks still refuse anything but plain files below staging.
func extract(ctx context.Context, dec io.Reader, staging string) (Manifest, error) {
	var m Manifest
	root, err := os.OpenRoot(staging)
	if err != nil {
		return m, fmt.Errorf("os.OpenRoot: %w", err)
	}
	defer root.Close()
	got := map[string]File{}
	var manifest []byte
	tr := tar.NewReader(dec)
	for {
		if err := ctx.Err(); err != nil {
			return m, err
		}
		hdr, err := tr.Next()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			return m, fmt.Errorf("%w: %v", ErrRefused, err)
		}
		if manifest != nil {
			return m, fmt.Errorf("%w: entries after the manifest", ErrRefused)
		}
		if hdr.Typeflag != tar.TypeReg || !filepath.IsLocal(hdr.Name) || path.Clean(hdr.Name) != hdr.Name || hdr.Size < 0 {
			return m, fmt.Errorf("%w: entry %q is not a plain relative file", ErrRefused, hdr.Name)
		}
		if hdr.Name == ManifestName {
			if manifest, err = io.ReadAll(io.LimitReader(tr, 64<<20)); err != nil {
				return m, fmt.Errorf("%w: %v", ErrRefused, err)
			}
			continue
		}
		if _, dup := got[hdr.Name]; dup || hdr.Name == PendingFile {
			return m, fmt.Errorf("%w: entry %q", ErrRefused, hdr.Name)
		}
		if d := path.Dir(hdr.Name); d != "." {
			if err := root.MkdirAll(d, 0o700); err != nil {
				return m, fmt.Errorf("os.Root.MkdirAll: %w", err)
			}
		}
		f, err := root.OpenFile(hdr.Name, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
		if err != nil {
			return m, fmt.Errorf("os.Root.OpenFile: %w", err)
		}
		h := sha256.New()
		n, err := io.Copy(io.MultiWriter(f, h), tr)
		if err == nil {
			err = f.Sync()
		}
		if cerr := f.Close(); err == nil {
			err = cerr
		}
		if err != nil {
			return m, fmt.Errorf("%w: %s: %v", ErrRefused, hdr.Name, err)
		}
		got[hdr.Name] = File{Path: hdr.Name, Size: n, SHA256: hex.EncodeToString(h.Sum(nil))}
	}
	// tar stops at its end-of-archive blocks; the final AEAD segment is
	// only checked when the ciphertext is read to its end.
	if _, err := io.Copy(io.Discard, dec); err != nil {
		return m, fmt.Errorf("%w: %v", ErrRefused, err)
	}
	if manifest == nil {
		return m, fmt.Errorf("%w: no manifest", ErrRefused)
	}
	if err := json.Unmarshal(manifest, &m); err != nil || m.Format != 1 {
		return m, fmt.Errorf("%w: unreadable manifest", ErrRefused)
	}
	if len(m.Files) != len(got) {
		return m, fmt.Errorf("%w: manifest lists %d files, archive holds %d", ErrRefused, len(m.Files), len(got))
	}
	for _, f := range m.Files {
		if got[f.Path] != f {
			return m, fmt.Errorf("%w: %s does not match the manifest", ErrRefused, f.Path)
		}
	}
	return m, syncTree(staging)
}

// syncTree fsyncs every directory under dir, so the renamed tree is
// durable as a whole.
func syncTree(dir string) error {
	return filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if err != nil || !d.IsDir() {
			return err
		}
		f, err := os.Open(p)
		if err != nil {
			return fmt.Errorf("os.Open: %w", err)
		}
		defer f.Close()
		if err := f.Sync(); err != nil {
			return fmt.Errorf("dir.Sync: %w", err)
		}
		return nil
	})
}

// Pending reports whether dir is a restore whose journal has not been
// replayed.
func Pending(dir string) (bool, error) {
	_, err := os.Lstat(filepath.Join(dir, PendingFile))
	if errors.Is(err, fs.ErrNotExist) {
		return false, nil
	}
	if err != nil {
		return false, fmt.Errorf("os.Lstat: %w", err)
	}
	return true, nil
}

// ClearPending removes the marker once the journal is replayed.
func ClearPending(dir string) error {
	if err := os.Remove(filepath.Join(dir, PendingFile)); err != nil && !errors.Is(err, fs.ErrNotExist) {
		return fmt.Errorf("os.Remove: %w", err)
	}
	return nil
}
