// Package schemaerr walks JSON Schema validation errors: the events
// registry and the edge's body checks both name every leaf failure, never
// the offending value.
package schemaerr

import (
	"iter"

	"github.com/santhosh-tekuri/jsonschema/v6"
)

// Leaves yields ve's leaf failures (those without causes), depth first.
func Leaves(ve *jsonschema.ValidationError) iter.Seq[*jsonschema.ValidationError] {
	return func(yield func(*jsonschema.ValidationError) bool) {
		var walk func(*jsonschema.ValidationError) bool
		walk = func(e *jsonschema.ValidationError) bool {
			if len(e.Causes) == 0 {
				return yield(e)
			}
			for _, c := range e.Causes {
				if !walk(c) {
					return false
				}
			}
			return true
		}
		walk(ve)
	}
}
