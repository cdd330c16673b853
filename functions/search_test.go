package functions_test

import (
	"context"
	"encoding/json"
	"testing"

	"github.com/lethe-dev/lethe/app/records"
	"github.com/lethe-dev/lethe/infra/docs"
	"github.com/lethe-dev/lethe/infra/embed"
	"github.com/lethe-dev/lethe/infra/embed/hashembed"
)

// miscountingEmbedder is hashembed with a fixed, wrong answer shape: it
// returns vectors vectors of dim floats whatever it is asked.
type miscountingEmbedder struct {
	hashembed.Embedder
	vectors, dim int
}

func (e *miscountingEmbedder) Embed(context.Context, []string, embed.Kind) ([][]float32, error) {
	out := make([][]float32, e.vectors)
	for i := range out {
		out[i] = make([]float32, e.dim)
	}
	return out, nil
}

// TestSearchEmbedderWrongShape: an embedder that answers with the wrong
// number of vectors, or vectors of the wrong size, is an unavailable
// dependency (503), never a panic or a query with a bad vector.
func TestSearchEmbedderWrongShape(t *testing.T) {
	for _, tc := range []struct {
		name         string
		vectors, dim int
	}{
		{"no vectors", 0, hashembed.Dim},
		{"two vectors", 2, hashembed.Dim},
		{"short vector", 1, hashembed.Dim - 1},
		{"empty vector", 1, 0},
	} {
		t.Run(tc.name, func(t *testing.T) {
			e := newEdgeWith(t, edgeOptions{maxChunk: 1 << 20, embedder: &miscountingEmbedder{vectors: tc.vectors, dim: tc.dim}})
			// The user has memories indexed by this embedder, so search
			// gets as far as embedding the query.
			space, err := json.Marshal(records.VectorSpace{Embedder: hashembed.ID, Dim: hashembed.Dim})
			must(t, err)
			must(t, e.docs.Put(t.Context(), docs.Doc{Key: records.VectorSpaceKey(e.pseudo.User("alice")), Data: space}))
			r := e.search(e.token("alice"), `{"q":"hello"}`)
			if r.status != 503 || errCode(r) != "unavailable" {
				t.Fatalf("search: %d %v, want 503 unavailable", r.status, r.body)
			}
		})
	}
}
