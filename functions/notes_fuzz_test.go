package functions

import (
	"bytes"
	"encoding/base64"
	"encoding/json"
	"errors"
	"testing"

	"github.com/lethe-dev/lethe/app/records"
)

// FuzzParseNoteBody: the parser never panics; whatever it accepts is 1 byte
// to 64 KiB and came from exactly one canonical base64 string, so the
// ciphertext returned later is the one sent; whatever it refuses, it
// refuses with one of its own errors (never a message carrying content).
func FuzzParseNoteBody(f *testing.F) {
	p, err := newNoteParser()
	if err != nil {
		f.Fatal(err)
	}
	for _, s := range []string{
		`{"ciphertext":"AAEC"}`, `{"ciphertext":""}`, `{"ciphertext":"AB=="}`, `{"ciphertext":"AAE"}`,
		`{"ciphertext":"AAEC","x":1}`, `{"ciphertext":12}`, `[]`, `{`, `{"ciphertext":"AAEC"} {}`,
		`{"ciphertext":"AA\nEC"}`, `{"ciphertext":"AAEC","ciphertext":"AAED"}`, "{\"ciphertext\":\"\u00e9\"}",
	} {
		f.Add([]byte(s))
	}
	known := []error{errNoteMalformed, errNoteInvalid, errNoteBase64, errNoteEmpty, errNoteTooLarge}
	f.Fuzz(func(t *testing.T, body []byte) {
		ct, err := p.parse(body)
		if err != nil {
			for _, k := range known {
				if errors.Is(err, k) {
					return
				}
			}
			t.Fatalf("unknown error %v", err)
		}
		if len(ct) == 0 || len(ct) > records.MaxNoteBytes {
			t.Fatalf("accepted %d bytes", len(ct))
		}
		var v struct{ Ciphertext string }
		if err := json.Unmarshal(body, &v); err != nil {
			t.Fatalf("accepted a body encoding/json refuses: %v", err)
		}
		if base64.StdEncoding.EncodeToString(ct) != v.Ciphertext {
			t.Fatal("accepted a non-canonical encoding: the round trip would differ")
		}
		again, err := p.parse([]byte(`{"ciphertext":"` + v.Ciphertext + `"}`))
		if err != nil || !bytes.Equal(again, ct) {
			t.Fatal("the canonical body does not parse to the same bytes")
		}
	})
}
