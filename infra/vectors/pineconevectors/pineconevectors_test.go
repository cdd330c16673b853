package pineconevectors

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"reflect"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/lethe-dev/lethe/infra/vectors"
	"github.com/lethe-dev/lethe/infra/vectors/vectortest"
)

// harness runs the adapter over one fake index per test; Reopen keeps the
// fake (Pinecone's storage) and replaces the adapter. caps says how the
// fake was set to behave.
type harness struct {
	dp   *FakeDataPlane
	caps vectortest.Capabilities
}

func (h *harness) MakeIndex(context.Context) (vectors.Index, error) { return New(h.dp, Options{}), nil }
func (h *harness) Reopen(_ context.Context, idx vectors.Index) (vectors.Index, error) {
	if err := idx.Close(); err != nil {
		return vectors.Index{}, err
	}
	return New(h.dp, Options{}), nil
}
func (h *harness) Capabilities() vectortest.Capabilities { return h.caps }
func (h *harness) Close()                                {}

// TestConformance runs the suite with the fake immediately consistent and
// exact, and as Pinecone really is: eventually consistent (a write shows
// after some reads) and approximate.
func TestConformance(t *testing.T) {
	for _, tc := range []struct {
		name   string
		lag    int
		approx bool
	}{
		{"Consistent", 0, false},
		{"EventuallyConsistent", 7, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			vectortest.RunConformanceTests(t, func(_ context.Context, t *testing.T) (vectortest.Harness, error) {
				dp := NewFakeDataPlane(0)
				dp.SetConsistency(tc.lag, tc.approx)
				return &harness{dp: dp, caps: vectortest.Capabilities{
					Exact: !tc.approx, EventuallyConsistent: tc.lag > 0, Settle: 5 * time.Second,
				}}, nil
			})
		})
	}
}

const nsA = "0123456789abcdef0123456789abcdef"

func randVec(r *rand.Rand, dim int) []float32 {
	v := make([]float32, dim)
	for i := range v {
		v[i] = float32(r.NormFloat64())
	}
	return v
}

func countOps(reqs []FakeRequest, op string) (n, maxItems, maxBytes int, refused bool) {
	for _, r := range reqs {
		if r.Op != op {
			continue
		}
		n++
		maxItems = max(maxItems, r.Items)
		maxBytes = max(maxBytes, r.Bytes)
		refused = refused || r.Refused
	}
	return
}

func TestPlanBatches(t *testing.T) {
	ones := func(n, c int) []int {
		s := make([]int, n)
		for i := range s {
			s[i] = c
		}
		return s
	}
	for _, tc := range []struct {
		name     string
		costs    []int
		maxItems int
		maxCost  int
		want     [][2]int
	}{
		{"empty", nil, 1000, 100, nil},
		{"2500 records by count", ones(2500, 1), 1000, 1 << 30, [][2]int{{0, 1000}, {1000, 2000}, {2000, 2500}}},
		{"by size", ones(10, 30), 1000, 100, [][2]int{{0, 3}, {3, 6}, {6, 9}, {9, 10}}},
		{"exact fit", ones(4, 50), 1000, 100, [][2]int{{0, 2}, {2, 4}}},
		{"mixed", []int{90, 20, 80, 10, 100}, 1000, 100, [][2]int{{0, 1}, {1, 3}, {3, 4}, {4, 5}}},
		{"count and size", ones(7, 10), 3, 25, [][2]int{{0, 2}, {2, 4}, {4, 6}, {6, 7}}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got := planBatches(tc.costs, tc.maxItems, tc.maxCost)
			if !reflect.DeepEqual(got, tc.want) {
				t.Fatalf("planBatches = %v, want %v", got, tc.want)
			}
		})
	}
}

// TestUpsertSplitsBySize: 1,000 records of 1,024 dims are about 11 MB as
// JSON; the fake refuses that as one request, and the adapter's batches
// all pass.
func TestUpsertSplitsBySize(t *testing.T) {
	ctx := context.Background()
	r := rand.New(rand.NewPCG(1, 2))
	dp := NewFakeDataPlane(1024)
	recs := make([]vectors.Record, 1000)
	wire := make([]Vector, len(recs))
	for i := range recs {
		recs[i] = vectors.Record{ID: fmt.Sprintf("c%d#%d", i/10, i%10), Values: randVec(r, 1024), Metadata: map[string]any{"seq": int64(i)}}
		wire[i] = Vector{ID: recs[i].ID, Values: recs[i].Values, Metadata: map[string]any{"seq": float64(i)}}
	}
	if err := dp.Upsert(ctx, nsA, wire); !errors.Is(err, ErrLimit) {
		t.Fatalf("fake accepted an oversize upsert as one request: %v", err)
	}
	dp.ResetRequests()
	if err := New(dp, Options{Dim: 1024}).Upsert(ctx, nsA, recs); err != nil {
		t.Fatalf("Upsert: %v", err)
	}
	n, maxItems, maxBytes, refused := countOps(dp.Requests(), "upsert")
	if refused || n < 5 || maxBytes > MaxUpsertBytes || maxItems > MaxUpsertRecords {
		t.Fatalf("upsert requests: %d, max %d items, max %d bytes, refused %v", n, maxItems, maxBytes, refused)
	}
	if c, _ := dp.NamespaceCount(ctx, nsA); c != 1000 {
		t.Fatalf("count = %d, want 1000", c)
	}
	t.Logf("%d requests, largest %d bytes", n, maxBytes)
}

// TestUpsertSplitsByMetadata: small vectors, 30 KB of metadata each.
func TestUpsertSplitsByMetadata(t *testing.T) {
	ctx := context.Background()
	dp := NewFakeDataPlane(0)
	recs := make([]vectors.Record, 300)
	for i := range recs {
		recs[i] = vectors.Record{ID: fmt.Sprint("m", i), Values: []float32{1, float32(i)}, Metadata: map[string]any{"pad": strings.Repeat("x", 30_000)}}
	}
	if err := New(dp, Options{}).Upsert(ctx, nsA, recs); err != nil {
		t.Fatalf("Upsert: %v", err)
	}
	n, _, maxBytes, refused := countOps(dp.Requests(), "upsert")
	// 300 × 30 KB = 9 MB: at least 5 requests of ≤ 2 MB.
	if refused || n < 5 || maxBytes > MaxUpsertBytes {
		t.Fatalf("upsert requests: %d, max %d bytes, refused %v", n, maxBytes, refused)
	}
}

// TestUpsertOverPortLimit: the port takes at most 1,000 records per call
// (the conformance suite requires it), so 2,500 are refused whole; the
// count split of 2,500 is covered by TestPlanBatches.
func TestUpsertOverPortLimit(t *testing.T) {
	dp := NewFakeDataPlane(0)
	recs := make([]vectors.Record, 2500)
	for i := range recs {
		recs[i] = vectors.Record{ID: fmt.Sprint(i), Values: []float32{1, 2}}
	}
	if err := New(dp, Options{}).Upsert(context.Background(), nsA, recs); !errors.Is(err, vectors.ErrInvalid) {
		t.Fatalf("Upsert(2500): %v, want ErrInvalid", err)
	}
	if len(dp.Requests()) != 0 {
		t.Fatalf("refused batch reached Pinecone: %v", dp.Requests())
	}
}

func TestDeleteInBatches(t *testing.T) {
	ctx := context.Background()
	dp := NewFakeDataPlane(0)
	idx := New(dp, Options{})
	var ids []string
	for start := 0; start < 2500; start += 1000 {
		var recs []vectors.Record
		for i := start; i < min(start+1000, 2500); i++ {
			recs = append(recs, vectors.Record{ID: fmt.Sprintf("c%d#%d", i/100, i%100), Values: []float32{1, float32(i)}})
		}
		if err := idx.Upsert(ctx, nsA, recs); err != nil {
			t.Fatal(err)
		}
		for _, r := range recs {
			ids = append(ids, r.ID)
		}
	}
	dp.ResetRequests()
	// Duplicates and absent ids must not cost extra requests or fail.
	del := append(slices.Clone(ids), ids[:10]...)
	del = append(del, "absent#1")
	if err := idx.Delete(ctx, nsA, del); err != nil {
		t.Fatalf("Delete: %v", err)
	}
	n, maxItems, _, refused := countOps(dp.Requests(), "delete")
	if n != 3 || maxItems > MaxDeleteIDs || refused {
		t.Fatalf("delete requests: %d, max %d ids, refused %v", n, maxItems, refused)
	}
	if c, err := idx.Count(ctx, nsA); err != nil || c != 0 {
		t.Fatalf("Count after delete = %d, %v", c, err)
	}
}

func TestListIDsFollowsPagination(t *testing.T) {
	ctx := context.Background()
	dp := NewFakeDataPlane(0)
	idx := New(dp, Options{})
	var want, wantC1 []string
	var recs []vectors.Record
	for i := range 250 {
		id := fmt.Sprintf("c%d#%03d", i%2, i)
		want = append(want, id)
		if i%2 == 1 {
			wantC1 = append(wantC1, id)
		}
		recs = append(recs, vectors.Record{ID: id, Values: []float32{1, float32(i)}})
	}
	if err := idx.Upsert(ctx, nsA, recs); err != nil {
		t.Fatal(err)
	}
	slices.Sort(want)
	dp.ResetRequests()
	got, err := idx.ListIDs(ctx, nsA, "")
	if err != nil || !slices.Equal(got, want) {
		t.Fatalf("ListIDs = %d ids, %v; want %d", len(got), err, len(want))
	}
	if n, maxItems, _, _ := countOps(dp.Requests(), "list"); n != 3 || maxItems != MaxListLimit {
		t.Fatalf("list requests: %d of up to %d ids, want 3 of 100", n, maxItems)
	}
	got, err = idx.ListIDs(ctx, nsA, "c1#")
	if err != nil || !slices.Equal(got, wantC1) {
		t.Fatalf("ListIDs(c1#) = %d ids, %v; want %d", len(got), err, len(wantC1))
	}
}

// TestNamespaceRefused: the empty and default namespaces never reach
// Pinecone, where "" would silently mean the shared default namespace.
func TestNamespaceRefused(t *testing.T) {
	ctx := context.Background()
	dp := NewFakeDataPlane(0)
	idx := New(dp, Options{})
	for _, ns := range []string{"", vectors.DefaultNamespace, "a b", strings.Repeat("a", 65)} {
		calls := map[string]error{
			"upsert":          idx.Upsert(ctx, ns, []vectors.Record{{ID: "a", Values: []float32{1}}}),
			"delete":          idx.Delete(ctx, ns, []string{"a"}),
			"deleteNamespace": idx.DeleteNamespace(ctx, ns),
		}
		_, calls["query"] = idx.Query(ctx, ns, []float32{1}, 1, nil)
		_, calls["list"] = idx.ListIDs(ctx, ns, "")
		_, calls["count"] = idx.Count(ctx, ns)
		for name, err := range calls {
			if !errors.Is(err, vectors.ErrInvalid) {
				t.Errorf("%s(%q): %v, want ErrInvalid", name, ns, err)
			}
		}
	}
	if len(dp.Requests()) != 0 {
		t.Fatalf("requests reached the data plane: %v", dp.Requests())
	}
}

func TestFixedDimension(t *testing.T) {
	ctx := context.Background()
	for _, tc := range []struct {
		name     string
		optDim   int
		requests int // requests that reach the fake (and are refused there)
	}{
		{"checked by adapter", 8, 0},
		{"checked by Pinecone", 0, 2},
	} {
		t.Run(tc.name, func(t *testing.T) {
			dp := NewFakeDataPlane(8)
			idx := New(dp, Options{Dim: tc.optDim})
			// Even the first write to a fresh namespace must match the index.
			if err := idx.Upsert(ctx, nsA, []vectors.Record{{ID: "a", Values: []float32{1, 2, 3}}}); !errors.Is(err, vectors.ErrDimension) {
				t.Fatalf("Upsert: %v, want ErrDimension", err)
			}
			if _, err := idx.Query(ctx, nsA, []float32{1, 2, 3}, 1, nil); !errors.Is(err, vectors.ErrDimension) {
				t.Fatalf("Query: %v, want ErrDimension", err)
			}
			if got := len(dp.Requests()); got != tc.requests {
				t.Fatalf("%d requests reached the fake, want %d", got, tc.requests)
			}
			if err := idx.Upsert(ctx, nsA, []vectors.Record{{ID: "a", Values: []float32{1, 2, 3, 4, 5, 6, 7, 8}}}); err != nil {
				t.Fatal(err)
			}
		})
	}
}

func TestIntegersBeyondDoubleRefused(t *testing.T) {
	idx := New(NewFakeDataPlane(0), Options{})
	ctx := context.Background()
	err := idx.Upsert(ctx, nsA, []vectors.Record{{ID: "a", Values: []float32{1}, Metadata: map[string]any{"n": int64(1)<<53 + 1}}})
	if !errors.Is(err, vectors.ErrInvalid) {
		t.Fatalf("Upsert with 2^53+1: %v", err)
	}
	_, err = idx.Query(ctx, nsA, []float32{1}, 1, []vectors.Condition{{Field: "n", Op: "$eq", Value: int64(-1) << 60}})
	if !errors.Is(err, vectors.ErrInvalid) {
		t.Fatalf("filter with -2^60: %v", err)
	}
	if err := idx.Upsert(ctx, nsA, []vectors.Record{{ID: "a", Values: []float32{1}, Metadata: map[string]any{"n": int64(1) << 53}}}); err != nil {
		t.Fatalf("2^53 refused: %v", err)
	}
}

func TestWireFilter(t *testing.T) {
	for _, tc := range []struct {
		name  string
		conds []vectors.Condition
		want  map[string]any
	}{
		{"none", nil, nil},
		{"one", []vectors.Condition{{Field: "kind", Op: "$eq", Value: "app"}}, map[string]any{"kind": map[string]any{"$eq": "app"}}},
		{"range on one field", []vectors.Condition{{Field: "t", Op: "$gte", Value: int64(5)}, {Field: "t", Op: "$lt", Value: 9.5}},
			map[string]any{"$and": []any{
				map[string]any{"t": map[string]any{"$gte": 5.0}},
				map[string]any{"t": map[string]any{"$lt": 9.5}},
			}}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if got := wireFilter(tc.conds); !reflect.DeepEqual(got, tc.want) {
				t.Fatalf("wireFilter = %#v; want %#v", got, tc.want)
			}
		})
	}
}

// stubPlane returns fixed errors, to test how the adapter treats them.
type stubPlane struct {
	err       error
	listToken string
}

func (s *stubPlane) Upsert(context.Context, string, []Vector) error { return s.err }
func (s *stubPlane) Query(context.Context, string, []float32, int, map[string]any) ([]ScoredVector, error) {
	return nil, s.err
}
func (s *stubPlane) List(context.Context, string, string, int, string) ([]string, string, error) {
	return []string{"x"}, s.listToken, s.err
}
func (s *stubPlane) DeleteIDs(context.Context, string, []string) error   { return s.err }
func (s *stubPlane) DeleteNamespace(context.Context, string) error       { return s.err }
func (s *stubPlane) NamespaceCount(context.Context, string) (int, error) { return 7, s.err }

func TestNotFoundTolerated(t *testing.T) {
	ctx := context.Background()
	idx := New(&stubPlane{err: fmt.Errorf("rpc: %w", ErrNotFound)}, Options{})
	if m, err := idx.Query(ctx, nsA, []float32{1}, 1, nil); err != nil || len(m) != 0 {
		t.Errorf("Query: %v, %v", m, err)
	}
	if l, err := idx.ListIDs(ctx, nsA, ""); err != nil || len(l) != 0 {
		t.Errorf("ListIDs: %v, %v", l, err)
	}
	if n, err := idx.Count(ctx, nsA); err != nil || n != 0 {
		t.Errorf("Count: %d, %v", n, err)
	}
	if err := idx.Delete(ctx, nsA, []string{"a"}); err != nil {
		t.Errorf("Delete: %v", err)
	}
	if err := idx.DeleteNamespace(ctx, nsA); err != nil {
		t.Errorf("DeleteNamespace: %v", err)
	}
}

func TestOtherErrorsPropagate(t *testing.T) {
	ctx := context.Background()
	boom := errors.New("unavailable")
	idx := New(&stubPlane{err: boom}, Options{})
	_, qerr := idx.Query(ctx, nsA, []float32{1}, 1, nil)
	_, lerr := idx.ListIDs(ctx, nsA, "")
	_, cerr := idx.Count(ctx, nsA)
	for name, err := range map[string]error{
		"upsert": idx.Upsert(ctx, nsA, []vectors.Record{{ID: "a", Values: []float32{1}}}),
		"query":  qerr, "list": lerr, "count": cerr,
		"delete":          idx.Delete(ctx, nsA, []string{"a"}),
		"deleteNamespace": idx.DeleteNamespace(ctx, nsA),
	} {
		if !errors.Is(err, boom) {
			t.Errorf("%s: %v, want the data plane's error", name, err)
		}
	}
}

func TestListRepeatedTokenStops(t *testing.T) {
	idx := New(&stubPlane{listToken: "same"}, Options{})
	if _, err := idx.ListIDs(context.Background(), nsA, ""); err == nil {
		t.Fatal("ListIDs looping on a repeated token returned no error")
	}
}

func TestClosed(t *testing.T) {
	idx := New(NewFakeDataPlane(0), Options{})
	idx.Close()
	if _, err := idx.Count(context.Background(), nsA); !errors.Is(err, ErrClosed) {
		t.Fatalf("Count after Close: %v", err)
	}
}
