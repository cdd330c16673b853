package functions

import (
	"context"
	"encoding/base64"
	"errors"
	"fmt"
	"net/http"
	"strconv"

	"github.com/lethe-dev/lethe/infra/keys"
)

// Page cursors are opaque to clients: the store's position (or a search
// offset), sealed with the caller's data key and bound to the list it
// pages. Another user's cursor, one of another list, or an edited one
// fails to open and is answered 400 invalid_cursor; none of them can
// steer a query.

// maxCursorChars bounds a cursor before any decoding: a docs cursor
// (at most 4096 bytes) sealed and base64'd fits easily.
const maxCursorChars = 8192

// errInvalidCursor: not a cursor this server gave this user for this list.
var errInvalidCursor = errors.New("functions: invalid cursor")

// Lists that are paged; each is part of its cursors' associated data.
const (
	cursorConversations = "conversations"
	cursorSearch        = "search"
)

// conversationCursorList names the page list of one conversation.
func conversationCursorList(cid string) string { return "conversation:" + cid }

// cursorBytes reads the outer form of a cursor: unpadded base64url of at
// most maxCursorChars characters. It is the only parsing of the text a
// client sends back.
func cursorBytes(c string) ([]byte, error) {
	if c == "" || len(c) > maxCursorChars {
		return nil, errInvalidCursor
	}
	b, err := base64.RawURLEncoding.Strict().DecodeString(c)
	if err != nil || len(b) == 0 {
		return nil, errInvalidCursor
	}
	return b, nil
}

func cursorAD(user, list string) []byte { return keys.AD(user, "cursors", list, "v1") }

// sealCursor returns the client's cursor for position pos of list ("" for
// the last page).
func (s *Server) sealCursor(ctx context.Context, user, list, pos string) (string, error) {
	if pos == "" {
		return "", nil
	}
	sealed, err := s.d.Keys.Seal(ctx, user, []byte(pos), cursorAD(user, list))
	if err != nil {
		return "", fmt.Errorf("keys.Seal cursor: %w", err)
	}
	return base64.RawURLEncoding.EncodeToString(sealed), nil
}

// openCursor returns the position a client's cursor holds: "" for no
// cursor (the first page), errInvalidCursor for one this server did not
// give this user for this list, another error when the keys are
// unavailable.
func (s *Server) openCursor(ctx context.Context, user, list, c string) (string, error) {
	if c == "" {
		return "", nil
	}
	b, err := cursorBytes(c)
	if err != nil {
		return "", err
	}
	pos, err := s.d.Keys.Open(ctx, user, b, cursorAD(user, list))
	switch {
	case errors.Is(err, keys.ErrDecrypt), errors.Is(err, keys.ErrNoKey):
		return "", errInvalidCursor
	case err != nil:
		return "", fmt.Errorf("keys.Open cursor: %w", err)
	case len(pos) == 0:
		return "", errInvalidCursor
	}
	return string(pos), nil
}

// pageParams reads ?limit= (def, 1..hi) and ?cursor= for list; when it
// returns false it has answered.
func (s *Server) pageParams(w http.ResponseWriter, r *http.Request, list string, def, hi int) (limit int, pos string, ok bool) {
	limit, ok = intParam(r, "limit", def, 1, hi)
	if !ok {
		writeError(w, http.StatusBadRequest, "invalid_limit", "limit must be an integer from 1 to "+strconv.Itoa(hi))
		return 0, "", false
	}
	pos, ok = s.cursorPosition(w, r, list, r.URL.Query().Get("cursor"))
	return limit, pos, ok
}

// cursorPosition opens cursor c of list; when it returns false it has
// answered (400 invalid_cursor, or 503).
func (s *Server) cursorPosition(w http.ResponseWriter, r *http.Request, list, c string) (string, bool) {
	pos, err := s.openCursor(r.Context(), callerFrom(r.Context()).user, list, c)
	if errors.Is(err, errInvalidCursor) {
		writeError(w, http.StatusBadRequest, "invalid_cursor", "cursor must be a next_cursor this API returned for this list")
		return "", false
	}
	if err != nil {
		s.unavailable(w, r, "open cursor", err)
		return "", false
	}
	return pos, true
}
