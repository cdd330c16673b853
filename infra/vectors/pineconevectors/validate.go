package pineconevectors

import (
	"fmt"
	"math"
	"strings"
	"unicode/utf8"

	"github.com/lethe-dev/lethe/infra/vectors"
)

const (
	// MaxQueryK is the port's k limit, the same as the embedded adapter's,
	// well under Pinecone's top_k limit so results stay within 4 MB.
	MaxQueryK       = 1000
	maxNamespaceLen = 64
	maxFieldBytes   = 512
	// maxExactInt: Pinecone stores numbers as doubles; larger integers
	// would come back changed, so they are refused rather than rounded.
	maxExactInt = 1 << 53
	// defaultNamespace is what Pinecone calls the empty namespace.
	defaultNamespace = "__default__"
)

// validNamespace accepts [A-Za-z0-9_-]{1,64} (the 32-hex-char keyed uid
// hash, and what the embedded adapter accepts), never the empty or
// default namespace: every user has their own.
func validNamespace(ns string) error {
	if len(ns) == 0 || len(ns) > maxNamespaceLen {
		return fmt.Errorf("%w: namespace length %d", vectors.ErrInvalid, len(ns))
	}
	if ns == defaultNamespace {
		return fmt.Errorf("%w: the default namespace", vectors.ErrInvalid)
	}
	for i := 0; i < len(ns); i++ {
		c := ns[i]
		switch {
		case c >= 'a' && c <= 'z', c >= 'A' && c <= 'Z', c >= '0' && c <= '9', c == '_', c == '-':
		default:
			return fmt.Errorf("%w: namespace character at %d", vectors.ErrInvalid, i)
		}
	}
	return nil
}

func validID(id string) error {
	if id == "" || len(id) > MaxIDBytes {
		return fmt.Errorf("%w: id length %d", vectors.ErrInvalid, len(id))
	}
	if !utf8.ValidString(id) || strings.ContainsRune(id, 0) {
		return fmt.Errorf("%w: id is not UTF-8 without NUL", vectors.ErrInvalid)
	}
	return nil
}

// checkVector rejects what Pinecone refuses for a dense cosine index:
// empty, too long, non-finite, all zero.
func checkVector(v []float32) error {
	if len(v) == 0 || len(v) > MaxDimension {
		return fmt.Errorf("%w: vector length %d", vectors.ErrInvalid, len(v))
	}
	nonZero := false
	for _, x := range v {
		f := float64(x)
		if math.IsNaN(f) || math.IsInf(f, 0) {
			return fmt.Errorf("%w: non-finite vector value", vectors.ErrInvalid)
		}
		nonZero = nonZero || x != 0
	}
	if !nonZero {
		return fmt.Errorf("%w: zero vector", vectors.ErrInvalid)
	}
	return nil
}

func validField(k string) error {
	if k == "" || len(k) > maxFieldBytes || k[0] == '$' || !utf8.ValidString(k) {
		return fmt.Errorf("%w: metadata field name", vectors.ErrInvalid)
	}
	return nil
}

// wireValue converts a port metadata value to what Pinecone stores.
func wireValue(v any) (any, error) {
	switch x := v.(type) {
	case string:
		if !utf8.ValidString(x) {
			return nil, fmt.Errorf("%w: metadata string is not UTF-8", vectors.ErrInvalid)
		}
		return x, nil
	case bool:
		return x, nil
	case float64:
		if math.IsNaN(x) || math.IsInf(x, 0) {
			return nil, fmt.Errorf("%w: non-finite metadata number", vectors.ErrInvalid)
		}
		return x, nil
	case int64:
		if x > maxExactInt || x < -maxExactInt {
			return nil, fmt.Errorf("%w: integer beyond ±2^53 cannot be stored exactly", vectors.ErrInvalid)
		}
		return float64(x), nil
	}
	return nil, fmt.Errorf("%w: metadata value of type %T", vectors.ErrInvalid, v)
}

// wireMetadata validates port metadata and returns Pinecone's form: a new
// map, so callers may reuse theirs.
func wireMetadata(md map[string]any) (map[string]any, error) {
	if len(md) == 0 {
		return nil, nil
	}
	out := make(map[string]any, len(md))
	for k, v := range md {
		if err := validField(k); err != nil {
			return nil, err
		}
		w, err := wireValue(v)
		if err != nil {
			return nil, err
		}
		out[k] = w
	}
	n, err := metadataSize(out)
	if err != nil {
		return nil, fmt.Errorf("%w: metadata: %v", vectors.ErrInvalid, err)
	}
	if n > MaxMetadataBytes {
		return nil, fmt.Errorf("%w: %w: metadata is %d bytes, limit %d", vectors.ErrInvalid, ErrLimit, n, MaxMetadataBytes)
	}
	return out, nil
}

// wireFilter translates conditions to Pinecone's filter language. Several
// conditions go under "$and", since two on one field (a range) cannot share
// a JSON key.
func wireFilter(conds []vectors.Condition) (map[string]any, error) {
	if len(conds) == 0 {
		return nil, nil
	}
	clauses := make([]any, 0, len(conds))
	for _, c := range conds {
		if err := validField(c.Field); err != nil {
			return nil, err
		}
		v, err := wireValue(c.Value)
		if err != nil {
			return nil, err
		}
		switch c.Op {
		case "$eq", "$ne":
		case "$lt", "$lte", "$gt", "$gte":
			if _, ok := v.(float64); !ok {
				return nil, fmt.Errorf("%w: %s needs a numeric value", vectors.ErrInvalid, c.Op)
			}
		default:
			return nil, fmt.Errorf("%w: filter operator %q", vectors.ErrInvalid, c.Op)
		}
		clauses = append(clauses, map[string]any{c.Field: map[string]any{c.Op: v}})
	}
	if len(clauses) == 1 {
		return clauses[0].(map[string]any), nil
	}
	return map[string]any{"$and": clauses}, nil
}
