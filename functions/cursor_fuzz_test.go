package functions

import (
	"context"
	"encoding/json"
	"errors"
	"path/filepath"
	"strings"
	"testing"
	"unicode/utf8"

	"github.com/lethe-dev/lethe/infra/docs/sqlitedocs"
	"github.com/lethe-dev/lethe/infra/keys"
	"github.com/lethe-dev/lethe/infra/keys/filekek"
)

// cursorServer is a Server with just what cursors need: a real keyring.
func cursorServer(t testing.TB) *Server {
	t.Helper()
	dir := t.TempDir()
	store, err := sqlitedocs.Open(context.Background(), filepath.Join(dir, "docs.db"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { store.Close() })
	kek, err := filekek.Open(filepath.Join(dir, "kek.json"))
	if err != nil {
		t.Fatal(err)
	}
	return &Server{d: Deps{Keys: keys.NewKeyring(kek, keys.NewDocsKeysetStore(store), keys.Options{})}}
}

// FuzzOpenCursor: whatever a client sends back as a cursor, it opens only
// if this server sealed exactly it for this user and list; anything else is
// errInvalidCursor, never a panic or another error.
func FuzzOpenCursor(f *testing.F) {
	s := cursorServer(f)
	ctx := context.Background()
	const user = "u1"
	good, err := s.sealCursor(ctx, user, cursorConversations, `{"i":5,"u":"u1","d":"c1"}`)
	if err != nil {
		f.Fatal(err)
	}
	for _, c := range []string{good, good + "A", good[:len(good)-1], "", "=", "AAAA", strings.Repeat("A", maxCursorChars+1), "%%", good + "=="} {
		f.Add(c, cursorConversations)
	}
	f.Add(good, cursorSearch)
	f.Fuzz(func(t *testing.T, c, list string) {
		pos, err := s.openCursor(ctx, user, list, c)
		switch {
		case c == "":
			if err != nil || pos != "" {
				t.Fatalf("no cursor: %q, %v", pos, err)
			}
		case c == good && list == cursorConversations:
			if err != nil || pos != `{"i":5,"u":"u1","d":"c1"}` {
				t.Fatalf("the sealed cursor: %q, %v", pos, err)
			}
		case !errors.Is(err, errInvalidCursor) || pos != "":
			t.Fatalf("cursor %q of list %q: %q, %v; want errInvalidCursor", c, list, pos, err)
		}
		// Another user never opens it.
		if c != "" {
			if _, err := s.openCursor(ctx, "u2", list, c); !errors.Is(err, errInvalidCursor) {
				t.Fatalf("another user opened %q: %v", c, err)
			}
		}
	})
}

// FuzzSearchBody: the search schema and decoder never panic; whatever they
// accept is one object of known fields within bounds.
func FuzzSearchBody(f *testing.F) {
	for _, b := range []string{`{"q":"hello"}`, `{"q":"x","k":50,"cursor":"abc"}`, `{"q":""}`, `{"q":"x","k":0}`, `{"q":"x","k":1e1}`,
		`{"q":"x","k":5.0}`, `{"q":"x","extra":1}`, `null`, `[]`, `{"q":"x"} {}`, "\xff", `{"q":"\u0000"}`} {
		f.Add([]byte(b))
	}
	f.Fuzz(func(t *testing.T, body []byte) {
		var req searchRequest
		if err := searchBody.decode(body, &req); err != nil {
			return
		}
		var raw map[string]json.RawMessage
		if err := json.Unmarshal(body, &raw); err != nil {
			t.Fatalf("accepted %q, not one object: %v", body, err)
		}
		for k := range raw {
			if k != "q" && k != "k" && k != "cursor" {
				t.Fatalf("accepted %q with unknown field %q", body, k)
			}
		}
		if n := utf8.RuneCountInString(req.Q); n < 1 || n > maxQueryChars {
			t.Fatalf("accepted %q with a query of %d characters", body, n)
		}
		if req.K != nil && (*req.K < 1 || *req.K > maxSearchResults) {
			t.Fatalf("accepted %q with k=%d", body, *req.K)
		}
		if len(req.Cursor) > maxCursorChars {
			t.Fatalf("accepted %q with a cursor of %d bytes", body, len(req.Cursor))
		}
	})
}

// FuzzUploadURLBody: the upload-url body never panics the schema or the
// decoder; whatever they accept is one object of the known fields, with
// duration_ms parsed exactly when the body has one.
func FuzzUploadURLBody(f *testing.F) {
	for _, b := range []string{`{"content_type":"audio/wav","size":1000}`, `{"size":1}`, `{}`, `{"content_type":"audio/wav","size":1e3}`,
		`{"content_type":"audio/wav","size":10.5}`, `{"bucket":"x"}`, `null`, `[]`, `{"size":1} {}`, `{"size":99999999999999999999}`,
		`{"content_type":"audio/wav","size":1000,"duration_ms":60000}`, `{"content_type":"audio/ogg; codecs=opus","size":1,"duration_ms":3600000}`,
		`{"duration_ms":1e400}`, `{"duration_ms":null}`, "\xff"} {
		f.Add([]byte(b))
	}
	f.Fuzz(func(t *testing.T, body []byte) {
		var req uploadURLRequest
		if err := uploadURLBody.decode(body, &req); err != nil {
			return
		}
		var raw map[string]json.RawMessage
		if err := json.Unmarshal(body, &raw); err != nil {
			t.Fatalf("accepted %q, not one object: %v", body, err)
		}
		for k := range raw {
			if k != "content_type" && k != "size" && k != "duration_ms" {
				t.Fatalf("accepted %q with unknown field %q", body, k)
			}
		}
		if d, ok := raw["duration_ms"]; (ok && string(d) != "null") != (req.DurationMS != nil) {
			t.Fatalf("duration_ms in %q, parsed %v", body, req.DurationMS)
		}
		if len(req.ContentType) > 4096 {
			t.Fatalf("accepted a content type of %d bytes", len(req.ContentType))
		}
	})
}
