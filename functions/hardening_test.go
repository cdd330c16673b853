package functions_test

import (
	"bytes"
	"encoding/json"
	"fmt"
	"net"
	"net/http"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/lethe-dev/lethe/app/records"
	"github.com/lethe-dev/lethe/functions"
	"github.com/lethe-dev/lethe/infra/auth/localissuer"
	"github.com/lethe-dev/lethe/infra/docs"
	"github.com/lethe-dev/lethe/infra/embed"
	"github.com/lethe-dev/lethe/infra/embed/hashembed"
	"github.com/lethe-dev/lethe/infra/logging"
	"github.com/lethe-dev/lethe/infra/ratelimit"
	"github.com/lethe-dev/lethe/infra/ratelimit/redislimit"
	"github.com/lethe-dev/lethe/infra/security"
	"github.com/lethe-dev/lethe/infra/vectors"
)

// doFrom is do for a request that reached the edge through a proxy which
// wrote xff (what a Cloud Run front end sends on).
func (e *edge) doFrom(xff []string, method, path, token string) reply {
	e.t.Helper()
	req, err := http.NewRequest(method, e.url+path, nil)
	must(e.t, err)
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	for _, v := range xff {
		req.Header.Add("X-Forwarded-For", v)
	}
	return e.send(req)
}

func TestRejectedTokenLimitKeyedOnTrustedHopAddress(t *testing.T) {
	sig := security.New(security.Options{Threshold: -1})
	e := newEdgeWith(t, edgeOptions{maxChunk: 1 << 20, proxyHops: 1, security: sig,
		limits: functions.Limits{FailedAuth: ratelimit.Limit{Rate: 2, Burst: 2, Period: time.Hour}}})
	// Every request comes from the same socket peer (the test's proxy).
	for i, want := range []int{401, 401, 429} {
		if r := e.doFrom([]string{"203.0.113.1"}, "GET", "/v1/conversations", "forged.token.here"); r.status != want {
			t.Fatalf("client A bad token %d: %d, want %d", i, r.status, want)
		}
	}
	spoofs := [][]string{
		{"198.51.100.77, 203.0.113.1"},   // an entry the client prepended
		{"198.51.100.78", "203.0.113.1"}, // a header line of its own
		{"not-an-ip,,, 203.0.113.1"},     // garbage before the trusted entry
		{"203.0.113.2, 203.0.113.1"},     // client B's address, claimed
	}
	for _, xff := range spoofs {
		if r := e.doFrom(xff, "GET", "/v1/conversations", "forged.token.here"); r.status != 429 {
			t.Fatalf("client A spoofing %q: %d, want 429 (same key)", xff, r.status)
		}
	}
	// Client B behind the same proxy has a bucket of its own.
	for i := range 2 {
		if r := e.doFrom([]string{"203.0.113.2"}, "GET", "/v1/conversations", "forged.token.here"); r.status != 401 {
			t.Fatalf("client B bad token %d: %d, want 401", i, r.status)
		}
	}
	if got := sig.Count(security.AuthFailure); got != 9 {
		t.Errorf("auth failures counted %d, want 9", got)
	}
	if got := sig.Counts()[security.Key{Kind: security.RateLimited, Reason: "authfail"}]; got != 5 {
		t.Errorf("rate-limited auth failures counted %d, want 5", got)
	}
	logs := e.logs.String()
	if !strings.Contains(logs, `"client_addr":"203.0.113.2"`) || strings.Contains(logs, `"client_addr":"198.51.100.77"`) {
		t.Errorf("logs do not carry the trusted client address only")
	}
	if strings.Contains(logs, "forged.token.here") {
		t.Error("a token reached the logs")
	}
}

// closedRedis is a real Redis adapter pointed at a port nobody listens on.
func closedRedis(t *testing.T) ratelimit.Limiter {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	must(t, err)
	addr := ln.Addr().String()
	must(t, ln.Close())
	c := redis.NewClient(&redis.Options{Addr: addr, DialTimeout: time.Second, MaxRetries: -1, DialerRetries: 1})
	t.Cleanup(func() { c.Close() })
	return redislimit.New(c, t.Name())
}

func TestSharedLimiterDownUnauthenticatedFailClosed(t *testing.T) {
	e := newEdgeWith(t, edgeOptions{maxChunk: 1 << 20, limiter: closedRedis(t), limits: functions.Limits{
		PerUser:    ratelimit.PerMinute(100, 100),
		FailedAuth: ratelimit.PerMinute(100, 100),
	}})
	for _, tc := range []struct{ name, token string }{{"no token", ""}, {"bad token", "forged.token.here"}} {
		r := e.do("GET", "/v1/conversations", tc.token, "", nil)
		if r.status != http.StatusServiceUnavailable || errCode(r) != "unavailable" {
			t.Errorf("%s with Redis down: %d %v, want 503", tc.name, r.status, r.body)
		}
	}
	// An authenticated user's per-user limit degrades to the local one.
	if r := e.do("GET", "/v1/conversations", e.token("alice"), "", nil); r.status != 200 {
		t.Errorf("authenticated call with Redis down: %d, want 200 (local fallback)", r.status)
	}
}

func TestAdminRoutesNeedRoleAndSecondFactor(t *testing.T) {
	mint := func(e *edge, uid string, o localissuer.MintOptions) string {
		tok, err := e.issuer.MintWith(uid, o, time.Hour)
		must(t, err)
		return tok
	}
	admin := localissuer.MintOptions{Roles: []string{"admin"}}
	admin2FA := localissuer.MintOptions{Roles: []string{"admin"}, SecondFactor: "totp"}
	tests := []struct {
		name         string
		secondFactor bool // the identity provider is Firebase
		claims       localissuer.MintOptions
		status       int
		code         string
		reason       string
	}{
		{"user", false, localissuer.MintOptions{}, 403, "forbidden", security.ReasonNoRole},
		{"user with a second factor", true, localissuer.MintOptions{SecondFactor: "totp"}, 403, "forbidden", security.ReasonNoRole},
		{"admin, local issuer", false, admin, 200, "", ""},
		{"admin without second factor, firebase", true, admin, 403, "second_factor_required", security.ReasonNoSecondFactor},
		{"admin with second factor, firebase", true, admin2FA, 200, "", ""},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			sig := security.New(security.Options{Threshold: -1})
			e := newEdgeWith(t, edgeOptions{maxChunk: 1 << 20, secondFactor: tc.secondFactor, security: sig})
			r := e.do("GET", "/v1/admin/audit", mint(e, "root", tc.claims), "", nil)
			if r.status != tc.status || errCode(r) != tc.code {
				t.Fatalf("status %d code %q, want %d %q", r.status, errCode(r), tc.status, tc.code)
			}
			got := sig.Counts()[security.Key{Kind: security.ForbiddenAdmin, Reason: tc.reason}]
			if tc.reason != "" && got != 1 {
				t.Fatalf("forbidden_admin/%s counted %d, want 1", tc.reason, got)
			}
			if tc.reason == "" && sig.Count(security.ForbiddenAdmin) != 0 {
				t.Fatal("an allowed admin call was counted as forbidden")
			}
		})
	}
}

func TestBrowserHeaders(t *testing.T) {
	const allowed = "https://app.example.com"
	e := newEdgeWith(t, edgeOptions{maxChunk: 1 << 20, browser: functions.BrowserPolicy{
		AllowedOrigins: []string{allowed, "http://localhost:5173"}, HSTS: true}})
	tok := e.token("alice")
	req := func(method, origin string, preflight bool) *http.Response {
		r, err := http.NewRequest(method, e.url+"/v1/conversations", nil)
		must(t, err)
		if origin != "" {
			r.Header.Set("Origin", origin)
		}
		if preflight {
			r.Header.Set("Access-Control-Request-Method", "GET")
			r.Header.Set("Access-Control-Request-Headers", "authorization")
		} else {
			r.Header.Set("Authorization", "Bearer "+tok)
		}
		resp, err := http.DefaultClient.Do(r)
		must(t, err)
		resp.Body.Close()
		return resp
	}
	tests := []struct {
		name      string
		method    string
		origin    string
		preflight bool
		status    int
		acao      string
	}{
		{"allowed origin", "GET", allowed, false, 200, allowed},
		{"second allowed origin", "GET", "http://localhost:5173", false, 200, "http://localhost:5173"},
		{"other origin", "GET", "https://evil.example.com", false, 200, ""},
		{"suffix of an allowed origin", "GET", "https://app.example.com.evil.net", false, 200, ""},
		{"scheme differs", "GET", "http://app.example.com", false, 200, ""},
		{"null origin", "GET", "null", false, 200, ""},
		{"no origin", "GET", "", false, 200, ""},
		{"preflight, allowed", "OPTIONS", allowed, true, 204, allowed},
		{"preflight, other", "OPTIONS", "https://evil.example.com", true, 403, ""},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			resp := req(tc.method, tc.origin, tc.preflight)
			h := resp.Header
			if resp.StatusCode != tc.status || h.Get("Access-Control-Allow-Origin") != tc.acao {
				t.Fatalf("status %d ACAO %q, want %d %q", resp.StatusCode, h.Get("Access-Control-Allow-Origin"), tc.status, tc.acao)
			}
			if h.Get("Access-Control-Allow-Credentials") != "" {
				t.Fatal("credentials allowed: tokens ride in Authorization, not cookies")
			}
			if tc.origin != "" && !slices.Contains(h.Values("Vary"), "Origin") {
				t.Fatalf("Vary %q lacks Origin", h.Values("Vary"))
			}
			if tc.preflight && tc.acao != "" && !strings.Contains(h.Get("Access-Control-Allow-Methods"), "POST") {
				t.Fatalf("preflight methods %q", h.Get("Access-Control-Allow-Methods"))
			}
			for name, want := range map[string]string{
				"Strict-Transport-Security": "max-age=31536000; includeSubDomains",
				"X-Content-Type-Options":    "nosniff",
				"Cache-Control":             "no-store",
			} {
				if h.Get(name) != want {
					t.Fatalf("%s = %q, want %q", name, h.Get(name), want)
				}
			}
		})
	}
	// Without https there is no HSTS.
	plain := newEdge(t, 1<<20)
	if r := plain.do("GET", "/healthz", "", "", nil); r.header.Get("Strict-Transport-Security") != "" || r.header.Get("X-Content-Type-Options") != "nosniff" {
		t.Fatalf("plain edge headers: %v", r.header)
	}
}

func TestValidateOrigins(t *testing.T) {
	for _, good := range [][]string{nil, {"https://app.example.com"}, {"http://localhost:5173", "https://a.b:8443"}} {
		if err := functions.ValidateOrigins(good); err != nil {
			t.Errorf("%q: %v", good, err)
		}
	}
	for _, bad := range []string{"*", "https://*.example.com", "null", "https://app.example.com/", "https://app.example.com/x",
		"app.example.com", "ftp://a.b", "https://App.example.com", "https://u:p@a.b", "https://a.b?x=1"} {
		if err := functions.ValidateOrigins([]string{bad}); err == nil {
			t.Errorf("%q accepted", bad)
		}
	}
}

// search posts a search body.
func (e *edge) search(token, body string) reply {
	e.t.Helper()
	return e.do("POST", "/v1/search", token, "application/json", []byte(body))
}

// pages follows next_cursor through a paged list and returns every page.
func (e *edge) pages(token, path, field string) [][]any {
	e.t.Helper()
	var out [][]any
	cursor := ""
	for range 20 {
		p := path
		if cursor != "" {
			p += "&cursor=" + cursor
		}
		r := e.do("GET", p, token, "", nil)
		if r.status != 200 {
			e.t.Fatalf("GET %s: %d %v", p, r.status, r.body)
		}
		out = append(out, r.body[field].([]any))
		cursor, _ = r.body["next_cursor"].(string)
		if cursor == "" {
			return out
		}
	}
	e.t.Fatal("a paged list did not end")
	return nil
}

func TestListsArePagedWithSealedCursors(t *testing.T) {
	e := newEdge(t, 1<<20)
	alice, bob := e.token("alice"), e.token("bob")
	for i := range 5 {
		if r := e.do("PUT", fmt.Sprintf("/v1/conversations/conv%d/chunks/0", i), alice, "audio/wav", tone(300+float64(i)*50, 100)); r.status != 202 {
			t.Fatalf("upload %d: %d", i, r.status)
		}
	}
	for seq := range 3 {
		if r := e.do("PUT", fmt.Sprintf("/v1/conversations/long/chunks/%d", seq), alice, "audio/wav", tone(500+float64(seq)*10, 100)); r.status != 202 {
			t.Fatalf("upload seq %d: %d", seq, r.status)
		}
	}
	if r := e.do("PUT", "/v1/conversations/bobs/chunks/0", bob, "audio/wav", tone(700, 100)); r.status != 202 {
		t.Fatalf("bob's upload: %d", r.status)
	}
	pages := e.pages(alice, "/v1/conversations?limit=2", "conversations")
	seen := map[string]bool{}
	sizes := []int{}
	for _, p := range pages {
		sizes = append(sizes, len(p))
		for _, c := range p {
			seen[c.(map[string]any)["id"].(string)] = true
		}
	}
	if fmt.Sprint(sizes) != "[2 2 2]" || len(seen) != 6 || seen["bobs"] {
		t.Fatalf("pages of %v holding %v, want 3 pages of 2 of alice's 6 conversations", sizes, seen)
	}
	chunkPages := e.pages(alice, "/v1/conversations/long?limit=2", "chunks")
	if len(chunkPages) != 2 || len(chunkPages[0]) != 2 || len(chunkPages[1]) != 1 ||
		chunkPages[1][0].(map[string]any)["seq"].(float64) != 2 {
		t.Fatalf("chunk pages %v, want seqs [0 1] then [2]", chunkPages)
	}

	first := e.do("GET", "/v1/conversations?limit=2", alice, "", nil)
	cursor := first.body["next_cursor"].(string)
	convCursor := e.do("GET", "/v1/conversations/long?limit=1", alice, "", nil).body["next_cursor"].(string)
	if strings.Contains(cursor, e.pseudo.User("alice")) {
		t.Fatal("the cursor shows the user's key hash")
	}
	flipped := []byte(cursor)
	flipped[len(flipped)/2] ^= 1
	bad := []struct {
		name, token, path string
	}{
		{"another user's cursor", bob, "/v1/conversations?cursor=" + cursor},
		{"an edited cursor", alice, "/v1/conversations?cursor=" + string(flipped)},
		{"a cursor of another list", alice, "/v1/conversations?cursor=" + convCursor},
		{"a list cursor on a conversation", alice, "/v1/conversations/long?cursor=" + cursor},
		{"a conversation's cursor on another conversation", alice, "/v1/conversations/conv1?cursor=" + convCursor},
		{"not base64", alice, "/v1/conversations?cursor=%25%25"},
		{"huge", alice, "/v1/conversations?cursor=" + strings.Repeat("A", 9000)},
		{"padded", alice, "/v1/conversations?cursor=" + cursor + "=="},
	}
	for _, tc := range bad {
		t.Run(tc.name, func(t *testing.T) {
			if r := e.do("GET", tc.path, tc.token, "", nil); r.status != 400 || errCode(r) != "invalid_cursor" {
				t.Fatalf("%d %v, want 400 invalid_cursor", r.status, r.body)
			}
		})
	}
	for _, path := range []string{"/v1/conversations?limit=0", "/v1/conversations?limit=101", "/v1/conversations/long?limit=101"} {
		if r := e.do("GET", path, alice, "", nil); r.status != 400 || errCode(r) != "invalid_limit" {
			t.Errorf("GET %s: %d %v, want 400 invalid_limit", path, r.status, r.body)
		}
	}
}

func TestSearchIsAPostWithABody(t *testing.T) {
	sig := security.New(security.Options{Threshold: -1})
	e := newEdgeWith(t, edgeOptions{maxChunk: 1 << 20, security: sig})
	alice, bob := e.token("alice"), e.token("bob")
	// Alice has seven conversations indexed (vectors written as the
	// store worker does); search pages through them.
	user := e.pseudo.User("alice")
	emb := hashembed.New()
	space, err := json.Marshal(records.VectorSpace{Embedder: hashembed.ID, Dim: hashembed.Dim})
	must(t, err)
	must(t, e.docs.Put(t.Context(), docs.Doc{Key: records.VectorSpaceKey(user), Data: space}))
	var recs []vectors.Record
	for i := range 7 {
		v, err := emb.Embed(t.Context(), []string{fmt.Sprintf("dentist appointment on day %d", i)}, embed.Passage)
		must(t, err)
		recs = append(recs, vectors.Record{ID: fmt.Sprintf("c%d#0", i), Values: v[0]})
	}
	must(t, e.vectors.Upsert(t.Context(), user, recs))

	r := e.do("GET", "/v1/search?q=dentist", alice, "", nil)
	if r.status != http.StatusMethodNotAllowed || errCode(r) != "method_not_allowed" || r.header.Get("Allow") != "POST" {
		t.Fatalf("GET with the query in the URL: %d %v", r.status, r.body)
	}
	if strings.Contains(e.logs.String(), "dentist") {
		t.Fatal("a query reached the logs")
	}
	seen := map[string]bool{}
	var sizes []int
	cursor := ""
	for range 10 {
		body, _ := json.Marshal(map[string]any{"q": "dentist appointment", "k": 3, "cursor": cursor})
		if cursor == "" {
			body, _ = json.Marshal(map[string]any{"q": "dentist appointment", "k": 3})
		}
		r := e.search(alice, string(body))
		if r.status != 200 {
			t.Fatalf("search: %d %v", r.status, r.body)
		}
		res := r.body["results"].([]any)
		sizes = append(sizes, len(res))
		for _, h := range res {
			seen[h.(map[string]any)["conversation_id"].(string)] = true
		}
		cursor, _ = r.body["next_cursor"].(string)
		if cursor == "" {
			break
		}
	}
	if fmt.Sprint(sizes) != "[3 3 1]" || len(seen) != 7 {
		t.Fatalf("search pages %v over %d conversations, want [3 3 1] over 7", sizes, len(seen))
	}
	// Bob's searches see nothing of alice's, and her cursor is not his.
	first := e.search(alice, `{"q":"dentist appointment","k":3}`)
	cursor = first.body["next_cursor"].(string)
	if r := e.search(bob, `{"q":"dentist appointment"}`); r.status != 200 || len(r.body["results"].([]any)) != 0 {
		t.Fatalf("bob's search: %d %v", r.status, r.body)
	}
	if r := e.search(bob, `{"q":"dentist appointment","cursor":"`+cursor+`"}`); r.status != 400 || errCode(r) != "invalid_cursor" {
		t.Fatalf("bob with alice's cursor: %d %v", r.status, r.body)
	}
	listCursor := func() string {
		for i := range 3 {
			e.do("PUT", fmt.Sprintf("/v1/conversations/l%d/chunks/0", i), alice, "audio/wav", tone(400, 100))
		}
		return e.do("GET", "/v1/conversations?limit=1", alice, "", nil).body["next_cursor"].(string)
	}()
	if r := e.search(alice, `{"q":"dentist","cursor":"`+listCursor+`"}`); r.status != 400 || errCode(r) != "invalid_cursor" {
		t.Fatalf("a list's cursor on search: %d %v", r.status, r.body)
	}
	// Schema rejections are security events, named by body.
	before := sig.Counts()[security.Key{Kind: security.SchemaRejection, Reason: "search"}]
	for _, body := range []string{`{"q":"x","unknown":1}`, `{"q":5}`, `{"q":"x","k":1000}`} {
		if r := e.search(alice, body); r.status != 400 || errCode(r) != "invalid_body" {
			t.Fatalf("%s: %d %v", body, r.status, r.body)
		}
	}
	if got := sig.Counts()[security.Key{Kind: security.SchemaRejection, Reason: "search"}] - before; got != 3 {
		t.Fatalf("schema rejections counted %d, want 3", got)
	}
	big := `{"q":"` + strings.Repeat("a", 9<<10) + `"}`
	if r := e.search(alice, big); r.status != http.StatusRequestEntityTooLarge {
		t.Fatalf("oversized body: %d", r.status)
	}
}

// TestBurstAgainstOneUserRaisesOneAlert: rate-limit hits of one user from
// many addresses raise one ALERT naming the user's keyed hash, never the uid.
func TestBurstAgainstOneUserRaisesOneAlert(t *testing.T) {
	logs := &bytes.Buffer{}
	users := logging.NewUserHasher(1, []byte("0123456789abcdef0123456789abcdef"))
	sig := security.New(security.Options{Logger: logging.New(&lockedWriter{w: logs}, logging.Options{}), Users: users, Threshold: 3})
	e := newEdgeWith(t, edgeOptions{maxChunk: 1 << 20, proxyHops: 1, security: sig,
		limits: functions.Limits{PerUser: ratelimit.Limit{Rate: 1, Burst: 1, Period: time.Hour}}})
	tok := e.token("alice-burst-uid")
	for i := range 8 {
		want := 429
		if i == 0 {
			want = 200
		}
		if r := e.doFrom([]string{fmt.Sprintf("198.51.100.%d", i)}, "GET", "/v1/conversations", tok); r.status != want {
			t.Fatalf("call %d: %d, want %d", i, r.status, want)
		}
	}
	var alerts []string
	for _, line := range strings.Split(strings.TrimSpace(logs.String()), "\n") {
		if strings.Contains(line, `"severity":"ALERT"`) {
			alerts = append(alerts, line)
		}
	}
	if len(alerts) != 1 || !strings.Contains(alerts[0], users.Attr("alice-burst-uid").Value.String()) {
		t.Fatalf("alerts %q, want one naming alice's user hash", alerts)
	}
	if strings.Contains(logs.String(), "alice-burst-uid") || strings.Contains(logs.String(), tok) {
		t.Fatal("a uid or token reached the security log")
	}
	if got := sig.Counts()[security.Key{Kind: security.RateLimited, Reason: "user"}]; got != 7 {
		t.Fatalf("per-user rate-limit hits counted %d, want 7", got)
	}
}
