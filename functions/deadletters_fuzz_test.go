package functions

import (
	"encoding/json"
	"testing"
)

// FuzzParseReplayRequest: the parser never panics; whatever it accepts is
// valid JSON naming exactly one of an id (at most 256 bytes) or all, and
// reads back the same after a round trip.
func FuzzParseReplayRequest(f *testing.F) {
	for _, s := range []string{
		`{"id":"123"}`, `{"all":true}`, `{}`, `{"id":"1","all":true}`, `{"all":false}`, `{"ids":"1"}`,
		`null`, `[]`, `{"id":"1"} {}`, `{"id":"1"}  `, `{"id":12}`, `{"all":"true"}`, `{"id":""}`,
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, body []byte) {
		req, err := parseReplayRequest(body)
		if err != nil {
			if req != (ReplayRequest{}) {
				t.Fatalf("refused %q but returned %+v", body, req)
			}
			return
		}
		if !json.Valid(body) {
			t.Fatalf("accepted invalid JSON %q", body)
		}
		if req.All == (req.ID != "") || len(req.ID) > 256 {
			t.Fatalf("accepted %q as %+v: want exactly one of id (<= 256 bytes) or all", body, req)
		}
		again, err := json.Marshal(req)
		if err != nil {
			t.Fatal(err)
		}
		if back, err := parseReplayRequest(again); err != nil || back != req {
			t.Fatalf("round trip of %+v: %+v, %v", req, back, err)
		}
	})
}
