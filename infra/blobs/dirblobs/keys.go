package dirblobs

import (
	"fmt"
	"strings"

	"github.com/lethe-dev/lethe/infra/blobs"
)

const (
	maxKey     = 1024 // bytes, as Cloud Storage
	maxSegment = 254  // bytes; the file name adds objSuffix, NAME_MAX is 255
	objSuffix  = "~"  // not in the key charset: object files never clash with directories
	tmpPrefix  = "~tmp-"
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
// empty, "." or "..": nothing absolute, nothing that climbs, no backslash
// or NUL. So a valid key names a path under the root by construction.
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

// splitPrefix validates a List/DeletePrefix prefix, a plain string prefix
// as in Cloud Storage ("users/u1" also matches "users/u10/x"; end it with
// "/" to mean one folder). It returns the directory every match lives
// under (its complete segments) and the partial last segment.
func splitPrefix(prefix string) (dir, partial string, err error) {
	if len(prefix) > maxKey {
		return "", "", fmt.Errorf("%w: prefix length", blobs.ErrInvalidKey)
	}
	segs := strings.Split(prefix, "/")
	for _, s := range segs[:len(segs)-1] {
		if !validSegment(s) {
			return "", "", fmt.Errorf("%w: prefix segment", blobs.ErrInvalidKey)
		}
	}
	partial = segs[len(segs)-1]
	if len(partial) > maxSegment {
		return "", "", fmt.Errorf("%w: prefix segment", blobs.ErrInvalidKey)
	}
	for i := 0; i < len(partial); i++ {
		if !segmentChar(partial[i]) {
			return "", "", fmt.Errorf("%w: prefix segment", blobs.ErrInvalidKey)
		}
	}
	dir = strings.Join(segs[:len(segs)-1], "/")
	if dir == "" {
		dir = "."
	}
	return dir, partial, nil
}

// objectPath is the file, relative to the root, that holds key.
func objectPath(key string) string { return key + objSuffix }
