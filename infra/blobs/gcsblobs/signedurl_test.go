package gcsblobs_test

import (
	"bytes"
	"context"
	"crypto"
	"crypto/rand"
	"crypto/rsa"
	"crypto/sha256"
	"crypto/x509"
	"encoding/hex"
	"encoding/json"
	"encoding/pem"
	"errors"
	"io"
	"net/http"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"cloud.google.com/go/storage"
	"github.com/fsouza/fake-gcs-server/fakestorage"
	"google.golang.org/api/option"

	"github.com/lethe-dev/lethe/app/records"
	"github.com/lethe-dev/lethe/infra/blobs"
	"github.com/lethe-dev/lethe/infra/blobs/gcsblobs"
	"github.com/lethe-dev/lethe/infra/blobs/gcsblobs/fakegcs"
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

// serviceAccountJSON is a key file for testAccessID holding key, as the
// IAM console writes one (PKCS #8 PEM).
func serviceAccountJSON(t *testing.T, key *rsa.PrivateKey) []byte {
	t.Helper()
	der, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		t.Fatal(err)
	}
	b, err := json.Marshal(map[string]string{
		"type":           "service_account",
		"project_id":     "lethe-test",
		"private_key_id": "test-key",
		"private_key":    string(pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: der})),
		"client_email":   testAccessID,
		"client_id":      "1",
		"token_uri":      "https://oauth2.googleapis.com/token",
	})
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// putSigned does what the app does with a signed URL: one PUT with exactly
// the headers it was given. The request goes to the fake's listener but
// names Cloud Storage's host, which is the fake's public host.
func putSigned(t *testing.T, srv *fakestorage.Server, signedURL string, headers map[string]string, body []byte) *http.Response {
	t.Helper()
	pu, err := url.Parse(signedURL)
	if err != nil {
		t.Fatal(err)
	}
	req, err := http.NewRequestWithContext(t.Context(), http.MethodPut, srv.URL()+pu.RequestURI(), bytes.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	req.Host = pu.Host
	for k, v := range headers {
		req.Header.Set(k, v)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	_, _ = io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	return resp
}

func TestUploadSigner(t *testing.T) {
	key, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		t.Fatal(err)
	}
	pemKey := pem.EncodeToMemory(&pem.Block{Type: "RSA PRIVATE KEY", Bytes: x509.MarshalPKCS1PrivateKey(key)})
	const (
		user  = "0123456789abcdef0123456789abcdef"
		cid   = "conv_1-x"
		seq   = 42
		ctype = "audio/wav"
		size  = int64(12345)
		ttl   = 10 * time.Minute
	)
	wantObject := "uploads/" + user + "/" + cid + "/0000042"

	// Offline clients: one without credentials (explicit key), one with a
	// service-account key file (the zero Signer finds the key in it).
	bare, err := storage.NewClient(t.Context(), option.WithoutAuthentication())
	if err != nil {
		t.Fatal(err)
	}
	defer bare.Close()
	keyed, err := storage.NewClient(t.Context(), option.WithAuthCredentialsJSON(option.ServiceAccount, serviceAccountJSON(t, key)))
	if err != nil {
		t.Fatal(err)
	}
	defer keyed.Close()
	bucket := fakegcs.BucketName(t)

	signers := []struct {
		name string
		us   gcsblobs.UploadSigner
	}{
		{"explicit key", gcsblobs.UploadSigner{Bucket: gcsblobs.New(bare, bucket), Signer: gcsblobs.Signer{GoogleAccessID: testAccessID, PrivateKey: pemKey}}},
		{"client credentials", gcsblobs.UploadSigner{Bucket: gcsblobs.New(keyed, bucket)}},
	}
	for _, tc := range signers {
		t.Run(tc.name, func(t *testing.T) {
			u, hdr, err := tc.us.SignUpload(t.Context(), user, cid, seq, ctype, size, ttl)
			if err != nil {
				t.Fatal(err)
			}
			pu, err := url.Parse(u)
			if err != nil {
				t.Fatal(err)
			}
			q := pu.Query()
			if pu.Scheme != "https" || pu.Host != "storage.googleapis.com" || pu.Path != "/"+bucket+"/"+wantObject {
				t.Errorf("URL %s://%s%s, want https://storage.googleapis.com/%s/%s", pu.Scheme, pu.Host, pu.Path, bucket, wantObject)
			}
			signed := strings.Split(q.Get("X-Goog-SignedHeaders"), ";")
			for _, h := range []string{"content-type", "host", "x-goog-content-length-range"} {
				if !slices.Contains(signed, h) {
					t.Errorf("signed headers %v lack %s", signed, h)
				}
			}
			if exp, _ := strconv.Atoi(q.Get("X-Goog-Expires")); exp < 599 || exp > 600 {
				t.Errorf("X-Goog-Expires = %q, want 600", q.Get("X-Goog-Expires"))
			}
			if !strings.HasPrefix(q.Get("X-Goog-Credential"), testAccessID+"/") {
				t.Errorf("credential %q is not the service account's", q.Get("X-Goog-Credential"))
			}
			if hdr["Content-Type"] != ctype || hdr["x-goog-content-length-range"] != "0,12345" || len(hdr) != 2 {
				t.Errorf("headers = %v", hdr)
			}
			if err := verifyV4(t, &key.PublicKey, "PUT", bucket, wantObject, u, hdr); err != nil {
				t.Fatalf("signature does not verify: %v", err)
			}
			larger := map[string]string{"Content-Type": ctype, "x-goog-content-length-range": "0,12346"}
			if err := verifyV4(t, &key.PublicKey, "PUT", bucket, wantObject, u, larger); err == nil {
				t.Error("a larger length range still verifies")
			}
			other := "uploads/fedcba9876543210fedcba9876543210/" + cid + "/0000042"
			if err := verifyV4(t, &key.PublicKey, "PUT", bucket, other, u, hdr); err == nil {
				t.Error("verifies for another user's object")
			}
		})
	}

	good := signers[0].us
	bad := []struct {
		name     string
		us       gcsblobs.UploadSigner
		user     string
		cid      string
		seq      int
		ctype    string
		maxBytes int64
		ttl      time.Duration
		want     error
	}{
		{"short user hash", good, user[:31], cid, seq, ctype, size, ttl, blobs.ErrInvalidKey},
		{"upper-case user hash", good, strings.ToUpper(user), cid, seq, ctype, size, ttl, blobs.ErrInvalidKey},
		{"raw uid", good, "alice", cid, seq, ctype, size, ttl, blobs.ErrInvalidKey},
		{"cid with slash", good, user, "a/b", seq, ctype, size, ttl, blobs.ErrInvalidKey},
		{"cid with dot", good, user, "..", seq, ctype, size, ttl, blobs.ErrInvalidKey},
		{"empty cid", good, user, "", seq, ctype, size, ttl, blobs.ErrInvalidKey},
		{"cid too long", good, user, strings.Repeat("a", 65), seq, ctype, size, ttl, blobs.ErrInvalidKey},
		{"negative seq", good, user, cid, -1, ctype, size, ttl, blobs.ErrInvalidKey},
		{"seq too large", good, user, cid, 1_000_001, ctype, size, ttl, blobs.ErrInvalidKey},
		{"empty content type", good, user, cid, seq, "", size, ttl, nil},
		{"header injection", good, user, cid, seq, "audio/wav\r\nx-goog-acl: public-read", size, ttl, nil},
		{"zero size", good, user, cid, seq, ctype, 0, ttl, nil},
		{"negative size", good, user, cid, seq, ctype, -1, ttl, nil},
		{"zero ttl", good, user, cid, seq, ctype, size, 0, nil},
		{"ttl under a second", good, user, cid, seq, ctype, size, 500 * time.Millisecond, nil},
		{"ttl over 7 days", good, user, cid, seq, ctype, size, gcsblobs.MaxSignedURLExpiry + time.Second, nil},
		{"no bucket", gcsblobs.UploadSigner{Signer: good.Signer}, user, cid, seq, ctype, size, ttl, nil},
		{"partial signer", gcsblobs.UploadSigner{Bucket: good.Bucket, Signer: gcsblobs.Signer{GoogleAccessID: testAccessID}}, user, cid, seq, ctype, size, ttl, nil},
	}
	for _, tc := range bad {
		t.Run("bad/"+tc.name, func(t *testing.T) {
			u, _, err := tc.us.SignUpload(t.Context(), tc.user, tc.cid, tc.seq, tc.ctype, tc.maxBytes, tc.ttl)
			if err == nil {
				t.Fatalf("accepted: %s", u)
			}
			if tc.want != nil && !errors.Is(err, tc.want) {
				t.Fatalf("%v, want %v", err, tc.want)
			}
		})
	}
	t.Run("bad/canceled context", func(t *testing.T) {
		ctx, cancel := context.WithCancel(t.Context())
		cancel()
		if _, _, err := good.SignUpload(ctx, user, cid, seq, ctype, size, ttl); !errors.Is(err, context.Canceled) {
			t.Fatalf("err = %v, want context.Canceled", err)
		}
	})
	// The edges of the layout are allowed.
	for _, s := range []int{0, 1_000_000} {
		if _, _, err := good.SignUpload(t.Context(), user, cid, s, ctype, size, ttl); err != nil {
			t.Errorf("seq %d refused: %v", s, err)
		}
	}
}

// TestUploadSignerPutToFake: the URL, PUT with its headers, stores the
// object under the upload layout with the declared content type. The fake
// does not check signatures (TestUploadSigner does); this proves the URL's
// path, query and headers are what a bucket takes as a signed upload.
func TestUploadSignerPutToFake(t *testing.T) {
	srv := fakegcs.Start(t)
	name := fakegcs.BucketName(t)
	srv.CreateBucketWithOpts(fakestorage.CreateBucketOpts{Name: name, VersioningEnabled: true})
	b, err := gcsblobs.OpenDriver(t.Context(), gcsblobs.Config{Bucket: name, Endpoint: srv.URL()})
	if err != nil {
		t.Fatal(err)
	}
	defer b.Close()
	key, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		t.Fatal(err)
	}
	us := gcsblobs.UploadSigner{Bucket: b, Signer: gcsblobs.Signer{
		GoogleAccessID: testAccessID,
		PrivateKey:     pem.EncodeToMemory(&pem.Block{Type: "RSA PRIVATE KEY", Bytes: x509.MarshalPKCS1PrivateKey(key)}),
	}}
	const user = "00112233445566778899aabbccddeeff"
	body := bytes.Repeat([]byte("RIFF-ish audio "), 100)
	u, hdr, err := us.SignUpload(t.Context(), user, "c1", 7, "audio/wav", int64(len(body)), time.Minute)
	if err != nil {
		t.Fatal(err)
	}
	// Even on a bucket opened against the fake, the URL names Cloud Storage.
	if pu, _ := url.Parse(u); pu.Host != "storage.googleapis.com" {
		t.Fatalf("URL host %q, want storage.googleapis.com", pu.Host)
	}
	if resp := putSigned(t, srv, u, hdr, body); resp.StatusCode != http.StatusOK {
		t.Fatalf("PUT: %d", resp.StatusCode)
	}
	obj, err := srv.GetObject(name, "uploads/"+user+"/c1/0000007")
	if err != nil {
		t.Fatalf("object not under the upload layout: %v", err)
	}
	if obj.ContentType != "audio/wav" || !bytes.Equal(obj.Content, body) {
		t.Fatalf("stored %q (%d bytes), want audio/wav (%d bytes)", obj.ContentType, len(obj.Content), len(body))
	}
	gotUser, gotCID, gotSeq, err := records.ParseUploadKey(obj.Name)
	if err != nil || gotUser != user || gotCID != "c1" || gotSeq != 7 {
		t.Fatalf("ParseUploadKey(%q) = %s %s %d %v", obj.Name, gotUser, gotCID, gotSeq, err)
	}
}
