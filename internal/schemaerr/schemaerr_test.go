package schemaerr_test

import (
	"strings"
	"testing"

	"github.com/santhosh-tekuri/jsonschema/v6"

	"github.com/lethe-dev/lethe/internal/schemaerr"
)

func TestLeaves(t *testing.T) {
	doc, err := jsonschema.UnmarshalJSON(strings.NewReader(`{"type":"object","required":["a"],"additionalProperties":false,
		"properties":{"b":{"type":"integer","minimum":1},"c":{"type":"string"}}}`))
	if err != nil {
		t.Fatal(err)
	}
	c := jsonschema.NewCompiler()
	if err := c.AddResource("s.json", doc); err != nil {
		t.Fatal(err)
	}
	s, err := c.Compile("s.json")
	if err != nil {
		t.Fatal(err)
	}
	inst, _ := jsonschema.UnmarshalJSON(strings.NewReader(`{"b":0,"c":1,"d":true}`))
	verr := s.Validate(inst)
	ve, ok := verr.(*jsonschema.ValidationError)
	if !ok {
		t.Fatalf("Validate = %v, want a validation error", verr)
	}
	n := 0
	for leaf := range schemaerr.Leaves(ve) {
		if len(leaf.Causes) != 0 {
			t.Fatalf("a leaf with %d causes", len(leaf.Causes))
		}
		n++
	}
	// required a, unknown d, b below its minimum, c not a string.
	if n != 4 {
		t.Fatalf("%d leaves, want 4", n)
	}
	for range schemaerr.Leaves(ve) {
		break // stopping early must not panic
	}
}
