package flatvectors

import (
	"fmt"
	"math"
	"unicode/utf8"

	"github.com/lethe-dev/lethe/infra/vectors"
)

// Limits copied from Pinecone's serverless data plane, so code that works
// on the embedded index also works in production.
const (
	MaxUpsertRecords = 1000
	MaxIDBytes       = 512
	MaxTopK          = 1000
	MaxMetadataBytes = 40 << 10
	MaxDimension     = 20000
	maxNamespaceLen  = 64
	maxFieldBytes    = 512
)

// validNamespace accepts [A-Za-z0-9_-]{1,64}, which covers the 32-hex-char
// keyed uid hash; the name also becomes a file name, so nothing else.
func validNamespace(ns string) error {
	if len(ns) == 0 || len(ns) > maxNamespaceLen {
		return fmt.Errorf("%w: namespace length %d", vectors.ErrInvalid, len(ns))
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
	if !utf8.ValidString(id) {
		return fmt.Errorf("%w: id is not UTF-8", vectors.ErrInvalid)
	}
	return nil
}

// checkVector rejects empty, non-finite and all-zero vectors (Pinecone
// refuses dense vectors without a non-zero value; cosine is undefined for
// them) and returns the L2 norm.
func checkVector(v []float32) (float64, error) {
	if len(v) == 0 || len(v) > MaxDimension {
		return 0, fmt.Errorf("%w: vector length %d", vectors.ErrInvalid, len(v))
	}
	var ss float64
	for _, x := range v {
		f := float64(x)
		if math.IsNaN(f) || math.IsInf(f, 0) {
			return 0, fmt.Errorf("%w: non-finite vector value", vectors.ErrInvalid)
		}
		ss += f * f
	}
	if ss == 0 {
		return 0, fmt.Errorf("%w: zero vector", vectors.ErrInvalid)
	}
	n := math.Sqrt(ss)
	if math.IsInf(n, 0) {
		return 0, fmt.Errorf("%w: vector norm overflows", vectors.ErrInvalid)
	}
	return n, nil
}

// validValue reports whether v is one of the metadata types the port allows.
func validValue(v any) error {
	switch x := v.(type) {
	case string:
		if !utf8.ValidString(x) {
			return fmt.Errorf("%w: metadata string is not UTF-8", vectors.ErrInvalid)
		}
	case float64:
		if math.IsNaN(x) || math.IsInf(x, 0) {
			return fmt.Errorf("%w: non-finite metadata number", vectors.ErrInvalid)
		}
	case int64, bool:
	default:
		return fmt.Errorf("%w: metadata value of type %T", vectors.ErrInvalid, v)
	}
	return nil
}

func validField(k string) error {
	if k == "" || len(k) > maxFieldBytes || k[0] == '$' || !utf8.ValidString(k) {
		return fmt.Errorf("%w: metadata field name", vectors.ErrInvalid)
	}
	return nil
}

// copyMetadata validates md and returns a private copy, so callers may
// reuse their maps.
func copyMetadata(md map[string]any) (map[string]any, error) {
	if len(md) == 0 {
		return nil, nil
	}
	if len(md) > math.MaxUint16 {
		return nil, fmt.Errorf("%w: too many metadata fields", vectors.ErrInvalid)
	}
	out := make(map[string]any, len(md))
	size := 0
	for k, v := range md {
		if err := validField(k); err != nil {
			return nil, err
		}
		if err := validValue(v); err != nil {
			return nil, err
		}
		size += len(k) + valueSize(v)
		out[k] = v
	}
	if size > MaxMetadataBytes {
		return nil, fmt.Errorf("%w: metadata is %d bytes, limit %d", vectors.ErrInvalid, size, MaxMetadataBytes)
	}
	return out, nil
}

func valueSize(v any) int {
	switch x := v.(type) {
	case string:
		return len(x)
	case bool:
		return 1
	default:
		return 8
	}
}

func cloneMetadata(md map[string]any) map[string]any {
	if md == nil {
		return nil
	}
	out := make(map[string]any, len(md))
	for k, v := range md {
		out[k] = v
	}
	return out
}

// filter is a validated []vectors.Condition.
type filter []vectors.Condition

func compileFilter(conds []vectors.Condition) (filter, error) {
	for _, c := range conds {
		if err := validField(c.Field); err != nil {
			return nil, err
		}
		if err := validValue(c.Value); err != nil {
			return nil, err
		}
		switch c.Op {
		case "$eq", "$ne":
		case "$lt", "$lte", "$gt", "$gte":
			if _, ok := number(c.Value); !ok {
				return nil, fmt.Errorf("%w: %s needs a numeric value", vectors.ErrInvalid, c.Op)
			}
		default:
			return nil, fmt.Errorf("%w: filter operator %q", vectors.ErrInvalid, c.Op)
		}
	}
	return filter(conds), nil
}

// number widens int64 and float64 to float64: Pinecone stores every number
// as a double, so 3 and 3.0 compare equal.
func number(v any) (float64, bool) {
	switch x := v.(type) {
	case float64:
		return x, true
	case int64:
		return float64(x), true
	}
	return 0, false
}

func equal(a, b any) bool {
	if x, ok := number(a); ok {
		y, ok := number(b)
		return ok && x == y
	}
	return a == b
}

// match applies every condition. As in Pinecone, $ne matches a record that
// lacks the field; every other operator needs the field present.
func (f filter) match(md map[string]any) bool {
	for _, c := range f {
		v, ok := md[c.Field]
		switch c.Op {
		case "$eq":
			if !ok || !equal(v, c.Value) {
				return false
			}
		case "$ne":
			if ok && equal(v, c.Value) {
				return false
			}
		default:
			x, isNum := number(v)
			if !ok || !isNum {
				return false
			}
			y, _ := number(c.Value)
			var pass bool
			switch c.Op {
			case "$lt":
				pass = x < y
			case "$lte":
				pass = x <= y
			case "$gt":
				pass = x > y
			case "$gte":
				pass = x >= y
			}
			if !pass {
				return false
			}
		}
	}
	return true
}
