package functions

import (
	"context"
	"errors"
	"net/http"
	"regexp"

	"github.com/lethe-dev/lethe/app/audit"
	"github.com/lethe-dev/lethe/app/forget"
	"github.com/lethe-dev/lethe/app/records"
)

// SessionRevoker ends a user's sessions at the identity provider.
type SessionRevoker interface {
	RevokeSessions(ctx context.Context, uid string) error
}

// erasureView is what GET /v1/me/erasure/{id} answers: the state, and the
// receipt (per store: found, deleted, verified remaining). No content, no
// uid.
type erasureView struct {
	ID      string         `json:"id"`
	State   string         `json:"state"`
	Error   string         `json:"error,omitempty"`
	Receipt forget.Receipt `json:"receipt"`
}

func viewOf(e forget.Erasure) erasureView {
	return erasureView{ID: e.ID, State: e.State, Error: e.Error, Receipt: e.Receipt}
}

// eraseMe starts the caller's erasure: DELETE /v1/me answers 202 with the
// erasure's id once the tombstone and the erasure record are durable; from
// then on the caller's tokens get 410 everywhere but the status route.
func (s *Server) eraseMe(w http.ResponseWriter, r *http.Request) {
	c := callerFrom(r.Context())
	s.startErasure(w, r, c.uid, c.user, audit.UserActor(c.user))
}

func (s *Server) startErasure(w http.ResponseWriter, r *http.Request, uid, user, actor string) {
	if s.d.Erasures == nil {
		writeError(w, http.StatusNotImplemented, "not_configured", "erasure is not configured")
		return
	}
	e, err := s.d.Erasures.Request(r.Context(), user, actor)
	if err != nil {
		s.unavailable(w, r, "forget.Request", err)
		return
	}
	if s.d.Sessions != nil {
		// The tombstone already refuses every token; revoking the refresh
		// tokens stops the client from minting new ones.
		if err := s.d.Sessions.RevokeSessions(r.Context(), uid); err != nil {
			s.d.Logger.WarnContext(r.Context(), "could not revoke sessions; the tombstone refuses the tokens", "error", err.Error())
		}
	}
	writeJSON(w, http.StatusAccepted, viewOf(e))
}

func (s *Server) erasureStatus(w http.ResponseWriter, r *http.Request) {
	s.showErasure(w, r, callerFrom(r.Context()).user)
}

// showErasure answers an erasure's status; only its own user (or, with
// owner "", an admin) sees it: anyone else gets the same 404 as a missing id.
func (s *Server) showErasure(w http.ResponseWriter, r *http.Request, owner string) {
	if s.d.Erasures == nil {
		writeError(w, http.StatusNotImplemented, "not_configured", "erasure is not configured")
		return
	}
	e, err := s.d.Erasures.Status(r.Context(), r.PathValue("id"))
	if errors.Is(err, forget.ErrNotFound) || (err == nil && owner != "" && e.User != owner) {
		writeError(w, http.StatusNotFound, "not_found", "no such erasure")
		return
	}
	if err != nil {
		s.unavailable(w, r, "forget.Status", err)
		return
	}
	writeJSON(w, http.StatusOK, viewOf(e))
}

// deleteConversation erases one conversation everywhere and answers the
// receipt; another user's conversation is a 404 like a missing one.
func (s *Server) deleteConversation(w http.ResponseWriter, r *http.Request) {
	if s.d.Conversations == nil {
		writeError(w, http.StatusNotImplemented, "not_configured", "conversation erasure is not configured")
		return
	}
	c := callerFrom(r.Context())
	cid := r.PathValue("cid")
	if !records.ValidConversationID(cid) {
		writeError(w, http.StatusBadRequest, "invalid_conversation_id", "conversation id must match [A-Za-z0-9_-]{1,64}")
		return
	}
	rec, err := s.d.Conversations.Erase(r.Context(), c.user, cid, audit.UserActor(c.user))
	if errors.Is(err, forget.ErrNoConversation) {
		writeError(w, http.StatusNotFound, "not_found", "no such conversation")
		return
	}
	if err != nil {
		s.unavailable(w, r, "forget.Conversations.Erase", err)
		return
	}
	writeJSON(w, http.StatusOK, map[string]any{"receipt": rec})
}

// uidRE is what an admin may name as a uid (Firebase uids: up to 128
// characters; lethe never stores them, only their keyed hash).
var uidRE = regexp.MustCompile(`^[A-Za-z0-9_.@:+-]{1,128}$`)

// adminErase erases another user: DELETE /v1/admin/users/{uid}. The one
// route where a uid comes from the path, for the admin role only.
func (s *Server) adminErase(w http.ResponseWriter, r *http.Request) {
	uid := r.PathValue("uid")
	if !uidRE.MatchString(uid) {
		writeError(w, http.StatusBadRequest, "invalid_uid", "uid must be 1-128 of [A-Za-z0-9_.@:+-]")
		return
	}
	admin := callerFrom(r.Context())
	user := s.d.Pseudonyms.User(uid)
	s.auditAdmin(r, user)
	s.startErasure(w, r, uid, user, audit.AdminActor(admin.user))
}

func (s *Server) adminErasureStatus(w http.ResponseWriter, r *http.Request) {
	s.auditAdmin(r, "")
	s.showErasure(w, r, "")
}

// adminAudit pages the audit trail: GET /v1/admin/audit?subject=&cursor=&limit=
// (subject is a user's keyed hash).
func (s *Server) adminAudit(w http.ResponseWriter, r *http.Request) {
	if s.d.Audit == nil {
		writeError(w, http.StatusNotImplemented, "not_configured", "the audit trail is not configured")
		return
	}
	limit, ok := intParam(r, "limit", 100, 1, audit.MaxPage)
	if !ok {
		writeError(w, http.StatusBadRequest, "invalid_limit", "limit must be an integer from 1 to 1000")
		return
	}
	q := r.URL.Query()
	subject := q.Get("subject")
	if subject != "" && !docsSegmentRE.MatchString(subject) {
		writeError(w, http.StatusBadRequest, "invalid_subject", "subject must be a user's keyed hash")
		return
	}
	s.auditAdmin(r, subject)
	entries, next, err := s.d.Audit.List(r.Context(), audit.Filter{Subject: subject, After: q.Get("cursor"), Limit: limit})
	if errors.Is(err, audit.ErrInvalid) {
		writeError(w, http.StatusBadRequest, "invalid_cursor", "cursor is not one this server gave")
		return
	}
	if err != nil {
		s.unavailable(w, r, "audit.List", err)
		return
	}
	writeJSON(w, http.StatusOK, map[string]any{"entries": entries, "next_cursor": next})
}

var docsSegmentRE = regexp.MustCompile(`^[0-9a-f]{32}$`)

// auditAdmin records an admin call: who, which route, about whom.
func (s *Server) auditAdmin(r *http.Request, subject string) {
	if s.d.Audit == nil {
		return
	}
	_, err := s.d.Audit.Append(r.Context(), audit.Entry{
		At: s.d.Now(), Actor: audit.AdminActor(callerFrom(r.Context()).user),
		Action: audit.ActionAdminCall, Subject: subject, Ref: routeRef(r),
	})
	if err != nil {
		s.d.Logger.ErrorContext(r.Context(), "audit append failed", "error", err.Error())
	}
}

// routeRef is the route pattern as an audit ref ("DELETE /v1/admin/users/{uid}"
// minus the space, which refs do not hold).
func routeRef(r *http.Request) string {
	p := routeOf(r)
	out := make([]byte, 0, len(p))
	for i := 0; i < len(p); i++ {
		if p[i] == ' ' {
			out = append(out, ':')
			continue
		}
		out = append(out, p[i])
	}
	return string(out)
}
