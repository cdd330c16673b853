// Package hashembed is the offline embedder: deterministic feature hashing
// of word unigrams, word bigrams and character 3-grams into 384 signed
// buckets.
//
// It is LEXICAL, NOT SEMANTIC: texts are close when they share words or
// spellings, not when they mean the same thing ("car" and "automobile" are
// unrelated to it). It needs no model, no network and no state, and gives
// the same vector for the same text on every machine, which makes it the
// embedded default and a good test double; production uses a real model.
package hashembed

import (
	"context"
	"math"
	"strings"
	"unicode"
	"unicode/utf8"

	"github.com/lethe-dev/lethe/infra/embed"
)

const (
	// Dim is the vector length.
	Dim = 384
	// ID names the algorithm, its version and Dim; change it whenever the
	// features or hashing change, so old and new vectors are never mixed.
	ID = "hashembed-v1-384"
)

// Feature kinds, hashed in front of the feature text so a word and a
// trigram with the same letters land in different buckets.
const (
	kindWord    = 'w'
	kindBigram  = 'b'
	kindTrigram = 't'
)

// Embedder is the feature-hashing embedder. The zero value is ready to use
// and it is safe for concurrent use.
type Embedder struct{}

var _ embed.Embedder = (*Embedder)(nil)

// New returns an Embedder.
func New() *Embedder { return &Embedder{} }

// ID returns "hashembed-v1-384".
func (*Embedder) ID() string { return ID }

// Dim returns 384.
func (*Embedder) Dim() int { return Dim }

// Embed returns one L2-normalised vector per text. The embedding is
// symmetric: kind is ignored. A text without any letter or digit (empty,
// spaces, punctuation) has no features and yields the ZERO vector; vector
// indexes refuse zero vectors (cosine is undefined), so callers must skip
// such texts rather than store or search them.
func (e *Embedder) Embed(ctx context.Context, texts []string, _ embed.Kind) ([][]float32, error) {
	out := make([][]float32, len(texts))
	for i, t := range texts {
		if err := ctx.Err(); err != nil {
			return nil, err
		}
		out[i] = Vector(t)
	}
	return out, nil
}

// Vector embeds one text; see Embed.
func Vector(text string) []float32 {
	words := Tokenize(text)
	tf := make(map[uint64]int, 8*len(words))
	for i, w := range words {
		tf[hashFeature(kindWord, w, "")]++
		if i > 0 {
			tf[hashFeature(kindBigram, words[i-1], w)]++
		}
		// Character 3-grams of "<word>": the boundary marks make prefixes
		// and suffixes count, and a one-letter word still has a 3-gram.
		padded := "<" + w + ">"
		for j := 0; j < len(padded); {
			k, n := j, 0
			for n < 3 && k < len(padded) {
				_, size := utf8.DecodeRuneInString(padded[k:])
				k += size
				n++
			}
			if n < 3 {
				break
			}
			tf[hashFeature(kindTrigram, padded[j:k], "")]++
			_, size := utf8.DecodeRuneInString(padded[j:])
			j += size
		}
	}
	v := make([]float64, Dim)
	for h, n := range tf {
		// Sublinear TF: a word said ten times is not ten times as relevant.
		w := 1 + math.Log(float64(n))
		// Low bit picks the sign, so collisions cancel on average instead
		// of piling up; the other 63 bits pick the bucket.
		if h&1 == 1 {
			w = -w
		}
		v[(h>>1)%Dim] += w
	}
	var ss float64
	for _, x := range v {
		ss += x * x
	}
	out := make([]float32, Dim)
	if ss == 0 {
		return out
	}
	norm := math.Sqrt(ss)
	for i, x := range v {
		out[i] = float32(x / norm)
	}
	return out
}

// Tokenize lower-cases text and splits it into words: maximal runs of
// Unicode letters, digits and combining marks. Everything else separates.
func Tokenize(text string) []string {
	return strings.FieldsFunc(strings.ToLower(text), func(r rune) bool {
		return !unicode.IsLetter(r) && !unicode.IsDigit(r) && !unicode.IsMark(r)
	})
}

// hashFeature is FNV-1a 64 over kind, a, a space and b, without building
// the string.
func hashFeature(kind byte, a, b string) uint64 {
	const (
		offset = 14695981039346656037
		prime  = 1099511628211
	)
	h := uint64(offset)
	h = (h ^ uint64(kind)) * prime
	for i := 0; i < len(a); i++ {
		h = (h ^ uint64(a[i])) * prime
	}
	if b != "" {
		h = (h ^ ' ') * prime
		for i := 0; i < len(b); i++ {
			h = (h ^ uint64(b[i])) * prime
		}
	}
	// FNV's low bits mix poorly for short inputs; fold the high half in
	// before taking the sign bit and the bucket.
	h ^= h >> 32
	h *= 0x9e3779b97f4a7c15
	h ^= h >> 29
	return h
}
