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
	"sync"

	"github.com/santhosh-tekuri/jsonschema/v6"
	"github.com/santhosh-tekuri/jsonschema/v6/kind"

	"github.com/lethe-dev/lethe/app/audit"
	"github.com/lethe-dev/lethe/app/records"
)

// maxRetentionBody bounds a PUT /v1/me/retention body.
const maxRetentionBody = 4 << 10

// retentionSchemaID names the policy schema (never fetched: it is added
// from this file).
const retentionSchemaID = "https://lethe.dev/schemas/retention-policy.json"

// retentionSchema is the body of PUT /v1/me/retention: all four classes,
// whole days from 0 to records.MaxRetentionDays, nothing else.
var retentionSchema = fmt.Sprintf(`{
  "$schema": "https://json-schema.org/draft/2020-12/schema",
  "$id": %q,
  "type": "object",
  "additionalProperties": false,
  "required": ["audio_days", "transcript_days", "vector_days", "export_days"],
  "properties": {
    "audio_days":      {"type": "integer", "minimum": 0, "maximum": %[2]d},
    "transcript_days": {"type": "integer", "minimum": 0, "maximum": %[2]d},
    "vector_days":     {"type": "integer", "minimum": 0, "maximum": %[2]d},
    "export_days":     {"type": "integer", "minimum": 0, "maximum": %[2]d}
  }
}`, retentionSchemaID, records.MaxRetentionDays)

// retentionRoutes serve the caller's retention policy.
type retentionRoutes struct {
	s      *Server
	once   sync.Once
	schema *jsonschema.Schema
	err    error
}

func newRetentionRoutes(s *Server) *retentionRoutes { return &retentionRoutes{s: s} }

// compiled returns the policy schema, compiled on first use.
func (rt *retentionRoutes) compiled() (*jsonschema.Schema, error) {
	rt.once.Do(func() {
		doc, err := jsonschema.UnmarshalJSON(strings.NewReader(retentionSchema))
		if err != nil {
			rt.err = fmt.Errorf("jsonschema.UnmarshalJSON retention: %w", err)
			return
		}
		c := jsonschema.NewCompiler()
		c.DefaultDraft(jsonschema.Draft2020)
		if err := c.AddResource(retentionSchemaID, doc); err != nil {
			rt.err = fmt.Errorf("jsonschema.AddResource retention: %w", err)
			return
		}
		rt.schema, rt.err = c.Compile(retentionSchemaID)
	})
	return rt.schema, rt.err
}

// get answers the policy in effect: the caller's, or the defaults.
func (rt *retentionRoutes) get(w http.ResponseWriter, r *http.Request) {
	s := rt.s
	pol, err := records.ReadRetention(r.Context(), s.d.Docs, callerFrom(r.Context()).user, s.d.Retention)
	if err != nil {
		s.unavailable(w, r, "records.ReadRetention", err)
		return
	}
	writeJSON(w, http.StatusOK, pol)
}

// put replaces the caller's policy. It applies to what is stored from now
// on; items already stored keep the expiry they were given.
func (rt *retentionRoutes) put(w http.ResponseWriter, r *http.Request) {
	s := rt.s
	ctx := r.Context()
	user := callerFrom(ctx).user
	pol, status, code, msg := rt.decode(w, r)
	if status != 0 {
		writeError(w, status, code, msg)
		return
	}
	gone, err := records.Tombstoned(ctx, s.d.Docs, user)
	if err != nil {
		s.unavailable(w, r, "records.Tombstoned", err)
		return
	}
	if gone {
		writeError(w, http.StatusGone, "account_erased", "this account was erased")
		return
	}
	if err := records.WriteRetention(ctx, s.d.Docs, user, pol); err != nil {
		s.unavailable(w, r, "records.WriteRetention", err)
		return
	}
	_, err = (&audit.Log{Docs: s.d.Docs, Now: s.d.Now}).Append(ctx, audit.Entry{
		Actor: audit.UserActor(user), Action: audit.ActionRetentionSet, Subject: user, Ref: "/v1/me/retention",
		Counts: map[string]int{"audio_days": pol.AudioDays, "transcript_days": pol.TranscriptDays,
			"vector_days": pol.VectorDays, "export_days": pol.ExportDays},
	})
	if err != nil {
		// The policy is set; the trail must show it: retry is safe (PUT).
		s.unavailable(w, r, "audit.Append", err)
		return
	}
	writeJSON(w, http.StatusOK, pol)
}

// decode reads and validates a policy; a non-zero status is the error to
// answer.
func (rt *retentionRoutes) decode(w http.ResponseWriter, r *http.Request) (pol records.Retention, status int, code, msg string) {
	tooLarge := func() (records.Retention, int, string, string) {
		return pol, http.StatusRequestEntityTooLarge, "too_large", "the request body is larger than 4 KiB"
	}
	if r.ContentLength > maxRetentionBody {
		return tooLarge()
	}
	body, err := io.ReadAll(http.MaxBytesReader(w, r.Body, maxRetentionBody))
	if mbe := (*http.MaxBytesError)(nil); errors.As(err, &mbe) {
		return tooLarge()
	}
	if err != nil {
		return pol, http.StatusBadRequest, "bad_body", "the request body could not be read"
	}
	const shape = `the body must be one JSON object {"audio_days": N, "transcript_days": N, "vector_days": N, "export_days": N}`
	pol, verr := rt.validate(body)
	switch {
	case errors.Is(verr, errBadJSON):
		return pol, http.StatusBadRequest, "bad_json", shape
	case verr != nil:
		var ve *jsonschema.ValidationError
		if errors.As(verr, &ve) {
			return pol, http.StatusBadRequest, "invalid_policy", describePolicyErrors(ve)
		}
		s := rt.s
		s.d.Logger.ErrorContext(r.Context(), "retention schema", "error", verr.Error())
		return pol, http.StatusInternalServerError, "internal", "internal error"
	}
	return pol, 0, "", ""
}

var errBadJSON = errors.New("not one JSON value")

// validate checks body against the policy schema and decodes it: a
// *jsonschema.ValidationError for a policy out of bounds or of the wrong
// shape, errBadJSON for a body that is not JSON.
func (rt *retentionRoutes) validate(body []byte) (records.Retention, error) {
	var pol records.Retention
	sch, err := rt.compiled()
	if err != nil {
		return pol, err
	}
	inst, err := jsonschema.UnmarshalJSON(bytes.NewReader(body))
	if err != nil {
		return pol, errBadJSON
	}
	if err := sch.Validate(inst); err != nil {
		return pol, err
	}
	// The schema admits integers written as 30.0 or 3e1; decode as
	// numbers, then take the (whole, bounded) values.
	var raw map[string]json.Number
	if err := json.Unmarshal(body, &raw); err != nil {
		return pol, errBadJSON
	}
	days := func(name string) int {
		f, _ := raw[name].Float64()
		return int(f)
	}
	pol = records.Retention{AudioDays: days("audio_days"), TranscriptDays: days("transcript_days"),
		VectorDays: days("vector_days"), ExportDays: days("export_days")}
	if err := pol.Validate(); err != nil {
		return pol, errBadJSON // unreachable past the schema; never stored
	}
	return pol, nil
}

// describePolicyErrors names each failing field without echoing values.
func describePolicyErrors(ve *jsonschema.ValidationError) string {
	var msgs []string
	var walk func(*jsonschema.ValidationError)
	walk = func(e *jsonschema.ValidationError) {
		if len(e.Causes) > 0 {
			for _, c := range e.Causes {
				walk(c)
			}
			return
		}
		at := "body"
		if len(e.InstanceLocation) > 0 {
			at = strings.Join(e.InstanceLocation, "/")
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
		case *kind.Minimum, *kind.Maximum:
			msgs = append(msgs, fmt.Sprintf("%s: want whole days from 0 to %d", at, records.MaxRetentionDays))
		default:
			msgs = append(msgs, at+": invalid")
		}
	}
	walk(ve)
	slices.Sort(msgs)
	msgs = slices.Compact(msgs)
	if len(msgs) > 8 {
		msgs = append(msgs[:8], fmt.Sprintf("and %d more", len(msgs)-8))
	}
	return "invalid retention policy: " + strings.Join(msgs, "; ")
}
