// Package embed is the embeddings port: text → fixed-size float32 vectors.
package embed

import "context"

// Kind tells asymmetric embedders whether text is stored or searched for.
type Kind int

const (
	Passage Kind = iota
	Query
)

// Embedder turns texts into vectors of Dim() floats.
type Embedder interface {
	// ID names model and version; stored with every vector so vectors of
	// different embedders are never mixed.
	ID() string
	Dim() int
	Embed(ctx context.Context, texts []string, kind Kind) ([][]float32, error)
}
