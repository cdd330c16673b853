package gcsblobs_test

import (
	"crypto"
	"crypto/rand"
	"crypto/rsa"
	"crypto/sha256"
	"crypto/x509"
	"encoding/hex"
	"encoding/pem"
	"errors"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"cloud.google.com/go/storage"
	"google.golang.org/api/option"

	"github.com/lethe-dev/lethe/infra/blobs"
	"github.com/lethe-dev/lethe/infra/blobs/gcsblobs"
)

const testAccessID = "uploader@lethe-test.iam.gserviceaccount.com"

// encodeRFC3986 percent-encodes everything but the unreserved characters,
// as V4 signing's canonical URI and query require.
func encodeRFC3986(s string, keepSlash bool) string {
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		c := s[i]
		switch {
		case c >= 'A' && c <= 'Z', c >= 'a' && c <= 'z', c >= '0' && c <= '9', c == '-', c == '.', c == '_', c == '~':
			b.WriteByte(c)
		case c == '/' && keepSlash:
			b.WriteByte(c)
		default:
			b.WriteString("%" + strings.ToUpper(hex.EncodeToString([]byte{c})))
		}
	}
	return b.String()
}

// verifyV4 checks a signed URL the way Cloud Storage does, written from
// the V4 documentation (not from the client library): rebuild the
// canonical request from the URL and the headers the uploader will send,
// hash it into the string-to-sign and check the RSA signature.
func verifyV4(t *testing.T, pub *rsa.PublicKey, method, bucket, object, signedURL string, sent map[string]string) error {
	t.Helper()
	u, err := url.Parse(signedURL)
	if err != nil {
		return err
	}
	q := u.Query()
	sig, err := hex.DecodeString(q.Get("X-Goog-Signature"))
	if err != nil || len(sig) == 0 {
		return errors.New("no signature")
	}
	// Canonical URI: the path of the request, which must be the object's.
	canonicalURI := "/" + encodeRFC3986(bucket, false) + "/" + encodeRFC3986(object, true)
	if u.EscapedPath() != canonicalURI {
		return errors.New("URL path " + u.EscapedPath() + " is not the canonical " + canonicalURI)
	}
	// Canonical query: every parameter but the signature, sorted by name.
	var names []string
	for k := range q {
		if k != "X-Goog-Signature" {
			names = append(names, k)
		}
	}
	slices.Sort(names)
	var qparts []string
	for _, k := range names {
		qparts = append(qparts, encodeRFC3986(k, false)+"="+encodeRFC3986(q.Get(k), false))
	}
	// Canonical headers: what the uploader sends plus host, lower-cased,
	// sorted; only the headers the URL says are signed.
	headers := map[string]string{"host": u.Host}
	for k, v := range sent {
		headers[strings.ToLower(k)] = strings.Join(strings.Fields(v), " ")
	}
	signed := strings.Split(q.Get("X-Goog-SignedHeaders"), ";")
	var hparts []string
	for _, h := range signed {
		v, ok := headers[h]
		if !ok {
			return errors.New("signed header " + h + " not sent")
		}
		hparts = append(hparts, h+":"+v+"\n")
	}
	canonical := strings.Join([]string{
		method,
		canonicalURI,
		strings.Join(qparts, "&"),
		strings.Join(hparts, ""),
		strings.Join(signed, ";"),
		"UNSIGNED-PAYLOAD",
	}, "\n")
	date := q.Get("X-Goog-Date")
	scope := strings.TrimPrefix(q.Get("X-Goog-Credential"), testAccessID+"/")
	if len(date) < 8 || scope != date[:8]+"/auto/storage/goog4_request" {
		return errors.New("credential scope " + scope + " does not match date " + date)
	}
	sum := sha256.Sum256([]byte(canonical))
	stringToSign := "GOOG4-RSA-SHA256\n" + date + "\n" + scope + "\n" + hex.EncodeToString(sum[:])
	digest := sha256.Sum256([]byte(stringToSign))
	return rsa.VerifyPKCS1v15(pub, crypto.SHA256, digest[:], sig)
}

// withQuery returns u with one query parameter replaced.
func withQuery(u *url.URL, k, v string) string {
	c := *u
	q := c.Query()
	q.Set(k, v)
	c.RawQuery = q.Encode()
	return c.String()
}

func TestSignedUploadURL(t *testing.T) {
	key, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		t.Fatal(err)
	}
	pemKey := pem.EncodeToMemory(&pem.Block{Type: "RSA PRIVATE KEY", Bytes: x509.MarshalPKCS1PrivateKey(key)})
	signBlob := func(b []byte) ([]byte, error) { // what IAM signBlob does
		d := sha256.Sum256(b)
		return rsa.SignPKCS1v15(rand.Reader, key, crypto.SHA256, d[:])
	}
	// Signing is offline: the client never talks to anything here.
	client, err := storage.NewClient(t.Context(), option.WithoutAuthentication())
	if err != nil {
		t.Fatal(err)
	}
	defer client.Close()
	b := gcsblobs.New(client, "lethe-uploads-test")
	object := "uploads/0123456789abcdef0123456789abcdef/conv_1-x/0000042"
	const ctype, maxBytes = "audio/ogg; codecs=opus", int64(500 << 20)

	signers := map[string]gcsblobs.Signer{
		"PrivateKey": {GoogleAccessID: testAccessID, PrivateKey: pemKey},
		"SignBytes":  {GoogleAccessID: testAccessID, SignBytes: signBlob},
	}
	for name, signer := range signers {
		t.Run(name, func(t *testing.T) {
			before := time.Now().UTC()
			u, hdr, err := b.SignedUploadURL(object, ctype, maxBytes, 15*time.Minute, signer)
			if err != nil {
				t.Fatal(err)
			}
			pu, err := url.Parse(u)
			if err != nil {
				t.Fatal(err)
			}
			q := pu.Query()
			if pu.Scheme != "https" || pu.Host != "storage.googleapis.com" {
				t.Errorf("URL %s://%s, want https://storage.googleapis.com", pu.Scheme, pu.Host)
			}
			if q.Get("X-Goog-Algorithm") != "GOOG4-RSA-SHA256" {
				t.Errorf("X-Goog-Algorithm = %q", q.Get("X-Goog-Algorithm"))
			}
			if got := strings.Split(q.Get("X-Goog-SignedHeaders"), ";"); !slices.Equal(got, []string{"content-type", "host", "x-goog-content-length-range"}) {
				t.Errorf("signed headers = %v", got)
			}
			if exp, _ := strconv.Atoi(q.Get("X-Goog-Expires")); exp < 899 || exp > 900 {
				t.Errorf("X-Goog-Expires = %q, want 900", q.Get("X-Goog-Expires"))
			}
			if d, err := time.Parse("20060102T150405Z", q.Get("X-Goog-Date")); err != nil || d.Before(before.Truncate(time.Second)) || d.After(time.Now()) {
				t.Errorf("X-Goog-Date = %q (%v)", q.Get("X-Goog-Date"), err)
			}
			wantHdr := map[string]string{"Content-Type": ctype, "x-goog-content-length-range": "0,524288000"}
			if len(hdr) != len(wantHdr) || hdr["Content-Type"] != wantHdr["Content-Type"] || hdr["x-goog-content-length-range"] != wantHdr["x-goog-content-length-range"] {
				t.Errorf("headers = %v, want %v", hdr, wantHdr)
			}
			if err := verifyV4(t, &key.PublicKey, "PUT", "lethe-uploads-test", object, u, hdr); err != nil {
				t.Fatalf("signature does not verify: %v", err)
			}
			// The binding is real: any change to what was signed fails.
			tamper := []struct {
				what   string
				method string
				object string
				hdr    map[string]string
				url    string
			}{
				{"content type", "PUT", object, map[string]string{"Content-Type": "text/html", "x-goog-content-length-range": "0,524288000"}, u},
				{"length range", "PUT", object, map[string]string{"Content-Type": ctype, "x-goog-content-length-range": "0,999999999999"}, u},
				{"method", "GET", object, hdr, u},
				{"expiry", "PUT", object, hdr, withQuery(pu, "X-Goog-Expires", "604800")},
				{"object", "PUT", object + "x", hdr, u},
			}
			for _, tc := range tamper {
				if err := verifyV4(t, &key.PublicKey, tc.method, "lethe-uploads-test", tc.object, tc.url, tc.hdr); err == nil {
					t.Errorf("tampered %s still verifies", tc.what)
				}
			}
			other, _ := rsa.GenerateKey(rand.Reader, 2048)
			if err := verifyV4(t, &other.PublicKey, "PUT", "lethe-uploads-test", object, u, hdr); err == nil {
				t.Error("verifies under another key")
			}
		})
	}

	signer := signers["PrivateKey"]
	bad := []struct {
		name    string
		key     string
		ctype   string
		max     int64
		expires time.Duration
		signer  gcsblobs.Signer
		want    error
	}{
		{"expiry over 7 days", object, ctype, maxBytes, 7*24*time.Hour + time.Second, signer, nil},
		{"zero expiry", object, ctype, maxBytes, 0, signer, nil},
		{"negative expiry", object, ctype, maxBytes, -time.Minute, signer, nil},
		{"zero max", object, ctype, 0, time.Minute, signer, nil},
		{"no content type", object, "", maxBytes, time.Minute, signer, nil},
		{"header injection", object, "audio/wav\r\nx-goog-acl: public-read", maxBytes, time.Minute, signer, nil},
		{"traversal", "../x", ctype, maxBytes, time.Minute, signer, blobs.ErrInvalidKey},
		{"no access id", object, ctype, maxBytes, time.Minute, gcsblobs.Signer{PrivateKey: pemKey}, nil},
		{"no key", object, ctype, maxBytes, time.Minute, gcsblobs.Signer{GoogleAccessID: testAccessID}, nil},
		{"both keys", object, ctype, maxBytes, time.Minute, gcsblobs.Signer{GoogleAccessID: testAccessID, PrivateKey: pemKey, SignBytes: signBlob}, nil},
	}
	for _, tc := range bad {
		u, _, err := b.SignedUploadURL(tc.key, tc.ctype, tc.max, tc.expires, tc.signer)
		if err == nil {
			t.Errorf("%s: accepted (%s)", tc.name, u)
		} else if tc.want != nil && !errors.Is(err, tc.want) {
			t.Errorf("%s: %v, want %v", tc.name, err, tc.want)
		}
	}
	// Exactly 7 days is the limit, and allowed.
	if _, _, err := b.SignedUploadURL(object, ctype, maxBytes, gcsblobs.MaxSignedURLExpiry, signer); err != nil {
		t.Errorf("7-day expiry refused: %v", err)
	}
}
