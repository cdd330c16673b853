package functions

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"slices"
	"strings"

	"github.com/santhosh-tekuri/jsonschema/v6"
	"github.com/santhosh-tekuri/jsonschema/v6/kind"

	"github.com/lethe-dev/lethe/infra/security"
	"github.com/lethe-dev/lethe/internal/schemaerr"
)

// Every JSON request body is checked against a JSON Schema (2020-12,
// formats asserted, additionalProperties false) before any field is read:
// one helper, so no route parses a body its own way.

// bodySchema is one request body's contract.
type bodySchema struct {
	name  string // reason class of a schema rejection ("search", "notes")
	max   int64  // largest body accepted, in bytes
	shape string // what the body must be, for bad_json answers
	// code answers a body the schema refuses (default "invalid_body").
	code string
	// describe names the failures without echoing values (default
	// describeSchemaErrors).
	describe func(*jsonschema.ValidationError) string
	schema   *jsonschema.Schema
	err      error // the schema did not compile: a build defect, answered 500
}

// newBodySchema compiles doc, whose $id is id. A schema that does not
// compile is kept as an error that every use answers, not a panic.
func newBodySchema(name, id, doc string, max int64, shape string) *bodySchema {
	b := &bodySchema{name: name, max: max, shape: shape, code: "invalid_body"}
	b.schema, b.err = compileSchema(id, doc)
	return b
}

func compileSchema(id, doc string) (*jsonschema.Schema, error) {
	d, err := jsonschema.UnmarshalJSON(strings.NewReader(doc))
	if err != nil {
		return nil, fmt.Errorf("jsonschema.UnmarshalJSON %s: %w", id, err)
	}
	c := jsonschema.NewCompiler()
	c.DefaultDraft(jsonschema.Draft2020)
	c.AssertFormat()
	c.UseLoader(noSchemaLoader{})
	if err := c.AddResource(id, d); err != nil {
		return nil, fmt.Errorf("jsonschema.AddResource %s: %w", id, err)
	}
	s, err := c.Compile(id)
	if err != nil {
		return nil, fmt.Errorf("jsonschema.Compile %s: %w", id, err)
	}
	return s, nil
}

type noSchemaLoader struct{}

func (noSchemaLoader) Load(url string) (any, error) {
	return nil, fmt.Errorf("functions: schema loading disabled (%s)", url)
}

// errBadJSON: the body is not exactly one JSON value.
var errBadJSON = errors.New("not one JSON value")

// validate checks body against the schema and returns the instance (JSON
// numbers as json.Number): errBadJSON for a body that is not one JSON value,
// a *jsonschema.ValidationError for one the schema refuses.
func (b *bodySchema) validate(body []byte) (any, error) {
	if b.err != nil {
		return nil, b.err
	}
	inst, err := jsonschema.UnmarshalJSON(bytes.NewReader(body))
	if err != nil {
		return nil, errBadJSON
	}
	if err := b.schema.Validate(inst); err != nil {
		return nil, err
	}
	return inst, nil
}

// decode validates body and decodes it into dst (a pointer), refusing
// unknown fields a second time. A value the schema admits that dst cannot
// hold (an integer written 1e3 for an int) is errBadJSON.
func (b *bodySchema) decode(body []byte, dst any) error {
	if _, err := b.validate(body); err != nil {
		return err
	}
	dec := json.NewDecoder(bytes.NewReader(body))
	dec.DisallowUnknownFields()
	if err := dec.Decode(dst); err != nil {
		return errBadJSON
	}
	return nil
}

// readJSON reads r's body (at most b.max bytes), checks it against b and
// decodes it into dst. When it returns false it has answered: 413 too
// large, 400 bad_json or the schema's code (a schema_rejection security
// event), 500 for a schema that does not compile.
func (s *Server) readJSON(w http.ResponseWriter, r *http.Request, b *bodySchema, dst any) bool {
	tooLarge := func() bool {
		writeError(w, http.StatusRequestEntityTooLarge, "too_large", fmt.Sprintf("the request body is larger than %d KiB", b.max>>10))
		return false
	}
	if r.ContentLength > b.max {
		return tooLarge()
	}
	body, err := io.ReadAll(http.MaxBytesReader(w, r.Body, b.max))
	if mbe := (*http.MaxBytesError)(nil); errors.As(err, &mbe) {
		return tooLarge()
	}
	if err != nil {
		writeError(w, http.StatusBadRequest, "bad_body", "the request body could not be read")
		return false
	}
	return s.checkJSON(w, r, b, body, dst)
}

// checkJSON is readJSON for a body already read.
func (s *Server) checkJSON(w http.ResponseWriter, r *http.Request, b *bodySchema, body []byte, dst any) bool {
	err := b.decode(body, dst)
	var ve *jsonschema.ValidationError
	switch {
	case err == nil:
		return true
	case errors.Is(err, errBadJSON):
		writeError(w, http.StatusBadRequest, "bad_json", b.shape)
	case errors.As(err, &ve):
		s.securityEvent(r, security.SchemaRejection, b.name, callerFrom(r.Context()).uid)
		describe := b.describe
		if describe == nil {
			describe = describeSchemaErrors
		}
		writeError(w, http.StatusBadRequest, b.code, describe(ve))
	default:
		s.d.Logger.ErrorContext(r.Context(), "request body schema", "schema", b.name, "error", err.Error())
		writeError(w, http.StatusInternalServerError, "internal", "internal error")
	}
	return false
}

// describeSchemaErrors names each failing field and rule without echoing
// values.
func describeSchemaErrors(ve *jsonschema.ValidationError) string {
	return "invalid body: " + schemaErrorList(ve, func(at string) string { return at + ": out of range" })
}

// schemaErrorList lists ve's leaf failures, sorted, at most 8; outOfRange
// words a minimum/maximum failure at a location.
func schemaErrorList(ve *jsonschema.ValidationError, outOfRange func(at string) string) string {
	var msgs []string
	for e := range schemaerr.Leaves(ve) {
		at := "body"
		if len(e.InstanceLocation) > 0 {
			at = strings.Join(e.InstanceLocation, "/")
			if len(at) > 64 {
				at = at[:64] + "…"
			}
		}
		switch k := e.ErrorKind.(type) {
		case *kind.Required:
			for _, m := range k.Missing {
				msgs = append(msgs, m+": required")
			}
		case *kind.AdditionalProperties:
			for _, p := range k.Properties {
				if len(p) > 64 {
					p = p[:64] + "…"
				}
				msgs = append(msgs, fmt.Sprintf("%q: unknown field", p))
			}
		case *kind.Type:
			msgs = append(msgs, fmt.Sprintf("%s: want %s", at, strings.Join(k.Want, " or ")))
		case *kind.Minimum, *kind.Maximum, *kind.ExclusiveMinimum, *kind.ExclusiveMaximum:
			msgs = append(msgs, outOfRange(at))
		case *kind.MinLength, *kind.MaxLength:
			msgs = append(msgs, at+": length out of range")
		default:
			msgs = append(msgs, at+": invalid")
		}
	}
	slices.Sort(msgs)
	msgs = slices.Compact(msgs)
	if len(msgs) > 8 {
		msgs = append(msgs[:8], fmt.Sprintf("and %d more", len(msgs)-8))
	}
	return strings.Join(msgs, "; ")
}
