package docs

import (
	"errors"
	"testing"
)

// TestCursorRoundTrip: a cursor QueryPage returns decodes to the position
// it encodes, for each kind of order value.
func TestCursorRoundTrip(t *testing.T) {
	for _, p := range []Position{
		{User: "u1", ID: "d1"},
		{User: "", ID: "d1"},
		{Value: int64(-42), User: "u1", ID: "d1"},
		{Value: int64(1) << 62, User: "u2", ID: "x:y#z"},
		{Value: "", User: "u1", ID: "d1"},
		{Value: "pending", User: "u1", ID: "d1"},
	} {
		c, err := encodeCursor(p)
		if err != nil {
			t.Fatalf("encodeCursor(%+v): %v", p, err)
		}
		got, err := decodeCursor(c, p.Value != nil)
		if err != nil {
			t.Fatalf("decodeCursor(%q): %v", c, err)
		}
		if got != p {
			t.Errorf("round trip %+v = %+v", p, got)
		}
		if _, err := decodeCursor(c, p.Value == nil); !errors.Is(err, ErrInvalid) {
			t.Errorf("cursor of %+v accepted for the other kind of query: %v", p, err)
		}
	}
}

// FuzzDecodeCursor: a cursor comes from outside; decoding never panics,
// and what it accepts is a valid position that encodes back to a cursor
// decoding to the same position.
func FuzzDecodeCursor(f *testing.F) {
	for _, p := range []Position{{User: "u1", ID: "d1"}, {Value: int64(7), User: "", ID: "a"}, {Value: "s", User: "u", ID: "b"}} {
		c, err := encodeCursor(p)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(c, p.Value != nil)
	}
	f.Add("!!", true)
	f.Fuzz(func(t *testing.T, s string, ordered bool) {
		p, err := decodeCursor(s, ordered)
		if err != nil {
			if !errors.Is(err, ErrInvalid) {
				t.Fatalf("error %v is not ErrInvalid", err)
			}
			return
		}
		if !ValidUser(p.User) || !ValidSegment(p.ID) || (p.Value != nil) != ordered {
			t.Fatalf("accepted invalid position %+v", p)
		}
		c, err := encodeCursor(p)
		if err != nil {
			t.Fatal(err)
		}
		q, err := decodeCursor(c, ordered)
		if err != nil || q != p {
			t.Fatalf("re-encoded %+v = %+v, %v", p, q, err)
		}
	})
}
