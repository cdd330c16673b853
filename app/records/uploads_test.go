package records

import (
	"errors"
	"testing"

	"github.com/lethe-dev/lethe/infra/blobs"
)

const uploadUser = "00112233445566778899aabbccddeeff"

// FuzzParseUploadKey: object names come from the bucket's notifications,
// outside input. Whatever parses is exactly what UploadKey makes, and a
// valid blob key.
func FuzzParseUploadKey(f *testing.F) {
	for _, s := range []string{"uploads/" + uploadUser + "/c1/0000005", "uploads/" + uploadUser + "/c1/1000001", "uploads/x/c/0000001", "uploads/" + uploadUser + "/../0000001", ""} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, name string) {
		user, cid, seq, err := ParseUploadKey(name)
		if err != nil {
			if !errors.Is(err, blobs.ErrInvalidKey) {
				t.Fatalf("ParseUploadKey(%q) = %v, want ErrInvalidKey", name, err)
			}
			return
		}
		back, err := UploadKey(user, cid, seq)
		if err != nil || back != name {
			t.Fatalf("UploadKey(ParseUploadKey(%q)) = %q, %v", name, back, err)
		}
		if err := blobs.ValidateKey(name); err != nil {
			t.Fatalf("upload key %q is not a valid blob key: %v", name, err)
		}
	})
}

func TestUploadKeyBounds(t *testing.T) {
	for _, tc := range []struct {
		user, cid string
		seq       int
		ok        bool
	}{
		{uploadUser, "c_1-x", 0, true},
		{uploadUser, "c", MaxSeq, true},
		{uploadUser, "c", MaxSeq + 1, false},
		{uploadUser, "c", -1, false},
		{uploadUser, "c/d", 1, false},
		{"00112233445566778899AABBCCDDEEFF", "c", 1, false},
		{uploadUser[:31], "c", 1, false},
	} {
		if _, err := UploadKey(tc.user, tc.cid, tc.seq); (err == nil) != tc.ok {
			t.Errorf("UploadKey(%q, %q, %d) = %v, want ok=%v", tc.user, tc.cid, tc.seq, err, tc.ok)
		}
	}
}
