package functions_test

import (
	"context"
	"errors"
	"net/http"
	"strings"
	"testing"

	"github.com/lethe-dev/lethe/app/audit"
	"github.com/lethe-dev/lethe/app/records"
	"github.com/lethe-dev/lethe/infra/docs"
)

var testDefaults = records.Retention{AudioDays: 30, TranscriptDays: 365, VectorDays: 365, ExportDays: 7}

func policyOf(t *testing.T, r reply) records.Retention {
	t.Helper()
	num := func(k string) int {
		f, ok := r.body[k].(float64)
		if !ok {
			t.Fatalf("reply has no %s: %v", k, r.body)
		}
		return int(f)
	}
	if len(r.body) != 4 {
		t.Errorf("reply has %d fields, want 4: %v", len(r.body), r.body)
	}
	return records.Retention{AudioDays: num("audio_days"), TranscriptDays: num("transcript_days"),
		VectorDays: num("vector_days"), ExportDays: num("export_days")}
}

// TestRetentionPolicy: GET answers the defaults until the caller sets a
// policy; PUT sets it for the caller only, with an audit entry.
func TestRetentionPolicy(t *testing.T) {
	e := newEdgeWith(t, edgeOptions{maxChunk: 1 << 20, retention: testDefaults})
	alice, bob := e.token("alice"), e.token("bob")
	r := e.do("GET", "/v1/me/retention", alice, "", nil)
	if r.status != http.StatusOK || policyOf(t, r) != testDefaults {
		t.Fatalf("GET before any PUT: %d %v", r.status, r.body)
	}
	body := `{"audio_days": 0, "transcript_days": 90, "vector_days": 30.0, "export_days": 1}`
	want := records.Retention{AudioDays: 0, TranscriptDays: 90, VectorDays: 30, ExportDays: 1}
	r = e.do("PUT", "/v1/me/retention", alice, "application/json", []byte(body))
	if r.status != http.StatusOK || policyOf(t, r) != want {
		t.Fatalf("PUT: %d %v", r.status, r.body)
	}
	r = e.do("GET", "/v1/me/retention", alice, "", nil)
	if r.status != http.StatusOK || policyOf(t, r) != want {
		t.Errorf("GET after PUT: %d %v", r.status, r.body)
	}
	// Stored where the workers read it.
	got, err := records.ReadRetention(context.Background(), e.docs, e.pseudo.User("alice"), testDefaults)
	if err != nil || got != want {
		t.Errorf("stored policy %+v, %v", got, err)
	}
	r = e.do("GET", "/v1/me/retention", bob, "", nil)
	if policyOf(t, r) != testDefaults {
		t.Errorf("bob sees %v, want the defaults", r.body)
	}
	entries, _, err := (&audit.Log{Docs: e.docs}).List(context.Background(), audit.Filter{Subject: e.pseudo.User("alice")})
	if err != nil || len(entries) != 1 || entries[0].Action != audit.ActionRetentionSet ||
		entries[0].Actor != audit.UserActor(e.pseudo.User("alice")) || entries[0].Counts["transcript_days"] != 90 {
		t.Errorf("audit entries %+v, %v", entries, err)
	}
	if r := e.do("GET", "/v1/me/retention", "", "", nil); r.status != http.StatusUnauthorized {
		t.Errorf("GET without a token: %d", r.status)
	}
}

// TestRetentionPolicyRejects: bodies that are not a whole, bounded policy
// are refused with a message naming the field, and nothing is stored.
func TestRetentionPolicyRejects(t *testing.T) {
	e := newEdgeWith(t, edgeOptions{maxChunk: 1 << 20, retention: testDefaults})
	tok := e.token("alice")
	const ok = `"audio_days": 1, "transcript_days": 2, "vector_days": 3, "export_days": 4`
	tests := []struct {
		name, body string
		status     int
		code, says string
	}{
		{"empty", ``, 400, "bad_json", "one JSON object"},
		{"not json", `audio_days=3`, 400, "bad_json", "one JSON object"},
		{"truncated", `{"audio_days": 1,`, 400, "bad_json", "one JSON object"},
		{"two values", `{` + ok + `} {}`, 400, "bad_json", "one JSON object"},
		{"null", `null`, 400, "invalid_policy", "want object"},
		{"array", `[1,2,3,4]`, 400, "invalid_policy", "want object"},
		{"missing field", `{"audio_days": 1, "transcript_days": 2, "vector_days": 3}`, 400, "invalid_policy", "export_days: required"},
		{"unknown field", `{` + ok + `, "notes_days": 5}`, 400, "invalid_policy", `"notes_days": unknown field`},
		{"negative", `{"audio_days": -1, "transcript_days": 2, "vector_days": 3, "export_days": 4}`, 400, "invalid_policy", "audio_days: want whole days from 0 to 36500"},
		{"too many days", `{"audio_days": 1, "transcript_days": 36501, "vector_days": 3, "export_days": 4}`, 400, "invalid_policy", "transcript_days: want whole days"},
		{"fraction", `{"audio_days": 1.5, "transcript_days": 2, "vector_days": 3, "export_days": 4}`, 400, "invalid_policy", "audio_days: want integer"},
		{"string", `{"audio_days": "30", "transcript_days": 2, "vector_days": 3, "export_days": 4}`, 400, "invalid_policy", "audio_days: want integer"},
		{"huge number", `{"audio_days": 1e400, "transcript_days": 2, "vector_days": 3, "export_days": 4}`, 400, "", ""},
		{"oversized", `{` + ok + `, "pad": "` + strings.Repeat("x", 5000) + `"}`, 413, "too_large", "4 KiB"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			r := e.do("PUT", "/v1/me/retention", tok, "application/json", []byte(tc.body))
			if r.status != tc.status || (tc.code != "" && errCode(r) != tc.code) {
				t.Fatalf("status %d %v, want %d %s", r.status, r.body, tc.status, tc.code)
			}
			msg, _ := r.body["error"].(map[string]any)["message"].(string)
			if !strings.Contains(msg, tc.says) {
				t.Errorf("message %q does not say %q", msg, tc.says)
			}
		})
	}
	if _, err := e.docs.Get(context.Background(), records.RetentionKey(e.pseudo.User("alice"))); !errors.Is(err, docs.ErrNotFound) {
		t.Errorf("a refused body stored a policy: %v", err)
	}
}

// TestRetentionPolicyErased: an erased user cannot set a policy (nothing
// may be written under them after the tombstone).
func TestRetentionPolicyErased(t *testing.T) {
	e := newEdgeWith(t, edgeOptions{maxChunk: 1 << 20, retention: testDefaults})
	user := e.pseudo.User("alice")
	must(t, e.docs.Put(context.Background(), docs.Doc{Key: records.TombstoneKey(user), Data: []byte(`{}`)}))
	body := `{"audio_days": 1, "transcript_days": 2, "vector_days": 3, "export_days": 4}`
	if r := e.do("PUT", "/v1/me/retention", e.token("alice"), "application/json", []byte(body)); r.status != http.StatusGone {
		t.Errorf("PUT for an erased user: %d %v", r.status, r.body)
	}
	if n, _ := e.docs.CountUser(context.Background(), user); n != 0 {
		t.Errorf("%d documents under the erased user", n)
	}
}
