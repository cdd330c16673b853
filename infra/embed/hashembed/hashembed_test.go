package hashembed

import (
	"context"
	"errors"
	"math"
	"slices"
	"strings"
	"testing"

	"github.com/lethe-dev/lethe/infra/embed"
	"github.com/lethe-dev/lethe/infra/embed/embedtest"
)

func cos(a, b []float32) float64 {
	var d, na, nb float64
	for i := range a {
		d += float64(a[i]) * float64(b[i])
		na += float64(a[i]) * float64(a[i])
		nb += float64(b[i]) * float64(b[i])
	}
	if na == 0 || nb == 0 {
		return 0
	}
	return d / math.Sqrt(na*nb)
}

func norm(v []float32) float64 {
	var ss float64
	for _, x := range v {
		ss += float64(x) * float64(x)
	}
	return math.Sqrt(ss)
}

func embed1(t testing.TB, text string) []float32 {
	t.Helper()
	v, err := New().Embed(context.Background(), []string{text}, embed.Passage)
	if err != nil {
		t.Fatal(err)
	}
	return v[0]
}

func TestIdentity(t *testing.T) {
	e := New()
	if e.ID() != "hashembed-v1-384" || e.Dim() != 384 {
		t.Fatalf("ID %q Dim %d", e.ID(), e.Dim())
	}
}

func TestDeterministicAndBatched(t *testing.T) {
	texts := []string{"Remind me to call Anna about the dentist", "", "grocery list: milk, eggs", "Ünïcödé straße 東京"}
	a, err := New().Embed(context.Background(), texts, embed.Passage)
	if err != nil {
		t.Fatal(err)
	}
	b, err := New().Embed(context.Background(), texts, embed.Query)
	if err != nil {
		t.Fatal(err)
	}
	if len(a) != len(texts) {
		t.Fatalf("%d vectors for %d texts", len(a), len(texts))
	}
	for i := range texts {
		if len(a[i]) != Dim {
			t.Fatalf("vector %d has %d dims", i, len(a[i]))
		}
		if !slices.Equal(a[i], b[i]) {
			t.Fatalf("text %d: not deterministic (or kind changed it)", i)
		}
		if !slices.Equal(a[i], Vector(texts[i])) {
			t.Fatalf("text %d: batch differs from single", i)
		}
	}
	// A pinned value: the output must not drift silently under the same ID.
	var got float64
	for i, x := range Vector("hello world, hello again") {
		got += float64(i+1) * float64(x)
	}
	if math.Abs(got-pinned) > 1e-4 {
		t.Fatalf("hashembed output changed (%v): bump ID if intended", got)
	}
}

func TestUnitNormAndEmpty(t *testing.T) {
	for _, tc := range []struct {
		text string
		zero bool
	}{
		{"hello", false},
		{"a", false},
		{"the the the the", false},
		{strings.Repeat("long transcript words ", 500), false},
		{"東京タワー", false},
		{"", true},
		{"   \t\n", true},
		{"?!... --- ,,,", true},
	} {
		n := norm(embed1(t, tc.text))
		if tc.zero && n != 0 {
			t.Errorf("%q: norm %v, want zero vector", tc.text, n)
		}
		if !tc.zero && math.Abs(n-1) > 1e-5 {
			t.Errorf("%q: norm %v, want 1", tc.text, n)
		}
	}
}

func TestSimilarity(t *testing.T) {
	base := embed1(t, "remind me to call the dentist tomorrow morning")
	shared := embed1(t, "call the dentist in the morning")
	disjoint := embed1(t, "quarterly revenue grew seven percent")
	if cs, cd := cos(base, shared), cos(base, disjoint); cs <= cd+0.2 {
		t.Fatalf("shared words cos %v not clearly above disjoint %v", cs, cd)
	}
	// Case and punctuation do not matter.
	if c := cos(embed1(t, "Hello, World!"), embed1(t, "hello world")); c < 0.99999 {
		t.Fatalf("case/punctuation changed vector: cos %v", c)
	}
	if c := cos(embed1(t, "ÜBER STRAßE"), embed1(t, "über straße")); c < 0.99999 {
		t.Fatalf("Unicode lower-casing: cos %v", c)
	}
	// Char 3-grams give partial credit for inflections.
	if c := cos(embed1(t, "meetings"), embed1(t, "meeting")); c < 0.3 {
		t.Fatalf("inflection similarity %v, want ≥ 0.3", c)
	}
}

func TestBigramSensitivity(t *testing.T) {
	dbm := embed1(t, "dog bites man")
	mbd := embed1(t, "man bites dog")
	if c := cos(dbm, mbd); c > 0.95 {
		t.Fatalf("word order invisible: cos %v", c)
	}
	q := embed1(t, "dog bites")
	if a, b := cos(q, dbm), cos(q, mbd); a <= b {
		t.Fatalf("query 'dog bites': %v to 'dog bites man', %v to 'man bites dog'", a, b)
	}
}

func TestTokenize(t *testing.T) {
	for in, want := range map[string][]string{
		"Hello, World!":  {"hello", "world"},
		"don't stop":     {"don", "t", "stop"},
		"naïve café 42x": {"naïve", "café", "42x"},
		"e\u0301te":      {"e\u0301te"}, // combining accent stays in the word
		"ПРИВЕТ мир":     {"привет", "мир"},
		"  \t ":          nil,
		"c1#0 conv-2":    {"c1", "0", "conv", "2"},
	} {
		if got := Tokenize(in); !slices.Equal(got, want) {
			t.Errorf("Tokenize(%q) = %q, want %q", in, got, want)
		}
	}
}

func TestCanceled(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if _, err := New().Embed(ctx, []string{"x"}, embed.Query); !errors.Is(err, context.Canceled) {
		t.Fatalf("Embed with canceled ctx: %v", err)
	}
}

func FuzzVector(f *testing.F) {
	for _, s := range []string{"", "hello world", "a", "\xff\xfe", "東京 タワー", "e\u0301", strings.Repeat("ab ", 100)} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		v := Vector(s)
		if len(v) != Dim {
			t.Fatalf("len %d", len(v))
		}
		for _, x := range v {
			if math.IsNaN(float64(x)) || math.IsInf(float64(x), 0) {
				t.Fatalf("non-finite value for %q", s)
			}
		}
		n := norm(v)
		if n != 0 && math.Abs(n-1) > 1e-5 {
			t.Fatalf("norm %v for %q", n, s)
		}
		if (n == 0) != (len(Tokenize(s)) == 0) {
			t.Fatalf("zero vector iff no tokens violated for %q", s)
		}
		if !slices.Equal(v, Vector(s)) {
			t.Fatalf("not deterministic for %q", s)
		}
	})
}

// BenchmarkEmbed embeds one ~60-word transcript segment.
func BenchmarkEmbed(b *testing.B) {
	text := strings.Repeat("so I was thinking we should meet on Tuesday to go over the budget and the hiring plan ", 4)
	e := New()
	ctx := context.Background()
	b.SetBytes(int64(len(text)))
	for b.Loop() {
		if _, err := e.Embed(ctx, []string{text}, embed.Passage); err != nil {
			b.Fatal(err)
		}
	}
}

// pinned is sum((i+1)*v[i]) for "hello world, hello again" under hashembed-v1-384.
const pinned = 127.474420

// TestConformance: the embedded embedder passes the same suite as the
// hosted ones, and promises exact determinism (it is a pure function).
func TestConformance(t *testing.T) {
	embedtest.RunConformanceTests(t, New())
}
