package firebaserevoke_test

import (
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"testing"
	"time"

	"github.com/lethe-dev/lethe/infra/auth/firebaserevoke"
)

func TestRevokeSessions(t *testing.T) {
	for _, tc := range []struct {
		name    string
		status  int
		reply   string
		wantErr bool
	}{
		{"revoked", 200, `{"localId":"u1"}`, false},
		{"unknown user has no session", 400, `{"error":{"code":400,"message":"USER_NOT_FOUND"}}`, false},
		{"permission denied", 403, `{"error":{"code":403,"message":"PERMISSION_DENIED"}}`, true},
		{"server error", 500, `oops`, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var got map[string]string
			var path string
			ts := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				path = r.Method + " " + r.URL.Path
				_ = json.NewDecoder(r.Body).Decode(&got)
				w.WriteHeader(tc.status)
				_, _ = w.Write([]byte(tc.reply))
			}))
			defer ts.Close()
			r := &firebaserevoke.Revoker{Client: ts.Client(), Project: "proj-1", BaseURL: ts.URL,
				Now: func() time.Time { return time.Unix(1_800_000_000, 0) }}
			err := r.RevokeSessions(t.Context(), "u1")
			if (err != nil) != tc.wantErr {
				t.Fatalf("err = %v, want error %v", err, tc.wantErr)
			}
			if path != "POST /v1/projects/proj-1/accounts:update" || got["localId"] != "u1" || got["validSince"] != "1800000000" {
				t.Fatalf("request %s %v", path, got)
			}
		})
	}
}
