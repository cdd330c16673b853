package pineconevectors

import "github.com/lethe-dev/lethe/infra/vectors"

// The port (vectors.Index) validated everything that reaches these: they
// only translate to Pinecone's wire forms.

// wireValue converts a port metadata value to what Pinecone stores: every
// number a double (the port refuses integers beyond ±2^53).
func wireValue(v any) any {
	if n, ok := v.(int64); ok {
		return float64(n)
	}
	return v
}

// wireMetadata returns Pinecone's form of port metadata: a new map.
func wireMetadata(md map[string]any) map[string]any {
	if len(md) == 0 {
		return nil
	}
	out := make(map[string]any, len(md))
	for k, v := range md {
		out[k] = wireValue(v)
	}
	return out
}

// wireFilter translates conditions to Pinecone's filter language. Several
// conditions go under "$and", since two on one field (a range) cannot share
// a JSON key.
func wireFilter(conds []vectors.Condition) map[string]any {
	if len(conds) == 0 {
		return nil
	}
	clauses := make([]any, 0, len(conds))
	for _, c := range conds {
		clauses = append(clauses, map[string]any{c.Field: map[string]any{c.Op: wireValue(c.Value)}})
	}
	if len(clauses) == 1 {
		return clauses[0].(map[string]any)
	}
	return map[string]any{"$and": clauses}
}
