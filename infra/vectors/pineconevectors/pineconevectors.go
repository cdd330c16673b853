// Package pineconevectors is the production vectors adapter: one Pinecone
// namespace per user (the keyed uid hash; never the empty or default
// namespace) in one serverless cosine index.
//
// Pinecone's data plane is gRPC, so the adapter talks to it through the
// narrow DataPlane interface: NewSDKDataPlane implements it with
// github.com/pinecone-io/go-pinecone/v5, and NewFakeDataPlane with an
// in-memory fake that enforces Pinecone's documented limits, so the
// conformance suite proves the adapter's batching and pagination.
//
// Metadata is stored in Pinecone unencrypted: callers must put no user
// content in it (ids, sequence numbers, timestamps only).
package pineconevectors

import (
	"cmp"
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

// Index implements vectors.Index over a DataPlane.
type Index struct {
	dp       DataPlane
	dim      int
	maxBytes int

	mu     sync.RWMutex
	closed bool
}

var _ vectors.Index = (*Index)(nil)

// New returns an Index over dp. The caller keeps ownership of dp (Close
// does not close it), so several Index values may share one connection.
func New(dp DataPlane, opts Options) *Index {
	mb := opts.MaxRequestBytes
	if mb <= 0 || mb > MaxUpsertBytes {
		mb = MaxUpsertBytes
	}
	return &Index{dp: dp, dim: opts.Dim, maxBytes: mb}
}

// Close makes later calls fail with ErrClosed.
func (x *Index) Close() error {
	x.mu.Lock()
	x.closed = true
	x.mu.Unlock()
	return nil
}

// enter checks the arguments every call shares and pins the index open;
// the caller must call x.mu.RUnlock.
func (x *Index) enter(ctx context.Context, ns string) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	if err := validNamespace(ns); err != nil {
		return err
	}
	x.mu.RLock()
	if x.closed {
		x.mu.RUnlock()
		return ErrClosed
	}
	return nil
}

// Upsert validates the whole batch before sending anything, so an invalid
// record writes nothing. A valid batch larger than one request allows is
// sent as several; if one fails, earlier ones stay written (upserts are
// idempotent, so the caller's retry converges).
func (x *Index) Upsert(ctx context.Context, ns string, recs []vectors.Record) error {
	if err := x.enter(ctx, ns); err != nil {
		return err
	}
	defer x.mu.RUnlock()
	if len(recs) > MaxUpsertRecords {
		return fmt.Errorf("%w: %d records, limit %d", vectors.ErrInvalid, len(recs), MaxUpsertRecords)
	}
	if len(recs) == 0 {
		return nil
	}
	vecs := make([]Vector, len(recs))
	costs := make([]int, len(recs))
	dim := x.dim
	if dim == 0 {
		dim = len(recs[0].Values)
	}
	for i, r := range recs {
		if err := validID(r.ID); err != nil {
			return err
		}
		if err := checkVector(r.Values); err != nil {
			return err
		}
		if len(r.Values) != dim {
			return fmt.Errorf("%w: vector length %d, want %d", vectors.ErrDimension, len(r.Values), dim)
		}
		md, err := wireMetadata(r.Metadata)
		if err != nil {
			return err
		}
		vecs[i] = Vector{ID: r.ID, Values: slices.Clone(r.Values), Metadata: md}
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
func (x *Index) Query(ctx context.Context, ns string, vector []float32, k int, filter []vectors.Condition) ([]vectors.Match, error) {
	if err := x.enter(ctx, ns); err != nil {
		return nil, err
	}
	defer x.mu.RUnlock()
	if k <= 0 || k > MaxQueryK {
		return nil, fmt.Errorf("%w: k = %d, want 1..%d", vectors.ErrInvalid, k, MaxQueryK)
	}
	if err := checkVector(vector); err != nil {
		return nil, err
	}
	if x.dim != 0 && len(vector) != x.dim {
		return nil, fmt.Errorf("%w: vector length %d, want %d", vectors.ErrDimension, len(vector), x.dim)
	}
	f, err := wireFilter(filter)
	if err != nil {
		return nil, err
	}
	res, err := x.dp.Query(ctx, ns, vector, k, f)
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
	// Pinecone orders by score; ties by id make results deterministic.
	slices.SortStableFunc(out, func(a, b vectors.Match) int {
		if c := cmp.Compare(b.Score, a.Score); c != 0 {
			return c
		}
		return cmp.Compare(a.ID, b.ID)
	})
	if len(out) > k {
		out = out[:k]
	}
	return out, nil
}

// ListIDs pages through every id with the prefix and returns them sorted.
func (x *Index) ListIDs(ctx context.Context, ns, prefix string) ([]string, error) {
	if err := x.enter(ctx, ns); err != nil {
		return nil, err
	}
	defer x.mu.RUnlock()
	var ids []string
	token := ""
	seen := map[string]bool{}
	for {
		page, next, err := x.dp.List(ctx, ns, prefix, MaxListLimit, token)
		if errors.Is(err, ErrNotFound) {
			break
		}
		if err != nil {
			return nil, fmt.Errorf("pinecone.List: %w", err)
		}
		ids = append(ids, page...)
		if next == "" {
			break
		}
		// A server handing back a token it already gave would loop forever.
		if seen[next] {
			return nil, fmt.Errorf("pinecone.List: pagination token repeated")
		}
		seen[next] = true
		token = next
	}
	slices.Sort(ids)
	return slices.Compact(ids), nil
}

// Delete removes ids in requests of at most MaxDeleteIDs; absent ids and
// an absent namespace are not errors.
func (x *Index) Delete(ctx context.Context, ns string, ids []string) error {
	if err := x.enter(ctx, ns); err != nil {
		return err
	}
	defer x.mu.RUnlock()
	for _, id := range ids {
		if err := validID(id); err != nil {
			return err
		}
	}
	uniq := slices.Clone(ids)
	slices.Sort(uniq)
	uniq = slices.Compact(uniq)
	for chunk := range slices.Chunk(uniq, MaxDeleteIDs) {
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
func (x *Index) DeleteNamespace(ctx context.Context, ns string) error {
	if err := x.enter(ctx, ns); err != nil {
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
func (x *Index) Count(ctx context.Context, ns string) (int, error) {
	if err := x.enter(ctx, ns); err != nil {
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
