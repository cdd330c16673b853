package dirblobs

import "strings"

const (
	objSuffix = "~" // not in the key charset: object files never clash with directories
	tmpPrefix = "~tmp-"
)

// splitPrefix splits a prefix blobs.Bucket validated (a plain string
// prefix as in Cloud Storage: "users/u1" also matches "users/u10/x") into
// the directory every match lives under (its complete segments) and the
// partial last segment.
func splitPrefix(prefix string) (dir, partial string) {
	i := strings.LastIndexByte(prefix, '/')
	if i < 0 {
		return ".", prefix
	}
	return prefix[:i], prefix[i+1:]
}

// objectPath is the file, relative to the root, that holds key.
func objectPath(key string) string { return key + objSuffix }

// IsTempFile reports whether a file name (the base name) is one of the
// temp files a write fills before its rename: a backup leaves them out.
func IsTempFile(name string) bool { return strings.HasPrefix(name, tmpPrefix) }
