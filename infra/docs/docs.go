// Package docs is the documents port: small JSON documents, scoped per user,
// with a few indexed fields for queries (status, expiry). Production adapter:
// Firestore (users/{user}/{collection}/{id}); embedded: SQLite.
package docs

import (
	"errors"
)

var (
	// ErrNotFound: no document at that key.
	ErrNotFound = errors.New("docs: not found")
	// ErrAlreadyExists: Create found a document at that key.
	ErrAlreadyExists = errors.New("docs: already exists")
	// ErrInvalid: a key, field or query the store refuses.
	ErrInvalid = errors.New("docs: invalid")
	// ErrTooMany: Query matched more than MaxQuery documents; page with
	// QueryPage.
	ErrTooMany = errors.New("docs: too many documents for Query")
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
// DeleteMany splits larger requests, and a Transact may write no more.
const MaxBatch = 500

// MaxTransactReads bounds the documents one Transact reads.
const MaxTransactReads = 100

// Write is one write of a Transact: Doc is put (created or replaced); with
// Create, only if no document is at its key (else the whole transaction
// fails with ErrAlreadyExists); with Delete, Doc.Key is deleted (Data and
// Fields unused).
type Write struct {
	Doc    Doc
	Create bool
	Delete bool
}

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
	// Limit bounds Query's result (0: MaxQuery, more is ErrTooMany) and
	// is QueryPage's page size (0: DefaultPage; at most MaxPage).
	Limit int
}
