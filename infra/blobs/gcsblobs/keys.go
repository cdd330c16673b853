package gcsblobs

import (
	"fmt"
	"strings"
	"unicode/utf8"

	"github.com/lethe-dev/lethe/infra/blobs"
)

// The key rules are dirblobs' rules, so a key valid in one adapter is valid
// in the other: Cloud Storage itself would accept far more (any UTF-8 up to
// 1024 bytes), but a key production accepts and embedded mode refuses would
// be a bug found late.
const (
	maxKey       = 1024 // bytes, as Cloud Storage
	maxSegment   = 254  // dirblobs' file-name bound, kept for parity
	maxMetadata  = 8 << 10
	maxCType     = 256
	defaultCType = "application/octet-stream"
)

func segmentChar(c byte) bool {
	switch {
	case c >= 'a' && c <= 'z', c >= 'A' && c <= 'Z', c >= '0' && c <= '9':
		return true
	case c == '_', c == '.', c == '#', c == ':', c == '=', c == '-':
		return true
	}
	return false
}

func validSegment(s string) bool {
	if s == "" || len(s) > maxSegment || s == "." || s == ".." {
		return false
	}
	for i := 0; i < len(s); i++ {
		if !segmentChar(s[i]) {
			return false
		}
	}
	return true
}

// validateKey accepts slash-separated segments of [A-Za-z0-9_.#:=-], none
// empty, "." or "..".
func validateKey(key string) error {
	if key == "" || len(key) > maxKey {
		return fmt.Errorf("%w: length", blobs.ErrInvalidKey)
	}
	for seg := range strings.SplitSeq(key, "/") {
		if !validSegment(seg) {
			return fmt.Errorf("%w: segment", blobs.ErrInvalidKey)
		}
	}
	return nil
}

// validatePrefix accepts "" or complete valid segments followed by a
// partial segment (possibly empty) of key characters: every prefix of a
// valid key, and nothing that could not start one.
func validatePrefix(prefix string) error {
	if len(prefix) > maxKey {
		return fmt.Errorf("%w: prefix length", blobs.ErrInvalidKey)
	}
	segs := strings.Split(prefix, "/")
	for _, s := range segs[:len(segs)-1] {
		if !validSegment(s) {
			return fmt.Errorf("%w: prefix segment", blobs.ErrInvalidKey)
		}
	}
	partial := segs[len(segs)-1]
	if len(partial) > maxSegment {
		return fmt.Errorf("%w: prefix segment", blobs.ErrInvalidKey)
	}
	for i := 0; i < len(partial); i++ {
		if !segmentChar(partial[i]) {
			return fmt.Errorf("%w: prefix segment", blobs.ErrInvalidKey)
		}
	}
	return nil
}

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
