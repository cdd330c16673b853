package events

import (
	"encoding/json"
	"testing"
)

// FuzzDecode feeds arbitrary bytes as the data of each event type: the
// decoder must never panic, must only fail with permanent errors, and
// whatever it accepts must survive re-encoding and be accepted again.
func FuzzDecode(f *testing.F) {
	r := newTestRegistry(f)
	types := AllTypes()
	for i, typ := range types {
		payload, _ := example(f, typ)
		b, err := json.Marshal(payload)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(uint8(i), b)
	}
	f.Add(uint8(0), []byte(`{"user":"0123456789abcdef0123456789abcdef","seq":1e400}`))
	f.Add(uint8(6), []byte(`{"requested_at":"2026-11-03T10:04:05Z","requested_at":"x"}`))
	f.Add(uint8(6), []byte("\xff\xfe{"))
	f.Add(uint8(3), []byte(`[]`))
	f.Add(uint8(2), []byte(`null`))

	f.Fuzz(func(t *testing.T, which uint8, data []byte) {
		typ := types[int(which)%len(types)]
		_, subject := example(t, typ)
		e := rawEvent(t, typ, subject, data)
		p, err := r.DecodeAny(e)
		if err != nil {
			if !IsPermanent(err) {
				t.Fatalf("non-permanent error for bad data: %v", err)
			}
			return
		}
		// Accepted: the Go value re-encodes to data the contract accepts.
		again, err := json.Marshal(p)
		if err != nil {
			t.Fatalf("re-marshal: %v", err)
		}
		if err := r.Validate(rawEvent(t, typ, subject, again)); err != nil {
			t.Fatalf("accepted %q but rejected its re-encoding %q: %v", data, again, err)
		}
	})
}
