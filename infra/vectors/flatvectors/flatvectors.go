// Package flatvectors is the embedded vectors adapter: an exact cosine
// index, one file per namespace. At per-user sizes a flat scan is faster
// than a graph index and has recall 1.0.
//
// Vectors are normalised on insert, so a query is a dot product. Each
// mutation batch rewrites the namespace file atomically (temp file, fsync,
// rename), so deleted records are gone from the files as soon as the call
// returns, and DeleteNamespace unlinks the file. One process owns a
// directory at a time. Loaded namespaces stay in memory until Close.
package flatvectors

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"runtime"
	"slices"
	"strings"
	"sync"

	"github.com/lethe-dev/lethe/infra/vectors"
)

// ErrClosed is returned by every call after Close.
var ErrClosed = errors.New("flatvectors: index closed")

const (
	fileExt   = ".vec"
	tmpMarker = ".vec.tmp-"
	// parallelWork is the dim×count above which a query is split across
	// cores; below it goroutine start-up costs more than it saves.
	parallelWork = 1 << 18
)

// Driver is the vectors.Driver of an exact cosine index persisted under
// one directory.
type Driver struct {
	dir string

	life   sync.RWMutex // shared by every call, exclusive in Close
	closed bool

	mu     sync.Mutex // guards spaces
	spaces map[string]*space
}

var _ vectors.Driver = (*Driver)(nil)

// space is one namespace. vecs holds len(ids)*dim normalised floats, row i
// belonging to ids[i].
type space struct {
	path string

	mu     sync.RWMutex
	loaded bool
	dim    int
	ids    []string
	vecs   []float32
	meta   []map[string]any
	pos    map[string]int
}

// Open opens (creating with mode 0700) the index directory and removes temp
// files left by a crash mid-write, which may hold deleted records.
func Open(dir string) (vectors.Index, error) {
	d, err := OpenDriver(dir)
	if err != nil {
		return vectors.Index{}, err
	}
	return vectors.New(d), nil
}

// OpenDriver is Open's driver, for decorators and this package's tests.
func OpenDriver(dir string) (*Driver, error) {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, fmt.Errorf("os.MkdirAll: %w", err)
	}
	entries, err := os.ReadDir(dir)
	if err != nil {
		return nil, fmt.Errorf("os.ReadDir: %w", err)
	}
	for _, e := range entries {
		if strings.Contains(e.Name(), tmpMarker) {
			if err := os.Remove(filepath.Join(dir, e.Name())); err != nil && !errors.Is(err, fs.ErrNotExist) {
				return nil, fmt.Errorf("os.Remove: %w", err)
			}
		}
	}
	return &Driver{dir: dir, spaces: map[string]*space{}}, nil
}

// Close releases memory; later calls return ErrClosed. Writes are
// synchronous, so there is nothing to flush.
func (x *Driver) Close() error {
	x.life.Lock()
	defer x.life.Unlock()
	x.closed = true
	x.mu.Lock()
	x.spaces = nil
	x.mu.Unlock()
	return nil
}

// enter pins the index open and returns ns's space (the port validated
// ns: it is a safe file name); the caller must call x.life.RUnlock.
func (x *Driver) enter(ctx context.Context, ns string) (*space, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	x.life.RLock()
	if x.closed {
		x.life.RUnlock()
		return nil, ErrClosed
	}
	x.mu.Lock()
	s, ok := x.spaces[ns]
	if !ok {
		s = &space{path: filepath.Join(x.dir, ns+fileExt)}
		x.spaces[ns] = s
	}
	x.mu.Unlock()
	return s, nil
}

// rlock read-locks s, loading it from disk first if needed.
func (s *space) rlock() error {
	for {
		s.mu.RLock()
		if s.loaded {
			return nil
		}
		s.mu.RUnlock()
		if err := s.lock(); err != nil {
			return err
		}
		s.mu.Unlock()
	}
}

// lock write-locks s, loading it from disk first if needed.
func (s *space) lock() error {
	s.mu.Lock()
	if s.loaded {
		return nil
	}
	if err := s.load(); err != nil {
		s.mu.Unlock()
		return err
	}
	return nil
}

func (s *space) load() error {
	s.reset()
	data, err := os.ReadFile(s.path)
	if errors.Is(err, fs.ErrNotExist) {
		s.loaded = true
		return nil
	}
	if err != nil {
		return fmt.Errorf("os.ReadFile: %w", err)
	}
	snap, err := decodeSnapshot(data)
	if err != nil {
		return err
	}
	s.dim, s.ids, s.vecs, s.meta = snap.dim, snap.ids, snap.vecs, snap.meta
	for i, id := range s.ids {
		s.pos[id] = i
	}
	s.loaded = true
	return nil
}

func (s *space) reset() {
	s.loaded = false
	s.dim = 0
	s.ids, s.vecs, s.meta = nil, nil, nil
	s.pos = map[string]int{}
}

// persist writes the namespace file (or unlinks it when empty). On failure
// the in-memory state, already mutated, is dropped so the next call reloads
// what is on disk.
func (s *space) persist() error {
	err := s.write()
	if err != nil {
		s.reset()
	}
	return err
}

func (s *space) write() error {
	if len(s.ids) == 0 {
		s.dim = 0
		if err := os.Remove(s.path); err != nil && !errors.Is(err, fs.ErrNotExist) {
			return fmt.Errorf("os.Remove: %w", err)
		}
		return syncDir(filepath.Dir(s.path))
	}
	data, err := encodeSnapshot(&snapshot{dim: s.dim, ids: s.ids, vecs: s.vecs, meta: s.meta})
	if err != nil {
		return err
	}
	return writeAtomic(s.path, data)
}

func writeAtomic(path string, data []byte) (err error) {
	dir, base := filepath.Split(path)
	f, err := os.CreateTemp(dir, strings.TrimSuffix(base, fileExt)+tmpMarker+"*")
	if err != nil {
		return fmt.Errorf("os.CreateTemp: %w", err)
	}
	defer func() {
		if err != nil {
			f.Close()
			os.Remove(f.Name())
		}
	}()
	if _, err = f.Write(data); err != nil {
		return fmt.Errorf("file.Write: %w", err)
	}
	if err = f.Sync(); err != nil {
		return fmt.Errorf("file.Sync: %w", err)
	}
	if err = f.Close(); err != nil {
		return fmt.Errorf("file.Close: %w", err)
	}
	if err = os.Rename(f.Name(), path); err != nil {
		return fmt.Errorf("os.Rename: %w", err)
	}
	return syncDir(dir)
}

func syncDir(dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		return fmt.Errorf("os.Open: %w", err)
	}
	defer d.Close()
	if err := d.Sync(); err != nil {
		return fmt.Errorf("dir.Sync: %w", err)
	}
	return nil
}

// Upsert creates or replaces records by id. The batch is validated whole
// before anything changes; within a batch the last record for an id wins.
func (x *Driver) Upsert(ctx context.Context, ns string, recs []vectors.Record) error {
	type prepared struct {
		id   string
		vec  []float32
		meta map[string]any
	}
	batch := make([]prepared, len(recs))
	dim := 0
	for i, r := range recs {
		dim = len(r.Values)
		n := norm(r.Values)
		vec := make([]float32, dim)
		for j, v := range r.Values {
			vec[j] = float32(float64(v) / n)
		}
		batch[i] = prepared{id: r.ID, vec: vec, meta: r.Metadata}
	}
	s, err := x.enter(ctx, ns)
	if err != nil {
		return err
	}
	defer x.life.RUnlock()
	if len(batch) == 0 {
		return nil
	}
	if err := s.lock(); err != nil {
		return err
	}
	defer s.mu.Unlock()
	if s.dim != 0 && s.dim != dim {
		return fmt.Errorf("%w: namespace has %d, got %d", vectors.ErrDimension, s.dim, dim)
	}
	s.dim = dim
	for _, p := range batch {
		if i, ok := s.pos[p.id]; ok {
			copy(s.vecs[i*dim:(i+1)*dim], p.vec)
			s.meta[i] = p.meta
			continue
		}
		s.pos[p.id] = len(s.ids)
		s.ids = append(s.ids, p.id)
		s.vecs = append(s.vecs, p.vec...)
		s.meta = append(s.meta, p.meta)
	}
	return s.persist()
}

// Delete removes ids; absent ids are ignored.
func (x *Driver) Delete(ctx context.Context, ns string, ids []string) error {
	s, err := x.enter(ctx, ns)
	if err != nil {
		return err
	}
	defer x.life.RUnlock()
	if err := s.lock(); err != nil {
		return err
	}
	defer s.mu.Unlock()
	removed := false
	for _, id := range ids {
		i, ok := s.pos[id]
		if !ok {
			continue
		}
		// Swap with the last row: O(dim) instead of shifting everything.
		last := len(s.ids) - 1
		if i != last {
			s.ids[i], s.meta[i] = s.ids[last], s.meta[last]
			copy(s.vecs[i*s.dim:(i+1)*s.dim], s.vecs[last*s.dim:])
			s.pos[s.ids[i]] = i
		}
		s.ids, s.meta = s.ids[:last], s.meta[:last]
		clear(s.vecs[last*s.dim:])
		s.vecs = s.vecs[:last*s.dim]
		delete(s.pos, id)
		removed = true
	}
	if !removed {
		return nil
	}
	return s.persist()
}

// DeleteNamespace unlinks the namespace file and forgets its contents.
func (x *Driver) DeleteNamespace(ctx context.Context, ns string) error {
	s, err := x.enter(ctx, ns)
	if err != nil {
		return err
	}
	defer x.life.RUnlock()
	s.mu.Lock()
	defer s.mu.Unlock()
	clear(s.vecs)
	s.reset()
	if err := s.write(); err != nil {
		return err
	}
	s.loaded = true
	return nil
}

// Count returns the number of records in the namespace.
func (x *Driver) Count(ctx context.Context, ns string) (int, error) {
	s, err := x.enter(ctx, ns)
	if err != nil {
		return 0, err
	}
	defer x.life.RUnlock()
	if err := s.rlock(); err != nil {
		return 0, err
	}
	defer s.mu.RUnlock()
	return len(s.ids), nil
}

// ListIDs returns, sorted, up to limit ids starting with prefix (a plain
// string prefix) after cursor, which is the last id of the previous page.
func (x *Driver) ListIDs(ctx context.Context, ns, prefix, cursor string, limit int) ([]string, string, error) {
	s, err := x.enter(ctx, ns)
	if err != nil {
		return nil, "", err
	}
	defer x.life.RUnlock()
	if err := s.rlock(); err != nil {
		return nil, "", err
	}
	defer s.mu.RUnlock()
	var out []string
	for _, id := range s.ids {
		if strings.HasPrefix(id, prefix) && id > cursor {
			out = append(out, id)
		}
	}
	slices.Sort(out)
	if len(out) <= limit {
		return out, "", nil
	}
	return out[:limit], out[limit-1], nil
}

// As sets a **Driver target.
func (x *Driver) As(target any) bool {
	if p, ok := target.(**Driver); ok {
		*p = x
		return true
	}
	return false
}

// Query returns the k records most similar to vector among those matching
// every condition, by score descending, then id ascending.
func (x *Driver) Query(ctx context.Context, ns string, vector []float32, k int, conds []vectors.Condition) ([]vectors.Match, error) {
	n, f := norm(vector), filter(conds)
	s, err := x.enter(ctx, ns)
	if err != nil {
		return nil, err
	}
	defer x.life.RUnlock()
	if err := s.rlock(); err != nil {
		return nil, err
	}
	defer s.mu.RUnlock()
	if s.dim == 0 {
		return nil, nil
	}
	if len(vector) != s.dim {
		return nil, fmt.Errorf("%w: namespace has %d, got %d", vectors.ErrDimension, s.dim, len(vector))
	}
	q := make([]float32, len(vector))
	for i, v := range vector {
		q[i] = float32(float64(v) / n)
	}
	hits := s.search(q, k, f)
	out := make([]vectors.Match, len(hits))
	for i, h := range hits {
		out[i] = vectors.Match{ID: s.ids[h.row], Score: h.score, Metadata: cloneMetadata(s.meta[h.row])}
	}
	return out, nil
}

type hit struct {
	score float32
	row   int
}

// search scans every row, split across cores when the namespace is large.
func (s *space) search(q []float32, k int, f filter) []hit {
	n := len(s.ids)
	workers := min(runtime.GOMAXPROCS(0), n*s.dim/parallelWork)
	var hits []hit
	if workers <= 1 {
		hits = s.scan(q, k, f, 0, n)
	} else {
		parts := make([][]hit, workers)
		var wg sync.WaitGroup
		for w := range workers {
			wg.Go(func() {
				parts[w] = s.scan(q, k, f, n*w/workers, n*(w+1)/workers)
			})
		}
		wg.Wait()
		for _, p := range parts {
			hits = append(hits, p...)
		}
	}
	slices.SortFunc(hits, func(a, b hit) int {
		if c := cmp.Compare(b.score, a.score); c != 0 {
			return c
		}
		return strings.Compare(s.ids[a.row], s.ids[b.row])
	})
	return hits[:min(k, len(hits))]
}

// scan keeps the best k of rows [from, to) in a min-heap whose root is the
// worst kept hit (lowest score; among equal scores, highest id).
func (s *space) scan(q []float32, k int, f filter, from, to int) []hit {
	h := make([]hit, 0, min(k, to-from))
	worse := func(a, b hit) bool {
		if a.score != b.score {
			return a.score < b.score
		}
		return s.ids[a.row] > s.ids[b.row]
	}
	dim := s.dim
	for row := from; row < to; row++ {
		if len(f) > 0 && !f.match(s.meta[row]) {
			continue
		}
		c := hit{score: dot(q, s.vecs[row*dim:(row+1)*dim]), row: row}
		if len(h) < k {
			h = append(h, c)
			// sift up
			for i := len(h) - 1; i > 0; {
				p := (i - 1) / 2
				if !worse(h[i], h[p]) {
					break
				}
				h[i], h[p] = h[p], h[i]
				i = p
			}
			continue
		}
		if !worse(h[0], c) {
			continue
		}
		h[0] = c
		// sift down
		for i := 0; ; {
			l, r, m := 2*i+1, 2*i+2, i
			if l < len(h) && worse(h[l], h[m]) {
				m = l
			}
			if r < len(h) && worse(h[r], h[m]) {
				m = r
			}
			if m == i {
				break
			}
			h[i], h[m] = h[m], h[i]
			i = m
		}
	}
	return h
}

// dot is unrolled with four accumulators so the adds pipeline.
func dot(a, b []float32) float32 {
	b = b[:len(a)]
	var s0, s1, s2, s3 float32
	i := 0
	for ; i+8 <= len(a); i += 8 {
		s0 += a[i]*b[i] + a[i+4]*b[i+4]
		s1 += a[i+1]*b[i+1] + a[i+5]*b[i+5]
		s2 += a[i+2]*b[i+2] + a[i+6]*b[i+6]
		s3 += a[i+3]*b[i+3] + a[i+7]*b[i+7]
	}
	for ; i < len(a); i++ {
		s0 += a[i] * b[i]
	}
	sum := (s0 + s1) + (s2 + s3)
	// Normalised inputs keep |sum| ≤ 1 up to rounding; clamp so callers see
	// a proper cosine.
	if sum > 1 {
		return 1
	}
	if sum < -1 {
		return -1
	}
	return sum
}
