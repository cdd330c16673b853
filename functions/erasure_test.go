package functions_test

import (
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/lethe-dev/lethe/app/audit"
	"github.com/lethe-dev/lethe/app/forget"
)

func (e *edge) adminToken(uid string) string {
	tok, err := e.issuer.MintWithRoles(uid, []string{"admin"}, time.Hour)
	must(e.t, err)
	return tok
}

func TestEraseMeTombstonesAtOnceAndReportsAReceipt(t *testing.T) {
	e := newEdge(t, 1<<20)
	alice, bob := e.token("alice"), e.token("bob")
	for _, tok := range []string{alice, bob} {
		if r := e.do("PUT", "/v1/conversations/c1/chunks/0", tok, "audio/wav", tone(440, 300)); r.status != http.StatusAccepted {
			t.Fatalf("upload: %d %v", r.status, r.body)
		}
	}
	r := e.do("DELETE", "/v1/me", alice, "", nil)
	if r.status != http.StatusAccepted || r.body["state"] != forget.StatePending {
		t.Fatalf("DELETE /v1/me: %d %v", r.status, r.body)
	}
	id, _ := r.body["id"].(string)
	if id == "" {
		t.Fatal("no erasure id")
	}
	if len(e.sessions.uids) != 1 || e.sessions.uids[0] != "alice" {
		t.Fatalf("revoked sessions of %v", e.sessions.uids)
	}
	// Every other route answers 410 for the erased user, and stores nothing.
	for _, c := range []struct{ method, path, ct string }{
		{"PUT", "/v1/conversations/c2/chunks/0", "audio/wav"},
		{"GET", "/v1/conversations", ""},
		{"GET", "/v1/conversations/c1", ""},
		{"POST", "/v1/search", "application/json"},
		{"DELETE", "/v1/conversations/c1", ""},
		{"POST", "/v1/conversations/c3/chunks/0/upload-url", "application/json"},
	} {
		if r := e.do(c.method, c.path, alice, c.ct, tone(440, 100)); r.status != http.StatusGone || errCode(r) != "account_erased" {
			t.Errorf("%s %s after erasure: %d %q, want 410", c.method, c.path, r.status, errCode(r))
		}
	}
	// Asking again is the same erasure.
	if r := e.do("DELETE", "/v1/me", alice, "", nil); r.status != http.StatusAccepted || r.body["id"] != id {
		t.Fatalf("second DELETE: %d %v", r.status, r.body)
	}
	// Only its owner sees it; bob's own erasure list is empty.
	if r := e.do("GET", "/v1/me/erasure/"+id, bob, "", nil); r.status != http.StatusNotFound {
		t.Fatalf("bob reads alice's erasure: %d", r.status)
	}
	if r := e.do("GET", "/v1/me/erasure/no-such-id", alice, "", nil); r.status != http.StatusNotFound {
		t.Fatalf("unknown id: %d", r.status)
	}
	// The worker runs the saga (here directly), then the status is done.
	if _, err := e.saga.Run(t.Context(), id); err != nil {
		t.Fatal(err)
	}
	r = e.do("GET", "/v1/me/erasure/"+id, alice, "", nil)
	if r.status != http.StatusOK || r.body["state"] != forget.StateDone {
		t.Fatalf("status: %d %v", r.status, r.body)
	}
	stores := r.body["receipt"].(map[string]any)["stores"].(map[string]any)
	for _, store := range []string{forget.StoreDocuments, forget.StoreBlobs, forget.StoreVectors, forget.StoreKeys, forget.StoreRateLimit} {
		c, ok := stores[store].(map[string]any)
		if !ok || c["remaining"] != float64(0) {
			t.Errorf("receipt.stores.%s = %v, want remaining 0", store, stores[store])
		}
	}
	if c := stores[forget.StoreBlobs].(map[string]any); c["deleted"] != float64(1) {
		t.Errorf("blobs deleted %v, want alice's one chunk", c["deleted"])
	}
	// Bob is untouched.
	if r := e.do("GET", "/v1/conversations/c1", bob, "", nil); r.status != http.StatusOK {
		t.Fatalf("bob's conversation after alice's erasure: %d", r.status)
	}
}

func TestAdminRoutes(t *testing.T) {
	e := newEdge(t, 1<<20)
	user, admin := e.token("mallory"), e.adminToken("root")
	for _, c := range []struct {
		name, method, path, token string
		status                    int
		code                      string
	}{
		{"user erases another", "DELETE", "/v1/admin/users/victim", user, 403, "forbidden"},
		{"user reads audit", "GET", "/v1/admin/audit", user, 403, "forbidden"},
		{"no token", "GET", "/v1/admin/audit", "", 401, "unauthenticated"},
		{"forged token", "GET", "/v1/admin/audit", admin + "x", 401, "unauthenticated"},
		{"bad uid", "DELETE", "/v1/admin/users/a%20b", admin, 400, "invalid_uid"},
		{"bad cursor", "GET", "/v1/admin/audit?cursor=a%20b", admin, 400, "invalid_cursor"},
		{"bad limit", "GET", "/v1/admin/audit?limit=0", admin, 400, "invalid_limit"},
		{"bad subject", "GET", "/v1/admin/audit?subject=alice", admin, 400, "invalid_subject"},
		{"unknown erasure", "GET", "/v1/admin/erasures/nope", admin, 404, "not_found"},
	} {
		t.Run(c.name, func(t *testing.T) {
			if r := e.do(c.method, c.path, c.token, "", nil); r.status != c.status || errCode(r) != c.code {
				t.Fatalf("%d %q, want %d %q", r.status, errCode(r), c.status, c.code)
			}
		})
	}
	victim := e.token("victim")
	r := e.do("DELETE", "/v1/admin/users/victim", admin, "", nil)
	if r.status != http.StatusAccepted {
		t.Fatalf("admin erase: %d %v", r.status, r.body)
	}
	if r := e.do("GET", "/v1/conversations", victim, "", nil); r.status != http.StatusGone {
		t.Fatalf("victim after admin erasure: %d", r.status)
	}
	if r := e.do("GET", "/v1/admin/erasures/"+r.body["id"].(string), admin, "", nil); r.status != http.StatusOK {
		t.Fatalf("admin status: %d", r.status)
	}
	r = e.do("GET", "/v1/admin/audit?limit=2", admin, "", nil)
	if r.status != http.StatusOK || len(r.body["entries"].([]any)) != 2 || r.body["next_cursor"] == "" {
		t.Fatalf("audit page: %d %v", r.status, r.body)
	}
	r = e.do("GET", "/v1/admin/audit?limit=100&subject="+e.pseudo.User("victim"), admin, "", nil)
	actions := map[string]bool{}
	for _, en := range r.body["entries"].([]any) {
		actions[en.(map[string]any)["action"].(string)] = true
	}
	if !actions[audit.ActionErasureRequested] || !actions[audit.ActionAdminCall] {
		t.Fatalf("victim's trail: %v", actions)
	}
	if raw := e.logs.String(); len(raw) == 0 || containsAny(raw, "victim", "mallory") {
		t.Fatal("logs hold a raw uid")
	}
}

func TestDeleteConversation(t *testing.T) {
	e := newEdge(t, 1<<20)
	alice, bob := e.token("alice"), e.token("bob")
	for _, cid := range []string{"keep", "drop"} {
		if r := e.do("PUT", "/v1/conversations/"+cid+"/chunks/0", alice, "audio/wav", tone(440, 300)); r.status != http.StatusAccepted {
			t.Fatalf("upload: %d", r.status)
		}
	}
	for _, c := range []struct {
		name, path, token string
		status            int
	}{
		{"another user's", "/v1/conversations/drop", bob, 404},
		{"missing", "/v1/conversations/none", alice, 404},
		{"invalid id", "/v1/conversations/a.b", alice, 400},
		{"no token", "/v1/conversations/drop", "", 401},
	} {
		if r := e.do("DELETE", c.path, c.token, "", nil); r.status != c.status {
			t.Errorf("%s: %d, want %d", c.name, r.status, c.status)
		}
	}
	r := e.do("DELETE", "/v1/conversations/drop", alice, "", nil)
	if r.status != http.StatusOK {
		t.Fatalf("delete: %d %v", r.status, r.body)
	}
	stores := r.body["receipt"].(map[string]any)["stores"].(map[string]any)
	if b := stores[forget.StoreBlobs].(map[string]any); b["deleted"] != float64(1) || b["remaining"] != float64(0) {
		t.Fatalf("blobs %v", b)
	}
	if r := e.do("GET", "/v1/conversations/drop", alice, "", nil); r.status != http.StatusNotFound {
		t.Fatalf("deleted conversation reads %d", r.status)
	}
	if r := e.do("GET", "/v1/conversations/keep", alice, "", nil); r.status != http.StatusOK {
		t.Fatalf("other conversation reads %d", r.status)
	}
	if r := e.do("DELETE", "/v1/conversations/drop", alice, "", nil); r.status != http.StatusNotFound {
		t.Fatalf("replayed delete: %d", r.status)
	}
}

func containsAny(s string, subs ...string) bool {
	for _, sub := range subs {
		if strings.Contains(s, sub) {
			return true
		}
	}
	return false
}
