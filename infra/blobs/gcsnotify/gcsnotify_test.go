package gcsnotify_test

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"hash/crc32"
	"io"
	"maps"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"cloud.google.com/go/pubsub/v2"
	"cloud.google.com/go/pubsub/v2/apiv1/pubsubpb"
	"cloud.google.com/go/pubsub/v2/pstest"
	"github.com/fsouza/fake-gcs-server/fakestorage"

	"github.com/lethe-dev/lethe/app/records"
	"github.com/lethe-dev/lethe/infra/blobs"
	"github.com/lethe-dev/lethe/infra/blobs/gcsblobs"
	"github.com/lethe-dev/lethe/infra/blobs/gcsblobs/fakegcs"
	"github.com/lethe-dev/lethe/infra/blobs/gcsnotify"
)

const testAccessID = "uploader@lethe-test.iam.gserviceaccount.com"

const (
	testBucket = "lethe-uploads"
	testUser   = "0123456789abcdef0123456789abcdef"
	testObject = "uploads/" + testUser + "/conv-1_a/0000042"
)

// validNotification is what Cloud Storage sends for a finalized upload
// (JSON_API_V1; int64 fields as strings), with the fields we ignore too.
func validNotification() (map[string]string, map[string]any) {
	attrs := map[string]string{
		"notificationConfig": "projects/_/buckets/" + testBucket + "/notificationConfigs/1",
		"eventType":          "OBJECT_FINALIZE",
		"payloadFormat":      "JSON_API_V1",
		"bucketId":           testBucket,
		"objectId":           testObject,
		"objectGeneration":   "1731234567890123",
		"eventTime":          "2026-11-23T10:00:00.000000Z",
	}
	body := map[string]any{
		"kind":           "storage#object",
		"id":             testBucket + "/" + testObject + "/1731234567890123",
		"selfLink":       "https://www.googleapis.com/storage/v1/b/x/o/y",
		"mediaLink":      "https://storage.googleapis.com/download/storage/v1/b/x/o/y?alt=media",
		"name":           testObject,
		"bucket":         testBucket,
		"generation":     "1731234567890123",
		"metageneration": "1",
		"contentType":    "audio/ogg; codecs=opus",
		"timeCreated":    "2026-11-23T10:00:00.000Z",
		"updated":        "2026-11-23T10:00:00.000Z",
		"storageClass":   "STANDARD",
		"size":           "123456",
		"md5Hash":        "1B2M2Y8AsgTpgAmY7PhCfg==",
		"crc32c":         "AAAAAA==",
		"etag":           "CJ3u",
		"metadata":       map[string]any{"sample_rate": "16000"},
	}
	return attrs, body
}

func TestParseFinalizeNotification(t *testing.T) {
	attrs, body := validNotification()
	data, _ := json.Marshal(body)
	n, err := gcsnotify.ParseFinalizeNotification(testBucket, attrs, data)
	if err != nil {
		t.Fatalf("valid notification: %v", err)
	}
	want := gcsnotify.FinalizeNotification{
		Bucket: testBucket, Object: testObject, Generation: 1731234567890123, Size: 123456,
		ContentType: "audio/ogg; codecs=opus", CRC32C: 0, Metadata: map[string]string{"sample_rate": "16000"},
		UserHash: testUser, ConversationID: "conv-1_a", Seq: 42,
	}
	if n.Bucket != want.Bucket || n.Object != want.Object || n.Generation != want.Generation || n.Size != want.Size ||
		n.ContentType != want.ContentType || n.CRC32C != want.CRC32C || !maps.Equal(n.Metadata, want.Metadata) ||
		n.UserHash != want.UserHash || n.ConversationID != want.ConversationID || n.Seq != want.Seq {
		t.Errorf("parsed %+v, want %+v", n, want)
	}

	type mut struct {
		name  string
		attr  func(map[string]string)
		body  func(map[string]any)
		raw   func([]byte) []byte
		bkt   string
		want  error
		quiet bool // the error must not echo the object name
	}
	obj := func(name string) func(map[string]string) {
		return func(a map[string]string) { a["objectId"] = name }
	}
	both := func(name string) (func(map[string]string), func(map[string]any)) {
		return obj(name), func(b map[string]any) { b["name"] = name }
	}
	layoutCases := map[string]string{
		"not under uploads":  "users/" + testUser + "/audio/conv/0000001",
		"upper-case hash":    "uploads/0123456789ABCDEF0123456789abcdef/c/0000001",
		"short hash":         "uploads/0123456789abcdef/c/0000001",
		"raw uid, not hash":  "uploads/firebase-uid-123/c/0000001",
		"traversal":          "uploads/" + testUser + "/../0000001",
		"bad cid char":       "uploads/" + testUser + "/c.d/0000001",
		"cid too long":       "uploads/" + testUser + "/" + strings.Repeat("c", 65) + "/0000001",
		"empty cid":          "uploads/" + testUser + "//0000001",
		"seq not padded":     "uploads/" + testUser + "/c/42",
		"seq too many digit": "uploads/" + testUser + "/c/00000042",
		"seq over max":       "uploads/" + testUser + "/c/1000001",
		"seq signed":         "uploads/" + testUser + "/c/+000042",
		"extra segment":      "uploads/" + testUser + "/c/0000001/x",
		"trailing slash":     "uploads/" + testUser + "/c/0000001/",
		"prefix only":        "uploads/",
	}
	var cases []mut
	for name, o := range layoutCases {
		a, b := both(o)
		cases = append(cases, mut{name: name, attr: a, body: b, want: gcsnotify.ErrInvalidNotification, quiet: true})
	}
	cases = append(cases, []mut{
		{name: "delete event", attr: func(a map[string]string) { a["eventType"] = "OBJECT_DELETE" }, want: gcsnotify.ErrNotFinalize},
		{name: "archive event", attr: func(a map[string]string) { a["eventType"] = "OBJECT_ARCHIVE" }, want: gcsnotify.ErrNotFinalize},
		{name: "metadata event", attr: func(a map[string]string) { a["eventType"] = "OBJECT_METADATA_UPDATE" }, want: gcsnotify.ErrNotFinalize},
		{name: "unknown event", attr: func(a map[string]string) { a["eventType"] = "OBJECT_FINALIZE " }, want: gcsnotify.ErrInvalidNotification},
		{name: "no event", attr: func(a map[string]string) { delete(a, "eventType") }, want: gcsnotify.ErrInvalidNotification},
		{name: "payload NONE", attr: func(a map[string]string) { a["payloadFormat"] = "NONE" }, want: gcsnotify.ErrInvalidNotification},
		{name: "other bucket attr", attr: func(a map[string]string) { a["bucketId"] = "evil" }, want: gcsnotify.ErrInvalidNotification},
		{name: "other bucket body", body: func(b map[string]any) { b["bucket"] = "evil" }, want: gcsnotify.ErrInvalidNotification},
		{name: "expected bucket empty", bkt: "-", want: gcsnotify.ErrInvalidNotification},
		{name: "name disagrees", body: func(b map[string]any) { b["name"] = "uploads/" + testUser + "/c/0000001" }, want: gcsnotify.ErrInvalidNotification},
		{name: "generation disagrees", body: func(b map[string]any) { b["generation"] = "1731234567890124" }, want: gcsnotify.ErrInvalidNotification},
		{name: "generation zero", attr: func(a map[string]string) { a["objectGeneration"] = "0" }, body: func(b map[string]any) { b["generation"] = "0" }, want: gcsnotify.ErrInvalidNotification},
		{name: "generation leading zero", attr: func(a map[string]string) { a["objectGeneration"] = "01731234567890123" }, want: gcsnotify.ErrInvalidNotification},
		{name: "generation as number", body: func(b map[string]any) { b["generation"] = 1731234567890123 }, want: gcsnotify.ErrInvalidNotification},
		{name: "generation overflow", attr: func(a map[string]string) { a["objectGeneration"] = "99999999999999999999" }, want: gcsnotify.ErrInvalidNotification},
		{name: "size zero", body: func(b map[string]any) { b["size"] = "0" }, want: gcsnotify.ErrInvalidNotification},
		{name: "size negative", body: func(b map[string]any) { b["size"] = "-1" }, want: gcsnotify.ErrInvalidNotification},
		{name: "size missing", body: func(b map[string]any) { delete(b, "size") }, want: gcsnotify.ErrInvalidNotification},
		{name: "size as number", body: func(b map[string]any) { b["size"] = 123456 }, want: gcsnotify.ErrInvalidNotification},
		{name: "no content type", body: func(b map[string]any) { delete(b, "contentType") }, want: gcsnotify.ErrInvalidNotification},
		{name: "bad content type", body: func(b map[string]any) { b["contentType"] = "audio/ogg; codecs" }, want: gcsnotify.ErrInvalidNotification},
		{name: "crc missing", body: func(b map[string]any) { delete(b, "crc32c") }, want: gcsnotify.ErrInvalidNotification},
		{name: "crc wrong length", body: func(b map[string]any) { b["crc32c"] = "AAAAAAA=" }, want: gcsnotify.ErrInvalidNotification},
		{name: "crc not base64", body: func(b map[string]any) { b["crc32c"] = "!!!!!!==" }, want: gcsnotify.ErrInvalidNotification},
		{name: "md5 wrong length", body: func(b map[string]any) { b["md5Hash"] = "AAAAAA==" }, want: gcsnotify.ErrInvalidNotification},
		{name: "md5 absent (composite)", body: func(b map[string]any) { delete(b, "md5Hash") }},
		{name: "no metadata", body: func(b map[string]any) { delete(b, "metadata") }},
		{name: "metadata not strings", body: func(b map[string]any) { b["metadata"] = map[string]any{"k": 1} }, want: gcsnotify.ErrInvalidNotification},
		{name: "metadata too big", body: func(b map[string]any) { b["metadata"] = map[string]any{"k": strings.Repeat("v", 9000)} }, want: gcsnotify.ErrInvalidNotification},
		{name: "wrong kind", body: func(b map[string]any) { b["kind"] = "storage#bucket" }, want: gcsnotify.ErrInvalidNotification},
		{name: "not JSON", raw: func([]byte) []byte { return []byte("not json") }, want: gcsnotify.ErrInvalidNotification},
		{name: "empty body", raw: func([]byte) []byte { return nil }, want: gcsnotify.ErrInvalidNotification},
		{name: "JSON array", raw: func([]byte) []byte { return []byte("[]") }, want: gcsnotify.ErrInvalidNotification},
		{name: "trailing data", raw: func(d []byte) []byte { return append(d, []byte(`{"x":1}`)...) }, want: gcsnotify.ErrInvalidNotification},
		{name: "huge body", raw: func(d []byte) []byte { return append(d, bytes.Repeat([]byte(" "), 64<<10)...) }, want: gcsnotify.ErrInvalidNotification},
	}...)
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			a, b := validNotification()
			if tc.attr != nil {
				tc.attr(a)
			}
			if tc.body != nil {
				tc.body(b)
			}
			d, _ := json.Marshal(b)
			if tc.raw != nil {
				d = tc.raw(d)
			}
			bkt := testBucket
			if tc.bkt == "-" {
				bkt = ""
			}
			_, err := gcsnotify.ParseFinalizeNotification(bkt, a, d)
			switch {
			case tc.want == nil && err != nil:
				t.Errorf("refused: %v", err)
			case tc.want != nil && !errors.Is(err, tc.want):
				t.Errorf("= %v, want %v", err, tc.want)
			}
			if err != nil && tc.quiet && (strings.Contains(err.Error(), a["objectId"]) && a["objectId"] != "") {
				t.Errorf("error quotes the object name: %v", err)
			}
		})
	}
}

func TestUploadKeyLayout(t *testing.T) {
	for _, seq := range []int{0, 1, 42, records.MaxSeq} {
		k, err := records.UploadKey(testUser, "c_1-x", seq)
		if err != nil {
			t.Fatal(err)
		}
		u, c, s, err := records.ParseUploadKey(k)
		if err != nil || u != testUser || c != "c_1-x" || s != seq {
			t.Errorf("ParseUploadKey(%q) = %q %q %d %v", k, u, c, s, err)
		}
	}
	if k, _ := records.UploadKey(testUser, "c", 7); k != "uploads/"+testUser+"/c/0000007" {
		t.Errorf("UploadKey = %q", k)
	}
	// The layout's rules are the edge's: they must agree with records.
	for _, cid := range []string{"a", "A-Z_0-9", strings.Repeat("x", 64), strings.Repeat("x", 65), "", "a.b", "a/b", "é", "a b", "a#1"} {
		_, err := records.UploadKey(testUser, cid, 1)
		if (err == nil) != records.ValidConversationID(cid) {
			t.Errorf("UploadKey accepts cid %q = %v, records says %v", cid, err == nil, records.ValidConversationID(cid))
		}
	}
	for _, seq := range []int{-1, records.MaxSeq + 1} {
		if _, err := records.UploadKey(testUser, "c", seq); !errors.Is(err, blobs.ErrInvalidKey) {
			t.Errorf("UploadKey(seq %d) = %v, want ErrInvalidKey", seq, err)
		}
	}
	for _, u := range []string{"", "0123", strings.ToUpper(testUser), testUser + "0", "g123456789abcdef0123456789abcdef"} {
		if _, err := records.UploadKey(u, "c", 1); !errors.Is(err, blobs.ErrInvalidKey) {
			t.Errorf("UploadKey(user %q) = %v, want ErrInvalidKey", u, err)
		}
	}
}

func FuzzParseFinalizeNotification(f *testing.F) {
	attrs, body := validNotification()
	data, _ := json.Marshal(body)
	f.Add(attrs["objectId"], attrs["objectGeneration"], data)
	f.Add("uploads/"+testUser+"/c/1000000", "1", []byte(`{"kind":"storage#object","name":"uploads/`+testUser+`/c/1000000","bucket":"lethe-uploads","generation":"1","size":"1","contentType":"audio/wav","crc32c":"AAAAAA=="}`))
	f.Add("uploads/../x", "1", []byte(`{}`))
	f.Fuzz(func(t *testing.T, objectID, gen string, data []byte) {
		a, _ := validNotification()
		a["objectId"], a["objectGeneration"] = objectID, gen
		n, err := gcsnotify.ParseFinalizeNotification(testBucket, a, data)
		if err != nil {
			if !errors.Is(err, gcsnotify.ErrInvalidNotification) {
				t.Fatalf("error outside the sentinels: %v", err)
			}
			return
		}
		// Whatever is accepted is an upload of the layout, whole.
		k, kerr := records.UploadKey(n.UserHash, n.ConversationID, n.Seq)
		if kerr != nil || k != n.Object || n.Object != objectID {
			t.Fatalf("accepted object %q, layout says %q (%v)", n.Object, k, kerr)
		}
		if n.Generation <= 0 || n.Size <= 0 || n.Bucket != testBucket || fmt.Sprint(n.Generation) != gen {
			t.Fatalf("accepted %+v", n)
		}
		if !records.ValidConversationID(n.ConversationID) || n.Seq < 0 || n.Seq > records.MaxSeq {
			t.Fatalf("accepted conversation %q seq %d", n.ConversationID, n.Seq)
		}
	})
}

// TestSignedUploadNotifiesPipeline runs the large-recording path through
// the fakes: the app PUTs to the signed URL with the headers it was given,
// the bucket's finalize notification goes to Pub/Sub (pstest, which the
// fake reaches through PUBSUB_EMULATOR_HOST), and the parsed notification
// names exactly the generation uploaded, whose bytes the adapter reads
// and then purges. The fake does not verify the signature or enforce the
// length range (TestSignedUploadURL checks the signature against the V4
// spec); what this test proves is the shape of the hand-off.
func TestSignedUploadNotifiesPipeline(t *testing.T) {
	ps := pstest.NewServer()
	t.Cleanup(func() { ps.Close() })
	t.Setenv("PUBSUB_EMULATOR_HOST", ps.Addr)
	ctx, cancel := context.WithTimeout(t.Context(), 30*time.Second)
	defer cancel()
	const project, topic, sub = "lethe-test", "gcs-uploads", "gcs-uploads-pipeline"
	psc, err := pubsub.NewClient(ctx, project)
	if err != nil {
		t.Fatal(err)
	}
	defer psc.Close()
	if _, err := psc.TopicAdminClient.CreateTopic(ctx, &pubsubpb.Topic{Name: "projects/" + project + "/topics/" + topic}); err != nil {
		t.Fatal(err)
	}
	if _, err := psc.SubscriptionAdminClient.CreateSubscription(ctx, &pubsubpb.Subscription{
		Name: "projects/" + project + "/subscriptions/" + sub, Topic: "projects/" + project + "/topics/" + topic,
	}); err != nil {
		t.Fatal(err)
	}

	name := fakegcs.BucketName(t)
	srv, err := fakestorage.NewServerWithOptions(fakestorage.Options{
		Scheme: "http", Host: "127.0.0.1",
		EventOptions: fakestorage.EventManagerOptions{
			ProjectID: project, TopicName: topic, Bucket: name, ObjectPrefix: records.UploadsPrefix,
			NotifyOn: fakestorage.EventNotificationOptions{Finalize: true},
		},
	})
	if err != nil {
		t.Fatal(err)
	}
	defer srv.Stop()
	srv.CreateBucketWithOpts(fakestorage.CreateBucketOpts{Name: name, VersioningEnabled: true})
	b, err := gcsblobs.OpenDriver(ctx, gcsblobs.Config{Bucket: name, Endpoint: srv.URL()})
	if err != nil {
		t.Fatal(err)
	}
	defer b.Close()

	key, err := records.UploadKey(testUser, "conv-9", 3)
	if err != nil {
		t.Fatal(err)
	}
	// Not an upload: no notification (the bucket's notification has the
	// uploads/ prefix), so the one message received is the upload's.
	if _, err := b.Write(ctx, "users/"+testUser+"/audio/x", strings.NewReader("sealed"), blobs.WriteOptions{}); err != nil {
		t.Fatal(err)
	}
	signed, hdr, err := b.SignedUploadURL(key, "audio/wav", 1<<20, 10*time.Minute, gcsblobs.Signer{GoogleAccessID: testAccessID, SignBytes: func(p []byte) ([]byte, error) { return []byte("sig"), nil }})
	if err != nil {
		t.Fatal(err)
	}
	audio := bytes.Repeat([]byte("RIFF-audio-"), 3000)
	req, _ := http.NewRequestWithContext(ctx, http.MethodPut, signed, bytes.NewReader(audio))
	for k, v := range hdr {
		req.Header.Set(k, v)
	}
	// The fake answers for storage.googleapis.com through its in-process
	// transport, as GCS would at the signed URL's host.
	resp, err := srv.HTTPClient().Do(req)
	if err != nil {
		t.Fatal(err)
	}
	io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("PUT to signed URL: %s", resp.Status)
	}

	var (
		mu   sync.Mutex
		msgs []*pubsub.Message
	)
	rctx, rcancel := context.WithTimeout(ctx, 10*time.Second)
	defer rcancel()
	err = psc.Subscriber(sub).Receive(rctx, func(_ context.Context, m *pubsub.Message) {
		m.Ack()
		mu.Lock()
		msgs = append(msgs, m)
		mu.Unlock()
		// Wait a little for a stray second message, then stop.
		time.AfterFunc(300*time.Millisecond, rcancel)
	})
	if err != nil {
		t.Fatal(err)
	}
	mu.Lock()
	defer mu.Unlock()
	if len(msgs) != 1 {
		t.Fatalf("received %d notifications, want 1 (the upload's)", len(msgs))
	}
	n, err := gcsnotify.ParseFinalizeNotification(name, msgs[0].Attributes, msgs[0].Data)
	if err != nil {
		t.Fatalf("ParseFinalizeNotification: %v", err)
	}
	gen, err := b.Generation(ctx, key)
	if err != nil {
		t.Fatal(err)
	}
	if n.Object != key || n.Generation != gen || n.Size != int64(len(audio)) || n.ContentType != "audio/wav" ||
		n.CRC32C != crc32.Checksum(audio, crc32.MakeTable(crc32.Castagnoli)) ||
		n.UserHash != testUser || n.ConversationID != "conv-9" || n.Seq != 3 {
		t.Errorf("notification = %+v", n)
	}
	// The pipeline reads exactly the notified generation, then purges it.
	r, _, err := b.ReadGeneration(ctx, n.Object, n.Generation)
	if err != nil {
		t.Fatal(err)
	}
	got, _ := io.ReadAll(r)
	r.Close()
	if !bytes.Equal(got, audio) {
		t.Errorf("ReadGeneration = %d bytes, want the upload", len(got))
	}
	if err := b.PurgeGeneration(ctx, n.Object, n.Generation); err != nil {
		t.Fatal(err)
	}
	if _, err := b.Attrs(ctx, n.Object); !errors.Is(err, blobs.ErrNotFound) {
		t.Errorf("upload survived its purge: %v", err)
	}
}
