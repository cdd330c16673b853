package functions

import (
	"bytes"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"testing"
)

// FuzzUploadURLBody: the upload-url body parser never panics, reads at
// most maxUploadURLBody bytes, and whatever it accepts is one JSON object
// of its known fields with exactly the values the body says.
func FuzzUploadURLBody(f *testing.F) {
	for _, s := range []string{
		`{"content_type":"audio/wav","size":1000,"duration_ms":60000}`,
		`{"content_type":"audio/ogg; codecs=opus","size":1,"duration_ms":3600000}`,
		`{"content_type":"audio/wav","size":1000}`, `{"size":"1"}`, `null`, `[]`,
		`{"duration_ms":1e400}`, `{"duration_ms":null}`, `{"a":1}`, `{} {}`, "\xff",
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, body []byte) {
		r := httptest.NewRequest(http.MethodPost, "/", bytes.NewReader(body))
		req, status, _, _ := decodeUploadURLRequest(httptest.NewRecorder(), r)
		if status != 0 {
			if len(body) <= maxUploadURLBody && status == http.StatusRequestEntityTooLarge {
				t.Fatalf("%d-byte body refused as too large", len(body))
			}
			return
		}
		if len(body) > maxUploadURLBody {
			t.Fatalf("accepted a %d-byte body", len(body))
		}
		var raw map[string]json.RawMessage
		if err := json.Unmarshal(body, &raw); err != nil {
			t.Fatalf("accepted %q, which is not a JSON object: %v", body, err)
		}
		for k := range raw {
			switch k {
			case "content_type", "size", "duration_ms":
			default:
				t.Fatalf("accepted unknown field %q", k)
			}
		}
		d, ok := raw["duration_ms"]
		if ok = ok && string(d) != "null"; ok != (req.DurationMS != nil) {
			t.Fatalf("duration_ms present %v, parsed %v", ok, req.DurationMS)
		}
	})
}
