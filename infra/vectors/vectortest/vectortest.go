// Package vectortest is the conformance suite every vectors.Index adapter
// must pass (in the manner of gocloud.dev's drivertest): an adapter's own
// test only supplies a Harness.
package vectortest

import (
	"context"
	"errors"
	"fmt"
	"math"
	"math/rand/v2"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/lethe-dev/lethe/infra/vectors"
)

// Capabilities declares how an adapter legitimately differs.
type Capabilities struct {
	// Exact adapters return the true top k (recall 1.0, scores within
	// float32 rounding) and break score ties by id ascending. Approximate
	// adapters are held to MinRecall and their tie order is not checked.
	Exact bool
	// EventuallyConsistent adapters (Pinecone) show a write to queries,
	// lists and counts only after a while. The suite then polls, at most
	// Settle, until what it checks has become visible.
	EventuallyConsistent bool
	// Settle bounds each wait for a write to become visible; 0 means 10s.
	Settle time.Duration
}

// Score tolerances: exact adapters agree with brute force up to float32
// rounding; approximate ones (quantised or jittered scores) to a little
// more.
const (
	exactTolerance  = 1e-5
	approxTolerance = 5e-3
)

func tolerance(h Harness) float64 {
	if h.Capabilities().Exact {
		return exactTolerance
	}
	return approxTolerance
}

// eventually checks ok, and on an eventually consistent adapter polls it
// until it holds or Settle passes; then fails with what ok last said.
func eventually(t *testing.T, h Harness, ok func() (bool, string)) {
	t.Helper()
	c := h.Capabilities()
	settle := c.Settle
	if settle <= 0 {
		settle = 10 * time.Second
	}
	deadline := time.Now().Add(settle)
	for pause := time.Millisecond; ; pause = min(2*pause, 200*time.Millisecond) {
		good, msg := ok()
		if good {
			return
		}
		if !c.EventuallyConsistent || time.Now().After(deadline) {
			t.Fatal(msg)
		}
		time.Sleep(pause)
	}
}

// settle waits until the namespace shows n records to Count and ListIDs:
// after it, the writes before it are visible.
func settle(t *testing.T, h Harness, idx vectors.Index, namespace string, n int) {
	t.Helper()
	eventually(t, h, func() (bool, string) {
		c := count(t, idx, namespace)
		l := len(listIDs(t, idx, namespace, ""))
		return c == n && l == n, fmt.Sprintf("namespace shows %d records to Count, %d to ListIDs; want %d", c, l, n)
	})
}

// MinRecall is the recall@10 an approximate adapter must reach on the
// suite's random data.
const MinRecall = 0.9

// Harness creates indexes over storage private to one test.
type Harness interface {
	// MakeIndex returns an index over fresh, empty storage.
	MakeIndex(ctx context.Context) (vectors.Index, error)
	// Reopen closes idx and returns a new index over the same storage.
	Reopen(ctx context.Context, idx vectors.Index) (vectors.Index, error)
	Capabilities() Capabilities
	// Close releases the harness's resources.
	Close()
}

// HarnessMaker makes a Harness for one test; name resources from t.Name().
type HarnessMaker func(ctx context.Context, t *testing.T) (Harness, error)

// RunConformanceTests runs the suite against the adapter newHarness makes.
func RunConformanceTests(t *testing.T, newHarness HarnessMaker) {
	tests := []struct {
		name string
		fn   func(t *testing.T, h Harness, idx vectors.Index)
	}{
		{"BruteForce", testBruteForce},
		{"ScoresAreCosine", testScoresAreCosine},
		{"KLargerThanCount", testKLargerThanCount},
		{"TieOrder", testTieOrder},
		{"UnknownNamespace", testUnknownNamespace},
		{"NamespaceIsolation", testNamespaceIsolation},
		{"ListIDsPrefix", testListIDsPrefix},
		{"DeleteIDs", testDeleteIDs},
		{"DeleteNamespace", testDeleteNamespace},
		{"MetadataRoundTrip", testMetadataRoundTrip},
		{"MetadataFilters", testMetadataFilters},
		{"FilterBeforeRanking", testFilterBeforeRanking},
		{"UpsertReplaces", testUpsertReplaces},
		{"DimensionMismatch", testDimensionMismatch},
		{"InvalidInput", testInvalidInput},
		{"InvalidBatchWritesNothing", testInvalidBatchWritesNothing},
		{"Persistence", testPersistence},
		{"ConcurrentWriters", testConcurrent},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			ctx := context.Background()
			h, err := newHarness(ctx, t)
			if err != nil {
				t.Fatalf("newHarness: %v", err)
			}
			t.Cleanup(h.Close)
			idx, err := h.MakeIndex(ctx)
			if err != nil {
				t.Fatalf("MakeIndex: %v", err)
			}
			th := &tracked{Harness: h, cur: idx}
			t.Cleanup(func() { th.cur.Close() })
			tc.fn(t, th, idx)
		})
	}
}

// tracked remembers the latest index so exactly that one is closed at the
// end: Reopen already closed the earlier ones.
type tracked struct {
	Harness
	cur vectors.Index
}

func (t *tracked) Reopen(ctx context.Context, idx vectors.Index) (vectors.Index, error) {
	n, err := t.Harness.Reopen(ctx, idx)
	if err == nil {
		t.cur = n
	}
	return n, err
}

// ns returns a namespace shaped like production's (32 hex chars, a keyed
// hash of the uid) derived from the test name and a label.
func ns(t *testing.T, label string) string {
	var h uint64 = 14695981039346656037
	for _, c := range []byte(t.Name() + "/" + label) {
		h ^= uint64(c)
		h *= 1099511628211
	}
	return fmt.Sprintf("%016x%016x", h, h*31+7)
}

func randVec(r *rand.Rand, dim int) []float32 {
	v := make([]float32, dim)
	for i := range v {
		v[i] = float32(r.NormFloat64())
	}
	return v
}

func cosine(a, b []float32) float64 {
	var d, na, nb float64
	for i := range a {
		d += float64(a[i]) * float64(b[i])
		na += float64(a[i]) * float64(a[i])
		nb += float64(b[i]) * float64(b[i])
	}
	return d / math.Sqrt(na*nb)
}

func upsert(t *testing.T, idx vectors.Index, namespace string, recs []vectors.Record) {
	t.Helper()
	for len(recs) > 0 {
		n := min(len(recs), 1000)
		if err := idx.Upsert(context.Background(), namespace, recs[:n]); err != nil {
			t.Fatalf("Upsert(%d records): %v", n, err)
		}
		recs = recs[n:]
	}
}

func query(t *testing.T, idx vectors.Index, namespace string, v []float32, k int, f []vectors.Condition) []vectors.Match {
	t.Helper()
	m, err := idx.Query(context.Background(), namespace, v, k, f)
	if err != nil {
		t.Fatalf("Query: %v", err)
	}
	checkSorted(t, m)
	return m
}

func checkSorted(t *testing.T, m []vectors.Match) {
	t.Helper()
	for i := 1; i < len(m); i++ {
		if m[i].Score > m[i-1].Score {
			t.Fatalf("matches not sorted by score: %v then %v", m[i-1].Score, m[i].Score)
		}
	}
}

func count(t *testing.T, idx vectors.Index, namespace string) int {
	t.Helper()
	n, err := idx.Count(context.Background(), namespace)
	if err != nil {
		t.Fatalf("Count: %v", err)
	}
	return n
}

func listIDs(t *testing.T, idx vectors.Index, namespace, prefix string) []string {
	t.Helper()
	ids, err := idx.ListIDs(context.Background(), namespace, prefix)
	if err != nil {
		t.Fatalf("ListIDs(%q): %v", prefix, err)
	}
	return ids
}

func ids(m []vectors.Match) []string {
	out := make([]string, len(m))
	for i, x := range m {
		out[i] = x.ID
	}
	return out
}

// sameMetadata compares numbers by value: a backend may return an int64 as
// a float64 (Pinecone stores every number as a double).
func sameMetadata(a, b map[string]any) bool {
	if len(a) != len(b) {
		return false
	}
	for k, va := range a {
		vb, ok := b[k]
		if !ok {
			return false
		}
		na, aNum := num(va)
		nb, bNum := num(vb)
		switch {
		case aNum || bNum:
			if !aNum || !bNum || na != nb {
				return false
			}
		case va != vb:
			return false
		}
	}
	return true
}

func num(v any) (float64, bool) {
	switch x := v.(type) {
	case int64:
		return float64(x), true
	case float64:
		return x, true
	}
	return 0, false
}

func testBruteForce(t *testing.T, h Harness, idx vectors.Index) {
	const n, dim, k, queries = 600, 48, 10, 25
	r := rand.New(rand.NewPCG(1, 2))
	space := ns(t, "u")
	recs := make([]vectors.Record, n)
	for i := range recs {
		recs[i] = vectors.Record{ID: fmt.Sprintf("c%d#%d", i/10, i%10), Values: randVec(r, dim)}
	}
	upsert(t, idx, space, recs)
	settle(t, h, idx, space, n)
	found, total := 0, 0
	for range queries {
		q := randVec(r, dim)
		type scored struct {
			id string
			s  float64
		}
		want := make([]scored, n)
		for i, rec := range recs {
			want[i] = scored{rec.ID, cosine(q, rec.Values)}
		}
		slices.SortFunc(want, func(a, b scored) int {
			if a.s != b.s {
				if a.s > b.s {
					return -1
				}
				return 1
			}
			return strings.Compare(a.id, b.id)
		})
		want = want[:k]
		got := query(t, idx, space, q, k, nil)
		if len(got) != k {
			t.Fatalf("Query returned %d matches, want %d", len(got), k)
		}
		wantSet := map[string]float64{}
		for _, w := range want {
			wantSet[w.id] = w.s
		}
		for i, m := range got {
			s, ok := wantSet[m.ID]
			if ok {
				found++
			}
			if h.Capabilities().Exact {
				if m.ID != want[i].id {
					t.Fatalf("match %d = %s, brute force says %s", i, m.ID, want[i].id)
				}
				if math.Abs(float64(m.Score)-s) > 1e-4 {
					t.Fatalf("score of %s = %v, brute force %v", m.ID, m.Score, s)
				}
			}
		}
		total += k
	}
	recall := float64(found) / float64(total)
	if h.Capabilities().Exact && recall != 1 {
		t.Fatalf("recall = %v, exact adapter must reach 1", recall)
	}
	if recall < MinRecall {
		t.Fatalf("recall = %v, want ≥ %v", recall, MinRecall)
	}
}

func testScoresAreCosine(t *testing.T, h Harness, idx vectors.Index) {
	space := ns(t, "u")
	// Different magnitudes: the score must not depend on them.
	upsert(t, idx, space, []vectors.Record{
		{ID: "x", Values: []float32{3, 0, 0, 0}},
		{ID: "y", Values: []float32{0, 0.001, 0, 0}},
		{ID: "z", Values: []float32{1, 1, 0, 0}},
	})
	settle(t, h, idx, space, 3)
	m := query(t, idx, space, []float32{-10, 0, 0, 0}, 3, nil)
	want := map[string]float64{"x": -1, "y": 0, "z": -math.Sqrt2 / 2}
	if len(m) != 3 {
		t.Fatalf("got %d matches, want 3", len(m))
	}
	if m[0].ID != "y" || m[1].ID != "z" || m[2].ID != "x" {
		t.Fatalf("order = %v, want [y z x]", ids(m))
	}
	for _, x := range m {
		if math.Abs(float64(x.Score)-want[x.ID]) > tolerance(h) {
			t.Errorf("score(%s) = %v, want %v", x.ID, x.Score, want[x.ID])
		}
	}
}

func testKLargerThanCount(t *testing.T, h Harness, idx vectors.Index) {
	r := rand.New(rand.NewPCG(3, 4))
	space := ns(t, "u")
	var recs []vectors.Record
	for i := range 5 {
		recs = append(recs, vectors.Record{ID: fmt.Sprint("r", i), Values: randVec(r, 16)})
	}
	upsert(t, idx, space, recs)
	settle(t, h, idx, space, 5)
	m := query(t, idx, space, randVec(r, 16), 1000, nil)
	if len(m) != 5 {
		t.Fatalf("got %d matches, want all 5", len(m))
	}
	got := ids(m)
	slices.Sort(got)
	if !slices.Equal(got, []string{"r0", "r1", "r2", "r3", "r4"}) {
		t.Fatalf("ids = %v", got)
	}
}

func testTieOrder(t *testing.T, h Harness, idx vectors.Index) {
	if !h.Capabilities().Exact {
		t.Skip("tie order is specified for exact adapters only")
	}
	space := ns(t, "u")
	v := []float32{1, 2, 3}
	upsert(t, idx, space, []vectors.Record{{ID: "b", Values: v}, {ID: "c", Values: v}, {ID: "a", Values: v}, {ID: "d", Values: []float32{3, 2, 1}}})
	settle(t, h, idx, space, 4)
	m := query(t, idx, space, v, 2, nil)
	if !slices.Equal(ids(m), []string{"a", "b"}) {
		t.Fatalf("ids = %v, want [a b] (equal scores ordered by id)", ids(m))
	}
}

func testUnknownNamespace(t *testing.T, h Harness, idx vectors.Index) {
	ctx := context.Background()
	space := ns(t, "nobody")
	if m := query(t, idx, space, []float32{1, 2}, 5, nil); len(m) != 0 {
		t.Fatalf("Query on unknown namespace = %v", m)
	}
	if n := count(t, idx, space); n != 0 {
		t.Fatalf("Count = %d", n)
	}
	if l := listIDs(t, idx, space, ""); len(l) != 0 {
		t.Fatalf("ListIDs = %v", l)
	}
	if err := idx.Delete(ctx, space, []string{"x"}); err != nil {
		t.Fatalf("Delete on unknown namespace: %v", err)
	}
	if err := idx.DeleteNamespace(ctx, space); err != nil {
		t.Fatalf("DeleteNamespace on unknown namespace: %v", err)
	}
	if n := count(t, idx, space); n != 0 {
		t.Fatalf("Count after deletes = %d", n)
	}
}

func testNamespaceIsolation(t *testing.T, h Harness, idx vectors.Index) {
	ctx := context.Background()
	r := rand.New(rand.NewPCG(5, 6))
	a, b := ns(t, "a"), ns(t, "b")
	var ra, rb []vectors.Record
	for i := range 20 {
		id := fmt.Sprintf("c1#%d", i)
		ra = append(ra, vectors.Record{ID: id, Values: randVec(r, 8), Metadata: map[string]any{"owner": "a"}})
		rb = append(rb, vectors.Record{ID: id, Values: randVec(r, 8), Metadata: map[string]any{"owner": "b"}})
	}
	rb = append(rb, vectors.Record{ID: "only-b", Values: randVec(r, 8), Metadata: map[string]any{"owner": "b"}})
	upsert(t, idx, a, ra)
	upsert(t, idx, b, rb)
	settle(t, h, idx, a, 20)
	settle(t, h, idx, b, 21)
	// Query A with B's exact vectors: only A's records may come back.
	for _, rec := range rb {
		for _, m := range query(t, idx, a, rec.Values, 50, nil) {
			if m.Metadata["owner"] != "a" || m.ID == "only-b" {
				t.Fatalf("query in A returned B's record %s %v", m.ID, m.Metadata)
			}
		}
	}
	if n := count(t, idx, a); n != 20 {
		t.Fatalf("Count(A) = %d, want 20", n)
	}
	if slices.Contains(listIDs(t, idx, a, ""), "only-b") {
		t.Fatal("ListIDs(A) lists B's id")
	}
	if err := idx.Delete(ctx, a, []string{"c1#0", "only-b"}); err != nil {
		t.Fatal(err)
	}
	settle(t, h, idx, a, 19)
	if n := count(t, idx, b); n != 21 {
		t.Fatalf("Delete in A changed B: Count(B) = %d, want 21", n)
	}
	if err := idx.DeleteNamespace(ctx, a); err != nil {
		t.Fatal(err)
	}
	settle(t, h, idx, a, 0)
	if n := count(t, idx, b); n != 21 {
		t.Fatalf("DeleteNamespace(A) changed B: Count(B) = %d", n)
	}
	m := query(t, idx, b, rb[0].Values, 1, nil)
	if len(m) != 1 || m[0].ID != rb[0].ID || m[0].Metadata["owner"] != "b" {
		t.Fatalf("B after A's deletion: %v", m)
	}
}

func testListIDsPrefix(t *testing.T, h Harness, idx vectors.Index) {
	r := rand.New(rand.NewPCG(7, 8))
	space := ns(t, "u")
	var recs []vectors.Record
	var all []string
	for c := 1; c <= 10; c++ {
		for s := range 4 {
			id := fmt.Sprintf("c%d#%d", c, s)
			all = append(all, id)
			recs = append(recs, vectors.Record{ID: id, Values: randVec(r, 4)})
		}
	}
	// Insert in shuffled order so sorting is the adapter's work.
	r.Shuffle(len(recs), func(i, j int) { recs[i], recs[j] = recs[j], recs[i] })
	upsert(t, idx, space, recs)
	slices.Sort(all)
	other := ns(t, "other")
	upsert(t, idx, other, []vectors.Record{{ID: "c1#9", Values: randVec(r, 4)}})
	settle(t, h, idx, space, len(all))
	settle(t, h, idx, other, 1)
	for _, tc := range []struct {
		prefix string
		want   []string
	}{
		{"c1#", []string{"c1#0", "c1#1", "c1#2", "c1#3"}},
		{"c10#", []string{"c10#0", "c10#1", "c10#2", "c10#3"}},
		{"c1", all[:8]}, // c1#… and c10#… share the plain prefix "c1"
		{"c2#3", []string{"c2#3"}},
		{"", all},
		{"zzz", nil},
	} {
		got := listIDs(t, idx, space, tc.prefix)
		if len(got) != len(tc.want) || (len(got) > 0 && !slices.Equal(got, tc.want)) {
			t.Errorf("ListIDs(%q) = %v, want %v", tc.prefix, got, tc.want)
		}
		// Page by page, the same ids.
		for _, limit := range []int{1, 3, vectors.MaxListPage} {
			var paged []string
			cursor := ""
			for range len(all) + 2 {
				page, next, err := idx.ListIDsPage(context.Background(), space, tc.prefix, cursor, limit)
				if err != nil {
					t.Fatalf("ListIDsPage(%q, %d): %v", tc.prefix, limit, err)
				}
				if len(page) > limit {
					t.Fatalf("ListIDsPage(limit %d) = %d ids", limit, len(page))
				}
				paged = append(paged, page...)
				if cursor = next; next == "" {
					break
				}
			}
			slices.Sort(paged)
			if cursor != "" || len(paged) != len(tc.want) || (len(paged) > 0 && !slices.Equal(paged, tc.want)) {
				t.Errorf("ListIDsPage(%q) by %d = %v, want %v", tc.prefix, limit, paged, tc.want)
			}
		}
	}
	for _, limit := range []int{0, -1, vectors.MaxListPage + 1} {
		if _, _, err := idx.ListIDsPage(context.Background(), space, "", "", limit); !errors.Is(err, vectors.ErrInvalid) {
			t.Errorf("ListIDsPage(limit %d) = %v, want ErrInvalid", limit, err)
		}
	}
}

func testDeleteIDs(t *testing.T, h Harness, idx vectors.Index) {
	ctx := context.Background()
	r := rand.New(rand.NewPCG(9, 10))
	space := ns(t, "u")
	var recs []vectors.Record
	for i := range 30 {
		recs = append(recs, vectors.Record{ID: fmt.Sprint("id", i), Values: randVec(r, 8)})
	}
	upsert(t, idx, space, recs)
	settle(t, h, idx, space, 30)
	gone := map[string]bool{"id0": true, "id7": true, "id29": true, "id15": true}
	if err := idx.Delete(ctx, space, []string{"id0", "id7", "absent", "id29", "id15", "id7"}); err != nil {
		t.Fatalf("Delete: %v", err)
	}
	settle(t, h, idx, space, 26)
	for _, id := range listIDs(t, idx, space, "") {
		if gone[id] {
			t.Fatalf("ListIDs still has %s", id)
		}
	}
	for _, rec := range recs {
		for _, m := range query(t, idx, space, rec.Values, 30, nil) {
			if gone[m.ID] {
				t.Fatalf("Query returned deleted %s", m.ID)
			}
		}
	}
	if err := idx.Delete(ctx, space, nil); err != nil {
		t.Fatalf("Delete(nil): %v", err)
	}
	// A deleted id can be written again.
	upsert(t, idx, space, []vectors.Record{recs[0]})
	settle(t, h, idx, space, 27)
	m := query(t, idx, space, recs[0].Values, 1, nil)
	if len(m) != 1 || m[0].ID != "id0" {
		t.Fatalf("re-upserted id0 not found: %v", m)
	}
}

func testDeleteNamespace(t *testing.T, h Harness, idx vectors.Index) {
	ctx := context.Background()
	r := rand.New(rand.NewPCG(11, 12))
	space := ns(t, "u")
	var recs []vectors.Record
	for i := range 50 {
		recs = append(recs, vectors.Record{ID: fmt.Sprint("id", i), Values: randVec(r, 8), Metadata: map[string]any{"expires": int64(i)}})
	}
	upsert(t, idx, space, recs)
	settle(t, h, idx, space, 50)
	if err := idx.DeleteNamespace(ctx, space); err != nil {
		t.Fatalf("DeleteNamespace: %v", err)
	}
	settle(t, h, idx, space, 0)
	if m := query(t, idx, space, recs[0].Values, 10, nil); len(m) != 0 {
		t.Fatalf("Query after DeleteNamespace = %v", ids(m))
	}
	if l := listIDs(t, idx, space, ""); len(l) != 0 {
		t.Fatalf("ListIDs after DeleteNamespace = %v", l)
	}
	idx, err := h.Reopen(ctx, idx)
	if err != nil {
		t.Fatalf("Reopen: %v", err)
	}
	if n := count(t, idx, space); n != 0 {
		t.Fatalf("Count after DeleteNamespace and Reopen = %d", n)
	}
	upsert(t, idx, space, recs[:1])
	settle(t, h, idx, space, 1)
}

func testMetadataRoundTrip(t *testing.T, h Harness, idx vectors.Index) {
	space := ns(t, "u")
	md := map[string]any{"conv": "c1", "seq": int64(42), "start": 1.5, "final": true, "big": int64(1) << 40}
	in := map[string]any{}
	for k, v := range md {
		in[k] = v
	}
	upsert(t, idx, space, []vectors.Record{{ID: "c1#42", Values: []float32{1, 0}, Metadata: in}, {ID: "bare", Values: []float32{0, 1}}})
	in["conv"] = "changed by caller" // must not reach the index
	settle(t, h, idx, space, 2)
	m := query(t, idx, space, []float32{1, 0}, 2, nil)
	if len(m) != 2 || m[0].ID != "c1#42" {
		t.Fatalf("Query = %v", ids(m))
	}
	if !sameMetadata(m[0].Metadata, md) {
		t.Fatalf("metadata = %v, want %v", m[0].Metadata, md)
	}
	if len(m[1].Metadata) != 0 {
		t.Fatalf("record without metadata returned %v", m[1].Metadata)
	}
	if m[0].Metadata != nil {
		m[0].Metadata["conv"] = "changed by reader"
	}
	m = query(t, idx, space, []float32{1, 0}, 1, nil)
	if !sameMetadata(m[0].Metadata, md) {
		t.Fatalf("metadata changed through a returned map: %v", m[0].Metadata)
	}
}

func testMetadataFilters(t *testing.T, h Harness, idx vectors.Index) {
	r := rand.New(rand.NewPCG(13, 14))
	space := ns(t, "u")
	type row struct {
		expires int64
		kind    string
		final   bool
		start   float64
	}
	rows := map[string]row{}
	var recs []vectors.Record
	for i := range 20 {
		id := fmt.Sprintf("c%d#%d", i/5, i%5)
		rw := row{expires: int64(1000 + i), kind: []string{"app", "twilio"}[i%2], final: i%3 == 0, start: float64(i) / 2}
		rows[id] = rw
		recs = append(recs, vectors.Record{ID: id, Values: randVec(r, 8), Metadata: map[string]any{
			"expires": rw.expires, "kind": rw.kind, "final": rw.final, "start": rw.start,
		}})
	}
	upsert(t, idx, space, recs)
	settle(t, h, idx, space, len(recs))
	for _, tc := range []struct {
		name   string
		filter []vectors.Condition
		want   func(row) bool
	}{
		{"lt", []vectors.Condition{cond("expires", "$lt", int64(1005))}, func(x row) bool { return x.expires < 1005 }},
		{"lte", []vectors.Condition{cond("expires", "$lte", int64(1005))}, func(x row) bool { return x.expires <= 1005 }},
		{"gt", []vectors.Condition{cond("expires", "$gt", int64(1015))}, func(x row) bool { return x.expires > 1015 }},
		{"gte", []vectors.Condition{cond("expires", "$gte", int64(1015))}, func(x row) bool { return x.expires >= 1015 }},
		{"range", []vectors.Condition{cond("expires", "$gte", int64(1005)), cond("expires", "$lt", int64(1010))}, func(x row) bool { return x.expires >= 1005 && x.expires < 1010 }},
		{"float bound on int field", []vectors.Condition{cond("expires", "$lt", 1004.5)}, func(x row) bool { return x.expires < 1004 || x.expires == 1004 }},
		{"int bound on float field", []vectors.Condition{cond("start", "$gte", int64(7))}, func(x row) bool { return x.start >= 7 }},
		{"eq string", []vectors.Condition{cond("kind", "$eq", "twilio")}, func(x row) bool { return x.kind == "twilio" }},
		{"ne string", []vectors.Condition{cond("kind", "$ne", "twilio")}, func(x row) bool { return x.kind != "twilio" }},
		{"eq bool", []vectors.Condition{cond("final", "$eq", true)}, func(x row) bool { return x.final }},
		{"eq number", []vectors.Condition{cond("expires", "$eq", float64(1003))}, func(x row) bool { return x.expires == 1003 }},
		{"eq missing field", []vectors.Condition{cond("nope", "$eq", "x")}, func(x row) bool { return false }},
		{"lt missing field", []vectors.Condition{cond("nope", "$lt", int64(5))}, func(x row) bool { return false }},
		{"combined", []vectors.Condition{cond("kind", "$eq", "app"), cond("expires", "$gte", int64(1010)), cond("final", "$ne", true)}, func(x row) bool {
			return x.kind == "app" && x.expires >= 1010 && !x.final
		}},
		{"none", nil, func(row) bool { return true }},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var want []string
			for id, rw := range rows {
				if tc.want(rw) {
					want = append(want, id)
				}
			}
			slices.Sort(want)
			got := ids(query(t, idx, space, randVec(r, 8), 100, tc.filter))
			slices.Sort(got)
			if len(got) != len(want) || (len(got) > 0 && !slices.Equal(got, want)) {
				t.Fatalf("filter %v: got %v, want %v", tc.filter, got, want)
			}
		})
	}
}

func testFilterBeforeRanking(t *testing.T, h Harness, idx vectors.Index) {
	space := ns(t, "u")
	q := []float32{1, 0, 0}
	var recs []vectors.Record
	// The 50 best matches are all expired; the 3 survivors rank last.
	for i := range 50 {
		recs = append(recs, vectors.Record{ID: fmt.Sprint("old", i), Values: []float32{1, float32(i) / 100, 0}, Metadata: map[string]any{"expires": int64(10)}})
	}
	for i := range 3 {
		recs = append(recs, vectors.Record{ID: fmt.Sprint("new", i), Values: []float32{0, 1, float32(i)}, Metadata: map[string]any{"expires": int64(99)}})
	}
	upsert(t, idx, space, recs)
	settle(t, h, idx, space, len(recs))
	got := ids(query(t, idx, space, q, 3, []vectors.Condition{cond("expires", "$gt", int64(50))}))
	slices.Sort(got)
	if !slices.Equal(got, []string{"new0", "new1", "new2"}) {
		t.Fatalf("filtered top 3 = %v, want the 3 unexpired records", got)
	}
}

func testUpsertReplaces(t *testing.T, h Harness, idx vectors.Index) {
	space := ns(t, "u")
	upsert(t, idx, space, []vectors.Record{
		{ID: "x", Values: []float32{1, 0, 0}, Metadata: map[string]any{"v": int64(1), "old": "yes"}},
		{ID: "y", Values: []float32{0, 0, 1}},
	})
	settle(t, h, idx, space, 2)
	upsert(t, idx, space, []vectors.Record{{ID: "x", Values: []float32{0, 1, 0}, Metadata: map[string]any{"v": int64(2)}}})
	if n := count(t, idx, space); n != 2 {
		t.Fatalf("Count = %d, want 2", n)
	}
	var m []vectors.Match
	eventually(t, h, func() (bool, string) {
		m = query(t, idx, space, []float32{0, 1, 0}, 1, nil)
		return len(m) == 1 && m[0].ID == "x" && math.Abs(float64(m[0].Score)-1) <= tolerance(h), fmt.Sprintf("Query for new vector = %+v", m)
	})
	if !sameMetadata(m[0].Metadata, map[string]any{"v": int64(2)}) {
		t.Fatalf("metadata = %v, want replaced whole", m[0].Metadata)
	}
	m = query(t, idx, space, []float32{1, 0, 0}, 2, nil)
	for _, x := range m {
		if x.ID == "x" && x.Score > 0.01 {
			t.Fatalf("old vector of x still matches: %+v", x)
		}
	}
}

func testDimensionMismatch(t *testing.T, h Harness, idx vectors.Index) {
	ctx := context.Background()
	space := ns(t, "u")
	upsert(t, idx, space, []vectors.Record{{ID: "a", Values: []float32{1, 2, 3, 4}}})
	if err := idx.Upsert(ctx, space, []vectors.Record{{ID: "b", Values: []float32{1, 2, 3}}}); !errors.Is(err, vectors.ErrDimension) {
		t.Fatalf("Upsert with other dimension: %v, want ErrDimension", err)
	}
	if _, err := idx.Query(ctx, space, []float32{1, 2, 3, 4, 5}, 1, nil); !errors.Is(err, vectors.ErrDimension) {
		t.Fatalf("Query with other dimension: %v, want ErrDimension", err)
	}
	if err := idx.Upsert(ctx, space, []vectors.Record{{ID: "c", Values: []float32{1, 2, 3, 4}}, {ID: "d", Values: []float32{1, 2}}}); !errors.Is(err, vectors.ErrDimension) && !errors.Is(err, vectors.ErrInvalid) {
		t.Fatalf("mixed-dimension batch: %v", err)
	}
	eventually(t, h, func() (bool, string) {
		got := listIDs(t, idx, space, "")
		return slices.Equal(got, []string{"a"}), fmt.Sprintf("after rejected upserts ListIDs = %v, want [a]", got)
	})
	// Another namespace has its own dimension.
	upsert(t, idx, ns(t, "other"), []vectors.Record{{ID: "a", Values: []float32{1, 2, 3}}})
}

func testInvalidInput(t *testing.T, h Harness, idx vectors.Index) {
	ctx := context.Background()
	good := ns(t, "u")
	upsert(t, idx, good, []vectors.Record{{ID: "a", Values: []float32{1, 2}}})
	v := []float32{1, 2}
	rec := func(id string, md map[string]any) []vectors.Record {
		return []vectors.Record{{ID: id, Values: v, Metadata: md}}
	}
	many := make([]vectors.Record, 1001)
	for i := range many {
		many[i] = vectors.Record{ID: fmt.Sprint(i), Values: v}
	}
	nan := float32(math.NaN())
	inf := float32(math.Inf(1))
	for _, tc := range []struct {
		name string
		call func() error
	}{
		{"upsert empty namespace", func() error { return idx.Upsert(ctx, "", rec("a", nil)) }},
		{"query empty namespace", func() error { _, err := idx.Query(ctx, "", v, 1, nil); return err }},
		{"list empty namespace", func() error { _, err := idx.ListIDs(ctx, "", ""); return err }},
		{"delete empty namespace", func() error { return idx.Delete(ctx, "", []string{"a"}) }},
		{"delete namespace empty", func() error { return idx.DeleteNamespace(ctx, "") }},
		{"count empty namespace", func() error { _, err := idx.Count(ctx, ""); return err }},
		{"default namespace", func() error { return idx.Upsert(ctx, vectors.DefaultNamespace, rec("a", nil)) }},
		{"query default namespace", func() error { _, err := idx.Query(ctx, vectors.DefaultNamespace, v, 1, nil); return err }},
		{"delete default namespace", func() error { return idx.DeleteNamespace(ctx, vectors.DefaultNamespace) }},
		{"NUL in id", func() error { return idx.Upsert(ctx, good, rec("a\x00b", nil)) }},
		{"NUL in deleted id", func() error { return idx.Delete(ctx, good, []string{"a\x00b"}) }},
		{"id not UTF-8", func() error { return idx.Upsert(ctx, good, rec("a\xffb", nil)) }},
		{"integer beyond 2^53", func() error { return idx.Upsert(ctx, good, rec("z", map[string]any{"x": int64(1)<<53 + 1})) }},
		{"namespace with slash", func() error { return idx.Upsert(ctx, "a/b", rec("a", nil)) }},
		{"namespace dot dot", func() error { return idx.Upsert(ctx, "..", rec("a", nil)) }},
		{"namespace too long", func() error { return idx.Upsert(ctx, strings.Repeat("a", 65), rec("a", nil)) }},
		{"empty id", func() error { return idx.Upsert(ctx, good, rec("", nil)) }},
		{"id too long", func() error { return idx.Upsert(ctx, good, rec(strings.Repeat("x", 513), nil)) }},
		{"too many records", func() error { return idx.Upsert(ctx, good, many) }},
		{"empty vector", func() error { return idx.Upsert(ctx, good, []vectors.Record{{ID: "z"}}) }},
		{"zero vector", func() error { return idx.Upsert(ctx, good, []vectors.Record{{ID: "z", Values: []float32{0, 0}}}) }},
		{"NaN vector", func() error { return idx.Upsert(ctx, good, []vectors.Record{{ID: "z", Values: []float32{nan, 1}}}) }},
		{"Inf vector", func() error { return idx.Upsert(ctx, good, []vectors.Record{{ID: "z", Values: []float32{inf, 1}}}) }},
		{"metadata too large", func() error {
			return idx.Upsert(ctx, good, rec("z", map[string]any{"x": strings.Repeat("a", 41<<10)}))
		}},
		{"metadata type", func() error { return idx.Upsert(ctx, good, rec("z", map[string]any{"x": []int{1}})) }},
		{"metadata NaN", func() error { return idx.Upsert(ctx, good, rec("z", map[string]any{"x": math.NaN()})) }},
		{"metadata empty key", func() error { return idx.Upsert(ctx, good, rec("z", map[string]any{"": "x"})) }},
		{"k zero", func() error { _, err := idx.Query(ctx, good, v, 0, nil); return err }},
		{"k too large", func() error { _, err := idx.Query(ctx, good, v, 1001, nil); return err }},
		{"query zero vector", func() error { _, err := idx.Query(ctx, good, []float32{0, 0}, 1, nil); return err }},
		{"query NaN", func() error { _, err := idx.Query(ctx, good, []float32{nan, 1}, 1, nil); return err }},
		{"unknown operator", func() error {
			_, err := idx.Query(ctx, good, v, 1, []vectors.Condition{cond("x", "$regex", "a")})
			return err
		}},
		{"range on string", func() error {
			_, err := idx.Query(ctx, good, v, 1, []vectors.Condition{cond("x", "$lt", "a")})
			return err
		}},
		{"filter value type", func() error {
			_, err := idx.Query(ctx, good, v, 1, []vectors.Condition{cond("x", "$eq", struct{}{})})
			return err
		}},
		{"filter empty field", func() error {
			_, err := idx.Query(ctx, good, v, 1, []vectors.Condition{cond("", "$eq", "a")})
			return err
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if err := tc.call(); !errors.Is(err, vectors.ErrInvalid) {
				t.Fatalf("got %v, want ErrInvalid", err)
			}
		})
	}
	// Boundaries that must be accepted.
	upsert(t, idx, good, rec(strings.Repeat("x", 512), map[string]any{"x": strings.Repeat("a", 39<<10)}))
	upsert(t, idx, strings.Repeat("A", 64), rec("a", nil))
	if _, err := idx.Query(ctx, good, v, 1000, nil); err != nil {
		t.Fatalf("k=1000: %v", err)
	}
	settle(t, h, idx, good, 2)
}

func testInvalidBatchWritesNothing(t *testing.T, h Harness, idx vectors.Index) {
	ctx := context.Background()
	space := ns(t, "u")
	batch := []vectors.Record{
		{ID: "ok1", Values: []float32{1, 0}},
		{ID: "ok2", Values: []float32{0, 1}},
		{ID: "bad", Values: []float32{0, 0}},
	}
	if err := idx.Upsert(ctx, space, batch); !errors.Is(err, vectors.ErrInvalid) {
		t.Fatalf("Upsert: %v, want ErrInvalid", err)
	}
	// A write after the rejected one: once it shows, so would the batch.
	upsert(t, idx, space, []vectors.Record{{ID: "marker", Values: []float32{1, 1}}})
	settle(t, h, idx, space, 1)
	if got := listIDs(t, idx, space, ""); !slices.Equal(got, []string{"marker"}) {
		t.Fatalf("a rejected batch wrote: ListIDs = %v", got)
	}
}

func testPersistence(t *testing.T, h Harness, idx vectors.Index) {
	ctx := context.Background()
	r := rand.New(rand.NewPCG(15, 16))
	a, b := ns(t, "a"), ns(t, "b")
	var recs []vectors.Record
	for i := range 40 {
		recs = append(recs, vectors.Record{ID: fmt.Sprintf("c%d#%d", i/4, i%4), Values: randVec(r, 12), Metadata: map[string]any{
			"expires": int64(i), "kind": "app", "start": float64(i) * 0.25, "final": i%2 == 0,
		}})
	}
	upsert(t, idx, a, recs)
	upsert(t, idx, b, recs[:5])
	if err := idx.Delete(ctx, a, []string{"c0#0", "c3#2"}); err != nil {
		t.Fatal(err)
	}
	upsert(t, idx, a, []vectors.Record{{ID: "c1#1", Values: recs[30].Values, Metadata: map[string]any{"replaced": true}}})
	settle(t, h, idx, a, 38)
	settle(t, h, idx, b, 5)
	eventually(t, h, func() (bool, string) {
		m := query(t, idx, a, recs[30].Values, 2, []vectors.Condition{cond("replaced", "$eq", true)})
		return len(m) == 1 && m[0].ID == "c1#1", fmt.Sprintf("replaced record: %v", m)
	})
	q := randVec(r, 12)
	before := query(t, idx, a, q, 20, []vectors.Condition{cond("expires", "$gte", int64(3))})
	beforeIDs := listIDs(t, idx, a, "")

	idx, err := h.Reopen(ctx, idx)
	if err != nil {
		t.Fatalf("Reopen: %v", err)
	}
	if n := count(t, idx, a); n != 38 {
		t.Fatalf("Count(A) after reopen = %d, want 38", n)
	}
	if n := count(t, idx, b); n != 5 {
		t.Fatalf("Count(B) after reopen = %d, want 5", n)
	}
	if got := listIDs(t, idx, a, ""); !slices.Equal(got, beforeIDs) {
		t.Fatalf("ListIDs after reopen = %v, want %v", got, beforeIDs)
	}
	after := query(t, idx, a, q, 20, []vectors.Condition{cond("expires", "$gte", int64(3))})
	if len(after) != len(before) {
		t.Fatalf("reopen changed query: %d vs %d matches", len(after), len(before))
	}
	for i := range before {
		if after[i].ID != before[i].ID || math.Abs(float64(after[i].Score-before[i].Score)) > 1e-6 || !sameMetadata(after[i].Metadata, before[i].Metadata) {
			t.Fatalf("match %d: %+v after reopen, %+v before", i, after[i], before[i])
		}
	}
	m := query(t, idx, a, recs[30].Values, 2, []vectors.Condition{cond("replaced", "$eq", true)})
	if len(m) != 1 || m[0].ID != "c1#1" {
		t.Fatalf("replaced record after reopen: %v", m)
	}
	if err := idx.Upsert(ctx, a, []vectors.Record{{ID: "x", Values: []float32{1}}}); !errors.Is(err, vectors.ErrDimension) {
		t.Fatalf("dimension forgotten after reopen: %v", err)
	}
}

func testConcurrent(t *testing.T, h Harness, idx vectors.Index) {
	ctx := context.Background()
	const writers, perWriter, batch, dim = 4, 60, 5, 16
	spaces := []string{ns(t, "a"), ns(t, "b")}
	for _, s := range spaces {
		upsert(t, idx, s, []vectors.Record{{ID: "seed", Values: randVec(rand.New(rand.NewPCG(0, 0)), dim)}})
	}
	var wg sync.WaitGroup
	errs := make(chan error, 2*writers*len(spaces))
	for _, s := range spaces {
		for w := range writers {
			wg.Go(func() {
				r := rand.New(rand.NewPCG(uint64(w), 99))
				for i := 0; i < perWriter; i += batch {
					var recs []vectors.Record
					for j := i; j < i+batch; j++ {
						recs = append(recs, vectors.Record{ID: fmt.Sprintf("w%d#%d", w, j), Values: randVec(r, dim), Metadata: map[string]any{"w": int64(w)}})
					}
					if err := idx.Upsert(ctx, s, recs); err != nil {
						errs <- err
						return
					}
				}
			})
			wg.Go(func() {
				r := rand.New(rand.NewPCG(uint64(w), 7))
				for range perWriter / batch {
					m, err := idx.Query(ctx, s, randVec(r, dim), 10, []vectors.Condition{cond("w", "$gte", int64(0))})
					if err != nil {
						errs <- err
						return
					}
					for i := 1; i < len(m); i++ {
						if m[i].Score > m[i-1].Score {
							errs <- fmt.Errorf("unsorted concurrent query result")
							return
						}
					}
					if _, err := idx.ListIDs(ctx, s, "w"); err != nil {
						errs <- err
						return
					}
				}
			})
		}
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatalf("concurrent call: %v", err)
	}
	for _, s := range spaces {
		settle(t, h, idx, s, 1+writers*perWriter)
		if got := len(listIDs(t, idx, s, "w")); got != writers*perWriter {
			t.Fatalf("ListIDs = %d ids, want %d", got, writers*perWriter)
		}
	}
}

func cond(field, op string, v any) vectors.Condition {
	return vectors.Condition{Field: field, Op: op, Value: v}
}
