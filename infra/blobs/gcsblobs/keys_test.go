package gcsblobs

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
		if validateKey(key) != nil {
			return
		}
		// Accepted keys are clean relative paths of the key charset.
		if path.IsAbs(key) || path.Clean(key) != key || strings.HasPrefix(key, "../") || key == ".." ||
			strings.ContainsAny(key, "\\\x00~ ?*%\n") || len(key) > maxKey {
			t.Fatalf("accepted %q", key)
		}
		// Every prefix of a valid key is a valid prefix.
		for i := 0; i <= len(key); i++ {
			if err := validatePrefix(key[:i]); err != nil {
				t.Fatalf("validatePrefix(%q) of key %q: %v", key[:i], key, err)
			}
		}
	})
}

func TestValidBucketName(t *testing.T) {
	for name, want := range map[string]bool{
		"abc": true, "lethe-blobs_1": true, "ab": false, "Abc": false, "-abc": false, "abc-": false,
		"a.bc": false, "goog-x": false, strings.Repeat("a", 63): true, strings.Repeat("a", 64): false,
	} {
		if got := validBucketName(name); got != want {
			t.Errorf("validBucketName(%q) = %v, want %v", name, got, want)
		}
	}
}
