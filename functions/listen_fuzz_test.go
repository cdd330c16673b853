package functions

import (
	"encoding/json"
	"testing"
)

// FuzzParseListenMessage: the parser never panics, and what it accepts is
// exactly the end message.
func FuzzParseListenMessage(f *testing.F) {
	for _, s := range []string{`{"type":"end"}`, `{"type":"end"} `, `{"type":"end","x":1}`, `{"type":"end"}{}`,
		`{"type":"END"}`, `[]`, `null`, `{"type":null}`, "\xff", `{"type":"end"`} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		m, err := ParseListenMessage(b)
		if err != nil {
			return
		}
		if m.Type != "end" || len(b) > maxListenMessage {
			t.Fatalf("accepted %q as %+v", b, m)
		}
		var v map[string]any
		if err := json.Unmarshal(b, &v); err != nil || len(v) != 1 {
			t.Fatalf("accepted %q, which is not a one-field object", b)
		}
	})
}

func FuzzParseStreamQuery(f *testing.F) {
	f.Add("c1", "pcm16", "16000")
	f.Add("c1", "opus", "")
	f.Fuzz(func(t *testing.T, cid, codec, rate string) {
		req, err := parseStreamQuery(map[string][]string{"conversation_id": {cid}, "codec": {codec}, "sample_rate": {rate}})
		if err != nil {
			return
		}
		if req.rate%1000 != 0 || req.rate < 8000 || req.rate > 48000 || (codec != "pcm16" && codec != "opus") {
			t.Fatalf("accepted %q %q %q as %+v", cid, codec, rate, req)
		}
	})
}
