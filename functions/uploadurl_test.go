package functions_test

import (
	"bytes"
	"context"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"encoding/json"
	"encoding/pem"
	"errors"
	"io"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/fsouza/fake-gcs-server/fakestorage"

	"github.com/lethe-dev/lethe/app/ingest"
	"github.com/lethe-dev/lethe/app/records"
	"github.com/lethe-dev/lethe/functions"
	"github.com/lethe-dev/lethe/infra/blobs/gcsblobs"
	"github.com/lethe-dev/lethe/infra/blobs/gcsblobs/fakegcs"
	"github.com/lethe-dev/lethe/infra/docs"
	"github.com/lethe-dev/lethe/infra/ratelimit"
)

// uploadBucket is an in-process fake-gcs-server with one bucket, and the
// real signer over it with a key made for the test.
type uploadBucket struct {
	srv    *fakestorage.Server
	name   string
	signer gcsblobs.UploadSigner
}

func newUploadBucket(t *testing.T) *uploadBucket {
	t.Helper()
	srv := fakegcs.Start(t)
	name := fakegcs.BucketName(t)
	srv.CreateBucketWithOpts(fakestorage.CreateBucketOpts{Name: name, VersioningEnabled: true})
	b, err := gcsblobs.OpenDriver(t.Context(), gcsblobs.Config{Bucket: name, Endpoint: srv.URL()})
	must(t, err)
	t.Cleanup(func() { b.Close() })
	key, err := rsa.GenerateKey(rand.Reader, 2048)
	must(t, err)
	return &uploadBucket{srv: srv, name: name, signer: gcsblobs.UploadSigner{Bucket: b, Signer: gcsblobs.Signer{
		GoogleAccessID: "edge@lethe-test.iam.gserviceaccount.com",
		PrivateKey:     pem.EncodeToMemory(&pem.Block{Type: "RSA PRIVATE KEY", Bytes: x509.MarshalPKCS1PrivateKey(key)}),
	}}}
}

// put does what the app does with the reply: one PUT with exactly its
// headers. The request reaches the fake's listener but names Cloud
// Storage's host, which the fake serves signed URLs on.
func (u *uploadBucket) put(t *testing.T, signedURL string, headers map[string]any, body []byte) int {
	t.Helper()
	pu, err := url.Parse(signedURL)
	must(t, err)
	req, err := http.NewRequestWithContext(t.Context(), http.MethodPut, u.srv.URL()+pu.RequestURI(), bytes.NewReader(body))
	must(t, err)
	req.Host = pu.Host
	for k, v := range headers {
		req.Header.Set(k, v.(string))
	}
	resp, err := http.DefaultClient.Do(req)
	must(t, err)
	_, _ = io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	return resp.StatusCode
}

// signCall is one call the recording signer saw.
type signCall struct {
	user, cid, ctype string
	seq              int
	maxBytes         int64
	ttl              time.Duration
}

// recordingSigner records each call, then delegates to next (the real
// signer) or fails with fail.
type recordingSigner struct {
	next functions.UploadSigner
	fail error

	mu    sync.Mutex
	calls []signCall
}

func (r *recordingSigner) SignUpload(ctx context.Context, userHash, cid string, seq int, contentType string, maxBytes int64, ttl time.Duration) (string, map[string]string, error) {
	r.mu.Lock()
	r.calls = append(r.calls, signCall{userHash, cid, contentType, seq, maxBytes, ttl})
	r.mu.Unlock()
	if r.fail != nil {
		return "", nil, r.fail
	}
	return r.next.SignUpload(ctx, userHash, cid, seq, contentType, maxBytes, ttl)
}

func (r *recordingSigner) seen() []signCall {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]signCall(nil), r.calls...)
}

// newUploadEdge is newEdge with signed uploads configured.
func newUploadEdge(t *testing.T, o edgeOptions) *edge {
	t.Helper()
	if o.maxChunk == 0 {
		o.maxChunk = 1 << 20
	}
	return newEdgeWith(t, o)
}

// post sends body to path; chunked hides the length, so only the body
// limit itself can refuse it.
func (e *edge) post(path, token string, body []byte, chunked bool) reply {
	e.t.Helper()
	var r io.Reader = bytes.NewReader(body)
	if chunked {
		r = io.MultiReader(r) // not a type NewRequest can measure
	}
	req, err := http.NewRequest(http.MethodPost, e.url+path, r)
	must(e.t, err)
	if chunked {
		req.ContentLength = -1
	}
	req.Header.Set("Content-Type", "application/json")
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	return e.send(req)
}

func uploadPath(cid, seq string) string {
	return "/v1/conversations/" + cid + "/chunks/" + seq + "/upload-url"
}

// uploadBody declares a recording of a minute.
func uploadBody(ctype string, size int64) []byte {
	return uploadBodyFor(ctype, size, time.Minute.Milliseconds())
}

func uploadBodyFor(ctype string, size, durationMS int64) []byte {
	b, _ := json.Marshal(map[string]any{"content_type": ctype, "size": size, "duration_ms": durationMS})
	return b
}

// TestUploadURLPutLandsInBucket: the happy path with the real signer over
// fake-gcs-server. The URL names the caller's keyed hash, the audio PUT
// to it lands under the upload layout, and nothing is stored or logged
// at the edge.
func TestUploadURLPutLandsInBucket(t *testing.T) {
	ub := newUploadBucket(t)
	rec := &recordingSigner{next: ub.signer}
	const ttl = 10 * time.Minute
	e := newUploadEdge(t, edgeOptions{uploads: rec, maxUpload: 8 << 20, ttl: ttl})
	const uid = "alice-raw-uid"
	user := e.pseudo.User(uid)
	wav := tone(440, 500)
	size := int64(len(wav))

	before := time.Now().UTC().Truncate(time.Second)
	r := e.post(uploadPath("c1", "5"), e.token(uid), uploadBody("audio/wav", size), false)
	if r.status != http.StatusOK {
		t.Fatalf("status %d %v", r.status, r.body)
	}
	u, _ := r.body["url"].(string)
	hdr, _ := r.body["headers"].(map[string]any)
	if r.body["method"] != "PUT" || r.body["conversation_id"] != "c1" || r.body["seq"] != float64(5) || r.body["max_bytes"] != float64(size) {
		t.Fatalf("reply %v", r.body)
	}
	exp, err := time.Parse(time.RFC3339, r.body["expires_at"].(string))
	if err != nil || exp.Before(before.Add(ttl)) || exp.After(time.Now().Add(ttl)) {
		t.Fatalf("expires_at %v (%v), want about now+%v", r.body["expires_at"], err, ttl)
	}
	pu, err := url.Parse(u)
	must(t, err)
	object := "uploads/" + user + "/c1/0000005"
	if pu.Path != "/"+ub.name+"/"+object {
		t.Fatalf("URL path %q, want /%s/%s", pu.Path, ub.name, object)
	}
	if strings.Contains(u, uid) {
		t.Fatal("the URL carries the raw uid")
	}
	if hdr["Content-Type"] != "audio/wav" || hdr["x-goog-content-length-range"] != "0,"+strconv.FormatInt(size, 10) {
		t.Fatalf("headers %v, want the content type and 0..size", hdr)
	}
	if !strings.Contains(pu.Query().Get("X-Goog-SignedHeaders"), "x-goog-content-length-range") {
		t.Fatalf("length range not signed: %q", pu.Query().Get("X-Goog-SignedHeaders"))
	}
	// The signer got the declared size as the bound, not MaxUploadBytes.
	calls := rec.seen()
	want := signCall{user: user, cid: "c1", ctype: "audio/wav", seq: 5, maxBytes: size, ttl: ttl}
	if len(calls) != 1 || calls[0] != want {
		t.Fatalf("signer calls %+v, want [%+v]", calls, want)
	}

	if st := ub.put(t, u, hdr, wav); st != http.StatusOK {
		t.Fatalf("PUT to the signed URL: %d", st)
	}
	obj, err := ub.srv.GetObject(ub.name, object)
	if err != nil {
		t.Fatalf("upload not under %s: %v", object, err)
	}
	if obj.ContentType != "audio/wav" || !bytes.Equal(obj.Content, wav) {
		t.Fatalf("stored %q, %d bytes; want audio/wav, %d bytes", obj.ContentType, len(obj.Content), len(wav))
	}
	if gotUser, gotCID, gotSeq, err := records.ParseUploadKey(obj.Name); err != nil || gotUser != user || gotCID != "c1" || gotSeq != 5 {
		t.Fatalf("ParseUploadKey = %s %s %d %v", gotUser, gotCID, gotSeq, err)
	}

	// Issuing a URL stores and announces nothing: the finalize
	// notification does that.
	if n := len(e.bus.published()); n != 0 {
		t.Fatalf("%d events published", n)
	}
	found, err := e.docs.Query(t.Context(), docs.Query{AllUsers: true, Collection: records.Chunks})
	must(t, err)
	if len(found) != 0 {
		t.Fatalf("%d chunk records", len(found))
	}
	// The URL is a bearer credential: not in the logs, nor its signature.
	logs := e.logs.String()
	if sig := pu.Query().Get("X-Goog-Signature"); sig == "" || strings.Contains(logs, sig) || strings.Contains(logs, uid) {
		t.Fatal("the signed URL or the raw uid reached the logs")
	}
}

func TestUploadURLRejects(t *testing.T) {
	ub := newUploadBucket(t)
	rec := &recordingSigner{next: ub.signer}
	const maxUpload = 1 << 20
	e := newUploadEdge(t, edgeOptions{uploads: rec, maxUpload: maxUpload, ttl: 5 * time.Minute})
	tok := e.token("alice")
	wav := tone(440, 200)
	if r := e.do("PUT", "/v1/conversations/done/chunks/3", tok, "audio/wav", wav); r.status != http.StatusAccepted {
		t.Fatalf("PUT chunk: %d %v", r.status, r.body)
	}
	tombTok := e.token("erased-user")
	must(t, e.docs.Put(t.Context(), docs.Doc{Key: records.TombstoneKey(e.pseudo.User("erased-user")), Data: []byte(`{}`)}))

	ok := uploadBody("audio/wav", 1000)
	path := uploadPath("c1", "0")
	tests := []struct {
		name    string
		path    string
		token   string
		body    []byte
		chunked bool
		status  int
		code    string
	}{
		{"no token", path, "", ok, false, 401, "unauthenticated"},
		{"malformed JSON", path, tok, []byte(`{"content_type":"audio/wav","size":`), false, 400, "bad_json"},
		{"not JSON", path, tok, []byte(`content_type=audio/wav&size=1000`), false, 400, "bad_json"},
		{"empty body", path, tok, nil, false, 400, "bad_json"},
		{"null", path, tok, []byte(`null`), false, 400, "invalid_body"},
		{"array", path, tok, []byte(`[{"content_type":"audio/wav","size":1000}]`), false, 400, "invalid_body"},
		{"unknown field", path, tok, []byte(`{"content_type":"audio/wav","size":1000,"bucket":"other"}`), false, 400, "invalid_body"},
		{"trailing object", path, tok, []byte(`{"content_type":"audio/wav","size":1000}{"size":1}`), false, 400, "bad_json"},
		{"trailing garbage", path, tok, []byte(`{"content_type":"audio/wav","size":1000} x`), false, 400, "bad_json"},
		{"oversized body", path, tok, append(ok[:len(ok)-1:len(ok)-1], []byte(strings.Repeat(" ", 5000)+"}")...), false, 413, "too_large"},
		{"oversized chunked body", path, tok, append(ok[:len(ok)-1:len(ok)-1], []byte(strings.Repeat(" ", 5000)+"}")...), true, 413, "too_large"},
		{"size as string", path, tok, []byte(`{"content_type":"audio/wav","size":"1000"}`), false, 400, "invalid_body"},
		{"fractional size", path, tok, []byte(`{"content_type":"audio/wav","size":10.5}`), false, 400, "invalid_body"},
		{"mp3", path, tok, uploadBody("audio/mpeg", 1000), false, 415, "unsupported_media_type"},
		{"json type", path, tok, uploadBody("application/json", 1000), false, 415, "unsupported_media_type"},
		{"no content type", path, tok, []byte(`{"size":1000}`), false, 415, "unsupported_media_type"},
		{"header injection", path, tok, uploadBody("audio/wav\r\nx-goog-acl: public-read", 1000), false, 415, "unsupported_media_type"},
		{"overlong content type", path, tok, uploadBody("audio/wav; x="+strings.Repeat("a", 300), 1000), false, 415, "unsupported_media_type"},
		{"missing size", path, tok, []byte(`{"content_type":"audio/wav"}`), false, 400, "invalid_size"},
		{"zero size", path, tok, uploadBody("audio/wav", 0), false, 400, "invalid_size"},
		{"negative size", path, tok, uploadBody("audio/wav", -1), false, 400, "invalid_size"},
		{"size over the limit", path, tok, uploadBody("audio/wav", maxUpload+1), false, 413, "too_large"},
		{"missing duration", path, tok, []byte(`{"content_type":"audio/wav","size":1000}`), false, 400, "invalid_duration"},
		{"zero duration", path, tok, uploadBodyFor("audio/wav", 1000, 0), false, 400, "invalid_duration"},
		{"negative duration", path, tok, uploadBodyFor("audio/wav", 1000, -5), false, 400, "invalid_duration"},
		{"duration as string", path, tok, []byte(`{"content_type":"audio/wav","size":1000,"duration_ms":"60000"}`), false, 400, "invalid_body"},
		{"an hour of Opus", path, tok, uploadBodyFor("audio/ogg; codecs=opus", maxUpload/2, time.Hour.Milliseconds()), false, 413, "too_long"},
		{"just past the longest", path, tok, uploadBodyFor("audio/wav", 1000, ingest.MaxDuration.Milliseconds()+1), false, 413, "too_long"},
		{"invalid cid", uploadPath("a.b", "0"), tok, ok, false, 400, "invalid_conversation_id"},
		{"cid too long", uploadPath(strings.Repeat("a", 65), "0"), tok, ok, false, 400, "invalid_conversation_id"},
		{"seq leading zero", uploadPath("c1", "01"), tok, ok, false, 400, "invalid_seq"},
		{"negative seq", uploadPath("c1", "-1"), tok, ok, false, 400, "invalid_seq"},
		{"seq too large", uploadPath("c1", "1000001"), tok, ok, false, 400, "invalid_seq"},
		{"seq not a number", uploadPath("c1", "x"), tok, ok, false, 400, "invalid_seq"},
		{"seq already accepted", uploadPath("done", "3"), tok, ok, false, 409, "conflict"},
		{"tombstoned user", path, tombTok, ok, false, 410, "account_erased"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			r := e.post(tc.path, tc.token, tc.body, tc.chunked)
			if r.status != tc.status || errCode(r) != tc.code {
				t.Fatalf("status %d code %q (%v), want %d %q", r.status, errCode(r), r.body, tc.status, tc.code)
			}
		})
	}
	if calls := rec.seen(); len(calls) != 0 {
		t.Fatalf("a refused request reached the signer: %+v", calls)
	}
	// The edges of the ranges are accepted.
	for _, p := range []string{uploadPath("c1", "0"), uploadPath("c1", "1000000"), uploadPath(strings.Repeat("a", 64), "1")} {
		if r := e.post(p, tok, uploadBodyFor("audio/ogg; codecs=opus", maxUpload, ingest.MaxDuration.Milliseconds()), false); r.status != http.StatusOK {
			t.Errorf("POST %s: %d %v", p, r.status, r.body)
		}
	}
	if n := len(rec.seen()); n != 3 {
		t.Fatalf("%d signer calls, want 3", n)
	}
	if n := len(e.bus.published()); n != 1 {
		t.Fatalf("%d events, want only the PUT chunk's", n)
	}
}

// TestUploadURLCrossUser: bob may use the cid and seq alice already used;
// his URL names his hash, and alice's record is untouched.
func TestUploadURLCrossUser(t *testing.T) {
	ub := newUploadBucket(t)
	e := newUploadEdge(t, edgeOptions{uploads: ub.signer, maxUpload: 1 << 20, ttl: time.Minute})
	alice, bob := e.token("alice"), e.token("bob")
	if r := e.do("PUT", "/v1/conversations/shared/chunks/0", alice, "audio/wav", tone(440, 200)); r.status != http.StatusAccepted {
		t.Fatalf("alice PUT: %d %v", r.status, r.body)
	}
	aliceKey := records.ChunkKey(e.pseudo.User("alice"), "shared", 0)
	before, err := e.docs.Get(t.Context(), aliceKey)
	must(t, err)

	// Alice herself is refused: her seq is taken.
	if r := e.post(uploadPath("shared", "0"), alice, uploadBody("audio/wav", 1000), false); r.status != http.StatusConflict {
		t.Fatalf("alice: %d, want 409", r.status)
	}
	r := e.post(uploadPath("shared", "0"), bob, uploadBody("audio/wav", 1000), false)
	if r.status != http.StatusOK {
		t.Fatalf("bob: %d %v", r.status, r.body)
	}
	u := r.body["url"].(string)
	if !strings.Contains(u, "/uploads/"+e.pseudo.User("bob")+"/shared/0000000?") || strings.Contains(u, e.pseudo.User("alice")) {
		t.Fatalf("bob's URL %s does not name bob's hash alone", u)
	}
	if st := ub.put(t, u, r.body["headers"].(map[string]any), tone(880, 200)); st != http.StatusOK {
		t.Fatalf("bob's PUT: %d", st)
	}
	if _, err := ub.srv.GetObject(ub.name, "uploads/"+e.pseudo.User("alice")+"/shared/0000000"); err == nil {
		t.Fatal("an object appeared under alice's upload name")
	}
	after, err := e.docs.Get(t.Context(), aliceKey)
	must(t, err)
	if !bytes.Equal(before.Data, after.Data) {
		t.Fatal("alice's chunk record changed")
	}
}

func TestUploadURLNotConfigured(t *testing.T) {
	e := newUploadEdge(t, edgeOptions{})
	tok := e.token("alice")
	for _, p := range []string{uploadPath("c1", "0"), uploadPath("a.b", "01")} {
		r := e.post(p, tok, uploadBody("audio/wav", 1000), false)
		if r.status != http.StatusNotImplemented || errCode(r) != "not_configured" {
			t.Fatalf("POST %s: %d %v, want 501 not_configured", p, r.status, r.body)
		}
		if msg := r.body["error"].(map[string]any)["message"]; msg != "signed uploads need Cloud Storage (LETHE_BLOBS=gcs)" {
			t.Fatalf("message %q", msg)
		}
	}
	// Authentication still comes first.
	if r := e.post(uploadPath("c1", "0"), "", uploadBody("audio/wav", 1000), false); r.status != http.StatusUnauthorized {
		t.Fatalf("no token: %d, want 401", r.status)
	}
}

// TestUploadURLSignerFailure: a signer that fails is a 503 that leaks
// nothing, whether the signing service is down or the real signer refuses
// its configuration (a lifetime over V4's 7 days).
func TestUploadURLSignerFailure(t *testing.T) {
	ub := newUploadBucket(t)
	tests := []struct {
		name    string
		uploads functions.UploadSigner
		ttl     time.Duration
	}{
		{"signBlob down", &recordingSigner{fail: errors.New("iamcredentials: connection refused")}, time.Minute},
		{"real signer, lifetime too long", ub.signer, 8 * 24 * time.Hour},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			e := newUploadEdge(t, edgeOptions{uploads: tc.uploads, ttl: tc.ttl})
			r := e.post(uploadPath("c1", "0"), e.token("alice"), uploadBody("audio/wav", 1000), false)
			if r.status != http.StatusServiceUnavailable || errCode(r) != "unavailable" {
				t.Fatalf("status %d %v, want 503", r.status, r.body)
			}
			if msg := r.body["error"].(map[string]any)["message"].(string); strings.Contains(msg, "iamcredentials") || strings.Contains(msg, "expiry") {
				t.Fatalf("reply leaks internals: %q", msg)
			}
		})
	}
}

// TestUploadURLDefaults: zero MaxUploadBytes and UploadURLTTL take the
// documented defaults.
func TestUploadURLDefaults(t *testing.T) {
	rec := &recordingSigner{next: newUploadBucket(t).signer}
	e := newUploadEdge(t, edgeOptions{uploads: rec})
	tok := e.token("alice")
	if r := e.post(uploadPath("c1", "0"), tok, uploadBody("audio/wav", functions.DefaultMaxUploadBytes+1), false); r.status != http.StatusRequestEntityTooLarge {
		t.Fatalf("over the default limit: %d", r.status)
	}
	if r := e.post(uploadPath("c1", "0"), tok, uploadBody("audio/wav", functions.DefaultMaxUploadBytes), false); r.status != http.StatusOK {
		t.Fatalf("at the default limit: %d %v", r.status, r.body)
	}
	if calls := rec.seen(); len(calls) != 1 || calls[0].ttl != functions.DefaultUploadURLTTL || calls[0].maxBytes != functions.DefaultMaxUploadBytes {
		t.Fatalf("signer calls %+v", calls)
	}
}

// TestUploadURLRateLimited: the route counts against the per-user limit
// like the chunk PUT.
func TestUploadURLRateLimited(t *testing.T) {
	e := newUploadEdge(t, edgeOptions{
		uploads: newUploadBucket(t).signer,
		limits:  functions.Limits{PerUser: ratelimit.Limit{Rate: 2, Burst: 2, Period: time.Hour}},
	})
	tok := e.token("alice")
	if r := e.do("PUT", "/v1/conversations/c1/chunks/0", tok, "audio/wav", tone(440, 200)); r.status != http.StatusAccepted {
		t.Fatalf("PUT chunk: %d", r.status)
	}
	if r := e.post(uploadPath("c1", "1"), tok, uploadBody("audio/wav", 1000), false); r.status != http.StatusOK {
		t.Fatalf("first upload-url: %d", r.status)
	}
	r := e.post(uploadPath("c1", "2"), tok, uploadBody("audio/wav", 1000), false)
	if r.status != http.StatusTooManyRequests || errCode(r) != "rate_limited" {
		t.Fatalf("third request: %d %v, want 429", r.status, r.body)
	}
	if r := e.post(uploadPath("c1", "2"), e.token("bob"), uploadBody("audio/wav", 1000), false); r.status != http.StatusOK {
		t.Fatalf("bob: %d", r.status)
	}
}
