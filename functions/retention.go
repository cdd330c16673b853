package functions

import (
	"encoding/json"
	"fmt"
	"net/http"

	"github.com/santhosh-tekuri/jsonschema/v6"

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
	s    *Server
	body *bodySchema
}

func newRetentionRoutes(s *Server) *retentionRoutes {
	b := newBodySchema("retention", retentionSchemaID, retentionSchema, maxRetentionBody,
		`the body must be one JSON object {"audio_days": N, "transcript_days": N, "vector_days": N, "export_days": N}`)
	b.code, b.describe = "invalid_policy", describePolicyErrors
	return &retentionRoutes{s: s, body: b}
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
	var body retentionBody
	if !s.readJSON(w, r, rt.body, &body) {
		return
	}
	pol, err := body.policy()
	if err != nil {
		writeError(w, http.StatusBadRequest, "bad_json", rt.body.shape)
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

// retentionBody is the policy as sent: the schema admits integers written
// as 30.0 or 3e1, so they are read as numbers and then taken whole.
type retentionBody struct {
	AudioDays      json.Number `json:"audio_days"`
	TranscriptDays json.Number `json:"transcript_days"`
	VectorDays     json.Number `json:"vector_days"`
	ExportDays     json.Number `json:"export_days"`
}

// validate checks body against the schema and returns its policy.
func (rt *retentionRoutes) validate(body []byte) (records.Retention, error) {
	var b retentionBody
	if err := rt.body.decode(body, &b); err != nil {
		return records.Retention{}, err
	}
	return b.policy()
}

// policy returns the (whole, bounded) policy of a body the schema passed.
func (b retentionBody) policy() (records.Retention, error) {
	days := func(n json.Number) int {
		f, _ := n.Float64()
		return int(f)
	}
	pol := records.Retention{AudioDays: days(b.AudioDays), TranscriptDays: days(b.TranscriptDays),
		VectorDays: days(b.VectorDays), ExportDays: days(b.ExportDays)}
	if err := pol.Validate(); err != nil {
		return pol, errBadJSON // unreachable past the schema; never stored
	}
	return pol, nil
}

// describePolicyErrors names each failing field without echoing values.
func describePolicyErrors(ve *jsonschema.ValidationError) string {
	return "invalid retention policy: " + schemaErrorList(ve, func(at string) string {
		return fmt.Sprintf("%s: want whole days from 0 to %d", at, records.MaxRetentionDays)
	})
}
