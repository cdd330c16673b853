package gcsblobs

import (
	"strings"
	"testing"
)

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
