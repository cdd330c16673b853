// Package docs is the documents port: small JSON documents, scoped per user,
// with a few indexed fields for queries (status, expiry). Production adapter:
// Firestore (users/{user}/{collection}/{id}); embedded: SQLite.
package docs

import (
	"context"
	"errors"
)

var (
	// ErrNotFound: no document at that key.
	ErrNotFound = errors.New("docs: not found")
	// ErrAlreadyExists: Create found a document at that key.
	ErrAlreadyExists = errors.New("docs: already exists")
	// ErrInvalid: a key, field or query the store refuses.
	ErrInvalid = errors.New("docs: invalid")
)

// Key names one document. User is the keyed hash of the uid, or "" for
// global collections (tombstones, idempotency markers). Collection and ID
// match [A-Za-z0-9_.:#-]{1,256} (no "/").
type Key struct {
	User       string
	Collection string
	ID         string
}

// Doc is one document. Data is opaque to the store (JSON by convention; user
// content inside it is already sealed). Fields holds the indexed values that
// Query filters and orders on: string or int64 only.
type Doc struct {
	Key    Key
	Data   []byte
	Fields map[string]any
}

// Op is a comparison in a Filter.
type Op string

const (
	Eq  Op = "=="
	Lt  Op = "<"
	Lte Op = "<="
	Gt  Op = ">"
	Gte Op = ">="
)

// MaxBatch is the largest number of writes one Firestore batch commits;
// DeleteMany splits larger requests.
const MaxBatch = 500

// Filter compares one indexed field with a value (string or int64).
type Filter struct {
	Field string
	Op    Op
	Value any
}

// Query selects documents of one collection. With User set, only that user's
// documents; with AllUsers, the collection across every user (a collection
// group query, used by retention sweeps). Results are ordered by OrderBy (an
// indexed field; ties broken by key) or by ID when OrderBy is empty.
type Query struct {
	User       string
	AllUsers   bool
	Collection string
	Filters    []Filter
	OrderBy    string
	Desc       bool
	Limit      int // 0 = no limit
}

// Store is the documents port.
type Store interface {
	// Get returns ErrNotFound when absent.
	Get(ctx context.Context, key Key) (Doc, error)
	// Put creates or replaces.
	Put(ctx context.Context, doc Doc) error
	// Create writes only if absent, else ErrAlreadyExists. Idempotency
	// markers use it.
	Create(ctx context.Context, doc Doc) error
	// Update runs fn atomically against the current document (nil when
	// absent) and writes what it returns: a non-nil *Doc is put, nil with
	// a nil error deletes (or leaves absent). An error from fn aborts with
	// no write and is returned as is. fn may run more than once.
	Update(ctx context.Context, key Key, fn func(cur *Doc) (*Doc, error)) error
	// Delete is idempotent: deleting an absent document is not an error.
	Delete(ctx context.Context, key Key) error
	// DeleteMany deletes keys (any users, any collections) and returns how
	// many existed. Idempotent like Delete; absent keys are not counted.
	// Retention sweeps use it: one write per page, not per document. Every
	// key is validated before anything is deleted. It is atomic on SQLite
	// (one transaction); on Firestore it is written in batches of at most
	// MaxBatch, so an error may leave a prefix deleted: retry.
	DeleteMany(ctx context.Context, keys []Key) (int, error)
	// Query returns the matching documents.
	Query(ctx context.Context, q Query) ([]Doc, error)
	// DeleteUser deletes every document of the user in every collection
	// and returns how many it deleted.
	DeleteUser(ctx context.Context, user string) (int, error)
	// CountUser counts the user's documents in every collection (erasure
	// receipts verify zero with it).
	CountUser(ctx context.Context, user string) (int, error)
	Close() error
}
