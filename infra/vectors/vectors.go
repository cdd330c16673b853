// Package vectors is the vector port: one namespace per user (the keyed hash
// of the uid, never empty), ids "<conversation>#<seq>", metadata without
// user content. Production adapter: Pinecone; embedded: exact cosine index.
//
// Index is the caller-facing type over a Driver, in the manner of
// gocloud.dev's blob.Bucket over driver.Bucket: the id, namespace,
// metadata, vector and filter rules (Pinecone's, so what works embedded
// works in production), result ordering, batching and paging live here
// once; adapters (flatvectors, pineconevectors) only translate.
package vectors

import (
	"cmp"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"slices"
	"strings"
	"unicode/utf8"
)

var (
	ErrInvalid = errors.New("vectors: invalid")
	// ErrDimension: a vector whose length differs from the namespace's.
	ErrDimension = errors.New("vectors: dimension mismatch")
	// ErrTooMany: ListIDs found more than MaxListIDs; page with ListIDsPage.
	ErrTooMany = errors.New("vectors: too many ids for ListIDs")
)

// Limits: Pinecone's serverless data plane's (see pineconevectors), or
// tighter, enforced for every adapter.
const (
	MaxUpsertRecords = 1000 // records per Upsert
	MaxDeleteIDs     = 1000 // ids per driver Delete; Index.Delete splits
	MaxIDBytes       = 512
	MaxTopK          = 1000 // well under Pinecone's 10,000, so results stay within 4 MB
	MaxMetadataBytes = 40_000
	MaxDimension     = 20_000
	MaxNamespaceLen  = 64
	MaxFieldBytes    = 512
	// MaxListPage is the largest ListIDsPage (Pinecone's list page size).
	MaxListPage = 100
	// MaxListIDs bounds ListIDs, which pages internally.
	MaxListIDs = 100_000
	// MaxExactInt: Pinecone stores numbers as doubles; larger integers
	// would come back changed, so they are refused rather than rounded.
	MaxExactInt = 1 << 53
	// DefaultNamespace is what Pinecone calls the empty namespace: never a
	// user's.
	DefaultNamespace = "__default__"
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

// Driver is what an adapter implements. Every argument it receives has
// passed the port's rules: a valid namespace, at most MaxUpsertRecords
// valid records of one dimension with private copies of values and
// metadata, 1..MaxTopK, a valid filter, at most MaxDeleteIDs distinct
// valid ids, 1..MaxListPage.
type Driver interface {
	Upsert(ctx context.Context, namespace string, recs []Record) error
	// Query returns up to k matches, any order (Index sorts them); an
	// unknown namespace yields none.
	Query(ctx context.Context, namespace string, vector []float32, k int, filter []Condition) ([]Match, error)
	// ListIDs returns one page of ids with the prefix from cursor ("" for
	// the first) and the cursor of the next page, "" after the last.
	ListIDs(ctx context.Context, namespace, prefix, cursor string, limit int) (ids []string, next string, err error)
	// Delete removes ids; absent ids and namespaces are not errors.
	Delete(ctx context.Context, namespace string, ids []string) error
	// DeleteNamespace: absent is not an error.
	DeleteNamespace(ctx context.Context, namespace string) error
	// Count: 0 if absent.
	Count(ctx context.Context, namespace string) (int, error)
	// As sets target to a driver-specific type (see Index.As).
	As(target any) bool
	Close() error
}

// Index is the vector port. The zero Index is not usable: adapters' Open
// and New functions return one.
type Index struct {
	d Driver
}

// New returns the Index over d.
func New(d Driver) Index { return Index{d: d} }

// Driver returns the driver, for decorators (fault injection in tests):
// wrap it and pass the wrapper to New.
func (x Index) Driver() Driver { return x.d }

// As sets target, a pointer to a driver-specific type, and reports
// whether the driver is one.
func (x Index) As(target any) bool { return x.d.As(target) }

// Close releases the driver.
func (x Index) Close() error { return x.d.Close() }

// Upsert creates or replaces records by id. The batch is validated whole
// before anything is sent, so an invalid record writes nothing.
func (x Index) Upsert(ctx context.Context, namespace string, recs []Record) error {
	if err := ValidateNamespace(namespace); err != nil {
		return err
	}
	if len(recs) > MaxUpsertRecords {
		return fmt.Errorf("%w: %d records, limit %d", ErrInvalid, len(recs), MaxUpsertRecords)
	}
	batch := make([]Record, len(recs))
	for i, r := range recs {
		if err := ValidateID(r.ID); err != nil {
			return err
		}
		if err := ValidateVector(r.Values); err != nil {
			return err
		}
		if len(r.Values) != len(recs[0].Values) {
			return fmt.Errorf("%w: %d and %d in one batch", ErrDimension, len(recs[0].Values), len(r.Values))
		}
		md, err := CopyMetadata(r.Metadata)
		if err != nil {
			return err
		}
		batch[i] = Record{ID: r.ID, Values: slices.Clone(r.Values), Metadata: md}
	}
	if err := ctx.Err(); err != nil {
		return fmt.Errorf("vectors.Upsert: %w", err)
	}
	if len(batch) == 0 {
		return nil
	}
	if err := x.d.Upsert(ctx, namespace, batch); err != nil {
		return fmt.Errorf("vectors.Upsert: %w", err)
	}
	return nil
}

// Query returns the k nearest records that satisfy every condition, by
// score descending, then id ascending. An unknown namespace yields no
// matches, not an error.
func (x Index) Query(ctx context.Context, namespace string, vector []float32, k int, filter []Condition) ([]Match, error) {
	if err := ValidateNamespace(namespace); err != nil {
		return nil, err
	}
	if k < 1 || k > MaxTopK {
		return nil, fmt.Errorf("%w: k=%d, want 1..%d", ErrInvalid, k, MaxTopK)
	}
	if err := ValidateVector(vector); err != nil {
		return nil, err
	}
	if err := ValidateFilter(filter); err != nil {
		return nil, err
	}
	if err := ctx.Err(); err != nil {
		return nil, fmt.Errorf("vectors.Query: %w", err)
	}
	out, err := x.d.Query(ctx, namespace, slices.Clone(vector), k, slices.Clone(filter))
	if err != nil {
		return nil, fmt.Errorf("vectors.Query: %w", err)
	}
	// Ties by id make results deterministic whatever the backend's order.
	slices.SortStableFunc(out, func(a, b Match) int {
		if c := cmp.Compare(b.Score, a.Score); c != 0 {
			return c
		}
		return cmp.Compare(a.ID, b.ID)
	})
	if len(out) > k {
		out = out[:k]
	}
	return out, nil
}

// ListIDsPage returns up to limit (1..MaxListPage) ids with the prefix (a
// plain string prefix) from cursor ("" for the first page) and the cursor
// of the next page, "" after the last. Cursors are opaque.
func (x Index) ListIDsPage(ctx context.Context, namespace, prefix, cursor string, limit int) ([]string, string, error) {
	if err := ValidateNamespace(namespace); err != nil {
		return nil, "", err
	}
	if len(prefix) > MaxIDBytes || !utf8.ValidString(prefix) || strings.ContainsRune(prefix, 0) {
		return nil, "", fmt.Errorf("%w: prefix", ErrInvalid)
	}
	if limit < 1 || limit > MaxListPage {
		return nil, "", fmt.Errorf("%w: limit %d, want 1..%d", ErrInvalid, limit, MaxListPage)
	}
	if err := ctx.Err(); err != nil {
		return nil, "", fmt.Errorf("vectors.ListIDs: %w", err)
	}
	ids, next, err := x.d.ListIDs(ctx, namespace, prefix, cursor, limit)
	if err != nil {
		return nil, "", fmt.Errorf("vectors.ListIDs: %w", err)
	}
	if next != "" && next == cursor {
		// A backend handing back the token it was given would loop forever.
		return nil, "", errors.New("vectors.ListIDs: cursor repeated")
	}
	return ids, next, nil
}

// ListIDs returns every id with the prefix, sorted, paging internally;
// more than MaxListIDs is ErrTooMany (use ListIDsPage).
func (x Index) ListIDs(ctx context.Context, namespace, prefix string) ([]string, error) {
	var out []string
	seen := map[string]bool{}
	cursor := ""
	for {
		ids, next, err := x.ListIDsPage(ctx, namespace, prefix, cursor, MaxListPage)
		if err != nil {
			return nil, err
		}
		out = append(out, ids...)
		if len(out) > MaxListIDs {
			return nil, fmt.Errorf("vectors.ListIDs(%d+ ids): %w", MaxListIDs, ErrTooMany)
		}
		if next == "" {
			break
		}
		if seen[next] {
			return nil, errors.New("vectors.ListIDs: cursor repeated")
		}
		seen[next] = true
		cursor = next
	}
	slices.Sort(out)
	return slices.Compact(out), nil
}

// Delete removes ids, in driver calls of at most MaxDeleteIDs; absent ids
// are ignored.
func (x Index) Delete(ctx context.Context, namespace string, ids []string) error {
	if err := ValidateNamespace(namespace); err != nil {
		return err
	}
	for _, id := range ids {
		if err := ValidateID(id); err != nil {
			return err
		}
	}
	if err := ctx.Err(); err != nil {
		return fmt.Errorf("vectors.Delete: %w", err)
	}
	uniq := slices.Clone(ids)
	slices.Sort(uniq)
	uniq = slices.Compact(uniq)
	for chunk := range slices.Chunk(uniq, MaxDeleteIDs) {
		if err := x.d.Delete(ctx, namespace, chunk); err != nil {
			return fmt.Errorf("vectors.Delete: %w", err)
		}
	}
	return nil
}

// DeleteNamespace removes the namespace and everything in it; absent is
// not an error.
func (x Index) DeleteNamespace(ctx context.Context, namespace string) error {
	if err := ValidateNamespace(namespace); err != nil {
		return err
	}
	if err := ctx.Err(); err != nil {
		return fmt.Errorf("vectors.DeleteNamespace: %w", err)
	}
	if err := x.d.DeleteNamespace(ctx, namespace); err != nil {
		return fmt.Errorf("vectors.DeleteNamespace: %w", err)
	}
	return nil
}

// Count returns the number of records in the namespace (0 if absent).
// On an eventually consistent backend it may lag recent writes.
func (x Index) Count(ctx context.Context, namespace string) (int, error) {
	if err := ValidateNamespace(namespace); err != nil {
		return 0, err
	}
	if err := ctx.Err(); err != nil {
		return 0, fmt.Errorf("vectors.Count: %w", err)
	}
	n, err := x.d.Count(ctx, namespace)
	if err != nil {
		return 0, fmt.Errorf("vectors.Count: %w", err)
	}
	return n, nil
}

// ValidateNamespace accepts [A-Za-z0-9_-]{1,64} (the 32-hex-char keyed
// uid hash; the name also becomes a file name embedded), never the empty
// or the default namespace: every user has their own.
func ValidateNamespace(ns string) error {
	if len(ns) == 0 || len(ns) > MaxNamespaceLen {
		return fmt.Errorf("%w: namespace length %d", ErrInvalid, len(ns))
	}
	if ns == DefaultNamespace {
		return fmt.Errorf("%w: the default namespace", ErrInvalid)
	}
	for i := 0; i < len(ns); i++ {
		c := ns[i]
		switch {
		case c >= 'a' && c <= 'z', c >= 'A' && c <= 'Z', c >= '0' && c <= '9', c == '_', c == '-':
		default:
			return fmt.Errorf("%w: namespace character at %d", ErrInvalid, i)
		}
	}
	return nil
}

// ValidateID accepts 1..MaxIDBytes of UTF-8 without NUL.
func ValidateID(id string) error {
	if id == "" || len(id) > MaxIDBytes {
		return fmt.Errorf("%w: id length %d", ErrInvalid, len(id))
	}
	if !utf8.ValidString(id) || strings.ContainsRune(id, 0) {
		return fmt.Errorf("%w: id is not UTF-8 without NUL", ErrInvalid)
	}
	return nil
}

// ValidateVector rejects what Pinecone refuses for a dense cosine index:
// empty, too long, non-finite, all zero (cosine is undefined for it), or
// a norm that overflows.
func ValidateVector(v []float32) error {
	if len(v) == 0 || len(v) > MaxDimension {
		return fmt.Errorf("%w: vector length %d", ErrInvalid, len(v))
	}
	var ss float64
	for _, x := range v {
		f := float64(x)
		if math.IsNaN(f) || math.IsInf(f, 0) {
			return fmt.Errorf("%w: non-finite vector value", ErrInvalid)
		}
		ss += f * f
	}
	if ss == 0 {
		return fmt.Errorf("%w: zero vector", ErrInvalid)
	}
	if math.IsInf(ss, 0) {
		return fmt.Errorf("%w: vector norm overflows", ErrInvalid)
	}
	return nil
}

func validField(k string) error {
	if k == "" || len(k) > MaxFieldBytes || k[0] == '$' || !utf8.ValidString(k) {
		return fmt.Errorf("%w: metadata field name", ErrInvalid)
	}
	return nil
}

func validValue(v any) error {
	switch x := v.(type) {
	case string:
		if !utf8.ValidString(x) {
			return fmt.Errorf("%w: metadata string is not UTF-8", ErrInvalid)
		}
	case float64:
		if math.IsNaN(x) || math.IsInf(x, 0) {
			return fmt.Errorf("%w: non-finite metadata number", ErrInvalid)
		}
	case int64:
		if x > MaxExactInt || x < -MaxExactInt {
			return fmt.Errorf("%w: integer beyond ±2^53 cannot be stored exactly", ErrInvalid)
		}
	case bool:
	default:
		return fmt.Errorf("%w: metadata value of type %T", ErrInvalid, v)
	}
	return nil
}

// CopyMetadata validates md (field names, value types, at most
// MaxMetadataBytes as JSON, which is what Pinecone counts) and returns a
// private copy, so callers may reuse their maps.
func CopyMetadata(md map[string]any) (map[string]any, error) {
	if len(md) == 0 {
		return nil, nil
	}
	out := make(map[string]any, len(md))
	for k, v := range md {
		if err := validField(k); err != nil {
			return nil, err
		}
		if err := validValue(v); err != nil {
			return nil, err
		}
		out[k] = v
	}
	b, err := json.Marshal(out)
	if err != nil {
		return nil, fmt.Errorf("%w: metadata: %v", ErrInvalid, err)
	}
	if len(b) > MaxMetadataBytes {
		return nil, fmt.Errorf("%w: metadata is %d bytes, limit %d", ErrInvalid, len(b), MaxMetadataBytes)
	}
	return out, nil
}

// ValidateFilter checks every condition: a valid field, a metadata value,
// a known operator, a number for the range operators.
func ValidateFilter(conds []Condition) error {
	for _, c := range conds {
		if err := validField(c.Field); err != nil {
			return err
		}
		if err := validValue(c.Value); err != nil {
			return err
		}
		switch c.Op {
		case "$eq", "$ne":
		case "$lt", "$lte", "$gt", "$gte":
			if _, ok := Number(c.Value); !ok {
				return fmt.Errorf("%w: %s needs a numeric value", ErrInvalid, c.Op)
			}
		default:
			return fmt.Errorf("%w: filter operator %q", ErrInvalid, c.Op)
		}
	}
	return nil
}

// Number widens int64 and float64 to float64: Pinecone stores every
// number as a double, so 3 and 3.0 compare equal.
func Number(v any) (float64, bool) {
	switch x := v.(type) {
	case float64:
		return x, true
	case int64:
		return float64(x), true
	}
	return 0, false
}
