// Package pineconevectors is the production vectors adapter: one Pinecone
// namespace per user (the keyed uid hash; never the empty or default
// namespace) in one serverless cosine index.
//
// Pinecone's data plane is gRPC, so the adapter talks to it through the
// narrow DataPlane interface: NewSDKDataPlane implements it with
// github.com/pinecone-io/go-pinecone/v5; the tests' FakeDataPlane
// (fakeplane_test.go, never in the binary) is an in-memory fake that
// enforces Pinecone's documented limits and can be eventually consistent
// and approximate as Pinecone is, so the conformance suite proves the
// adapter's batching and pagination.
//
// The rules on ids, namespaces, vectors, metadata and filters are the
// port's (vectors.Index checks them); this driver translates and batches
// by Pinecone's request size.
//
// Metadata is stored in Pinecone unencrypted: callers must put no user
// content in it (ids, sequence numbers, timestamps only).
package pineconevectors

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"sync"

	"github.com/lethe-dev/lethe/infra/vectors"
)

// ErrClosed is returned by every call after Close.
var ErrClosed = errors.New("pineconevectors: index closed")

// requestOverhead bounds the bytes of an upsert request outside its
// records (envelope, namespace, array punctuation per record is counted
// with the record).
const requestOverhead = 256

// Options configures an Index.
type Options struct {
	// Dim is the index's dimension. When set, vectors of another length
	// fail with vectors.ErrDimension before any request; when 0 the data
	// plane's answer decides.
	Dim int
	// MaxRequestBytes caps one upsert request; 0 means MaxUpsertBytes.
	MaxRequestBytes int
}

// Driver implements vectors.Driver over a DataPlane.
type Driver struct {
	dp       DataPlane
	dim      int
	maxBytes int

	mu     sync.RWMutex
	closed bool
}

var _ vectors.Driver = (*Driver)(nil)

// New returns the Index over dp. The caller keeps ownership of dp (Close
// does not close it), so several Index values may share one connection.
func New(dp DataPlane, opts Options) vectors.Index { return vectors.New(NewDriver(dp, opts)) }

// NewDriver is New's driver, for decorators and this package's tests.
func NewDriver(dp DataPlane, opts Options) *Driver {
	mb := opts.MaxRequestBytes
	if mb <= 0 || mb > MaxUpsertBytes {
		mb = MaxUpsertBytes
	}
	return &Driver{dp: dp, dim: opts.Dim, maxBytes: mb}
}

// Close makes later calls fail with ErrClosed.
func (x *Driver) Close() error {
	x.mu.Lock()
	x.closed = true
	x.mu.Unlock()
	return nil
}

// As sets a **Driver target.
func (x *Driver) As(target any) bool {
	if p, ok := target.(**Driver); ok {
		*p = x
		return true
	}
	return false
}

// enter pins the index open; the caller must call x.mu.RUnlock.
func (x *Driver) enter(ctx context.Context) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	x.mu.RLock()
	if x.closed {
		x.mu.RUnlock()
		return ErrClosed
	}
	return nil
}

// Upsert sends a batch the port validated; larger than one request
// allows, it goes as several, and if one fails, earlier ones stay written
// (upserts are idempotent, so the caller's retry converges).
func (x *Driver) Upsert(ctx context.Context, ns string, recs []vectors.Record) error {
	if err := x.enter(ctx); err != nil {
		return err
	}
	defer x.mu.RUnlock()
	vecs := make([]Vector, len(recs))
	costs := make([]int, len(recs))
	for i, r := range recs {
		if x.dim != 0 && len(r.Values) != x.dim {
			return fmt.Errorf("%w: vector length %d, want %d", vectors.ErrDimension, len(r.Values), x.dim)
		}
		vecs[i] = Vector{ID: r.ID, Values: r.Values, Metadata: wireMetadata(r.Metadata)}
		j, p, err := vectorSizes(vecs[i])
		if err != nil {
			return fmt.Errorf("%w: record encoding: %v", vectors.ErrInvalid, err)
		}
		costs[i] = max(j, p) + 1 // +1: the comma between records
		if costs[i]+requestOverhead > x.maxBytes {
			return fmt.Errorf("%w: %w: record of %d bytes exceeds a request", vectors.ErrInvalid, ErrLimit, costs[i])
		}
	}
	for _, b := range planBatches(costs, MaxUpsertRecords, x.maxBytes-requestOverhead) {
		if err := x.dp.Upsert(ctx, ns, vecs[b[0]:b[1]]); err != nil {
			return fmt.Errorf("pinecone.Upsert: %w", err)
		}
	}
	return nil
}

// planBatches splits items with the given costs into consecutive [start,
// end) ranges of at most maxItems items and maxCost total cost. Every
// single cost must be ≤ maxCost.
func planBatches(costs []int, maxItems, maxCost int) [][2]int {
	var out [][2]int
	start, sum := 0, 0
	for i, c := range costs {
		if i > start && (i-start == maxItems || sum+c > maxCost) {
			out = append(out, [2]int{start, i})
			start, sum = i, 0
		}
		sum += c
	}
	if start < len(costs) {
		out = append(out, [2]int{start, len(costs)})
	}
	return out
}

// Query returns the k nearest records satisfying filter. An absent
// namespace yields no matches.
func (x *Driver) Query(ctx context.Context, ns string, vector []float32, k int, filter []vectors.Condition) ([]vectors.Match, error) {
	if err := x.enter(ctx); err != nil {
		return nil, err
	}
	defer x.mu.RUnlock()
	if x.dim != 0 && len(vector) != x.dim {
		return nil, fmt.Errorf("%w: vector length %d, want %d", vectors.ErrDimension, len(vector), x.dim)
	}
	res, err := x.dp.Query(ctx, ns, vector, k, wireFilter(filter))
	if errors.Is(err, ErrNotFound) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("pinecone.Query: %w", err)
	}
	out := make([]vectors.Match, len(res))
	for i, m := range res {
		out[i] = vectors.Match{ID: m.ID, Score: m.Score, Metadata: m.Metadata}
	}
	return out, nil
}

// ListIDs returns one page of Pinecone's list; the cursor is its
// pagination token.
func (x *Driver) ListIDs(ctx context.Context, ns, prefix, cursor string, limit int) ([]string, string, error) {
	if err := x.enter(ctx); err != nil {
		return nil, "", err
	}
	defer x.mu.RUnlock()
	ids, next, err := x.dp.List(ctx, ns, prefix, min(limit, MaxListLimit), cursor)
	if errors.Is(err, ErrNotFound) {
		return nil, "", nil
	}
	if err != nil {
		return nil, "", fmt.Errorf("pinecone.List: %w", err)
	}
	return ids, next, nil
}

// Delete removes at most MaxDeleteIDs ids (the port splits larger
// deletes); absent ids and an absent namespace are not errors.
func (x *Driver) Delete(ctx context.Context, ns string, ids []string) error {
	if err := x.enter(ctx); err != nil {
		return err
	}
	defer x.mu.RUnlock()
	for chunk := range slices.Chunk(ids, MaxDeleteIDs) {
		err := x.dp.DeleteIDs(ctx, ns, chunk)
		if errors.Is(err, ErrNotFound) {
			// The namespace is gone (or never was): nothing left to delete.
			return nil
		}
		if err != nil {
			return fmt.Errorf("pinecone.DeleteIDs: %w", err)
		}
	}
	return nil
}

// DeleteNamespace removes the namespace; absent is not an error.
func (x *Driver) DeleteNamespace(ctx context.Context, ns string) error {
	if err := x.enter(ctx); err != nil {
		return err
	}
	defer x.mu.RUnlock()
	if err := x.dp.DeleteNamespace(ctx, ns); err != nil && !errors.Is(err, ErrNotFound) {
		return fmt.Errorf("pinecone.DeleteNamespace: %w", err)
	}
	return nil
}

// Count returns the namespace's record count, 0 if absent. Pinecone's
// counts are eventually consistent: right after a write they may lag.
func (x *Driver) Count(ctx context.Context, ns string) (int, error) {
	if err := x.enter(ctx); err != nil {
		return 0, err
	}
	defer x.mu.RUnlock()
	n, err := x.dp.NamespaceCount(ctx, ns)
	if errors.Is(err, ErrNotFound) {
		return 0, nil
	}
	if err != nil {
		return 0, fmt.Errorf("pinecone.NamespaceCount: %w", err)
	}
	return n, nil
}
