package main

import (
	"bytes"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/fsouza/fake-gcs-server/fakestorage"

	"github.com/lethe-dev/lethe/events"
)

type uploadURLReply struct {
	URL     string            `json:"url"`
	Method  string            `json:"method"`
	Headers map[string]string `json:"headers"`
}

// TestEndToEndSignedUploadOnEmulators: a recording PUT through a signed
// URL reaches the bucket, whose finalize notification (fake-gcs-server
// publishing to the gcloud Pub/Sub emulator, as Cloud Storage publishes to
// Pub/Sub) enters the pipeline: sealed, transcribed, searchable, and the
// plaintext upload is gone afterwards.
func TestEndToEndSignedUploadOnEmulators(t *testing.T) {
	requirePocketSphinx(t)
	const bucket = "lethe-e2e-uploads"
	p, gcs := startSignedUploadPipeline(t, bucket, 8<<20, overrides{})
	tok, err := p.app.issuer.Mint("carol-upload-uid-77", time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	carol := client{t, "http://" + p.addr, tok}

	audio, err := readTestdata("speech-dentist.wav")
	if err != nil {
		t.Fatal(err)
	}
	var signed uploadURLReply
	req, _ := json.Marshal(map[string]any{"content_type": "audio/wav", "size": len(audio), "duration_ms": 5000})
	if code := carol.do("POST", "/v1/conversations/longcall/chunks/0/upload-url", "application/json", req, &signed); code != http.StatusOK {
		t.Fatalf("upload-url: status %d", code)
	}
	if signed.Method != http.MethodPut || !strings.Contains(signed.URL, "X-Goog-Signature=") {
		t.Fatalf("upload-url reply %+v", signed)
	}
	if strings.Contains(signed.URL, "carol-upload-uid-77") {
		t.Fatal("the signed URL names the raw uid")
	}
	putSigned(t, gcs.URL(), signed, audio)

	conv := carol.waitDone("longcall", 1)
	if len(strings.Fields(conv.Transcript)) < 3 {
		t.Fatalf("transcript %q is too short", conv.Transcript)
	}
	var res searchReply
	q := strings.Join(strings.Fields(conv.Transcript)[:3], " ")
	if code := carol.search(q, &res); code != http.StatusOK || len(res.Results) == 0 || res.Results[0].ConversationID != "longcall" {
		t.Fatalf("search %q: %d %+v", q, code, res.Results)
	}
	// A second ticket for an accepted seq is refused: the upload path is
	// as idempotent as the PUT.
	if code := carol.do("POST", "/v1/conversations/longcall/chunks/0/upload-url", "application/json", req, nil); code != http.StatusConflict {
		t.Fatalf("upload-url for an accepted seq: %d, want 409", code)
	}

	// The plaintext upload is purged (every generation); what stays in the
	// bucket is sealed.
	waitFor(t, "the upload to be purged", func() bool {
		list, err := gcs.ListObjectsWithOptionsPaginated(bucket, fakestorage.ListOptions{Prefix: "uploads/", Versions: true})
		objs := list.Objects
		return err == nil && len(objs) == 0
	})
	list, err := gcs.ListObjectsWithOptionsPaginated(bucket, fakestorage.ListOptions{Versions: true})
	objs := list.Objects
	if err != nil || len(objs) == 0 {
		t.Fatalf("bucket holds %d objects (%v), want the sealed audio", len(objs), err)
	}
	for _, o := range objs {
		full, err := gcs.GetObjectWithGeneration(bucket, o.Name, o.Generation)
		if err != nil {
			t.Fatal(err)
		}
		if bytes.Contains(full.Content, audio[44:4096]) {
			t.Fatalf("object %s holds the recording in plaintext", o.Name)
		}
		for _, w := range strings.Fields(conv.Transcript) {
			if len(w) >= 6 && bytes.Contains(full.Content, []byte(w)) {
				t.Fatalf("object %s holds %q", o.Name, w)
			}
		}
	}
}

// startSignedUploadPipeline starts the pipeline on the Pub/Sub and
// Firestore emulators with signed uploads into bucket of fake-gcs-server,
// whose finalize notifications reach the uploads worker as Cloud Storage's
// reach it through Pub/Sub.
func startSignedUploadPipeline(t *testing.T, bucket string, maxUpload int64, ov overrides) (*pipeline, *fakestorage.Server) {
	t.Helper()
	psHost, fsHost := requireEmulators(t)
	project := fmt.Sprintf("e2e-upl-%d", time.Now().UnixNano())

	// The fake publishes its notifications with its own Pub/Sub client,
	// which finds the emulator through PUBSUB_EMULATOR_HOST.
	opts := fakestorage.Options{Scheme: "http", Host: "127.0.0.1"}
	opts.EventOptions.ProjectID = project
	opts.EventOptions.TopicName = events.TopicUploads
	opts.EventOptions.ObjectPrefix = "uploads/"
	opts.EventOptions.NotifyOn.Finalize = true
	gcs, err := fakestorage.NewServerWithOptions(opts)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(gcs.Stop)
	gcs.CreateBucketWithOpts(fakestorage.CreateBucketOpts{Name: bucket, VersioningEnabled: true})

	cfg := testConfig(t)
	cfg.ProjectID = project
	cfg.Workers = "transcribe,embed,store,uploads,reconcile"
	cfg.Bus, cfg.PubSubEmulatorHost = "gcp", psHost
	cfg.Documents, cfg.FirestoreEmulatorHost = "firestore", fsHost
	cfg.Blobs, cfg.GCSBucket, cfg.GCSEndpoint = "gcs", bucket, gcs.URL()
	cfg.MaxUploadBytes, cfg.UploadURLTTL = maxUpload, 10*time.Minute
	cfg.GCSSignerEmail, cfg.GCSSignerKey = "uploader@lethe-e2e.iam.gserviceaccount.com", writeRSAKey(t)
	return startTestPipeline(t, cfg, ov), gcs
}

// putSigned does what the app does with the reply: one PUT with exactly
// the returned headers. The URL names storage.googleapis.com; the request
// goes to the fake with that Host, which is how fake-gcs-server serves
// signed URLs (it does not check signatures; gcsblobs' tests do).
func putSigned(t *testing.T, fakeURL string, signed uploadURLReply, body []byte) {
	t.Helper()
	u, err := url.Parse(signed.URL)
	if err != nil {
		t.Fatal(err)
	}
	f, err := url.Parse(fakeURL)
	if err != nil {
		t.Fatal(err)
	}
	host := u.Host
	u.Scheme, u.Host = f.Scheme, f.Host
	req, err := http.NewRequest(signed.Method, u.String(), bytes.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	req.Host = host
	for k, v := range signed.Headers {
		req.Header.Set(k, v)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	msg, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("PUT to the signed URL: %d %s", resp.StatusCode, msg)
	}
}

// writeRSAKey writes a fresh PEM signing key for upload URLs.
func writeRSAKey(t *testing.T) string {
	t.Helper()
	key, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		t.Fatal(err)
	}
	der, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(t.TempDir(), "signer.pem")
	if err := os.WriteFile(path, pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: der}), 0o600); err != nil {
		t.Fatal(err)
	}
	return path
}

func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(time.Minute)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// TestUploadSignerConfig: the signing key comes from a PEM file with an
// email, or a service-account JSON key; half a configuration is an error
// naming the variable.
func TestUploadSignerConfig(t *testing.T) {
	pemPath := writeRSAKey(t)
	pemKey, err := os.ReadFile(pemPath)
	if err != nil {
		t.Fatal(err)
	}
	jsonPath := filepath.Join(t.TempDir(), "sa.json")
	sa, _ := json.Marshal(map[string]string{"type": "service_account", "client_email": "sa@p.iam.gserviceaccount.com", "private_key": string(pemKey)})
	if err := os.WriteFile(jsonPath, sa, 0o600); err != nil {
		t.Fatal(err)
	}
	badJSON := filepath.Join(t.TempDir(), "bad.json")
	if err := os.WriteFile(badJSON, []byte(`{"client_email":""}`), 0o600); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name, email, key string
		wantEmail        string
		wantErr          string
	}{
		{name: "client credentials", wantEmail: ""},
		{name: "pem with email", email: "u@p.iam.gserviceaccount.com", key: pemPath, wantEmail: "u@p.iam.gserviceaccount.com"},
		{name: "service account json", key: jsonPath, wantEmail: "sa@p.iam.gserviceaccount.com"},
		{name: "pem without email", key: pemPath, wantErr: "LETHE_GCS_SIGNER_EMAIL"},
		{name: "email without key", email: "u@p.iam.gserviceaccount.com", wantErr: "LETHE_GCS_SIGNER_KEY_FILE"},
		{name: "missing file", email: "u@p", key: filepath.Join(t.TempDir(), "nope.pem"), wantErr: "LETHE_GCS_SIGNER_KEY_FILE"},
		{name: "json without fields", key: badJSON, wantErr: "service-account JSON"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			u, err := openUploadSigner(Config{GCSSignerEmail: tc.email, GCSSignerKey: tc.key}, nil)
			if tc.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
					t.Fatalf("err = %v, want one naming %s", err, tc.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if u.Signer.GoogleAccessID != tc.wantEmail || (tc.key == "") != (u.Signer.PrivateKey == nil) {
				t.Fatalf("signer = %q key set %v", u.Signer.GoogleAccessID, u.Signer.PrivateKey != nil)
			}
		})
	}
}

// TestUploadsWorkerNeedsCloudStorage: the uploads worker runs only where
// notifications can come from; asked for by name without Cloud Storage it
// is a usage error naming the variable.
func TestUploadsWorkerNeedsCloudStorage(t *testing.T) {
	for _, tc := range []struct {
		blobs string
		want  bool
	}{{"dir", false}, {"gcs", true}} {
		cfg := Config{Workers: "transcribe,uploads", Blobs: tc.blobs}
		r, err := cfg.runRoles()
		if err != nil {
			t.Fatal(err)
		}
		if got := slices.Contains(r.workers, workerUploads); got != tc.want {
			t.Errorf("LETHE_BLOBS=%s: uploads started = %v, want %v", tc.blobs, got, tc.want)
		}
	}
	err := cmdWorker(t.Context(), Config{Bus: "gcp", Blobs: "dir"}, testLogger(t), []string{workerUploads})
	var ue usageError
	if !errors.As(err, &ue) || !strings.Contains(err.Error(), "LETHE_BLOBS=gcs") {
		t.Fatalf("lethe worker uploads with local blobs = %v, want a usage error naming LETHE_BLOBS=gcs", err)
	}
}
