package records

import (
	"fmt"
	"strconv"
	"strings"

	"github.com/lethe-dev/lethe/infra/blobs"
)

// Upload layout. A large recording is PUT by the app through a signed URL
// to
//
//	uploads/<user-hash>/<conversation-id>/<seq>
//
// where user-hash is the user's pseudonym (32 lowercase hex, as
// pseudonym.User), conversation-id is ValidConversationID and seq is
// exactly 7 decimal digits, 0000000..MaxSeq. The bucket's notification
// (prefix UploadsPrefix, OBJECT_FINALIZE) announces each upload; nothing
// else is accepted from it. The uid itself never appears: the edge that
// signs the URL knows it from the caller's token.
const (
	UploadsPrefix = "uploads/"
	userHashLen   = 32
	seqDigits     = 7
)

// UploadKey is the object name of an upload.
func UploadKey(userHash, conversationID string, seq int) (string, error) {
	if !validUserHash(userHash) || !ValidConversationID(conversationID) || seq < 0 || seq > MaxSeq {
		return "", fmt.Errorf("%w: upload key parts", blobs.ErrInvalidKey)
	}
	return fmt.Sprintf("%s%s/%s/%0*d", UploadsPrefix, userHash, conversationID, seqDigits, seq), nil
}

// ParseUploadKey splits an upload object name; it accepts exactly the
// names UploadKey makes.
func ParseUploadKey(name string) (userHash, conversationID string, seq int, err error) {
	rest, ok := strings.CutPrefix(name, UploadsPrefix)
	parts := strings.Split(rest, "/")
	if !ok || len(parts) != 3 || !validUserHash(parts[0]) || !ValidConversationID(parts[1]) || len(parts[2]) != seqDigits {
		return "", "", 0, fmt.Errorf("%w: outside the upload layout", blobs.ErrInvalidKey)
	}
	for i := 0; i < len(parts[2]); i++ {
		if c := parts[2][i]; c < '0' || c > '9' {
			return "", "", 0, fmt.Errorf("%w: outside the upload layout", blobs.ErrInvalidKey)
		}
	}
	seq, _ = strconv.Atoi(parts[2])
	if seq > MaxSeq {
		return "", "", 0, fmt.Errorf("%w: seq out of range", blobs.ErrInvalidKey)
	}
	return parts[0], parts[1], seq, nil
}

func validUserHash(s string) bool {
	if len(s) != userHashLen {
		return false
	}
	for i := 0; i < len(s); i++ {
		if c := s[i]; !(c >= '0' && c <= '9' || c >= 'a' && c <= 'f') {
			return false
		}
	}
	return true
}
