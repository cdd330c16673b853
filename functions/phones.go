package functions

import (
	"bytes"
	"errors"
	"io"
	"net/http"
	"strings"
	"time"

	"github.com/santhosh-tekuri/jsonschema/v6"

	"github.com/lethe-dev/lethe/app/phones"
	"github.com/lethe-dev/lethe/infra/ratelimit"
)

// Phone numbers proven by an SMS code: POST /v1/me/phones sends a code,
// POST /v1/me/phones/{id}/verify checks it, GET lists, DELETE removes.

const (
	maxPhoneBody    = 1 << 10
	rateKeyPhones   = "phones"
	phoneAddSchema  = `{"type":"object","additionalProperties":false,"required":["number"],"properties":{"number":{"type":"string","pattern":"^\\+[1-9][0-9]{6,14}$"}}}`
	phoneCodeSchema = `{"type":"object","additionalProperties":false,"required":["code"],"properties":{"code":{"type":"string","pattern":"^[0-9]{6}$"}}}`
	phoneSchemaBase = "https://lethe.dev/schemas/api/phones."
)

type phoneRoutes struct {
	s        *Server
	add, ver *jsonschema.Schema
}

// phoneReply is a phone as the API shows it: the id, the masked number.
type phoneReply struct {
	ID         string     `json:"id"`
	Masked     string     `json:"masked"`
	Verified   bool       `json:"verified"`
	CreatedAt  time.Time  `json:"created_at"`
	VerifiedAt *time.Time `json:"verified_at,omitempty"`
}

func replyPhone(p phones.Phone) phoneReply {
	out := phoneReply{ID: p.ID, Masked: p.Masked, Verified: p.Verified, CreatedAt: p.CreatedAt}
	if !p.VerifiedAt.IsZero() {
		out.VerifiedAt = &p.VerifiedAt
	}
	return out
}

func (s *Server) routePhones() {
	pr := &phoneRoutes{s: s}
	c := jsonschema.NewCompiler()
	c.DefaultDraft(jsonschema.Draft2020)
	c.UseLoader(noSchemaLoader{})
	var err error
	for _, x := range []struct {
		name, src string
		dst       **jsonschema.Schema
	}{{"add", phoneAddSchema, &pr.add}, {"verify", phoneCodeSchema, &pr.ver}} {
		var doc any
		if doc, err = jsonschema.UnmarshalJSON(strings.NewReader(x.src)); err == nil {
			if err = c.AddResource(phoneSchemaBase+x.name+".json", doc); err == nil {
				*x.dst, err = c.Compile(phoneSchemaBase + x.name + ".json")
			}
		}
		if err != nil {
			s.d.Logger.Error("phones disabled", "error", err.Error())
			return
		}
	}
	limited := func(h http.HandlerFunc) http.Handler {
		return s.authed(s.limited(rateKeyPhones, s.d.Limits.PhoneCodes, ratelimit.FallbackLocal, h))
	}
	s.mux.Handle("POST /v1/me/phones", limited(pr.create))
	s.mux.Handle("POST /v1/me/phones/{id}/verify", limited(pr.verify))
	s.mux.Handle("GET /v1/me/phones", s.authed(pr.list))
	s.mux.Handle("DELETE /v1/me/phones/{id}", s.authed(pr.remove))
}

// body reads and validates a small JSON body; false means answered.
func (pr *phoneRoutes) body(w http.ResponseWriter, r *http.Request, schema *jsonschema.Schema) (map[string]any, bool) {
	if pr.s.d.Phones == nil {
		writeError(w, http.StatusNotImplemented, "not_implemented", "phone numbers are not configured")
		return nil, false
	}
	raw, err := io.ReadAll(http.MaxBytesReader(w, r.Body, maxPhoneBody))
	if err != nil {
		writeError(w, http.StatusRequestEntityTooLarge, "too_large", "body too large")
		return nil, false
	}
	inst, err := jsonschema.UnmarshalJSON(bytes.NewReader(raw))
	if err != nil {
		writeError(w, http.StatusBadRequest, "invalid", "body is not JSON")
		return nil, false
	}
	if schema.Validate(inst) != nil {
		writeError(w, http.StatusBadRequest, "invalid", "body does not match the schema")
		return nil, false
	}
	return inst.(map[string]any), true
}

func (pr *phoneRoutes) create(w http.ResponseWriter, r *http.Request) {
	in, ok := pr.body(w, r, pr.add)
	if !ok {
		return
	}
	p, err := pr.s.d.Phones.Add(r.Context(), callerFrom(r.Context()).user, in["number"].(string))
	if err != nil {
		pr.fail(w, r, err)
		return
	}
	writeJSON(w, http.StatusCreated, replyPhone(p))
}

func (pr *phoneRoutes) verify(w http.ResponseWriter, r *http.Request) {
	in, ok := pr.body(w, r, pr.ver)
	if !ok {
		return
	}
	p, err := pr.s.d.Phones.Verify(r.Context(), callerFrom(r.Context()).user, r.PathValue("id"), in["code"].(string))
	if err != nil {
		pr.fail(w, r, err)
		return
	}
	writeJSON(w, http.StatusOK, replyPhone(p))
}

func (pr *phoneRoutes) list(w http.ResponseWriter, r *http.Request) {
	if pr.s.d.Phones == nil {
		writeError(w, http.StatusNotImplemented, "not_implemented", "phone numbers are not configured")
		return
	}
	ps, err := pr.s.d.Phones.List(r.Context(), callerFrom(r.Context()).user)
	if err != nil {
		pr.s.unavailable(w, r, "phones.List", err)
		return
	}
	out := make([]phoneReply, 0, len(ps))
	for _, p := range ps {
		out = append(out, replyPhone(p))
	}
	writeJSON(w, http.StatusOK, map[string]any{"phones": out})
}

func (pr *phoneRoutes) remove(w http.ResponseWriter, r *http.Request) {
	if pr.s.d.Phones == nil {
		writeError(w, http.StatusNotImplemented, "not_implemented", "phone numbers are not configured")
		return
	}
	if err := pr.s.d.Phones.Delete(r.Context(), callerFrom(r.Context()).user, r.PathValue("id")); err != nil {
		pr.fail(w, r, err)
		return
	}
	w.WriteHeader(http.StatusNoContent)
}

// fail maps the registry's refusals to answers that name the rule only.
func (pr *phoneRoutes) fail(w http.ResponseWriter, r *http.Request, err error) {
	switch {
	case errors.Is(err, phones.ErrInvalidNumber):
		writeError(w, http.StatusBadRequest, "invalid", "not an E.164 number")
	case errors.Is(err, phones.ErrNotFound):
		writeError(w, http.StatusNotFound, "not_found", "no such phone")
	case errors.Is(err, phones.ErrTaken):
		writeError(w, http.StatusConflict, "number_taken", "this number is verified by another account")
	case errors.Is(err, phones.ErrAlreadyVerified):
		writeError(w, http.StatusConflict, "already_verified", "this number is already verified")
	case errors.Is(err, phones.ErrTooManyPhones):
		writeError(w, http.StatusConflict, "too_many_phones", "remove a phone first")
	case errors.Is(err, phones.ErrWrongCode):
		writeError(w, http.StatusBadRequest, "wrong_code", "the code is not right")
	case errors.Is(err, phones.ErrExpired):
		writeError(w, http.StatusBadRequest, "code_expired", "the code expired; ask for a new one")
	case errors.Is(err, phones.ErrTooManyAttempts):
		w.Header().Set("Retry-After", "600")
		writeError(w, http.StatusTooManyRequests, "too_many_attempts", "too many wrong codes; ask for a new one")
	case errors.Is(err, phones.ErrTooManyCodes):
		w.Header().Set("Retry-After", "3600")
		writeError(w, http.StatusTooManyRequests, "too_many_codes", "too many codes sent to this number; retry later")
	case errors.Is(err, phones.ErrSendFailed):
		pr.s.d.Logger.ErrorContext(r.Context(), "phone code not sent", "error", err.Error())
		writeError(w, http.StatusBadGateway, "sms_failed", "the code could not be sent")
	default:
		pr.s.unavailable(w, r, "phones", err)
	}
}
