package functions_test

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/base64"
	"encoding/json"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/lethe-dev/lethe/app/audit"
	"github.com/lethe-dev/lethe/app/records"
	"github.com/lethe-dev/lethe/infra/docs"
)

// steppingClock advances by step at every reading, so every note gets its
// own millisecond and "newest first" is the order of creation reversed.
type steppingClock struct {
	mu   sync.Mutex
	t    time.Time
	step time.Duration
}

func (c *steppingClock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.t = c.t.Add(c.step)
	return c.t
}

func (c *steppingClock) Advance(d time.Duration) {
	c.mu.Lock()
	c.t = c.t.Add(d)
	c.mu.Unlock()
}

func noteBody(ct []byte) []byte {
	b, _ := json.Marshal(map[string]string{"ciphertext": base64.StdEncoding.EncodeToString(ct)})
	return b
}

func randomBytes(t testing.TB, n int) []byte {
	b := make([]byte, n)
	_, _ = rand.Read(b)
	return b
}

func TestNotesRejectBadBodies(t *testing.T) {
	e := newEdge(t, 1<<20)
	tok := e.token("alice")
	max := randomBytes(t, records.MaxNoteBytes)
	tests := []struct {
		name, ct string
		body     []byte
		status   int
		code     string
	}{
		{"malformed JSON", "application/json", []byte(`{"ciphertext":`), 400, "malformed_json"},
		{"trailing data", "application/json", []byte(`{"ciphertext":"AAEC"} {}`), 400, "malformed_json"},
		{"empty body", "application/json", nil, 400, "malformed_json"},
		{"array", "application/json", []byte(`["AAEC"]`), 400, "invalid_body"},
		{"unknown field", "application/json", []byte(`{"ciphertext":"AAEC","title":"x"}`), 400, "invalid_body"},
		{"missing ciphertext", "application/json", []byte(`{}`), 400, "invalid_body"},
		{"ciphertext a number", "application/json", []byte(`{"ciphertext":12}`), 400, "invalid_body"},
		{"not base64", "application/json", []byte(`{"ciphertext":"!!!!"}`), 400, "invalid_body"},
		{"url-safe base64", "application/json", []byte(`{"ciphertext":"-_-_"}`), 400, "invalid_body"},
		{"base64 with a newline", "application/json", []byte(`{"ciphertext":"AAEC\nAAEC"}`), 400, "invalid_body"},
		{"unpadded base64", "application/json", []byte(`{"ciphertext":"AAE"}`), 400, "invalid_base64"},
		{"non-canonical padding bits", "application/json", []byte(`{"ciphertext":"AB=="}`), 400, "invalid_base64"},
		{"empty ciphertext", "application/json", []byte(`{"ciphertext":""}`), 400, "empty_note"},
		{"one byte over 64 KiB", "application/json", noteBody(randomBytes(t, records.MaxNoteBytes+1)), 413, "too_large"},
		{"body over 100 KiB", "application/json", append(noteBody([]byte("x")), bytes.Repeat([]byte(" "), 100<<10)...), 413, "too_large"},
		{"form content type", "application/x-www-form-urlencoded", noteBody([]byte("x")), 415, "unsupported_media_type"},
		{"no content type", "", noteBody([]byte("x")), 415, "unsupported_media_type"},
		{"exactly 64 KiB", "application/json", noteBody(max), 201, ""},
		{"one byte", "application/json; charset=utf-8", noteBody([]byte{0}), 201, ""},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			r := e.do("POST", "/v1/notes", tok, tc.ct, tc.body)
			if r.status != tc.status || errCode(r) != tc.code {
				t.Fatalf("status %d code %q, want %d %q", r.status, errCode(r), tc.status, tc.code)
			}
		})
	}
	if r := e.do("POST", "/v1/notes", "", "application/json", noteBody([]byte("x"))); r.status != http.StatusUnauthorized {
		t.Errorf("without a token: status %d, want 401", r.status)
	}
	found, err := e.docs.Query(context.Background(), docs.Query{AllUsers: true, Collection: records.Notes})
	must(t, err)
	if len(found) != 2 {
		t.Errorf("%d notes stored, want the 2 valid ones", len(found))
	}
}

func TestNotesRoundTripPagedAndSealed(t *testing.T) {
	clock := &steppingClock{t: time.Date(2026, 11, 30, 9, 0, 0, 0, time.UTC), step: time.Millisecond}
	e := newEdgeWith(t, edgeOptions{maxChunk: 1 << 20, now: clock.Now})
	alice, bob := e.token("alice"), e.token("bob")
	var sent [][]byte
	var ids []string
	for i := range 5 {
		ct := randomBytes(t, 100+i*997)
		r := e.do("POST", "/v1/notes", alice, "application/json", noteBody(ct))
		if r.status != http.StatusCreated {
			t.Fatalf("POST: %d %v", r.status, r.body)
		}
		id, _ := r.body["id"].(string)
		if !records.ValidNoteID(id) || r.body["created_at"] == nil {
			t.Fatalf("POST reply = %v", r.body)
		}
		sent, ids = append(sent, ct), append(ids, id)
	}
	bobCT := randomBytes(t, 64)
	if r := e.do("POST", "/v1/notes", bob, "application/json", noteBody(bobCT)); r.status != http.StatusCreated {
		t.Fatalf("bob POST: %d", r.status)
	}

	// Pages of 2, newest first: 4,3 | 2,1 | 0.
	var got []string
	cursor := ""
	for pages := 0; ; pages++ {
		if pages > 3 {
			t.Fatal("paging does not end")
		}
		path := "/v1/notes?limit=2"
		if cursor != "" {
			path += "&cursor=" + cursor
		}
		r := e.do("GET", path, alice, "", nil)
		if r.status != http.StatusOK {
			t.Fatalf("GET %s: %d %v", path, r.status, r.body)
		}
		for _, n := range r.body["notes"].([]any) {
			m := n.(map[string]any)
			id := m["id"].(string)
			got = append(got, id)
			ct, err := base64.StdEncoding.DecodeString(m["ciphertext"].(string))
			must(t, err)
			i := indexOf(ids, id)
			if i < 0 || !bytes.Equal(ct, sent[i]) {
				t.Errorf("note %s: ciphertext is not the bytes sent", id)
			}
		}
		cursor, _ = r.body["next_cursor"].(string)
		if cursor == "" {
			break
		}
	}
	want := []string{ids[4], ids[3], ids[2], ids[1], ids[0]}
	if strings.Join(got, ",") != strings.Join(want, ",") {
		t.Errorf("paged ids = %v, want newest first %v", got, want)
	}

	// Bob sees only his own; cannot delete Alice's.
	r := e.do("GET", "/v1/notes", bob, "", nil)
	if notes := r.body["notes"].([]any); len(notes) != 1 || notes[0].(map[string]any)["ciphertext"] != base64.StdEncoding.EncodeToString(bobCT) {
		t.Errorf("bob's list = %v, want his one note", r.body)
	}
	for _, tc := range []struct {
		name, path, tok string
		status          int
	}{
		{"another user's note", "/v1/notes/" + ids[0], bob, 404},
		{"absent note", "/v1/notes/" + strings.Repeat("0", 32), alice, 404},
		{"not a note id", "/v1/notes/not-a-note-id", alice, 404},
		{"no token", "/v1/notes/" + ids[0], "", 401},
		{"own note", "/v1/notes/" + ids[0], alice, 204},
		{"own note again", "/v1/notes/" + ids[0], alice, 404},
	} {
		if r := e.do("DELETE", tc.path, tc.tok, "", nil); r.status != tc.status {
			t.Errorf("DELETE %s: status %d, want %d", tc.name, r.status, tc.status)
		}
	}
	r = e.do("GET", "/v1/notes?limit=100", alice, "", nil)
	if n := len(r.body["notes"].([]any)); n != 4 {
		t.Errorf("after delete: %d notes, want 4", n)
	}
	for _, tc := range []struct{ name, query, code string }{
		{"limit 0", "?limit=0", "invalid_limit"},
		{"limit 101", "?limit=101", "invalid_limit"},
		{"forged cursor", "?cursor=" + base64.RawURLEncoding.EncodeToString([]byte("x' OR 1=1")), "invalid_cursor"},
		{"not base64", "?cursor=***", "invalid_cursor"},
	} {
		if r := e.do("GET", "/v1/notes"+tc.query, alice, "", nil); r.status != 400 || errCode(r) != tc.code {
			t.Errorf("%s: %d %q, want 400 %q", tc.name, r.status, errCode(r), tc.code)
		}
	}

	// The delete is in the trail, without content.
	entries, _, err := (&audit.Log{Docs: e.docs}).List(context.Background(), audit.Filter{Subject: e.pseudo.User("alice")})
	must(t, err)
	if len(entries) != 1 || entries[0].Action != audit.ActionNoteDeleted || entries[0].Ref != "notes/"+ids[0] ||
		entries[0].Actor != audit.UserActor(e.pseudo.User("alice")) {
		t.Errorf("audit = %+v, want one note.deleted by alice", entries)
	}

	// Sealed at rest: neither the bytes nor their base64 are in the store's
	// files; notes never reach the bus.
	raw := storeFiles(t, e.dir)
	for i, ct := range sent[1:] {
		if bytes.Contains(raw, ct[:64]) || bytes.Contains(raw, []byte(base64.StdEncoding.EncodeToString(ct)[:64])) {
			t.Errorf("note %d is readable in the documents store", i+1)
		}
	}
	if n := len(e.bus.published()); n != 0 {
		t.Errorf("notes published %d events", n)
	}
}

// storeFiles is every byte the SQLite store wrote (database and WAL).
func storeFiles(t *testing.T, dir string) []byte {
	t.Helper()
	matches, err := filepath.Glob(filepath.Join(dir, "docs.db*"))
	must(t, err)
	var all []byte
	for _, m := range matches {
		b, err := os.ReadFile(m)
		must(t, err)
		all = append(all, b...)
	}
	if len(all) == 0 {
		t.Fatal("no store files found")
	}
	return all
}

func indexOf(xs []string, x string) int {
	for i, v := range xs {
		if v == x {
			return i
		}
	}
	return -1
}
