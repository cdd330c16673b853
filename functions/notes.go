package functions

import (
	"encoding/base64"
	"errors"
	"io"
	"mime"
	"net/http"
	"regexp"
	"strings"
	"time"

	"github.com/santhosh-tekuri/jsonschema/v6"
	"github.com/santhosh-tekuri/jsonschema/v6/kind"

	"github.com/lethe-dev/lethe/app/audit"
	"github.com/lethe-dev/lethe/app/records"
	"github.com/lethe-dev/lethe/infra/docs"
	"github.com/lethe-dev/lethe/infra/keys"
	"github.com/lethe-dev/lethe/infra/security"
)

// End-to-end encrypted notes: the client encrypts with a key the server
// never sees; the server seals the ciphertext again at rest, returns it
// byte for byte to its owner, deletes it with the user, and never
// transcribes, embeds or publishes it.

// maxNoteBody bounds a POST /v1/notes body: the base64 of MaxNoteBytes
// (87,384 characters) and some room for JSON whitespace.
const maxNoteBody = 100 << 10

// noteBodySchema is the POST /v1/notes body.
const noteBodySchema = `{
  "$schema": "https://json-schema.org/draft/2020-12/schema",
  "$id": "https://lethe.dev/schemas/api/notes.create.json",
  "type": "object",
  "additionalProperties": false,
  "required": ["ciphertext"],
  "properties": {
    "ciphertext": {
      "type": "string",
      "description": "standard base64 (RFC 4648, padded) of the client's ciphertext, 1 byte to 64 KiB",
      "maxLength": 87384,
      "pattern": "^[A-Za-z0-9+/]*={0,2}$"
    }
  }
}`

// Outcomes of parsing a note body.
var (
	errNoteMalformed = errors.New("notes: body is not one JSON object")
	errNoteInvalid   = errors.New("notes: body does not match the schema")
	errNoteBase64    = errors.New("notes: ciphertext is not canonical standard base64")
	errNoteEmpty     = errors.New("notes: ciphertext is empty")
	errNoteTooLarge  = errors.New("notes: ciphertext is larger than 64 KiB")
)

// noteParser checks POST /v1/notes bodies against noteBodySchema.
type noteParser struct{ body *bodySchema }

func newNoteParser() (*noteParser, error) {
	b := newBodySchema("notes", "https://lethe.dev/schemas/api/notes.create.json", noteBodySchema, maxNoteBody,
		`the body must be one JSON object {"ciphertext": "<base64>"}`)
	if b.err != nil {
		return nil, b.err
	}
	return &noteParser{body: b}, nil
}

// parse returns the client's ciphertext from a body, or why not (errors
// name the rule, never the content).
func (p *noteParser) parse(body []byte) ([]byte, error) {
	inst, err := p.body.validate(body)
	if errors.Is(err, errBadJSON) {
		return nil, errNoteMalformed
	}
	if err != nil {
		var ve *jsonschema.ValidationError
		if errors.As(err, &ve) && tooLong(ve) {
			return nil, errNoteTooLarge
		}
		return nil, errNoteInvalid
	}
	text, _ := inst.(map[string]any)["ciphertext"].(string) // the schema says so
	// Strict: no newlines, no non-zero padding bits, so the base64 this
	// returns later is exactly what the client sent.
	ct, err := base64.StdEncoding.Strict().DecodeString(text)
	switch {
	case err != nil:
		return nil, errNoteBase64
	case len(ct) == 0:
		return nil, errNoteEmpty
	case len(ct) > records.MaxNoteBytes:
		return nil, errNoteTooLarge
	}
	return ct, nil
}

// tooLong reports whether the only failure is /ciphertext's maxLength.
func tooLong(ve *jsonschema.ValidationError) bool {
	if len(ve.Causes) == 0 {
		_, ok := ve.ErrorKind.(*kind.MaxLength)
		return ok
	}
	for _, c := range ve.Causes {
		if !tooLong(c) {
			return false
		}
	}
	return true
}

// routeNotes registers the notes API.
func (s *Server) routeNotes() {
	p, err := newNoteParser()
	if err != nil {
		// A constant schema that does not compile is a build defect: say
		// so on every call rather than crash the edge.
		s.d.Logger.Error("notes disabled", "error", err.Error())
		down := func(w http.ResponseWriter, r *http.Request) {
			writeError(w, http.StatusServiceUnavailable, "unavailable", "notes are unavailable")
		}
		s.mux.Handle("/v1/notes", s.authed(down))
		s.mux.Handle("/v1/notes/{id}", s.authed(down))
		return
	}
	s.mux.Handle("POST /v1/notes", s.authed(func(w http.ResponseWriter, r *http.Request) { s.createNote(w, r, p) }))
	s.mux.Handle("GET /v1/notes", s.authed(s.listNotes))
	s.mux.Handle("DELETE /v1/notes/{id}", s.authed(s.deleteNote))
}

type noteCreated struct {
	ID        string    `json:"id"`
	CreatedAt time.Time `json:"created_at"`
}

func (s *Server) createNote(w http.ResponseWriter, r *http.Request, p *noteParser) {
	ctx := r.Context()
	user := callerFrom(ctx).user
	if !isJSON(r.Header.Get("Content-Type")) {
		writeError(w, http.StatusUnsupportedMediaType, "unsupported_media_type", "send application/json")
		return
	}
	if r.ContentLength > maxNoteBody {
		writeError(w, http.StatusRequestEntityTooLarge, "too_large", "the body is larger than 100 KiB")
		return
	}
	body, err := io.ReadAll(http.MaxBytesReader(w, r.Body, maxNoteBody))
	if err != nil {
		var mbe *http.MaxBytesError
		if errors.As(err, &mbe) {
			writeError(w, http.StatusRequestEntityTooLarge, "too_large", "the body is larger than 100 KiB")
			return
		}
		writeError(w, http.StatusBadRequest, "bad_body", "could not read the body")
		return
	}
	ct, err := p.parse(body)
	switch {
	case errors.Is(err, errNoteTooLarge):
		writeError(w, http.StatusRequestEntityTooLarge, "too_large", "the ciphertext is larger than 64 KiB")
		return
	case errors.Is(err, errNoteMalformed):
		writeError(w, http.StatusBadRequest, "malformed_json", "the body must be one JSON object")
		return
	case errors.Is(err, errNoteInvalid):
		s.securityEvent(r, security.SchemaRejection, "notes", callerFrom(ctx).uid)
		writeError(w, http.StatusBadRequest, "invalid_body", `the body must be {"ciphertext":"<base64>"} and nothing else`)
		return
	case errors.Is(err, errNoteBase64):
		writeError(w, http.StatusBadRequest, "invalid_base64", "ciphertext must be standard padded base64")
		return
	case errors.Is(err, errNoteEmpty):
		writeError(w, http.StatusBadRequest, "empty_note", "ciphertext must not be empty")
		return
	}
	n := records.Note{ID: records.NewNoteID(), CreatedAt: s.d.Now().UTC()}
	if n.Sealed, err = s.d.Keys.Seal(ctx, user, ct, records.NoteAD(user, n.ID)); err != nil {
		s.keyError(w, r, "keys.Seal note", err)
		return
	}
	d, err := n.Doc(user)
	if err != nil {
		s.unavailable(w, r, "records.Note.Doc", err)
		return
	}
	if err := s.d.Docs.Create(ctx, d); err != nil {
		s.unavailable(w, r, "docs.Create note", err)
		return
	}
	writeJSON(w, http.StatusCreated, noteCreated{n.ID, n.CreatedAt})
}

type noteView struct {
	ID         string    `json:"id"`
	Ciphertext string    `json:"ciphertext"`
	CreatedAt  time.Time `json:"created_at"`
}

// noteCursorRe is a decoded cursor: the order key of the last note seen.
var noteCursorRe = regexp.MustCompile(`^[0-9]{13}:[0-9a-f]{32}$`)

// listNotes pages the caller's notes newest first. next_cursor is "" on
// the last page; otherwise pass it back as ?cursor= for the next one.
func (s *Server) listNotes(w http.ResponseWriter, r *http.Request) {
	ctx := r.Context()
	user := callerFrom(ctx).user
	limit, ok := intParam(r, "limit", 50, 1, maxListLimit)
	if !ok {
		writeError(w, http.StatusBadRequest, "invalid_limit", "limit must be an integer from 1 to 100")
		return
	}
	q := docs.Query{User: user, Collection: records.Notes, OrderBy: records.FieldOrder, Desc: true, Limit: limit + 1}
	if c := r.URL.Query().Get("cursor"); c != "" {
		raw, err := base64.RawURLEncoding.DecodeString(c)
		if err != nil || !noteCursorRe.Match(raw) {
			writeError(w, http.StatusBadRequest, "invalid_cursor", "cursor must be a next_cursor this API returned")
			return
		}
		q.Filters = []docs.Filter{{Field: records.FieldOrder, Op: docs.Lt, Value: string(raw)}}
	}
	found, err := s.d.Docs.Query(ctx, q)
	if err != nil {
		s.unavailable(w, r, "docs.Query notes", err)
		return
	}
	out := struct {
		Notes      []noteView `json:"notes"`
		NextCursor string     `json:"next_cursor"`
	}{Notes: []noteView{}}
	if len(found) > limit {
		found = found[:limit]
		last := found[len(found)-1]
		order, _ := last.Fields[records.FieldOrder].(string)
		out.NextCursor = base64.RawURLEncoding.EncodeToString([]byte(order))
	}
	for _, d := range found {
		n, err := records.NoteFrom(d)
		if err != nil {
			s.unavailable(w, r, "records.NoteFrom", err)
			return
		}
		ct, err := s.d.Keys.Open(ctx, user, n.Sealed, records.NoteAD(user, n.ID))
		if err != nil {
			s.keyError(w, r, "keys.Open note", err)
			return
		}
		out.Notes = append(out.Notes, noteView{n.ID, base64.StdEncoding.EncodeToString(ct), n.CreatedAt})
	}
	writeJSON(w, http.StatusOK, out)
}

// deleteNote deletes one of the caller's notes; another user's note is
// answered exactly like a missing one.
func (s *Server) deleteNote(w http.ResponseWriter, r *http.Request) {
	ctx := r.Context()
	user := callerFrom(ctx).user
	id := r.PathValue("id")
	if !records.ValidNoteID(id) {
		writeError(w, http.StatusNotFound, "not_found", "no such note")
		return
	}
	key := records.NoteKey(user, id)
	if _, err := s.d.Docs.Get(ctx, key); errors.Is(err, docs.ErrNotFound) {
		writeError(w, http.StatusNotFound, "not_found", "no such note")
		return
	} else if err != nil {
		s.unavailable(w, r, "docs.Get note", err)
		return
	}
	// The trail first: a delete is never without its entry (a retry after
	// a failed delete may log it twice).
	if _, err := s.auditLog().Append(ctx, audit.Entry{
		Actor: audit.UserActor(user), Action: audit.ActionNoteDeleted, Subject: user, Ref: "notes/" + id,
	}); err != nil {
		s.unavailable(w, r, "audit.Append", err)
		return
	}
	if err := s.d.Docs.Delete(ctx, key); err != nil {
		s.unavailable(w, r, "docs.Delete note", err)
		return
	}
	w.WriteHeader(http.StatusNoContent)
}

// auditLog is the trail the edge appends to (Deps.Audit, or one over the
// documents store).
func (s *Server) auditLog() *audit.Log {
	if s.d.Audit != nil {
		return s.d.Audit
	}
	return &audit.Log{Docs: s.d.Docs, Now: s.d.Now}
}

// keyError answers a failure of the caller's keys: an erased account is
// 410, anything else a dependency failure.
func (s *Server) keyError(w http.ResponseWriter, r *http.Request, call string, err error) {
	if errors.Is(err, keys.ErrTombstoned) || errors.Is(err, keys.ErrNoKey) {
		writeError(w, http.StatusGone, "account_erased", "this account was erased")
		return
	}
	s.unavailable(w, r, call, err)
}

// isJSON accepts application/json, with at most a charset of utf-8.
func isJSON(ct string) bool {
	mt, params, err := mime.ParseMediaType(ct)
	if err != nil || mt != "application/json" {
		return false
	}
	for k, v := range params {
		if k != "charset" || !strings.EqualFold(v, "utf-8") {
			return false
		}
	}
	return true
}
