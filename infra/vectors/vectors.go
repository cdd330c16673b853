// Package vectors is the vector port: one namespace per user (the keyed hash
// of the uid, never empty), ids "<conversation>#<seq>", metadata without
// user content. Production adapter: Pinecone; embedded: exact cosine index.
package vectors

import (
	"context"
	"errors"
)

var (
	ErrInvalid = errors.New("vectors: invalid")
	// ErrDimension: a vector whose length differs from the namespace's.
	ErrDimension = errors.New("vectors: dimension mismatch")
)

// Record is one vector. Metadata values are string, float64, int64 or bool.
type Record struct {
	ID       string
	Values   []float32
	Metadata map[string]any
}

// Match is a query result: cosine similarity, highest first.
type Match struct {
	ID       string
	Score    float32
	Metadata map[string]any
}

// Condition filters on one metadata field: Op is one of "$eq", "$ne",
// "$lt", "$lte", "$gt", "$gte" (Pinecone's operators); numeric ops need
// numeric values.
type Condition struct {
	Field string
	Op    string
	Value any
}

// Index is the vector port.
type Index interface {
	// Upsert creates or replaces records by id.
	Upsert(ctx context.Context, namespace string, recs []Record) error
	// Query returns the k nearest records that satisfy every condition.
	// An unknown namespace yields no matches, not an error.
	Query(ctx context.Context, namespace string, vector []float32, k int, filter []Condition) ([]Match, error)
	// ListIDs returns every id with the prefix, sorted.
	ListIDs(ctx context.Context, namespace, prefix string) ([]string, error)
	// Delete removes ids; absent ids are ignored.
	Delete(ctx context.Context, namespace string, ids []string) error
	// DeleteNamespace removes the namespace and everything in it; absent
	// is not an error.
	DeleteNamespace(ctx context.Context, namespace string) error
	// Count returns the number of records in the namespace (0 if absent).
	Count(ctx context.Context, namespace string) (int, error)
	Close() error
}
