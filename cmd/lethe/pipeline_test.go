package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/cloudevents/sdk-go/v2/event"
	"github.com/fsouza/fake-gcs-server/fakestorage"

	"github.com/lethe-dev/lethe/app/records"
	"github.com/lethe-dev/lethe/infra/audio"
	"github.com/lethe-dev/lethe/infra/bus"
	"github.com/lethe-dev/lethe/infra/docs"
	"github.com/lethe-dev/lethe/infra/logging"
	"github.com/lethe-dev/lethe/infra/stt"
	"github.com/lethe-dev/lethe/internal/emulators"
)

// testConfig is the embedded configuration with a private data dir and an
// ephemeral port.
func testConfig(t testing.TB) Config {
	return Config{
		Env: envDevelopment, Addr: "127.0.0.1:0", DataDir: t.TempDir(),
		ProjectID: "lethe-e2e", Bus: "embedded", LogLevel: "warn",
		ShutdownTimeout: 20 * time.Second, HandlerTimeout: time.Minute,
		ReconcileEvery: 500 * time.Millisecond, ReconcileAfter: time.Minute,
		Workers: "transcribe,embed,store,lifecycle,reconcile", MaxInFlight: 4,
		MaxChunkBytes: 16 << 20, STT: "pocketsphinx", Embedder: "hashing", Console: true,
		Documents: "sqlite", Blobs: "dir", Vectors: "flat", KEK: "file", RateLimit: "memory", Auth: "local",
		EmbedDim: 1024, Delivery: "pull",
		// The production defaults: zero days would expire test data at
		// the first sweep.
		RetentionAudioDays: 30, RetentionTranscriptDays: 365, RetentionVectorDays: 365, RetentionExportDays: 7,
		RetentionSweepEvery: time.Hour, ExportMaxBytes: 64 << 20, ExportURLTTL: 15 * time.Minute,
		STTBreakerThreshold: 5, STTBreakerCooldown: 30 * time.Second,
		// The defaults of streaming and Twilio (tokens unset: no webhooks).
		StreamChunkSeconds: 10, StreamMaxFrameBytes: 64 << 10, StreamIdleTimeout: 30 * time.Second,
		StreamMaxDuration: 4 * time.Hour, StreamMaxPerUser: 2,
		TwilioAPIURL: "https://api.twilio.com", TwilioDeleteRecordings: true, PublishDelay: time.Millisecond,
	}
}

func testLogger(t testing.TB) *slog.Logger {
	return logging.New(io.Discard, logging.Options{Level: slog.LevelError})
}

func requirePocketSphinx(t testing.TB) {
	t.Helper()
	if _, err := exec.LookPath("pocketsphinx_continuous"); err != nil {
		t.Fatal("pocketsphinx is not installed: apt-get install pocketsphinx pocketsphinx-en-us (make test does this where it can)")
	}
}

func startTestPipeline(t testing.TB, cfg Config, ov overrides) *pipeline {
	t.Helper()
	r, err := cfg.runRoles()
	if err != nil {
		t.Fatal(err)
	}
	p, err := startPipeline(context.Background(), cfg, testLogger(t), r, ov)
	if err != nil {
		t.Fatalf("startPipeline: %v", err)
	}
	t.Cleanup(func() { _ = p.stop() })
	return p
}

type client struct {
	t    testing.TB
	base string
	tok  string
}

func (c client) do(method, path, contentType string, body []byte, out any) int {
	c.t.Helper()
	req, err := http.NewRequest(method, c.base+path, bytes.NewReader(body))
	if err != nil {
		c.t.Fatal(err)
	}
	req.Header.Set("Authorization", "Bearer "+c.tok)
	if contentType != "" {
		req.Header.Set("Content-Type", contentType)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		c.t.Fatal(err)
	}
	defer resp.Body.Close()
	raw, err := io.ReadAll(resp.Body)
	if err != nil {
		c.t.Fatal(err)
	}
	if out != nil && resp.StatusCode < 300 {
		if err := json.Unmarshal(raw, out); err != nil {
			c.t.Fatalf("%s %s: %v: %s", method, path, err, raw)
		}
	}
	return resp.StatusCode
}

func (c client) upload(cid string, seq int, file string) {
	c.t.Helper()
	body, err := readTestdata(file)
	if err != nil {
		c.t.Fatal(err)
	}
	ct := "audio/wav"
	switch filepath.Ext(file) {
	case ".opus":
		ct = "audio/ogg;codecs=opus"
	case ".l16":
		ct = "audio/L16;rate=16000"
	}
	if code := c.do("PUT", fmt.Sprintf("/v1/conversations/%s/chunks/%d", cid, seq), ct, body, nil); code != http.StatusAccepted {
		c.t.Fatalf("upload %s/%d: status %d", cid, seq, code)
	}
}

type conversationReply struct {
	Status     string `json:"status"`
	Transcript string `json:"transcript"`
	Chunks     []struct {
		Seq    int    `json:"seq"`
		Status string `json:"status"`
	} `json:"chunks"`
	Segments []struct {
		Seq  int    `json:"seq"`
		Text string `json:"text"`
	} `json:"segments"`
}

// waitDone polls until every chunk of the conversation is final.
func (c client) waitDone(cid string, chunks int) conversationReply {
	c.t.Helper()
	return c.waitDoneWithin(cid, chunks, 3*time.Minute)
}

// waitDoneWithin is waitDone with its own deadline (long recordings).
func (c client) waitDoneWithin(cid string, chunks int, within time.Duration) conversationReply {
	c.t.Helper()
	deadline := time.Now().Add(within)
	var conv conversationReply
	for time.Now().Before(deadline) {
		code := c.do("GET", "/v1/conversations/"+cid, "", nil, &conv)
		if code == http.StatusOK && conv.Status == "done" && len(conv.Chunks) == chunks {
			return conv
		}
		time.Sleep(200 * time.Millisecond)
	}
	c.t.Fatalf("conversation %s not done in time: %+v", cid, conv)
	return conv
}

type searchReply struct {
	Results []struct {
		ConversationID string   `json:"conversation_id"`
		Score          float64  `json:"score"`
		Snippets       []string `json:"snippets"`
	} `json:"results"`
}

func TestEndToEndUploadTranscribeSearch(t *testing.T) {
	requirePocketSphinx(t)
	cfg := testConfig(t)
	secrets := runSlice(t, cfg)
	// Nothing under the data dir holds the transcript or the uid in
	// plaintext: not the SQLite file or its WAL, not blobs, not vectors.
	scanned := scanForPlaintext(t, cfg.DataDir, secrets)
	if scanned < 5 {
		t.Fatalf("scanned only %d files; the data dir layout changed?", scanned)
	}
}

// TestEndToEndOnEmulators runs the same slice with production adapters:
// the gcloud Pub/Sub and Firestore emulators and fake-gcs-server.
func TestEndToEndOnEmulators(t *testing.T) {
	psHost, fsHost := requireEmulators(t)
	requirePocketSphinx(t)
	gcs, err := fakestorage.NewServerWithOptions(fakestorage.Options{Scheme: "http", Host: "127.0.0.1"})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(gcs.Stop)
	gcs.CreateBucketWithOpts(fakestorage.CreateBucketOpts{Name: "lethe-e2e-audio", VersioningEnabled: true})

	cfg := testConfig(t)
	// One project per run: the emulators partition by project.
	cfg.ProjectID = fmt.Sprintf("e2e-%d", time.Now().UnixNano())
	cfg.Bus, cfg.PubSubEmulatorHost = "gcp", psHost
	cfg.Documents, cfg.FirestoreEmulatorHost = "firestore", fsHost
	cfg.Blobs, cfg.GCSBucket, cfg.GCSEndpoint = "gcs", "lethe-e2e-audio", gcs.URL()
	secrets := runSlice(t, cfg)
	// Blobs at rest in the bucket are sealed too.
	list, err := gcs.ListObjectsWithOptionsPaginated("lethe-e2e-audio", fakestorage.ListOptions{})
	objs := list.Objects
	if err != nil || len(objs) < 2 {
		t.Fatalf("bucket holds %d objects (%v), want the uploads", len(objs), err)
	}
	for _, o := range objs {
		full, err := gcs.GetObject("lethe-e2e-audio", o.Name)
		if err != nil {
			t.Fatal(err)
		}
		for _, s := range secrets {
			if len(s) >= 6 && bytes.Contains(full.Content, []byte(s)) {
				t.Fatalf("object %s holds %q", o.Name, s)
			}
		}
	}
}

// requireEmulators returns the Pub/Sub and Firestore emulator addresses
// (see emulators.Require).
func requireEmulators(t *testing.T) (pubsub, firestore string) {
	t.Helper()
	return emulators.Require(t, emulators.PubSub), emulators.Require(t, emulators.Firestore)
}

// runSlice uploads two recordings as alice, waits for their transcripts,
// finds each by searching its words, checks bob finds nothing, stops the
// pipeline and returns what must never be at rest in plaintext.
func runSlice(t *testing.T, cfg Config) []string {
	p := startTestPipeline(t, cfg, overrides{})
	const aliceUID = "alice-e2e-uid-5b3c9"
	mint := func(uid string) string {
		tok, err := p.app.issuer.Mint(uid, time.Hour)
		if err != nil {
			t.Fatal(err)
		}
		return tok
	}
	alice := client{t, "http://" + p.addr, mint(aliceUID)}
	bob := client{t, "http://" + p.addr, mint("bob-e2e-uid")}

	alice.upload("memo", 0, "speech-hello.wav")
	alice.upload("dentist", 0, "speech-dentist.wav")
	memo := alice.waitDone("memo", 1)
	dentist := alice.waitDone("dentist", 1)
	t.Logf("transcripts: memo=%q dentist=%q", memo.Transcript, dentist.Transcript)
	for name, conv := range map[string]conversationReply{"memo": memo, "dentist": dentist} {
		if len(strings.Fields(conv.Transcript)) < 3 {
			t.Fatalf("%s: transcript %q is too short to search", name, conv.Transcript)
		}
	}
	for _, tc := range []struct{ conv, text string }{{"memo", memo.Transcript}, {"dentist", dentist.Transcript}} {
		var res searchReply
		q := strings.Join(strings.Fields(tc.text)[:3], " ")
		if code := alice.search(q, &res); code != 200 {
			t.Fatalf("search: %d", code)
		}
		if len(res.Results) == 0 || res.Results[0].ConversationID != tc.conv {
			t.Fatalf("search %q: want %s first, got %+v", q, tc.conv, res.Results)
		}
		if len(res.Results[0].Snippets) == 0 || res.Results[0].Snippets[0] != tc.text {
			t.Fatalf("search %q: snippet %v, want the transcript", q, res.Results[0].Snippets)
		}
		var other searchReply
		if code := bob.search(q, &other); code != 200 || len(other.Results) != 0 {
			t.Fatalf("bob's search for alice's words: %d %+v", code, other.Results)
		}
	}
	if code := bob.do("GET", "/v1/conversations/memo", "", nil, nil); code != http.StatusNotFound {
		t.Fatalf("bob reads alice's conversation: %d", code)
	}
	if err := p.stop(); err != nil {
		t.Fatalf("stop: %v", err)
	}
	secrets := []string{aliceUID, memo.Transcript, dentist.Transcript}
	for _, s := range append(memo.Segments, dentist.Segments...) {
		secrets = append(secrets, s.Text)
	}
	return secrets
}

// scanForPlaintext fails the test if any file under dir contains any of
// needles; it returns how many files it read.
func scanForPlaintext(t *testing.T, dir string, needles []string) int {
	t.Helper()
	n := 0
	err := filepath.WalkDir(dir, func(path string, d os.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		b, err := os.ReadFile(path)
		if err != nil {
			return err
		}
		n++
		for _, needle := range needles {
			if len(needle) >= 6 && bytes.Contains(bytes.ToLower(b), bytes.ToLower([]byte(needle))) {
				t.Errorf("%s contains %q in plaintext", path, needle)
			}
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return n
}

// instantSTT answers at once with words that depend on the audio, so
// benchmarks and delivery tests measure the pipeline, not the recogniser.
type instantSTT struct{}

func (instantSTT) Transcribe(ctx context.Context, pcm audio.PCM) (stt.Transcript, error) {
	var sum int64
	for _, s := range pcm.Samples {
		sum += int64(s)
	}
	text := fmt.Sprintf("instant words %d samples checksum %d", len(pcm.Samples), sum)
	return stt.Transcript{Text: text, Model: "instant-test"}, nil
}

// twice publishes every event two times: at-least-once delivery at its most
// annoying.
type twice struct{ next publisher }

func (d twice) Publish(ctx context.Context, topic string, e event.Event) error {
	if err := d.next.Publish(ctx, topic, e); err != nil {
		return err
	}
	return d.next.Publish(ctx, topic, e)
}

func TestEveryEventDeliveredTwiceMakesNoDuplicates(t *testing.T) {
	cfg := testConfig(t)
	p := startTestPipeline(t, cfg, overrides{STT: instantSTT{}, WrapPublisher: func(p publisher) publisher { return twice{p} }})
	tok, err := p.app.issuer.Mint("dup-user", time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	c := client{t, "http://" + p.addr, tok}
	files := []string{"speech-hello.wav", "speech-hello-22050.wav", "speech-hello.opus", "speech-hello-16000.l16", "speech-dentist.wav"}
	var wg sync.WaitGroup
	for seq, f := range files {
		for range 2 { // and every upload is retried, concurrently
			wg.Add(1)
			go func() { defer wg.Done(); c.upload("dup", seq, f) }()
		}
	}
	wg.Wait()
	c.waitDone("dup", len(files))
	// Let the duplicate deliveries drain before counting.
	time.Sleep(time.Second)

	user := p.app.pseudo.User("dup-user")
	ctx := context.Background()
	segs, err := p.app.docs.Query(ctx, docs.Query{User: user, Collection: records.Segments})
	if err != nil {
		t.Fatal(err)
	}
	ids, err := p.app.vectors.ListIDs(ctx, user, records.VectorPrefix("dup"))
	if err != nil {
		t.Fatal(err)
	}
	n, err := p.app.vectors.Count(ctx, user)
	if err != nil {
		t.Fatal(err)
	}
	if len(segs) != len(files) || len(ids) != len(files) || n != len(files) {
		t.Fatalf("segments %d, vector ids %d, vectors %d; want %d of each", len(segs), len(ids), n, len(files))
	}
}

func readTestdata(file string) ([]byte, error) {
	return os.ReadFile(filepath.Join("..", "..", "testdata", file))
}

// TestPushDelivery: with LETHE_DELIVERY=push the workers are served at
// POST /push/{subscription}; a pushed chunk event is transcribed, poison is
// dead-lettered and acknowledged, an unknown subscription is a 404.
func TestPushDelivery(t *testing.T) {
	cfg := testConfig(t)
	cfg.Delivery = "push"
	cfg.Workers = "transcribe"
	p := startTestPipeline(t, cfg, overrides{STT: instantSTT{}})
	tok, err := p.app.issuer.Mint("push-user", time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	c := client{t, "http://" + p.addr, tok}
	c.upload("pushed", 0, "speech-hello.wav")

	user := p.app.pseudo.User("push-user")
	d, err := p.app.docs.Get(context.Background(), records.ChunkKey(user, "pushed", 0))
	if err != nil {
		t.Fatal(err)
	}
	chunk, err := records.ChunkFrom(d)
	if err != nil {
		t.Fatal(err)
	}
	ev, err := records.ChunkReceivedEvent(p.app.events, user, chunk)
	if err != nil {
		t.Fatal(err)
	}
	pushBody := func(data []byte, attrs map[string]string) []byte {
		b, _ := json.Marshal(map[string]any{
			"message":      map[string]any{"data": data, "attributes": attrs, "messageId": "1", "publishTime": time.Now().UTC().Format(time.RFC3339)},
			"subscription": "projects/" + cfg.ProjectID + "/subscriptions/transcribe",
		})
		return b
	}
	post := func(path string, body []byte) int {
		resp, err := http.Post("http://"+p.addr+path, "application/json", bytes.NewReader(body))
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		return resp.StatusCode
	}
	data, attrs, err := bus.ToMessage(ev)
	if err != nil {
		t.Fatal(err)
	}
	if code := post("/push/transcribe", pushBody(data, attrs)); code != http.StatusNoContent {
		t.Fatalf("push of a chunk event: %d", code)
	}
	d, err = p.app.docs.Get(context.Background(), records.ChunkKey(user, "pushed", 0))
	if err != nil {
		t.Fatal(err)
	}
	if chunk, _ = records.ChunkFrom(d); chunk.Status == records.StatusReceived {
		t.Fatal("the pushed event was not handled")
	}
	if code := post("/push/transcribe", pushBody([]byte("not an event"), map[string]string{"ce-id": "x"})); code != http.StatusNoContent {
		t.Fatalf("poison push: %d, want 204 (dead-lettered, acknowledged)", code)
	}
	if code := post("/push/nosuch", pushBody(data, attrs)); code != http.StatusNotFound {
		t.Fatalf("unknown subscription: %d", code)
	}
}
