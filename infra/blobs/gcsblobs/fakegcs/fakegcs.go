// Package fakegcs starts fake-gcs-server for tests of code that talks to
// Cloud Storage through gcsblobs. Test support only.
package fakegcs

import (
	"crypto/sha256"
	"encoding/hex"
	"strings"
	"testing"

	"github.com/fsouza/fake-gcs-server/fakestorage"
)

// Start runs fake-gcs-server in-process on a real loopback listener, so
// the adapter's production HTTP path (the JSON API for uploads and reads,
// as gcsblobs.Open configures it) is the one tested; it stops at the end of
// the test.
func Start(t testing.TB) *fakestorage.Server {
	t.Helper()
	srv, err := fakestorage.NewServerWithOptions(fakestorage.Options{Scheme: "http", Host: "127.0.0.1"})
	if err != nil {
		t.Fatalf("fakestorage.NewServerWithOptions: %v", err)
	}
	t.Cleanup(srv.Stop)
	return srv
}

// BucketName derives a valid, unique bucket name from t.Name(): lower
// case, [a-z0-9-], 3–63 chars, with a hash suffix so truncation never
// makes two tests share a bucket.
func BucketName(t testing.TB) string {
	var b strings.Builder
	for _, c := range strings.ToLower(t.Name()) {
		if c >= 'a' && c <= 'z' || c >= '0' && c <= '9' {
			b.WriteRune(c)
		} else {
			b.WriteByte('-')
		}
	}
	sum := sha256.Sum256([]byte(t.Name()))
	base := strings.Trim(b.String(), "-")
	if len(base) > 50 {
		base = strings.TrimRight(base[:50], "-")
	}
	return base + "-" + hex.EncodeToString(sum[:5])
}
