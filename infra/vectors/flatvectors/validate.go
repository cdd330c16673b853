package flatvectors

import (
	"math"

	"github.com/lethe-dev/lethe/infra/vectors"
)

// The rules (ids, namespaces, vectors, metadata, filters) are the port's:
// vectors.Index checks them before a call reaches this driver. What is
// left here is evaluating a filter.

// norm is the L2 norm of a vector vectors.ValidateVector accepted.
func norm(v []float32) float64 {
	var ss float64
	for _, x := range v {
		ss += float64(x) * float64(x)
	}
	return math.Sqrt(ss)
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

// filter is a []vectors.Condition the port validated.
type filter []vectors.Condition

func number(v any) (float64, bool) { return vectors.Number(v) }

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
