// Package dirblobs is the embedded blob adapter: one directory.
//
// Key "a/b/c" is the file a/b/c~ (the "~", outside the key charset, lets
// "a" and "a/b" both exist, as in Cloud Storage). Each file starts with a
// small header holding the content type, metadata and creation time, so
// one rename replaces data and attributes together. Writes go to a temp
// file in the same directory, are fsynced, then renamed (or, for
// CreateOnly, hard-linked, which fails if the name exists), and the
// directory is fsynced. Every path is opened through an os.Root, so
// nothing, symlinks included, reaches outside the root. Files are 0600,
// directories 0700; empty directories are removed on delete so no key
// prefix (a user's pseudonym) outlives its objects.
package dirblobs

import (
	"context"
	"crypto/rand"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path"
	"sort"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/lethe-dev/lethe/infra/blobs"
)

// Driver is the blobs.Driver on a directory.
type Driver struct {
	root *os.Root
}

var _ blobs.Driver = (*Driver)(nil)

// staleTemp: temp files older than this are debris of a crash and removed
// by Open (a younger one may belong to a write in progress elsewhere).
const staleTemp = time.Hour

// Open opens (creating if needed, 0700) the directory dir as a bucket.
func Open(dir string) (blobs.Bucket, error) {
	d, err := OpenDriver(dir)
	if err != nil {
		return blobs.Bucket{}, err
	}
	return blobs.New(d), nil
}

// OpenDriver opens the directory's driver (for decorators; callers use
// Open).
func OpenDriver(dir string) (*Driver, error) {
	if dir == "" {
		return nil, errors.New("dirblobs.Open: empty directory")
	}
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, fmt.Errorf("os.MkdirAll: %w", err)
	}
	root, err := os.OpenRoot(dir)
	if err != nil {
		return nil, fmt.Errorf("os.OpenRoot: %w", err)
	}
	b := &Driver{root: root}
	if err := b.removeStaleTemps(); err != nil {
		root.Close()
		return nil, err
	}
	return b, nil
}

// Close releases the directory.
func (b *Driver) Close() error {
	if err := b.root.Close(); err != nil {
		return fmt.Errorf("os.Root.Close: %w", err)
	}
	return nil
}

// Write stores r under key atomically.
func (b *Driver) Write(ctx context.Context, key string, r io.Reader, opts blobs.WriteOptions) (blobs.Attrs, error) {
	m := meta{ContentType: opts.ContentType, Metadata: cloneMap(opts.Metadata), Created: time.Now().UTC()}
	hdr, err := encodeHeader(m)
	if err != nil {
		return blobs.Attrs{}, err
	}
	final := objectPath(key)
	dir := path.Dir(final)

	tmp, f, err := b.createTemp(dir)
	if err != nil {
		return blobs.Attrs{}, err
	}
	size, err := writeObject(ctx, f, hdr, r)
	if cerr := f.Close(); err == nil && cerr != nil {
		err = fmt.Errorf("os.File.Close: %w", cerr)
	}
	if err != nil {
		b.removeQuietly(tmp)
		return blobs.Attrs{}, err
	}

	if opts.CreateOnly {
		// link(2) fails if final exists: no window between check and write.
		err = b.root.Link(tmp, final)
		b.removeQuietly(tmp)
		if errors.Is(err, fs.ErrExist) {
			return blobs.Attrs{}, blobs.ErrPrecondition
		}
		if err != nil {
			return blobs.Attrs{}, fmt.Errorf("os.Root.Link: %w", err)
		}
	} else if err := b.root.Rename(tmp, final); err != nil {
		b.removeQuietly(tmp)
		return blobs.Attrs{}, fmt.Errorf("os.Root.Rename: %w", err)
	}
	if err := b.syncDir(dir); err != nil {
		return blobs.Attrs{}, err
	}
	return attrs(key, size, m), nil
}

// createTemp creates a fresh temp file in dir (making dir). A concurrent
// Delete may prune dir between MkdirAll and the create: try again.
func (b *Driver) createTemp(dir string) (string, *os.File, error) {
	var last error
	for attempt := range 6 {
		// The directory usually exists (a conversation's chunks share it):
		// make it only when the create says it is missing, which saves the
		// walk of MkdirAll on every write.
		if attempt > 0 && dir != "." {
			if err := b.root.MkdirAll(dir, 0o700); err != nil {
				if errors.Is(err, fs.ErrNotExist) {
					last = err
					continue
				}
				return "", nil, fmt.Errorf("os.Root.MkdirAll: %w", err)
			}
		}
		var rnd [12]byte
		_, _ = rand.Read(rnd[:])
		name := path.Join(dir, tmpPrefix+hex.EncodeToString(rnd[:]))
		f, err := b.root.OpenFile(name, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
		if err == nil {
			return name, f, nil
		}
		if !errors.Is(err, fs.ErrNotExist) {
			return "", nil, fmt.Errorf("os.Root.OpenFile: %w", err)
		}
		last = err
	}
	return "", nil, fmt.Errorf("dirblobs: create temp file: %w", last)
}

// copyBufs: a 256 KiB copy buffer per write was a tenth of an upload's
// allocations.
var copyBufs = sync.Pool{New: func() any { b := make([]byte, 256<<10); return &b }}

// writeObject writes header and data to f, patches the size, and fsyncs.
func writeObject(ctx context.Context, f *os.File, hdr []byte, r io.Reader) (int64, error) {
	if _, err := f.Write(hdr); err != nil {
		return 0, fmt.Errorf("os.File.Write: %w", err)
	}
	buf := copyBufs.Get().(*[]byte)
	defer copyBufs.Put(buf)
	n, err := io.CopyBuffer(f, ctxReader{ctx, r}, *buf)
	if err != nil {
		return 0, fmt.Errorf("io.Copy: %w", err)
	}
	var sz [8]byte
	binary.BigEndian.PutUint64(sz[:], uint64(n))
	if _, err := f.WriteAt(sz[:], int64(sizeFieldSpot)); err != nil {
		return 0, fmt.Errorf("os.File.WriteAt: %w", err)
	}
	if err := f.Sync(); err != nil {
		return 0, fmt.Errorf("os.File.Sync: %w", err)
	}
	return n, nil
}

// ctxReader stops a copy when ctx is done.
type ctxReader struct {
	ctx context.Context
	r   io.Reader
}

func (c ctxReader) Read(p []byte) (int, error) {
	if err := c.ctx.Err(); err != nil {
		return 0, err
	}
	return c.r.Read(p)
}

// Read returns the object's bytes and attributes; blobs.ErrNotFound when
// absent. The reader keeps the version it opened even if the object is
// replaced or deleted meanwhile.
func (b *Driver) Read(ctx context.Context, key string) (io.ReadCloser, blobs.Attrs, error) {
	f, a, hlen, err := b.open(key)
	if err != nil {
		return nil, blobs.Attrs{}, err
	}
	return &objectReader{Reader: io.NewSectionReader(f, hlen, a.Size), f: f}, a, nil
}

type objectReader struct {
	io.Reader
	f *os.File
}

func (o *objectReader) Close() error { return o.f.Close() }

// Attrs returns the object's attributes; blobs.ErrNotFound when absent.
func (b *Driver) Attrs(ctx context.Context, key string) (blobs.Attrs, error) {
	f, a, _, err := b.open(key)
	if err != nil {
		return blobs.Attrs{}, err
	}
	f.Close()
	return a, nil
}

// open opens key's file and reads its header.
func (b *Driver) open(key string) (*os.File, blobs.Attrs, int64, error) {
	f, err := b.root.OpenFile(objectPath(key), os.O_RDONLY|syscall.O_NOFOLLOW, 0)
	if errors.Is(err, fs.ErrNotExist) || isNotDir(err) || errors.Is(err, syscall.ELOOP) {
		return nil, blobs.Attrs{}, 0, blobs.ErrNotFound
	}
	if err != nil {
		return nil, blobs.Attrs{}, 0, fmt.Errorf("os.Root.OpenFile: %w", err)
	}
	st, err := f.Stat()
	if err != nil {
		f.Close()
		return nil, blobs.Attrs{}, 0, fmt.Errorf("os.File.Stat: %w", err)
	}
	if !st.Mode().IsRegular() {
		f.Close()
		return nil, blobs.Attrs{}, 0, blobs.ErrNotFound
	}
	m, size, hlen, err := decodeHeader(f, st.Size())
	if err != nil {
		f.Close()
		return nil, blobs.Attrs{}, 0, err
	}
	return f, attrs(key, size, m), hlen, nil
}

// isNotDir: a path component is a file (ENOTDIR), so the key is absent.
// (ELOOP, beside it, is a symlink where an object should be: never ours.)
func isNotDir(err error) bool { return errors.Is(err, syscall.ENOTDIR) }

func attrs(key string, size int64, m meta) blobs.Attrs {
	return blobs.Attrs{Key: key, Size: size, ContentType: m.ContentType, Metadata: cloneMap(m.Metadata), Created: m.Created}
}

func cloneMap(m map[string]string) map[string]string {
	if len(m) == 0 {
		return nil
	}
	out := make(map[string]string, len(m))
	for k, v := range m {
		out[k] = v
	}
	return out
}

// Delete unlinks the object; blobs.ErrNotFound when absent.
func (b *Driver) Delete(ctx context.Context, key string) error {
	return b.delete(key)
}

func (b *Driver) delete(key string) error {
	p := objectPath(key)
	if err := b.root.Remove(p); err != nil {
		if errors.Is(err, fs.ErrNotExist) || isNotDir(err) {
			return blobs.ErrNotFound
		}
		return fmt.Errorf("os.Root.Remove: %w", err)
	}
	dir := path.Dir(p)
	if err := b.syncDir(dir); err != nil {
		// A concurrent delete in the same directory emptied and pruned
		// it (syncing its parent): our entry is gone with it.
		if errors.Is(err, fs.ErrNotExist) {
			return nil
		}
		return err
	}
	b.prune(dir)
	return nil
}

// prune removes dir and its parents while they are empty.
func (b *Driver) prune(dir string) {
	for d := dir; d != "." && d != "/"; d = path.Dir(d) {
		if err := b.root.Remove(d); err != nil {
			return // not empty (or already gone): stop
		}
		_ = b.syncDir(path.Dir(d))
	}
}

// ListPage returns up to limit objects under prefix after the key after,
// sorted by key. The walk visits directories in key order and skips those
// wholly before after, so a page costs the directories on its path, not
// the whole tree.
func (b *Driver) ListPage(ctx context.Context, prefix, after string, limit int) ([]blobs.Attrs, error) {
	keys, err := b.keys(ctx, prefix, after, limit)
	if err != nil {
		return nil, err
	}
	out := make([]blobs.Attrs, 0, len(keys))
	for _, k := range keys {
		f, a, _, err := b.open(k)
		if errors.Is(err, blobs.ErrNotFound) {
			continue // deleted since the walk
		}
		if err != nil {
			return nil, err
		}
		f.Close()
		out = append(out, a)
	}
	return out, nil
}

// ErrorCode: the driver returns the port's sentinels itself.
func (b *Driver) ErrorCode(err error) error {
	for _, code := range []error{blobs.ErrNotFound, blobs.ErrPrecondition, blobs.ErrInvalidKey} {
		if errors.Is(err, code) {
			return code
		}
	}
	return nil
}

// As sets a **Driver target.
func (b *Driver) As(target any) bool {
	if p, ok := target.(**Driver); ok {
		*p = b
		return true
	}
	return false
}

// DeletePrefix deletes every object whose key starts with prefix (never
// empty: blobs.Bucket refuses that) and returns how many.
func (b *Driver) DeletePrefix(ctx context.Context, prefix string) (int, error) {
	keys, err := b.keys(ctx, prefix, "", -1)
	if err != nil {
		return 0, err
	}
	// A prefix that names a whole directory (an erased user's) goes in one
	// RemoveAll: unlinks relative to open directories, not a path walk
	// per object.
	if dir, partial := splitPrefix(prefix); partial == "" && dir != "." {
		if err := b.root.RemoveAll(dir); err != nil {
			return 0, fmt.Errorf("os.Root.RemoveAll: %w", err)
		}
		// The directory is gone: its parent's entry changed.
		return len(keys), b.pruneAndSync(map[string]bool{path.Dir(dir): true})
	}
	// Unlink everything, then fsync each directory once (not once per
	// object: an erased user may have tens of thousands), deepest first so
	// emptied directories are pruned on the way up.
	n := 0
	dirs := map[string]bool{}
	var werr error
	for _, k := range keys {
		if werr = ctx.Err(); werr != nil {
			break
		}
		p := objectPath(k)
		if err := b.root.Remove(p); err != nil {
			if errors.Is(err, fs.ErrNotExist) || isNotDir(err) {
				continue // deleted meanwhile
			}
			werr = fmt.Errorf("os.Root.Remove: %w", err)
			break
		}
		n++
		dirs[path.Dir(p)] = true
	}
	if err := b.pruneAndSync(dirs); err != nil && werr == nil {
		werr = err
	}
	return n, werr
}

// pruneAndSync removes the directories in changed (and their ancestors)
// that are now empty, deepest first, then fsyncs once each directory that
// survives and saw an entry go: what per-object deletes would do with one
// fsync per directory instead of two per object.
func (b *Driver) pruneAndSync(changed map[string]bool) error {
	candidates := map[string]bool{}
	for d := range changed {
		for x := d; x != "." && x != "/" && !candidates[x]; x = path.Dir(x) {
			candidates[x] = true
		}
	}
	order := make([]string, 0, len(candidates))
	for d := range candidates {
		order = append(order, d)
	}
	depth := func(d string) int { return strings.Count(d, "/") }
	sort.Slice(order, func(i, j int) bool { return depth(order[i]) > depth(order[j]) })
	removed := map[string]bool{}
	for _, d := range order {
		if b.root.Remove(d) == nil { // fails harmlessly on a non-empty dir
			removed[d] = true
			changed[path.Dir(d)] = true
		}
	}
	for d := range changed {
		if removed[d] {
			continue
		}
		if err := b.syncDir(d); err != nil && !errors.Is(err, fs.ErrNotExist) {
			return err
		}
	}
	return nil
}

// keys walks the tree under prefix and returns, sorted, the matching keys
// after after, at most limit of them (all with limit < 0).
func (b *Driver) keys(ctx context.Context, prefix, after string, limit int) ([]string, error) {
	dir, partial := splitPrefix(prefix)
	w := &walker{b: b, after: after, limit: limit}
	keyDir := ""
	if dir != "." {
		keyDir = dir + "/"
	}
	if err := w.walk(ctx, dir, keyDir, partial); err != nil {
		return nil, err
	}
	return w.out, nil
}

type walker struct {
	b     *Driver
	after string
	limit int
	out   []string
}

func (w *walker) full() bool { return w.limit >= 0 && len(w.out) >= w.limit }

// walk appends, in key order, the keys under dir (whose keys start with
// keyDir) whose next segment starts with partial ("" below the first
// level) and that sort after w.after.
func (w *walker) walk(ctx context.Context, dir, keyDir, partial string) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	// A symlink (or file) where a folder should be holds no objects. The
	// Root would refuse one leading out anyway; this keeps List quiet.
	if st, err := w.b.root.Lstat(dir); err != nil || !st.IsDir() {
		if err == nil || errors.Is(err, fs.ErrNotExist) || isNotDir(err) {
			return nil
		}
		return fmt.Errorf("os.Root.Lstat: %w", err)
	}
	d, err := w.b.root.OpenFile(dir, os.O_RDONLY|syscall.O_NOFOLLOW|syscall.O_DIRECTORY, 0)
	if errors.Is(err, fs.ErrNotExist) || isNotDir(err) || errors.Is(err, syscall.ELOOP) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("os.Root.Open: %w", err)
	}
	entries, err := d.ReadDir(-1)
	d.Close()
	if err != nil {
		return fmt.Errorf("os.File.ReadDir: %w", err)
	}
	// An entry's keys all start with its sort key: the key of a file, the
	// folder's path with its "/" for a directory. Sorting those sorts keys.
	type entry struct {
		sortKey string
		name    string
		isDir   bool
	}
	var list []entry
	for _, e := range entries {
		name := e.Name()
		switch {
		case e.Type().IsDir():
			if blobs.ValidSegment(name) && strings.HasPrefix(name, partial) {
				list = append(list, entry{keyDir + name + "/", name, true})
			}
		case e.Type().IsRegular():
			seg, ok := strings.CutSuffix(name, objSuffix)
			if ok && blobs.ValidSegment(seg) && strings.HasPrefix(seg, partial) {
				list = append(list, entry{keyDir + seg, seg, false})
			}
			// Temp files and strangers are not objects.
		}
		// Symlinks and other types are never objects.
	}
	sort.Slice(list, func(i, j int) bool { return list[i].sortKey < list[j].sortKey })
	for _, e := range list {
		if w.full() {
			return nil
		}
		if !e.isDir {
			if e.sortKey > w.after {
				w.out = append(w.out, e.sortKey)
			}
			continue
		}
		// Every key in the folder starts with sortKey: skip it when after
		// lies beyond all of them.
		if e.sortKey < w.after && !strings.HasPrefix(w.after, e.sortKey) {
			continue
		}
		if err := w.walk(ctx, path.Join(dir, e.name), e.sortKey, ""); err != nil {
			return err
		}
	}
	return nil
}

func (b *Driver) syncDir(dir string) error {
	d, err := b.root.Open(dir)
	if err != nil {
		return fmt.Errorf("os.Root.Open: %w", err)
	}
	defer d.Close()
	if err := d.Sync(); err != nil {
		return fmt.Errorf("fsync dir: %w", err)
	}
	return nil
}

func (b *Driver) removeQuietly(name string) { _ = b.root.Remove(name) }

// removeStaleTemps deletes temp files left by a crash mid-write.
func (b *Driver) removeStaleTemps() error {
	err := fs.WalkDir(b.root.FS(), ".", func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if d.Type().IsRegular() && strings.HasPrefix(d.Name(), tmpPrefix) {
			if info, err := d.Info(); err == nil && time.Since(info.ModTime()) > staleTemp {
				b.removeQuietly(p)
			}
		}
		return nil
	})
	if err != nil {
		return fmt.Errorf("dirblobs: sweep temp files: %w", err)
	}
	return nil
}
