package gcsblobs

import (
	"errors"
	"fmt"
	"mime"
	"strconv"
	"strings"
	"time"

	"cloud.google.com/go/storage"
)

// MaxSignedURLExpiry is V4 signing's limit: Cloud Storage refuses longer.
const MaxSignedURLExpiry = 7 * 24 * time.Hour

// Signer signs V4 URLs as a service account: PrivateKey (PEM, for tests
// and key files) or SignBytes (IAM signBlob in production, so no key
// leaves Google). SignBytes receives the V4 string-to-sign and returns its
// RSA-SHA256 (PKCS #1 v1.5) signature.
type Signer struct {
	GoogleAccessID string
	PrivateKey     []byte
	SignBytes      func([]byte) ([]byte, error)
}

// SignedUploadURL returns a V4 URL allowing one PUT of key, and the headers
// the uploader must send exactly: Content-Type (bound to contentType) and
// x-goog-content-length-range "0,maxBytes", which Cloud Storage enforces
// because the header is signed. The URL is for Cloud Storage itself, never
// an emulator endpoint.
func (b *Bucket) SignedUploadURL(key, contentType string, maxBytes int64, expires time.Duration, signer Signer) (string, map[string]string, error) {
	if err := validateKey(key); err != nil {
		return "", nil, err
	}
	if _, _, err := mime.ParseMediaType(contentType); err != nil || strings.ContainsAny(contentType, "\r\n") || len(contentType) > maxCType {
		return "", nil, errors.New("gcsblobs.SignedUploadURL: invalid content type")
	}
	if maxBytes <= 0 {
		return "", nil, errors.New("gcsblobs.SignedUploadURL: maxBytes must be positive")
	}
	// Whole seconds: X-Goog-Expires is an integer and rounding down must
	// not reach zero.
	if expires < time.Second || expires > MaxSignedURLExpiry {
		return "", nil, fmt.Errorf("gcsblobs.SignedUploadURL: expiry must be within 1s..%v", MaxSignedURLExpiry)
	}
	if signer.GoogleAccessID == "" || (signer.PrivateKey == nil) == (signer.SignBytes == nil) {
		return "", nil, errors.New("gcsblobs.SignedUploadURL: signer needs an access id and exactly one of PrivateKey, SignBytes")
	}
	lengthRange := "0," + strconv.FormatInt(maxBytes, 10)
	u, err := storage.SignedURL(b.name, key, &storage.SignedURLOptions{
		GoogleAccessID: signer.GoogleAccessID,
		PrivateKey:     signer.PrivateKey,
		SignBytes:      signer.SignBytes,
		Method:         "PUT",
		Expires:        time.Now().Add(expires),
		ContentType:    contentType,
		Headers:        []string{"x-goog-content-length-range:" + lengthRange},
		Scheme:         storage.SigningSchemeV4,
	})
	if err != nil {
		return "", nil, fmt.Errorf("storage.SignedURL: %w", err)
	}
	return u, map[string]string{"Content-Type": contentType, "x-goog-content-length-range": lengthRange}, nil
}
