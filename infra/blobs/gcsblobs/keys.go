package gcsblobs

import "strings"

// The key, content type and metadata rules are the port's, checked by
// blobs.Bucket before any call reaches this driver.

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
