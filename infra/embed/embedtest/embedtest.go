// Package embedtest is the conformance suite every embed.Embedder passes:
// the hashing embedder in-process, the hosted adapters against fakes of
// their providers.
package embedtest

import (
	"fmt"
	"math"
	"math/rand/v2"
	"sync"
	"testing"

	"github.com/lethe-dev/lethe/infra/embed"
)

// Capabilities declare what differs between embedders, so the suite checks
// each one as far as it promises instead of skipping.
type Capabilities struct {
	// Deterministic: the same text and kind always give the same vector, and
	// a text's vector does not depend on the batch it is in. Hashing
	// embedders and fakes promise this; hosted models only approximately.
	Deterministic bool
	// LargeBatch is how many texts the batching test sends in one call; pick
	// more than the adapter's per-request limit so it must split. 0 = 300.
	LargeBatch int
}

// RunConformanceTests runs the suite with Capabilities{Deterministic: true}.
func RunConformanceTests(t *testing.T, e embed.Embedder) {
	RunConformanceTestsWith(t, e, Capabilities{Deterministic: true})
}

// RunConformanceTestsWith runs the suite against e with declared caps.
func RunConformanceTestsWith(t *testing.T, e embed.Embedder, caps Capabilities) {
	t.Helper()
	if caps.LargeBatch <= 0 {
		caps.LargeBatch = 300
	}
	t.Run("Identity", func(t *testing.T) { testIdentity(t, e) })
	t.Run("EmptyBatch", func(t *testing.T) { testEmptyBatch(t, e) })
	t.Run("Shape", func(t *testing.T) { testShape(t, e) })
	t.Run("Determinism", func(t *testing.T) { testDeterminism(t, e, caps) })
	t.Run("BatchOrderPreserved", func(t *testing.T) { testBatchOrder(t, e, caps) })
	t.Run("LargeBatchSplitsAndReassembles", func(t *testing.T) { testLargeBatch(t, e, caps) })
	t.Run("BothKinds", func(t *testing.T) { testKinds(t, e) })
	t.Run("ResultsDoNotAlias", func(t *testing.T) { testNoAlias(t, e, caps) })
	t.Run("Concurrent", func(t *testing.T) { testConcurrent(t, e, caps) })
}

var sample = []string{
	"I need to call the dentist on Tuesday.",
	"The meeting moved to the blue room.",
	"Remember to buy oat milk and coffee beans.",
	"She said the train leaves at 7:45 from platform 9.",
	"Grüße aus München – naïve café, 東京 and emoji 🎙️.",
}

func texts(n int) []string {
	out := make([]string, n)
	for i := range out {
		out[i] = fmt.Sprintf("memory %d: %s", i, sample[i%len(sample)])
	}
	return out
}

func embedOK(t *testing.T, e embed.Embedder, in []string, kind embed.Kind) [][]float32 {
	t.Helper()
	out, err := e.Embed(t.Context(), in, kind)
	if err != nil {
		t.Fatalf("Embed(%d texts, kind %d): %v", len(in), kind, err)
	}
	if len(out) != len(in) {
		t.Fatalf("Embed(%d texts) returned %d vectors", len(in), len(out))
	}
	for i, v := range out {
		checkVector(t, e, i, v)
	}
	return out
}

func checkVector(t *testing.T, e embed.Embedder, i int, v []float32) {
	t.Helper()
	if len(v) != e.Dim() {
		t.Fatalf("vector %d has %d dims, Dim() = %d", i, len(v), e.Dim())
	}
	nonZero := false
	for j, x := range v {
		if math.IsNaN(float64(x)) || math.IsInf(float64(x), 0) {
			t.Fatalf("vector %d[%d] = %v", i, j, x)
		}
		if x != 0 {
			nonZero = true
		}
	}
	if !nonZero {
		t.Fatalf("vector %d is all zeros for non-empty text", i)
	}
}

func equal(a, b []float32) bool {
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

func cosine(a, b []float32) float64 {
	var dot, na, nb float64
	for i := range a {
		dot += float64(a[i]) * float64(b[i])
		na += float64(a[i]) * float64(a[i])
		nb += float64(b[i]) * float64(b[i])
	}
	if na == 0 || nb == 0 {
		return 0
	}
	return dot / math.Sqrt(na*nb)
}

// same is exact equality for deterministic embedders and near-identity
// (cosine ≥ 0.99) for the rest.
func same(caps Capabilities, a, b []float32) bool {
	if caps.Deterministic {
		return equal(a, b)
	}
	return cosine(a, b) >= 0.99
}

func testIdentity(t *testing.T, e embed.Embedder) {
	if e.ID() == "" {
		t.Error("ID() is empty")
	}
	if first, second := e.ID(), e.ID(); first != second {
		t.Error("ID() changes between calls")
	}
	if e.Dim() <= 0 {
		t.Fatalf("Dim() = %d", e.Dim())
	}
}

func testEmptyBatch(t *testing.T, e embed.Embedder) {
	for _, in := range [][]string{nil, {}} {
		out, err := e.Embed(t.Context(), in, embed.Passage)
		if err != nil {
			t.Fatalf("Embed(%#v): %v", in, err)
		}
		if len(out) != 0 {
			t.Fatalf("Embed(%#v) = %d vectors", in, len(out))
		}
	}
}

func testShape(t *testing.T, e embed.Embedder) {
	out := embedOK(t, e, sample, embed.Passage)
	// Different texts must not collapse onto one vector, or order could not
	// be checked and search would be meaningless.
	for i := range out {
		for j := i + 1; j < len(out); j++ {
			if equal(out[i], out[j]) {
				t.Errorf("texts %d and %d have identical vectors", i, j)
			}
		}
	}
}

func testDeterminism(t *testing.T, e embed.Embedder, caps Capabilities) {
	a := embedOK(t, e, sample, embed.Passage)
	b := embedOK(t, e, sample, embed.Passage)
	for i := range a {
		if !same(caps, a[i], b[i]) {
			t.Errorf("text %d: two calls differ (cosine %.4f)", i, cosine(a[i], b[i]))
		}
	}
}

func testBatchOrder(t *testing.T, e embed.Embedder, caps Capabilities) {
	batch := embedOK(t, e, sample, embed.Passage)
	for i, s := range sample {
		one := embedOK(t, e, []string{s}, embed.Passage)
		if !same(caps, batch[i], one[0]) {
			t.Errorf("batch[%d] is not the vector of text %d alone (cosine %.4f)", i, i, cosine(batch[i], one[0]))
		}
	}
	// Reversed input gives reversed output.
	rev := make([]string, len(sample))
	for i, s := range sample {
		rev[len(sample)-1-i] = s
	}
	back := embedOK(t, e, rev, embed.Passage)
	for i := range sample {
		if !same(caps, batch[i], back[len(sample)-1-i]) {
			t.Errorf("reversed batch: vector for text %d moved", i)
		}
	}
}

func testLargeBatch(t *testing.T, e embed.Embedder, caps Capabilities) {
	in := texts(caps.LargeBatch)
	out := embedOK(t, e, in, embed.Passage)
	probe := []int{0, 1, len(in) / 3, len(in) / 2, len(in) - 2, len(in) - 1}
	for _, i := range probe {
		one := embedOK(t, e, []string{in[i]}, embed.Passage)
		if !same(caps, out[i], one[0]) {
			t.Errorf("large batch: vector %d is not the vector of text %d", i, i)
		}
	}
}

func testKinds(t *testing.T, e embed.Embedder) {
	for _, k := range []embed.Kind{embed.Passage, embed.Query} {
		embedOK(t, e, sample[:2], k)
	}
}

func testNoAlias(t *testing.T, e embed.Embedder, caps Capabilities) {
	a := embedOK(t, e, sample[:2], embed.Passage)
	keep := append([]float32(nil), a[0]...)
	for i := range a[0] {
		a[0][i] = 42
	}
	b := embedOK(t, e, sample[:2], embed.Passage)
	if !same(caps, b[0], keep) {
		t.Error("changing a returned vector changed a later result")
	}
	if &a[0][0] == &a[1][0] {
		t.Error("two results share memory")
	}
}

func testConcurrent(t *testing.T, e embed.Embedder, caps Capabilities) {
	want := embedOK(t, e, sample, embed.Passage)
	const workers = 8
	var wg sync.WaitGroup
	errs := make(chan error, workers)
	for w := range workers {
		wg.Go(func() {
			// Each worker sends a rotation, so batches differ.
			in := append(append([]string(nil), sample[w%len(sample):]...), sample[:w%len(sample)]...)
			out, err := e.Embed(t.Context(), in, embed.Passage)
			if err != nil {
				errs <- err
				return
			}
			for i := range in {
				orig := (i + w%len(sample)) % len(sample)
				if len(out) != len(in) || !same(caps, out[i], want[orig]) {
					errs <- fmt.Errorf("worker %d: vector %d is not text %d's", w, i, orig)
					return
				}
			}
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
}

// Jitter perturbs a unit vector slightly, as a hosted model's answers vary
// from call to call (GPU nondeterminism, batch composition); fakes of hosted
// providers apply it so that the suite checks them as Deterministic: false,
// what the real service promises. The cosine to v stays above 0.999.
func Jitter(v []float32, r *rand.Rand) []float32 {
	out := make([]float32, len(v))
	var n float64
	for i, x := range v {
		y := float64(x) + r.NormFloat64()*0.01/math.Sqrt(float64(len(v)))
		out[i] = float32(y)
		n += y * y
	}
	for i := range out {
		out[i] = float32(float64(out[i]) / math.Sqrt(n))
	}
	return out
}
