package gcsblobs

import (
	"fmt"
	"strings"
	"unicode/utf8"
)

// The key rules are blobs.ValidateKey's, checked by blobs.Bucket before
// any call reaches this driver.
const (
	maxMetadata  = 8 << 10
	maxCType     = 256
	defaultCType = "application/octet-stream"
)

// validateAttrs bounds what Cloud Storage would refuse anyway (8 KiB of
// custom metadata), so the error is ours and early.
func validateAttrs(ctype string, md map[string]string) error {
	if len(ctype) > maxCType || !utf8.ValidString(ctype) || strings.ContainsAny(ctype, "\r\n") {
		return fmt.Errorf("gcsblobs: invalid content type")
	}
	total := 0
	for k, v := range md {
		if k == "" || !utf8.ValidString(k) || !utf8.ValidString(v) || strings.ContainsAny(k, "\r\n") {
			return fmt.Errorf("gcsblobs: invalid metadata")
		}
		total += len(k) + len(v)
	}
	if total > maxMetadata {
		return fmt.Errorf("gcsblobs: metadata larger than %d bytes", maxMetadata)
	}
	return nil
}

// validBucketName follows Cloud Storage's rules for names without dots
// (dotted names are domain-verified names, which we never need).
func validBucketName(name string) bool {
	if len(name) < 3 || len(name) > 63 {
		return false
	}
	for i := 0; i < len(name); i++ {
		c := name[i]
		alnum := c >= 'a' && c <= 'z' || c >= '0' && c <= '9'
		if !alnum && (c != '-' && c != '_' || i == 0 || i == len(name)-1) {
			return false
		}
	}
	return !strings.HasPrefix(name, "goog")
}
