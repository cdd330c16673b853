package gcsblobs

import (
	"context"
	"errors"
	"fmt"
	"mime"
	"strconv"
	"strings"
	"time"

	"cloud.google.com/go/storage"

	"github.com/lethe-dev/lethe/app/records"
	"github.com/lethe-dev/lethe/infra/blobs"
)

// MaxSignedURLExpiry is V4 signing's limit: Cloud Storage refuses longer.
const MaxSignedURLExpiry = 7 * 24 * time.Hour

// signedURLHost is where signed URLs point. It is pinned so that neither a
// client opened on an emulator endpoint nor STORAGE_EMULATOR_HOST makes
// the edge hand out URLs to somewhere else.
const signedURLHost = "storage.googleapis.com"

// Signer signs V4 URLs as a service account: PrivateKey (PEM, for tests
// and key files) or SignBytes (IAM signBlob in production, so no key
// leaves Google). SignBytes receives the V4 string-to-sign and returns its
// RSA-SHA256 (PKCS #1 v1.5) signature.
//
// The zero Signer signs with the Bucket's client's own credentials, as
// cloud.google.com/go/storage detects them: the client_email and
// private_key of a service-account key file, or on Cloud Run and GCE the
// metadata server's service account with IAM signBlob (that account needs
// roles/iam.serviceAccountTokenCreator on itself).
type Signer struct {
	GoogleAccessID string
	PrivateKey     []byte
	SignBytes      func([]byte) ([]byte, error)
}

func (s Signer) isZero() bool {
	return s.GoogleAccessID == "" && s.PrivateKey == nil && s.SignBytes == nil
}

// SignedUploadURL returns a V4 URL allowing one PUT of key, and the headers
// the uploader must send exactly: Content-Type (bound to contentType) and
// x-goog-content-length-range "0,maxBytes", which Cloud Storage enforces
// because the header is signed. The URL is for Cloud Storage itself, never
// an emulator endpoint. A zero signer signs with the client's credentials
// (see Signer).
func (b *Bucket) SignedUploadURL(key, contentType string, maxBytes int64, expires time.Duration, signer Signer) (string, map[string]string, error) {
	if err := blobs.ValidateKey(key); err != nil {
		return "", nil, err
	}
	if _, _, err := mime.ParseMediaType(contentType); err != nil || strings.ContainsAny(contentType, "\r\n") || len(contentType) > blobs.MaxContentType {
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
	if !signer.isZero() && (signer.GoogleAccessID == "" || (signer.PrivateKey == nil) == (signer.SignBytes == nil)) {
		return "", nil, errors.New("gcsblobs.SignedUploadURL: signer needs an access id and exactly one of PrivateKey, SignBytes (or nothing, to use the client's credentials)")
	}
	lengthRange := "0," + strconv.FormatInt(maxBytes, 10)
	opts := &storage.SignedURLOptions{
		GoogleAccessID: signer.GoogleAccessID,
		PrivateKey:     signer.PrivateKey,
		SignBytes:      signer.SignBytes,
		Method:         "PUT",
		Expires:        time.Now().Add(expires),
		ContentType:    contentType,
		Headers:        []string{"x-goog-content-length-range:" + lengthRange},
		Scheme:         storage.SigningSchemeV4,
		Hostname:       signedURLHost,
	}
	// With a complete signer the handle signs offline; with the zero one it
	// detects the access id and key (or signBlob) from the client.
	u, err := b.client.Bucket(b.name).SignedURL(key, opts)
	if err != nil {
		return "", nil, fmt.Errorf("storage.BucketHandle.SignedURL: %w", err)
	}
	return u, map[string]string{"Content-Type": contentType, "x-goog-content-length-range": lengthRange}, nil
}

// UploadSigner issues signed upload URLs under the upload layout (see
// UploadsPrefix). Signer may be zero: see Signer.
type UploadSigner struct {
	Bucket *Bucket
	Signer Signer
}

// SignUpload returns the URL and the exact headers the uploader must send
// for one PUT of the upload object of (userHash, cid, seq): the content
// type is bound to contentType and the length to 0..maxBytes, and the URL
// lapses after ttl. The URL is a bearer credential: never log it.
func (u UploadSigner) SignUpload(ctx context.Context, userHash, cid string, seq int, contentType string, maxBytes int64, ttl time.Duration) (string, map[string]string, error) {
	if err := ctx.Err(); err != nil {
		return "", nil, fmt.Errorf("gcsblobs.SignUpload: %w", err)
	}
	if u.Bucket == nil {
		return "", nil, errors.New("gcsblobs.SignUpload: no bucket")
	}
	key, err := records.UploadKey(userHash, cid, seq)
	if err != nil {
		return "", nil, fmt.Errorf("records.UploadKey: %w", err)
	}
	url, headers, err := u.Bucket.SignedUploadURL(key, contentType, maxBytes, ttl, u.Signer)
	if err != nil {
		return "", nil, fmt.Errorf("gcsblobs.SignedUploadURL: %w", err)
	}
	return url, headers, nil
}
