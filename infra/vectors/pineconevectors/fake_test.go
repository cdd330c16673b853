package pineconevectors

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strings"
	"testing"

	"github.com/lethe-dev/lethe/infra/vectors"
)

func vecs(n, dim int, prefix string) []Vector {
	out := make([]Vector, n)
	for i := range out {
		v := make([]float32, dim)
		for j := range v {
			v[j] = float32(i+j) + 0.123456
		}
		out[i] = Vector{ID: fmt.Sprint(prefix, i), Values: v}
	}
	return out
}

// TestFakeEnforcesLimits: the fake must refuse what Pinecone refuses, or
// the adapter's batching proves nothing.
func TestFakeEnforcesLimits(t *testing.T) {
	ctx := context.Background()
	dp := NewFakeDataPlane(0)
	if err := dp.Upsert(ctx, nsA, vecs(10, 4, "seed")); err != nil {
		t.Fatal(err)
	}
	many := make([]string, MaxDeleteIDs+1)
	for i := range many {
		many[i] = fmt.Sprint(i)
	}
	_, tok, err := dp.List(ctx, nsA, "seed", 2, "")
	if err != nil || tok == "" {
		t.Fatalf("List: token %q, %v", tok, err)
	}
	for _, tc := range []struct {
		name string
		call func() error
		want error
	}{
		{"1001 vectors", func() error { return dp.Upsert(ctx, nsA, vecs(1001, 1, "v")) }, ErrLimit},
		{"over 2 MB", func() error { return dp.Upsert(ctx, nsA, vecs(300, 1024, "v")) }, ErrLimit},
		{"metadata over 40 KB", func() error {
			return dp.Upsert(ctx, nsA, []Vector{{ID: "m", Values: []float32{1, 1, 1, 1}, Metadata: map[string]any{"x": strings.Repeat("a", MaxMetadataBytes)}}})
		}, ErrLimit},
		{"no vectors", func() error { return dp.Upsert(ctx, nsA, nil) }, vectors.ErrInvalid},
		{"zero vector", func() error { return dp.Upsert(ctx, nsA, []Vector{{ID: "z", Values: []float32{0, 0, 0, 0}}}) }, vectors.ErrInvalid},
		{"dimension", func() error { return dp.Upsert(ctx, nsA, vecs(1, 3, "d")) }, vectors.ErrDimension},
		{"null metadata", func() error {
			return dp.Upsert(ctx, nsA, []Vector{{ID: "n", Values: []float32{1, 1, 1, 1}, Metadata: map[string]any{"x": nil}}})
		}, vectors.ErrInvalid},
		{"nested metadata", func() error {
			return dp.Upsert(ctx, nsA, []Vector{{ID: "n", Values: []float32{1, 1, 1, 1}, Metadata: map[string]any{"x": map[string]any{}}}})
		}, vectors.ErrInvalid},
		{"id over 512", func() error { return dp.Upsert(ctx, nsA, vecs(1, 4, strings.Repeat("i", 512))) }, vectors.ErrInvalid},
		{"1001 ids", func() error { return dp.DeleteIDs(ctx, nsA, many) }, ErrLimit},
		{"no ids", func() error { return dp.DeleteIDs(ctx, nsA, nil) }, vectors.ErrInvalid},
		{"list limit 101", func() error { _, _, err := dp.List(ctx, nsA, "", 101, ""); return err }, ErrLimit},
		{"token of another prefix", func() error { _, _, err := dp.List(ctx, nsA, "other", 2, tok); return err }, vectors.ErrInvalid},
		{"forged token", func() error { _, _, err := dp.List(ctx, nsA, "", 2, "bm90IGEgdG9rZW4="); return err }, vectors.ErrInvalid},
		{"top_k 10001", func() error { _, err := dp.Query(ctx, nsA, []float32{1, 1, 1, 1}, MaxTopK+1, nil); return err }, ErrLimit},
		{"query dimension", func() error { _, err := dp.Query(ctx, nsA, []float32{1}, 1, nil); return err }, vectors.ErrDimension},
		{"unknown operator", func() error {
			_, err := dp.Query(ctx, nsA, []float32{1, 1, 1, 1}, 1, map[string]any{"x": map[string]any{"$regex": "a"}})
			return err
		}, vectors.ErrInvalid},
		{"delete in absent namespace", func() error { return dp.DeleteIDs(ctx, "absent", []string{"a"}) }, ErrNotFound},
		{"delete absent namespace", func() error { return dp.DeleteNamespace(ctx, "absent") }, ErrNotFound},
		{"describe absent namespace", func() error { _, err := dp.NamespaceCount(ctx, "absent"); return err }, ErrNotFound},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if err := tc.call(); !errors.Is(err, tc.want) {
				t.Fatalf("got %v, want %v", err, tc.want)
			}
		})
	}
	for _, ns := range []string{"", vectors.DefaultNamespace} {
		_, _, lerr := dp.List(ctx, ns, "", 1, "")
		_, qerr := dp.Query(ctx, ns, []float32{1, 1, 1, 1}, 1, nil)
		_, cerr := dp.NamespaceCount(ctx, ns)
		for name, err := range map[string]error{
			"upsert": dp.Upsert(ctx, ns, vecs(1, 4, "e")), "list": lerr, "query": qerr, "count": cerr,
			"delete": dp.DeleteIDs(ctx, ns, []string{"a"}), "deleteNamespace": dp.DeleteNamespace(ctx, ns),
		} {
			if !errors.Is(err, vectors.ErrInvalid) {
				t.Errorf("%s in namespace %q: %v, want ErrInvalid", name, ns, err)
			}
		}
	}
	if n, err := dp.NamespaceCount(ctx, nsA); err != nil || n != 10 {
		t.Fatalf("refused requests changed the namespace: %d, %v", n, err)
	}
	// Just within limits is accepted: 1,000 small vectors.
	if err := dp.Upsert(ctx, nsA, vecs(1000, 4, "ok")); err != nil {
		t.Fatalf("1000 small vectors: %v", err)
	}
}

func TestFakeNamespaceVanishesWhenEmpty(t *testing.T) {
	ctx := context.Background()
	dp := NewFakeDataPlane(0)
	if err := dp.Upsert(ctx, nsA, vecs(2, 3, "a")); err != nil {
		t.Fatal(err)
	}
	if err := dp.DeleteIDs(ctx, nsA, []string{"a0", "a1"}); err != nil {
		t.Fatal(err)
	}
	if _, err := dp.NamespaceCount(ctx, nsA); !errors.Is(err, ErrNotFound) {
		t.Fatalf("emptied namespace still exists: %v", err)
	}
	// Its dimension went with it (per-namespace mode).
	if err := dp.Upsert(ctx, nsA, vecs(1, 5, "b")); err != nil {
		t.Fatalf("new dimension after emptying: %v", err)
	}
}

func TestFakeFilterLanguage(t *testing.T) {
	ctx := context.Background()
	dp := NewFakeDataPlane(2)
	rows := []Vector{
		{ID: "a", Values: []float32{1, 0}, Metadata: map[string]any{"kind": "app", "t": 1.0, "final": true, "tags": []any{"x", "y"}}},
		{ID: "b", Values: []float32{1, 1}, Metadata: map[string]any{"kind": "twilio", "t": 2.0}},
		{ID: "c", Values: []float32{0, 1}, Metadata: map[string]any{"kind": "app", "t": 3.0, "final": false}},
		{ID: "d", Values: []float32{1, 2}},
	}
	if err := dp.Upsert(ctx, nsA, rows); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		filter string
		want   []string
	}{
		{`{}`, []string{"a", "b", "c", "d"}},
		{`{"kind":"app"}`, []string{"a", "c"}},
		{`{"kind":{"$ne":"app"}}`, []string{"b", "d"}},
		{`{"t":{"$gt":1,"$lte":3}}`, []string{"b", "c"}},
		{`{"t":{"$lt":2}}`, []string{"a"}},
		{`{"t":{"$gte":2}}`, []string{"b", "c"}},
		{`{"kind":{"$in":["twilio","sms"]}}`, []string{"b"}},
		{`{"t":{"$nin":[1,3]}}`, []string{"b", "d"}},
		{`{"final":{"$exists":true}}`, []string{"a", "c"}},
		{`{"final":{"$exists":false}}`, []string{"b", "d"}},
		{`{"final":false}`, []string{"c"}},
		{`{"tags":"y"}`, []string{"a"}},
		{`{"tags":{"$in":["z","x"]}}`, []string{"a"}},
		{`{"$or":[{"kind":"twilio"},{"t":3}]}`, []string{"b", "c"}},
		{`{"$and":[{"kind":"app"},{"t":{"$gt":1}}]}`, []string{"c"}},
		{`{"kind":"app","final":true}`, []string{"a"}},
		{`{"t":{"$lt":"z"}}`, nil},
		{`{"$not":{"kind":"app"}}`, nil},
		{`{"kind":{"$in":[]}}`, nil},
		{`{"kind":{"$in":[true]}}`, nil},
		{`{"$and":[]}`, nil},
		{`{"kind":null}`, nil},
	} {
		t.Run(tc.filter, func(t *testing.T) {
			var f map[string]any
			if err := json.Unmarshal([]byte(tc.filter), &f); err != nil {
				t.Fatal(err)
			}
			m, err := dp.Query(ctx, nsA, []float32{1, 1}, 10, f)
			if tc.want == nil {
				if !errors.Is(err, vectors.ErrInvalid) {
					t.Fatalf("invalid filter: %v, want ErrInvalid", err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			var got []string
			for _, x := range m {
				got = append(got, x.ID)
			}
			slices.Sort(got)
			if !slices.Equal(got, tc.want) {
				t.Fatalf("got %v, want %v", got, tc.want)
			}
		})
	}
}

func TestFakeQueryReturnsCopies(t *testing.T) {
	ctx := context.Background()
	dp := NewFakeDataPlane(0)
	md := map[string]any{"k": "v"}
	if err := dp.Upsert(ctx, nsA, []Vector{{ID: "a", Values: []float32{1}, Metadata: md}}); err != nil {
		t.Fatal(err)
	}
	md["k"] = "changed"
	m, _ := dp.Query(ctx, nsA, []float32{1}, 1, nil)
	m[0].Metadata["k"] = "changed too"
	m, _ = dp.Query(ctx, nsA, []float32{1}, 1, nil)
	if m[0].Metadata["k"] != "v" {
		t.Fatalf("stored metadata changed through a caller's map: %v", m[0].Metadata)
	}
}

// FuzzFakeFilter: the fake parses filters a caller built; whatever the
// input, it must answer with a result or ErrInvalid, never panic.
func FuzzFakeFilter(f *testing.F) {
	for _, s := range []string{`{"a":1}`, `{"$and":[{"a":{"$gt":1}},{"b":{"$in":["x",2]}}]}`, `{"$or":[{"t":{"$exists":true}}]}`, `{"a":{"$ne":"x","$lt":3}}`, `{"tags":{"$nin":["a"]}}`} {
		f.Add(s)
	}
	md := []map[string]any{nil, {"a": 1.0, "b": "x", "t": true, "tags": []string{"a", "b"}}}
	f.Fuzz(func(t *testing.T, s string) {
		var filter map[string]any
		if json.Unmarshal([]byte(s), &filter) != nil {
			return
		}
		p, err := compileFakeFilter(filter)
		if err != nil {
			if !errors.Is(err, vectors.ErrInvalid) {
				t.Fatalf("error %v is not ErrInvalid", err)
			}
			return
		}
		for _, m := range md {
			p(m)
		}
	})
}

// FuzzListToken: pagination tokens come back from callers; a forged one
// must be refused, a genuine one must round-trip.
func FuzzListToken(f *testing.F) {
	good, _ := json.Marshal(listToken{SkipPast: "c1#2", Prefix: "c1#"})
	f.Add(base64.StdEncoding.EncodeToString(good), "c1#")
	f.Add("", "")
	f.Add("e30=", "")
	f.Fuzz(func(t *testing.T, tok, prefix string) {
		after, err := decodeListToken(tok, prefix)
		if err != nil {
			if !errors.Is(err, vectors.ErrInvalid) {
				t.Fatalf("error %v is not ErrInvalid", err)
			}
			return
		}
		if after == "" {
			t.Fatal("accepted a token without a position")
		}
	})
}

// TestFakeEventualConsistency: with a lag, a write reaches reads only
// after that many reads, in order, while validation sees it at once.
func TestFakeEventualConsistency(t *testing.T) {
	ctx := context.Background()
	const lag = 3
	dp := NewFakeDataPlane(0)
	dp.SetConsistency(lag, false)
	if err := dp.Upsert(ctx, nsA, vecs(4, 2, "a")); err != nil {
		t.Fatal(err)
	}
	// The dimension is the latest state's, visible or not.
	if err := dp.Upsert(ctx, nsA, vecs(1, 3, "b")); !errors.Is(err, vectors.ErrDimension) {
		t.Fatalf("Upsert of another dimension before visibility = %v, want ErrDimension", err)
	}
	if err := dp.DeleteIDs(ctx, nsA, []string{"a0"}); err != nil {
		t.Fatalf("DeleteIDs of a record not yet visible: %v", err)
	}
	var counts []int
	for range lag + 2 {
		n, err := dp.NamespaceCount(ctx, nsA)
		if err != nil && !errors.Is(err, ErrNotFound) {
			t.Fatal(err)
		}
		counts = append(counts, n)
	}
	// Reads 1 and 2 see nothing; read 3 both writes, in order (the delete
	// applied before the upsert would leave 4).
	if want := []int{0, 0, 3, 3, 3}; !slices.Equal(counts, want) {
		t.Fatalf("counts over reads = %v, want %v", counts, want)
	}
}

// TestFakeApproximate: approximate scores stay within approxScoreError of
// the exact ones, are stable for one query, and a large namespace misses
// some records the exact ranking would return.
func TestFakeApproximate(t *testing.T) {
	ctx := context.Background()
	exact, approx := NewFakeDataPlane(0), NewFakeDataPlane(0)
	approx.SetConsistency(0, true)
	recs := vecs(approxMissFrom*3, 4, "r")
	for i := range recs {
		recs[i].Values[i%4] += float32(i)
	}
	for _, dp := range []*FakeDataPlane{exact, approx} {
		if err := dp.Upsert(ctx, nsA, recs); err != nil {
			t.Fatal(err)
		}
	}
	q := []float32{1, 2, 3, 4}
	want, err := exact.Query(ctx, nsA, q, len(recs), nil)
	if err != nil {
		t.Fatal(err)
	}
	got, err := approx.Query(ctx, nsA, q, len(recs), nil)
	if err != nil {
		t.Fatal(err)
	}
	again, _ := approx.Query(ctx, nsA, q, len(recs), nil)
	if !slices.EqualFunc(got, again, func(a, b ScoredVector) bool { return a.ID == b.ID && a.Score == b.Score }) {
		t.Fatal("approximate answers differ for one query")
	}
	if len(got) >= len(want) || len(got) < len(want)*9/10 {
		t.Fatalf("approximate query returned %d of %d records, want a few missed", len(got), len(want))
	}
	exactScore := map[string]float32{}
	for _, m := range want {
		exactScore[m.ID] = m.Score
	}
	differ := false
	for _, m := range got {
		d := float64(m.Score - exactScore[m.ID])
		if d > approxScoreError+1e-6 || d < -approxScoreError-1e-6 {
			t.Fatalf("score of %s off by %v", m.ID, d)
		}
		differ = differ || d != 0
	}
	if !differ {
		t.Fatal("approximate scores equal the exact ones")
	}
}
