package main

import (
	"bytes"
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"cloud.google.com/go/firestore"
	"github.com/cloudevents/sdk-go/v2/event"
	"github.com/fsouza/fake-gcs-server/fakestorage"
	"google.golang.org/api/iterator"

	"github.com/lethe-dev/lethe/app/forget"
	"github.com/lethe-dev/lethe/app/records"
	"github.com/lethe-dev/lethe/events"
	"github.com/lethe-dev/lethe/infra/blobs"
	"github.com/lethe-dev/lethe/infra/bus"
	"github.com/lethe-dev/lethe/infra/docs"
	"github.com/lethe-dev/lethe/infra/docs/sqlitedocs"
	"github.com/lethe-dev/lethe/infra/keys"
	"github.com/lethe-dev/lethe/infra/logging"
	"github.com/lethe-dev/lethe/infra/vectors"
)

type erasureReply struct {
	ID      string `json:"id"`
	State   string `json:"state"`
	Error   string `json:"error"`
	Receipt struct {
		Stores map[string]forget.StoreCount `json:"stores"`
	} `json:"receipt"`
}

// waitErased polls the erasure's status until it is done.
func (c client) waitErased(id string) erasureReply {
	c.t.Helper()
	deadline := time.Now().Add(2 * time.Minute)
	var r erasureReply
	for time.Now().Before(deadline) {
		if code := c.do("GET", "/v1/me/erasure/"+id, "", nil, &r); code != http.StatusOK {
			c.t.Fatalf("erasure status: %d", code)
		}
		if r.State == forget.StateDone || r.State == forget.StateFailed {
			return r
		}
		time.Sleep(100 * time.Millisecond)
	}
	c.t.Fatalf("erasure %s not done in time: %+v", id, r)
	return r
}

// erasureScenario gives alice several conversations (audio, transcripts,
// vectors), a note and an export, and bob one conversation; erases alice
// through the HTTP API; checks the receipt, the 410s and bob; stops the
// pipeline; and returns what must be found nowhere any more.
func erasureScenario(t *testing.T, cfg Config, stored func() []byte) []string {
	p := startTestPipeline(t, cfg, overrides{})
	const aliceUID = "alice-erasure-uid-7d1e0"
	mint := func(uid string) string {
		tok, err := p.app.issuer.Mint(uid, time.Hour)
		if err != nil {
			t.Fatal(err)
		}
		return tok
	}
	base := "http://" + p.addr
	alice, bob := client{t, base, mint(aliceUID)}, client{t, base, mint("bob-erasure-uid-2c9")}
	aliceConvs := map[string][]string{
		"aliceMemoK7q":  {"speech-hello.wav", "speech-dentist.wav"},
		"aliceDentK7q":  {"speech-dentist.wav"},
		"aliceHelloK7q": {"speech-hello.wav"},
	}
	for cid, files := range aliceConvs {
		for seq, f := range files {
			alice.upload(cid, seq, f)
		}
	}
	bob.upload("bobDentistZ3w", 0, "speech-dentist.wav")
	var texts []string
	for cid, files := range aliceConvs {
		conv := alice.waitDone(cid, len(files))
		texts = append(texts, conv.Transcript)
		for _, s := range conv.Segments {
			texts = append(texts, s.Text)
		}
	}
	bobConv := bob.waitDone("bobDentistZ3w", 1)

	// A note: the client's own ciphertext, with a marker to look for.
	noteBytes := append([]byte("alice-note-marker-5c2a9e"), bytes.Repeat([]byte{0xA5, 0x17}, 40)...)
	noteB64 := base64.StdEncoding.EncodeToString(noteBytes)
	body, _ := json.Marshal(map[string]string{"ciphertext": noteB64})
	if code := alice.do("POST", "/v1/notes", "application/json", body, nil); code != http.StatusCreated {
		t.Fatalf("POST /v1/notes: %d", code)
	}
	// An export, finished.
	var exp struct {
		ID    string `json:"id"`
		State string `json:"state"`
	}
	if code := alice.do("POST", "/v1/me/export", "", nil, &exp); code != http.StatusAccepted {
		t.Fatalf("POST /v1/me/export: %d", code)
	}
	waitFor(t, "the export", func() bool {
		alice.do("GET", "/v1/me/export/"+exp.ID, "", nil, &exp)
		return exp.State == "done"
	})

	// The scan below can fail: before the erasure, the stores do hold
	// alice's conversation ids (in document ids and object names).
	if before := stored(); !bytes.Contains(before, []byte("aliceMemoK7q")) {
		t.Fatalf("the stores (%d bytes) do not hold alice's conversation id before the erasure: the scan proves nothing", len(before))
	}
	var er erasureReply
	if code := alice.do("DELETE", "/v1/me", "", nil, &er); code != http.StatusAccepted || er.ID == "" {
		t.Fatalf("DELETE /v1/me: %d %+v", code, er)
	}
	if code := alice.do("GET", "/v1/conversations", "", nil, nil); code != http.StatusGone {
		t.Fatalf("alice after the erasure request: %d, want 410", code)
	}
	done := alice.waitErased(er.ID)
	if done.State != forget.StateDone {
		t.Fatalf("erasure ended %s: %s", done.State, done.Error)
	}
	for store, c := range done.Receipt.Stores {
		if c.Remaining != 0 {
			t.Errorf("receipt: %s remaining %d", store, c.Remaining)
		}
	}
	for _, store := range []string{forget.StoreDocuments, forget.StoreBlobs, forget.StoreVectors, forget.StoreKeys} {
		if c := done.Receipt.Stores[store]; c.Found == 0 || c.Deleted != c.Found {
			t.Errorf("receipt: %s %+v, want something found and all of it deleted", store, c)
		}
	}
	// 4 audio chunks and the export archive.
	if c := done.Receipt.Stores[forget.StoreBlobs]; c.Found != 5 {
		t.Errorf("receipt: blobs found %d, want 4 audio chunks and 1 export", c.Found)
	}
	if c := done.Receipt.Stores[forget.StoreVectors]; c.Found != 4 {
		t.Errorf("receipt: vectors found %d, want 4", c.Found)
	}

	// Bob reads back and finds his memory.
	var again conversationReply
	if code := bob.do("GET", "/v1/conversations/bobDentistZ3w", "", nil, &again); code != http.StatusOK || again.Transcript != bobConv.Transcript {
		t.Fatalf("bob's conversation after alice's erasure: %d %q", code, again.Transcript)
	}
	var res searchReply
	q := strings.Join(strings.Fields(bobConv.Transcript)[:3], " ")
	if code := bob.search(q, &res); code != 200 || len(res.Results) == 0 || res.Results[0].ConversationID != "bobDentistZ3w" {
		t.Fatalf("bob's search after alice's erasure: %d %+v", code, res.Results)
	}
	if err := p.stop(); err != nil {
		t.Fatalf("stop: %v", err)
	}
	needles := []string{aliceUID, "alice-note-marker-5c2a9e", noteB64[:40]}
	needles = append(needles, texts...)
	for cid, files := range aliceConvs {
		needles = append(needles, cid)
		for seq := range files {
			needles = append(needles, records.VectorID(cid, seq))
		}
	}
	return needles
}

// TestErasureEndToEnd: through lethe run's HTTP API on embedded adapters;
// afterwards no file of the data directory holds any of alice's secrets.
func TestErasureEndToEnd(t *testing.T) {
	requirePocketSphinx(t)
	cfg := testConfig(t)
	needles := erasureScenario(t, cfg, func() []byte { return readTree(t, cfg.DataDir) })
	if n := scanForPlaintext(t, cfg.DataDir, needles); n < 3 {
		t.Fatalf("scanned %d files", n)
	}
	// Nor does any file or directory name.
	tree := bytes.ToLower(readTree(t, cfg.DataDir))
	for _, n := range needles {
		if len(n) >= 6 && bytes.Contains(tree, bytes.ToLower([]byte(n))) {
			t.Errorf("the data directory still holds %q (in a name)", n)
		}
	}
}

// TestErasureEndToEndOnEmulators: the same on the Firestore and Pub/Sub
// emulators with fake-gcs; what the emulators return is scanned too.
func TestErasureEndToEndOnEmulators(t *testing.T) {
	psHost, fsHost := requireEmulators(t)
	requirePocketSphinx(t)
	gcs := newFakeGCS(t, "lethe-erasure")
	cfg := emulatorConfig(t, psHost, fsHost, gcs.URL(), "lethe-erasure")
	stored := func() []byte {
		dump := dumpFirestore(t, cfg.ProjectID)
		list, err := gcs.ListObjectsWithOptionsPaginated("lethe-erasure", fakestorage.ListOptions{})
		objs := list.Objects
		if err != nil {
			t.Fatal(err)
		}
		for _, o := range objs {
			full, err := gcs.GetObject("lethe-erasure", o.Name)
			if err != nil {
				t.Fatal(err)
			}
			dump = append(dump, []byte(o.Name+"\n")...)
			dump = append(dump, full.Content...)
		}
		return dump
	}
	needles := erasureScenario(t, cfg, stored)
	scanForPlaintext(t, cfg.DataDir, needles)
	dump := stored()
	if len(dump) == 0 {
		t.Fatal("the emulators returned nothing to scan")
	}
	for _, n := range needles {
		if len(n) >= 6 && bytes.Contains(bytes.ToLower(dump), bytes.ToLower([]byte(n))) {
			t.Errorf("the emulators still return %q", n)
		}
	}
}

// readTree concatenates every file under dir.
func readTree(t *testing.T, dir string) []byte {
	t.Helper()
	var out []byte
	err := filepath.WalkDir(dir, func(path string, d os.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		b, err := os.ReadFile(path)
		rel, _ := filepath.Rel(dir, path)
		out = append(out, []byte(rel+"\n")...)
		out = append(out, b...)
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	return out
}

func newFakeGCS(t *testing.T, bucket string) *fakestorage.Server {
	t.Helper()
	gcs, err := fakestorage.NewServerWithOptions(fakestorage.Options{Scheme: "http", Host: "127.0.0.1"})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(gcs.Stop)
	gcs.CreateBucketWithOpts(fakestorage.CreateBucketOpts{Name: bucket, VersioningEnabled: true})
	return gcs
}

// emulatorConfig is testConfig on the production adapters: the emulators
// and fake-gcs, in a project of the test's own.
func emulatorConfig(t *testing.T, psHost, fsHost, gcsURL, bucket string) Config {
	cfg := testConfig(t)
	cfg.ProjectID = fmt.Sprintf("e2e-%d", time.Now().UnixNano())
	cfg.Bus, cfg.PubSubEmulatorHost = "gcp", psHost
	cfg.Documents, cfg.FirestoreEmulatorHost = "firestore", fsHost
	cfg.Blobs, cfg.GCSBucket, cfg.GCSEndpoint = "gcs", bucket, gcsURL
	return cfg
}

// dumpFirestore returns every document of the project (path and fields),
// walking every collection and subcollection.
func dumpFirestore(t *testing.T, project string) []byte {
	t.Helper()
	ctx := t.Context()
	c, err := firestore.NewClient(ctx, project)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	var out bytes.Buffer
	walkFirestore(t, c.Collections(ctx), func(ref *firestore.DocumentRef, data map[string]any) {
		fmt.Fprintf(&out, "%s\n", ref.Path)
		if data != nil {
			fmt.Fprintf(&out, "%v\n", data)
		}
	})
	return out.Bytes()
}

// walkFirestore calls fn for every document under the collections it
// yields, subcollections included (data nil where only subcollections
// exist).
func walkFirestore(t *testing.T, it *firestore.CollectionIterator, fn func(ref *firestore.DocumentRef, data map[string]any)) {
	t.Helper()
	ctx := t.Context()
	for {
		col, err := it.Next()
		if errors.Is(err, iterator.Done) {
			return
		}
		if err != nil {
			t.Fatal(err)
		}
		refs := col.DocumentRefs(ctx)
		for {
			ref, err := refs.Next()
			if errors.Is(err, iterator.Done) {
				break
			}
			if err != nil {
				t.Fatal(err)
			}
			var data map[string]any
			if snap, err := ref.Get(ctx); err == nil {
				data = snap.Data()
			}
			fn(ref, data)
			walkFirestore(t, ref.Collections(ctx), fn)
		}
	}
}

// capturing keeps every event published, so a test can deliver one again
// after an erasure.
type capturing struct {
	publisher
	mu  sync.Mutex
	all []event.Event
}

func (c *capturing) Publish(ctx context.Context, topic string, e event.Event) error {
	c.mu.Lock()
	c.all = append(c.all, e.Clone())
	c.mu.Unlock()
	return c.publisher.Publish(ctx, topic, e)
}

func (c *capturing) first(typ string) (event.Event, bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	for _, e := range c.all {
		if e.Type() == typ {
			return e, true
		}
	}
	return event.Event{}, false
}

// TestLateEventsAfterErasureOnEmulators: a transcript event published
// before the erasure and held back in its subscription, and a copy of it
// replayed from the dead-letter topic, are both delivered after the
// erasure: both are dropped, nothing is re-created, and the sealed text
// they carry no longer opens.
func TestLateEventsAfterErasureOnEmulators(t *testing.T) {
	psHost, fsHost := requireEmulators(t)
	requirePocketSphinx(t)
	gcs := newFakeGCS(t, "lethe-late")
	cfg := emulatorConfig(t, psHost, fsHost, gcs.URL(), "lethe-late")
	// Phase 1: no embed worker, so transcript events wait in its
	// subscription.
	cfg.Workers = "transcribe,lifecycle"
	capture := &capturing{}
	p := startTestPipeline(t, cfg, overrides{WrapPublisher: func(p publisher) publisher { capture.publisher = p; return capture }})
	const uid = "late-erasure-uid-41a"
	tok, err := p.app.issuer.Mint(uid, time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	c := client{t, "http://" + p.addr, tok}
	c.upload("lateConvQ1", 0, "speech-hello.wav")
	var held event.Event
	waitFor(t, "the transcript event", func() bool {
		var ok bool
		held, ok = capture.first(events.TypeTranscriptCreated)
		return ok
	})
	user := p.app.pseudo.User(uid)
	var tc events.TranscriptCreated
	if err := p.app.events.Decode(held, &tc); err != nil {
		t.Fatal(err)
	}
	sealed, _ := base64.StdEncoding.DecodeString(tc.SealedText)
	ad := keys.AD(user, "events/"+events.TypeTranscriptCreated, held.ID(), "sealed_text")
	if _, err := p.app.keys.Open(t.Context(), user, sealed, ad); err != nil {
		t.Fatalf("the payload does not open before the erasure: %v", err)
	}
	// A copy goes to the dead-letter topic, as poison would.
	data, attrs, err := bus.ToMessage(held)
	if err != nil {
		t.Fatal(err)
	}
	if err := p.app.bus.DeadLetter(t.Context(), events.TopicTranscripts, workerEmbed, "m-1", data, attrs, errors.New("held for the test")); err != nil {
		t.Fatal(err)
	}
	var er erasureReply
	if code := c.do("DELETE", "/v1/me", "", nil, &er); code != http.StatusAccepted {
		t.Fatalf("DELETE /v1/me: %d", code)
	}
	if done := c.waitErased(er.ID); done.State != forget.StateDone {
		t.Fatalf("erasure: %+v", done)
	}
	if err := p.stop(); err != nil {
		t.Fatal(err)
	}

	// Phase 2: the embed and store workers start; the held message is
	// delivered. An operator replays the dead letter onto its topic.
	cfg.Workers = "embed,store,lifecycle"
	var logs lockedBuffer
	r, _ := cfg.runRoles()
	p2, err := startPipeline(context.Background(), cfg, newTestJSONLogger(&logs), r, overrides{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = p2.stop() })
	replayed := make(chan struct{})
	rctx, cancel := context.WithCancel(t.Context())
	defer cancel()
	strip := func(data []byte, attrs map[string]string) (event.Event, error) {
		clean := map[string]string{}
		for k, v := range attrs {
			if k != bus.AttrDeadLetterReason && k != bus.AttrDeadLetterSubscription && k != bus.AttrDeadLetterTime && k != bus.AttrDeadLetterMessageID {
				clean[k] = v
			}
		}
		return bus.FromMessage(data, clean)
	}
	go func() {
		_ = p2.app.bus.ReceiveWith(rctx, bus.DeadLetterHoldSubscription(events.TopicTranscripts), strip, func(ctx context.Context, e event.Event) error {
			if err := p2.app.bus.Publish(ctx, events.TopicTranscripts, e); err != nil {
				return err
			}
			close(replayed)
			cancel()
			return nil
		})
	}()
	select {
	case <-replayed:
	case <-time.After(time.Minute):
		t.Fatal("the dead letter was not replayed")
	}
	waitFor(t, "both deliveries dropped", func() bool {
		return strings.Count(logs.String(), `"outcome":"drop"`) >= 2
	})
	if n, err := p2.app.docs.CountUser(t.Context(), user); err != nil || n != 0 {
		t.Fatalf("documents re-created after the erasure: %d %v", n, err)
	}
	if n, err := p2.app.vectors.Count(t.Context(), user); err != nil || n != 0 {
		t.Fatalf("vectors re-created: %d %v", n, err)
	}
	if has, err := p2.app.keys.HasKey(t.Context(), user); err != nil || has {
		t.Fatalf("a key exists again: %v %v", has, err)
	}
	if _, err := p2.app.keys.Open(t.Context(), user, sealed, ad); err == nil {
		t.Fatal("the held payload still opens")
	}
	if _, err := keys.NewDocsKeysetStore(p2.app.docs).Load(t.Context(), user); !errors.Is(err, keys.ErrNoKey) {
		t.Fatalf("keyset after erasure: %v, want ErrNoKey", err)
	}
}

type lockedBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *lockedBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *lockedBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

func newTestJSONLogger(w io.Writer) *slog.Logger {
	return logging.New(w, logging.Options{Level: slog.LevelInfo})
}

// TestKillMidErasureResumes: SIGKILL lethe run while an erasure is running;
// after a restart the saga completes from its last step and the receipt
// counts what the user had.
func TestKillMidErasureResumes(t *testing.T) {
	requirePocketSphinx(t)
	dir := t.TempDir()
	const uid, n = "kill-mid-erasure-uid", 2000
	// The user's data, written straight into the embedded stores: enough
	// that the saga takes long enough to be killed in the middle.
	cfg := testConfig(t)
	cfg.DataDir = dir
	a, err := openApp(t.Context(), cfg, testLogger(t), overrides{})
	if err != nil {
		t.Fatal(err)
	}
	user := a.pseudo.User(uid)
	ctx := t.Context()
	now := time.Now().UTC()
	var vecs []vectors.Record
	for i := range n {
		cid := fmt.Sprintf("k%05d", i)
		conv, _ := records.Conversation{ID: cid, CreatedAt: now, UpdatedAt: now}.Doc(user)
		chunk, _ := records.Chunk{ConversationID: cid, Status: records.StatusIndexed, UpdatedAt: now}.Doc(user)
		for _, d := range []docs.Doc{conv, chunk} {
			if err := a.docs.Put(ctx, d); err != nil {
				t.Fatal(err)
			}
		}
		sealed, err := a.keys.Seal(ctx, user, []byte("words of "+cid), []byte("ad"))
		if err != nil {
			t.Fatal(err)
		}
		if _, err := a.blobs.Write(ctx, records.AudioPrefix(user)+cid+"/0000000-x.sealed", bytes.NewReader(sealed), blobs.WriteOptions{}); err != nil {
			t.Fatal(err)
		}
		v := make([]float32, 384)
		v[i%384] = 1
		vecs = append(vecs, vectors.Record{ID: records.VectorID(cid, 0), Values: v})
	}
	for len(vecs) > 0 {
		k := min(len(vecs), 1000)
		if err := a.vectors.Upsert(ctx, user, vecs[:k]); err != nil {
			t.Fatal(err)
		}
		vecs = vecs[k:]
	}
	wantDocs, err := a.docs.CountUser(ctx, user)
	if err != nil {
		t.Fatal(err)
	}
	a.close()

	l := startLethe(t, dir, "LETHE_WORKERS=lifecycle,reconcile")
	c := client{t, "http://" + l.addr, mintToken(t, dir, uid)}
	var er erasureReply
	if code := c.do("DELETE", "/v1/me", "", nil, &er); code != http.StatusAccepted {
		t.Fatalf("DELETE /v1/me: %d", code)
	}
	deadline := time.Now().Add(time.Minute)
	// Kill once the inventory is recorded: the delete step is under way.
	for er.State != forget.StateRunning || len(er.Receipt.Stores) == 0 {
		if time.Now().After(deadline) || er.State == forget.StateDone {
			t.Fatalf("never saw the erasure running: %+v", er)
		}
		c.do("GET", "/v1/me/erasure/"+er.ID, "", nil, &er)
	}
	if err := l.cmd.Process.Kill(); err != nil {
		t.Fatal(err)
	}
	_ = l.cmd.Wait()
	// It died mid-saga: the record says running, not done.
	mid := readErasure(t, dir, er.ID)
	if mid.State != forget.StateRunning {
		t.Fatalf("after SIGKILL the erasure is %s (step %s), want running", mid.State, mid.Step)
	}
	t.Logf("killed after step %q", mid.Step)

	l2 := startLethe(t, dir, "LETHE_WORKERS=lifecycle,reconcile")
	c.base = "http://" + l2.addr
	done := c.waitErased(er.ID)
	if done.State != forget.StateDone {
		t.Fatalf("after restart: %+v", done)
	}
	want := map[string]int{forget.StoreDocuments: wantDocs, forget.StoreBlobs: n, forget.StoreVectors: n, forget.StoreKeys: 1}
	for store, w := range want {
		if got := done.Receipt.Stores[store]; got.Found != w || got.Deleted != w || got.Remaining != 0 {
			t.Errorf("receipt %s = %+v, want %d found and deleted, 0 remaining", store, got, w)
		}
	}
}

// readErasure reads an erasure record straight from the data dir's store.
func readErasure(t *testing.T, dir, id string) forget.Erasure {
	t.Helper()
	s, err := sqlitedocs.Open(t.Context(), dataPaths{dir}.docs())
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	d, err := s.Get(t.Context(), forget.ErasureKey(id))
	if err != nil {
		t.Fatal(err)
	}
	var e forget.Erasure
	if err := json.Unmarshal(d.Data, &e); err != nil {
		t.Fatal(err)
	}
	return e
}
