package blobs

import (
	"path"
	"strings"
	"testing"
)

func FuzzValidateKey(f *testing.F) {
	for _, s := range []string{"users/u1/a#1", "../x", "/etc/passwd", "a//b", `a\b`, "a/./b", "~", "a~", "uploads/x/y/0000001"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, key string) {
		if ValidateKey(key) != nil {
			return
		}
		// Accepted keys are clean relative paths of the key charset.
		if path.IsAbs(key) || path.Clean(key) != key || strings.HasPrefix(key, "../") || key == ".." ||
			strings.ContainsAny(key, "\\\x00~ ?*%\n") || len(key) > MaxKey {
			t.Fatalf("accepted %q", key)
		}
		// Every prefix of a valid key is a valid prefix.
		for i := 0; i <= len(key); i++ {
			if err := ValidatePrefix(key[:i]); err != nil {
				t.Fatalf("ValidatePrefix(%q) of key %q: %v", key[:i], key, err)
			}
		}
	})
}
