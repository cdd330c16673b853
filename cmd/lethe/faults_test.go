package main

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/cloudevents/sdk-go/v2/event"

	"github.com/lethe-dev/lethe/app/records"
	"github.com/lethe-dev/lethe/events"
	"github.com/lethe-dev/lethe/infra/audio"
	"github.com/lethe-dev/lethe/infra/bus"
	"github.com/lethe-dev/lethe/infra/docs"
)

// Fault injection (issue 9, item 6): a killed process, an unreachable
// document store and poison messages. Every wait has a deadline; no
// assertion depends on how fast the machine is.

// synthWAV is half a second of 16 kHz noise that differs per tag, so each
// chunk has its own bytes and (with fakeWhisper) its own transcript.
func synthWAV(tag int) []byte {
	p := audio.PCM{SampleRate: 16000, Samples: make([]int16, 8000)}
	x := uint32(tag)*2654435761 + 1
	for i := range p.Samples {
		x = x*1664525 + 1013904223
		p.Samples[i] = int16(x>>16) / 4
	}
	return audio.EncodeWAV(p)
}

// fakeWhisper is an OpenAI-compatible transcription server that answers at
// once with words derived from the audio it is sent: lethe run selects it
// with LETHE_STT=openai, so a process test needs no recogniser.
func fakeWhisper(t *testing.T) *httptest.Server {
	t.Helper()
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, err := io.ReadAll(r.Body)
		if err != nil {
			http.Error(w, "read", http.StatusBadRequest)
			return
		}
		sum := sha256.Sum256(body)
		w.Header().Set("Content-Type", "application/json")
		_ = json.NewEncoder(w).Encode(map[string]string{"text": "fake words " + hex.EncodeToString(sum[:6])})
	}))
	t.Cleanup(srv.Close)
	return srv
}

// tryUpload PUTs a chunk and returns the status, or 0 when the request
// failed (the process was killed under it).
func (c client) tryUpload(cid string, seq int, body []byte) int {
	req, err := http.NewRequest("PUT", fmt.Sprintf("%s/v1/conversations/%s/chunks/%d", c.base, cid, seq), bytes.NewReader(body))
	if err != nil {
		c.t.Error(err)
		return 0
	}
	req.Header.Set("Authorization", "Bearer "+c.tok)
	req.Header.Set("Content-Type", "audio/wav")
	hc := &http.Client{Timeout: 30 * time.Second}
	resp, err := hc.Do(req)
	if err != nil {
		return 0
	}
	_, _ = io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	return resp.StatusCode
}

// uploadUntilAccepted retries a chunk (same cid, seq and bytes, as a real
// client does) until it gets a 2xx, waiting between tries.
func (c client) uploadUntilAccepted(cid string, seq int, body []byte, deadline time.Time) int {
	c.t.Helper()
	tries := 0
	for {
		tries++
		code := c.tryUpload(cid, seq, body)
		if code >= 200 && code < 300 {
			return tries
		}
		if code != 0 && code != http.StatusServiceUnavailable && code != http.StatusTooManyRequests {
			c.t.Fatalf("upload %s/%d: status %d", cid, seq, code)
		}
		if time.Now().After(deadline) {
			c.t.Fatalf("upload %s/%d: still %d after %d tries", cid, seq, code, tries)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// storeCounts is what the stores hold for one conversation.
type storeCounts struct {
	chunks, indexed, segments int
	vectorIDs                 []string
}

func countStores(t *testing.T, a *app, user, cid string) storeCounts {
	t.Helper()
	ctx := context.Background()
	var sc storeCounts
	chunks, err := a.docs.Query(ctx, docs.Query{User: user, Collection: records.Chunks})
	if err != nil {
		t.Fatal(err)
	}
	for _, d := range chunks {
		c, err := records.ChunkFrom(d)
		if err != nil {
			t.Fatal(err)
		}
		if c.ConversationID != cid {
			continue
		}
		sc.chunks++
		if c.Status == records.StatusIndexed {
			sc.indexed++
		}
	}
	segs, err := a.docs.Query(ctx, docs.Query{User: user, Collection: records.Segments})
	if err != nil {
		t.Fatal(err)
	}
	for _, d := range segs {
		s, err := records.SegmentFrom(d)
		if err != nil {
			t.Fatal(err)
		}
		if s.ConversationID == cid {
			sc.segments++
		}
	}
	if sc.vectorIDs, err = a.vectors.ListIDs(ctx, user, records.VectorPrefix(cid)); err != nil {
		t.Fatal(err)
	}
	return sc
}

// TestKillUnderLoadTranscribesEveryAckedChunkOnce: SIGKILL `lethe run`
// while four clients upload, restart it, let the clients retry what got no
// 2xx; every chunk ends with one record, one segment and one vector, and
// no conversation has a seq twice.
func TestKillUnderLoadTranscribesEveryAckedChunkOnce(t *testing.T) {
	runKillUnderLoad(t, nil, func(Config) Config { return testConfig(t) })
}

// TestKillUnderLoadOnEmulators: the same with the Pub/Sub and Firestore
// emulators; the stuck events of the killed process are re-driven by the
// reconciler, alongside the bus's own redeliveries (all idempotent).
func TestKillUnderLoadOnEmulators(t *testing.T) {
	psHost, fsHost := requireEmulators(t)
	project := fmt.Sprintf("kill-%d", time.Now().UnixNano())
	env := []string{"LETHE_PROJECT=" + project, "LETHE_BUS=gcp", "PUBSUB_EMULATOR_HOST=" + psHost,
		"LETHE_DOCUMENTS=firestore", "FIRESTORE_EMULATOR_HOST=" + fsHost,
		// The emulator did not redeliver what the killed process held
		// within three minutes: the reconciler is what recovers it, so
		// let it look at anything older than a few seconds.
		"LETHE_RECONCILE_AFTER=5s"}
	runKillUnderLoad(t, env, func(cfg Config) Config {
		cfg.ProjectID = project
		cfg.Bus, cfg.PubSubEmulatorHost = "gcp", psHost
		cfg.Documents, cfg.FirestoreEmulatorHost = "firestore", fsHost
		return cfg
	})
}

// runKillUnderLoad runs the kill test with extra environment for lethe
// run; storeConfig turns a test configuration into one that opens the
// same stores, to count them afterwards.
func runKillUnderLoad(t *testing.T, extra []string, storeConfig func(Config) Config) {
	const clients, chunks = 4, 15
	dir := t.TempDir()
	stt := fakeWhisper(t)
	env := append([]string{"LETHE_STT=openai", "LETHE_OPENAI_BASE_URL=" + stt.URL + "/v1", "LETHE_RECONCILE_EVERY=1s"}, extra...)
	l := startLethe(t, dir, env...)
	cs := make([]client, clients)
	for i := range cs {
		cs[i] = client{t, "http://" + l.addr, mintToken(t, dir, fmt.Sprintf("load-user-%d", i))}
	}
	body := func(i, seq int) []byte { return synthWAV(i*1000 + seq) }

	// First life: upload until about a third is acknowledged, then kill.
	var acked atomic.Int32
	ackedFirst := make([][]bool, clients)
	var wg sync.WaitGroup
	for i := range cs {
		ackedFirst[i] = make([]bool, chunks)
		wg.Add(1)
		go func() {
			defer wg.Done()
			for seq := range chunks {
				if code := cs[i].tryUpload("load", seq, body(i, seq)); code >= 200 && code < 300 {
					ackedFirst[i][seq] = true
					acked.Add(1)
				}
			}
		}()
	}
	deadline := time.Now().Add(60 * time.Second)
	for acked.Load() < clients*chunks/3 {
		if time.Now().After(deadline) {
			t.Fatalf("only %d uploads acknowledged before the kill; stderr: %s", acked.Load(), l.stderr)
		}
		time.Sleep(5 * time.Millisecond)
	}
	if err := l.cmd.Process.Kill(); err != nil { // SIGKILL: no shutdown code runs
		t.Fatal(err)
	}
	_ = l.cmd.Wait()
	wg.Wait()
	first := int(acked.Load())
	if first == clients*chunks {
		t.Fatal("every upload finished before the kill: nothing was mid-load")
	}

	// Second life: the clients retry every chunk that got no 2xx.
	l2 := startLethe(t, dir, env...)
	retried := 0
	deadline = time.Now().Add(90 * time.Second)
	for i := range cs {
		cs[i].base = "http://" + l2.addr
		for seq := range chunks {
			if !ackedFirst[i][seq] {
				cs[i].uploadUntilAccepted("load", seq, body(i, seq), deadline)
				retried++
			}
		}
	}
	t.Logf("%d chunks acknowledged before the kill, %d retried after it", first, retried)
	restarted := time.Now()
	for i := range cs {
		conv := cs[i].waitDone("load", chunks)
		t.Logf("client %d done %v after the restart", i, time.Since(restarted).Round(time.Millisecond))
		seen := map[int]bool{}
		texts := map[string]bool{}
		for _, s := range conv.Segments {
			if seen[s.Seq] {
				t.Errorf("client %d: seq %d has two segments", i, s.Seq)
			}
			seen[s.Seq] = true
			texts[s.Text] = true
		}
		if len(seen) != chunks || len(texts) != chunks {
			t.Errorf("client %d: %d seqs with %d distinct transcripts, want %d of each", i, len(seen), len(texts), chunks)
		}
		for _, ch := range conv.Chunks {
			if ch.Status != records.StatusIndexed {
				t.Errorf("client %d: chunk %d is %s", i, ch.Seq, ch.Status)
			}
		}
	}
	// Let re-driven duplicates drain, stop cleanly, then count the stores.
	time.Sleep(time.Second)
	if err := l2.cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	if err := l2.cmd.Wait(); err != nil {
		t.Fatalf("lethe run after SIGTERM: %v; stderr: %s", err, l2.stderr)
	}
	cfg := storeConfig(testConfig(t))
	cfg.DataDir, cfg.Workers = dir, "none"
	a, err := openApp(context.Background(), cfg, testLogger(t), overrides{STT: instantSTT{}})
	if err != nil {
		t.Fatalf("openApp: %v", err)
	}
	defer a.close()
	for i := range cs {
		user := a.pseudo.User(fmt.Sprintf("load-user-%d", i))
		sc := countStores(t, a, user, "load")
		n, err := a.vectors.Count(context.Background(), user)
		if err != nil {
			t.Fatal(err)
		}
		ids := map[string]bool{}
		for _, id := range sc.vectorIDs {
			ids[id] = true
		}
		if sc.chunks != chunks || sc.indexed != chunks || sc.segments != chunks || len(sc.vectorIDs) != chunks || len(ids) != chunks || n != chunks {
			t.Errorf("client %d: %d chunk records (%d indexed), %d segments, %d vector ids (%d distinct), %d vectors; want %d of each",
				i, sc.chunks, sc.indexed, sc.segments, len(sc.vectorIDs), len(ids), n, chunks)
		}
		for seq := range chunks {
			if !ids[records.VectorID("load", seq)] {
				t.Errorf("client %d: no vector for seq %d", i, seq)
			}
		}
	}
}

// errUnreachable is what flakyDocs answers while down: a backend that
// cannot be reached, which is retryable.
var errUnreachable = errors.New("connection refused")

// flakyDocs fails every call while down, as an unreachable Firestore or an
// unwritable SQLite file would.
// It wraps the driver, under the docs.Store every component holds.
type flakyDocs struct {
	docs.Driver
	down atomic.Bool
}

func (f *flakyDocs) fail(call string) error {
	if f.down.Load() {
		return fmt.Errorf("flakyDocs.%s: %w", call, errUnreachable)
	}
	return nil
}

func (f *flakyDocs) Get(ctx context.Context, key docs.Key) (docs.Doc, error) {
	if err := f.fail("Get"); err != nil {
		return docs.Doc{}, err
	}
	return f.Driver.Get(ctx, key)
}

func (f *flakyDocs) Put(ctx context.Context, d docs.Doc) error {
	if err := f.fail("Put"); err != nil {
		return err
	}
	return f.Driver.Put(ctx, d)
}

func (f *flakyDocs) Create(ctx context.Context, d docs.Doc) error {
	if err := f.fail("Create"); err != nil {
		return err
	}
	return f.Driver.Create(ctx, d)
}

func (f *flakyDocs) Update(ctx context.Context, key docs.Key, fn func(cur *docs.Doc) (*docs.Doc, error)) error {
	if err := f.fail("Update"); err != nil {
		return err
	}
	return f.Driver.Update(ctx, key, fn)
}

func (f *flakyDocs) Transact(ctx context.Context, read []docs.Key, fn func(cur []*docs.Doc) ([]docs.Write, error)) error {
	if err := f.fail("Transact"); err != nil {
		return err
	}
	return f.Driver.Transact(ctx, read, fn)
}

func (f *flakyDocs) Delete(ctx context.Context, key docs.Key) error {
	if err := f.fail("Delete"); err != nil {
		return err
	}
	return f.Driver.Delete(ctx, key)
}

func (f *flakyDocs) DeleteMany(ctx context.Context, keys []docs.Key) (int, error) {
	if err := f.fail("DeleteMany"); err != nil {
		return 0, err
	}
	return f.Driver.DeleteMany(ctx, keys)
}

func (f *flakyDocs) Query(ctx context.Context, q docs.Query, after *docs.Position) ([]docs.Doc, error) {
	if err := f.fail("Query"); err != nil {
		return nil, err
	}
	return f.Driver.Query(ctx, q, after)
}

func (f *flakyDocs) DeleteUser(ctx context.Context, user string) (int, error) {
	if err := f.fail("DeleteUser"); err != nil {
		return 0, err
	}
	return f.Driver.DeleteUser(ctx, user)
}

func (f *flakyDocs) CountUser(ctx context.Context, user string) (int, error) {
	if err := f.fail("CountUser"); err != nil {
		return 0, err
	}
	return f.Driver.CountUser(ctx, user)
}

// attempts counts handler calls per subscription and event id, and the
// calls that failed.
type attempts struct {
	mu     sync.Mutex
	calls  map[string]int // subscription/event id
	failed atomic.Int32
	// gate, when set, holds every handler until it is closed.
	gate chan struct{}
}

func newAttempts() *attempts { return &attempts{calls: map[string]int{}} }

func (a *attempts) wrap(sub string, h bus.Handler) bus.Handler {
	return func(ctx context.Context, e event.Event) error {
		if a.gate != nil {
			select {
			case <-a.gate:
			case <-ctx.Done():
				return ctx.Err()
			}
		}
		a.mu.Lock()
		a.calls[sub+"/"+e.ID()]++
		a.mu.Unlock()
		err := h(ctx, e)
		if err != nil && bus.Classify(err) == bus.OutcomeRetry {
			a.failed.Add(1)
		}
		return err
	}
}

func (a *attempts) of(sub, id string) int {
	a.mu.Lock()
	defer a.mu.Unlock()
	return a.calls[sub+"/"+id]
}

// perEvent is the handler calls of each event id on sub.
func (a *attempts) perEvent(sub string) map[string]int {
	a.mu.Lock()
	defer a.mu.Unlock()
	out := map[string]int{}
	for k, n := range a.calls {
		if id, ok := strings.CutPrefix(k, sub+"/"); ok {
			out[id] = n
		}
	}
	return out
}

// requireNoDeadLetters fails if any pipeline topic holds a dead letter.
func requireNoDeadLetters(t *testing.T, b *bus.Bus) {
	t.Helper()
	for _, topic := range []string{events.TopicAudio, events.TopicTranscripts, events.TopicEmbeddings} {
		dls, err := b.ListDeadLetters(context.Background(), topic, 0)
		if err != nil {
			t.Fatalf("ListDeadLetters %s: %v", topic, err)
		}
		for _, dl := range dls {
			t.Errorf("%s: dead letter %s (%s): %s", topic, dl.EventID, dl.EventType, dl.Reason)
		}
	}
}

// TestDocsOutageAnswers503AndLosesNothing: while the document store is
// unreachable the edge refuses uploads with 503, the workers' events are
// retried (not acknowledged, not dead-lettered); when it returns, every
// chunk acknowledged before the outage and every chunk retried after it is
// indexed.
func TestDocsOutageAnswers503AndLosesNothing(t *testing.T) {
	cfg := testConfig(t)
	runDocsOutage(t, cfg, func(s docs.Store) (docs.Store, func(up bool)) {
		f := &flakyDocs{Driver: s.Driver()}
		return docs.New(f), func(up bool) { f.down.Store(!up) }
	})
}

// runDocsOutage runs the outage scenario; wrap returns the store the
// pipeline uses and a switch that cuts (false) or restores (true) it.
func runDocsOutage(t *testing.T, cfg Config, wrap func(docs.Store) (docs.Store, func(up bool))) {
	var setUp func(bool)
	att := newAttempts()
	att.gate = make(chan struct{})
	p := startTestPipeline(t, cfg, overrides{
		STT:         instantSTT{},
		WrapDocs:    func(s docs.Store) docs.Store { w, sw := wrap(s); setUp = sw; return w },
		WrapHandler: att.wrap,
	})
	tok, err := p.app.issuer.Mint("outage-user", time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	c := client{t, "http://" + p.addr, tok}
	const before, during = 3, 3
	// Acknowledged before the outage; the workers are held until it starts,
	// so their events meet it.
	for seq := range before {
		if code := c.tryUpload("outage", seq, synthWAV(seq)); code != http.StatusAccepted {
			t.Fatalf("upload %d before the outage: %d", seq, code)
		}
	}
	setUp(false)
	close(att.gate)
	for seq := before; seq < before+during; seq++ {
		if code := c.tryUpload("outage", seq, synthWAV(seq)); code != http.StatusServiceUnavailable {
			t.Fatalf("upload %d during the outage: %d, want 503", seq, code)
		}
	}
	if code := c.do("GET", "/readyz", "", nil, nil); code != http.StatusServiceUnavailable {
		t.Errorf("readyz during the outage: %d, want 503", code)
	}
	// Every held event fails, is retried in process (three calls), then
	// nacked and delivered again: more calls than one delivery makes.
	waitFor(t, "every event to be delivered again during the outage", func() bool {
		per := att.perEvent(workerTranscribe)
		if len(per) != before {
			return false
		}
		for _, n := range per {
			if n < 4 {
				return false
			}
		}
		return true
	})
	setUp(true)
	// A client reconnects after its own backoff (gRPC's, for Firestore).
	waitFor(t, "the document store to answer again", func() bool {
		_, err := p.app.docs.Get(context.Background(), docs.Key{Collection: "health", ID: "ping"})
		return err == nil || errors.Is(err, docs.ErrNotFound)
	})
	// Nothing the edge refused during the outage was kept.
	if sc := countStores(t, p.app, p.app.pseudo.User("outage-user"), "outage"); sc.chunks > before {
		t.Fatalf("%d chunk records after the outage, want only the %d acknowledged before it", sc.chunks, before)
	}
	// The client retries what was refused.
	for seq := before; seq < before+during; seq++ {
		c.uploadUntilAccepted("outage", seq, synthWAV(seq), time.Now().Add(30*time.Second))
	}
	c.waitDone("outage", before+during)
	sc := countStores(t, p.app, p.app.pseudo.User("outage-user"), "outage")
	if sc.chunks != before+during || sc.indexed != before+during || sc.segments != before+during || len(sc.vectorIDs) != before+during {
		t.Fatalf("after the outage: %+v, want %d indexed chunks, segments and vectors", sc, before+during)
	}
	t.Logf("%d handler attempts failed during the outage", att.failed.Load())
	requireNoDeadLetters(t, p.app.bus)
}

// poison is one malformed message a test publishes, and what its dead
// letter must say.
type poison struct {
	name, topic string
	data        []byte
	attrs       map[string]string
	// reason is a substring of the dead-letter reason.
	reason string
	// handler is the subscription whose handler sees it once (a valid
	// event of the wrong type); "" when it never reaches a handler.
	handler, eventID string
}

// poisons are malformed messages for the audio and transcripts topics:
// undecodable bodies, an event that fails its schema, and valid events of
// a type the subscription does not take.
func poisons(t *testing.T, a *app, tag string) []poison {
	t.Helper()
	user := strings.Repeat("ab", 16)
	chunk := func(id string) (event.Event, []byte, map[string]string) {
		ev, err := a.events.NewWithID(id, events.TypeChunkReceived, events.Subject(user, "conversations", "poison", "chunks", "0"), events.ChunkReceived{
			User: user, ConversationID: "poison", BlobKey: "users/" + user + "/chunks/poison/0", ContentType: "audio/wav",
			Digest: strings.Repeat("d", 64), Size: 10, Origin: "app", ReceivedAt: time.Now().UTC(),
		})
		if err != nil {
			t.Fatalf("events.New: %v", err)
		}
		data, attrs, err := bus.ToMessage(ev)
		if err != nil {
			t.Fatal(err)
		}
		return ev, data, attrs
	}
	_, _, badAttrs := chunk(tag + "-bad-schema")
	wrongAudio, err := a.events.NewWithID(tag+"-sweep-on-audio", events.TypeRetentionSweep, "retention/sweep", events.RetentionSweepRequested{RequestedAt: time.Now().UTC()})
	if err != nil {
		t.Fatal(err)
	}
	waData, waAttrs, err := bus.ToMessage(wrongAudio)
	if err != nil {
		t.Fatal(err)
	}
	_, wtData, wtAttrs := chunk(tag + "-chunk-on-transcripts")
	return []poison{
		{name: "undecodable on audio", topic: events.TopicAudio, data: []byte("\x00not an event"), reason: "bus.FromMessage"},
		{name: "bad schema on audio", topic: events.TopicAudio, data: []byte(`{"user":1}`), attrs: badAttrs, reason: "validate"},
		{name: "wrong type on audio", topic: events.TopicAudio, data: waData, attrs: waAttrs, reason: events.ErrUnexpectedType.Error(),
			handler: workerTranscribe, eventID: wrongAudio.ID()},
		{name: "undecodable on transcripts", topic: events.TopicTranscripts, data: []byte(`{"specversion":`),
			attrs: map[string]string{"content-type": "application/cloudevents+json"}, reason: "bus."},
		{name: "wrong type on transcripts", topic: events.TopicTranscripts, data: wtData, attrs: wtAttrs, reason: events.ErrUnexpectedType.Error(),
			handler: workerEmbed, eventID: tag + "-chunk-on-transcripts"},
	}
}

// TestPoisonDeadLettersOnceWhileTheRestFlows: malformed messages published
// among valid uploads each reach their topic's dead-letter hold with the
// reason after one attempt; every valid chunk is indexed and nothing else
// is dead-lettered.
func TestPoisonDeadLettersOnceWhileTheRestFlows(t *testing.T) {
	runPoison(t, testConfig(t))
}

func runPoison(t *testing.T, cfg Config) {
	att := newAttempts()
	p := startTestPipeline(t, cfg, overrides{STT: instantSTT{}, WrapHandler: att.wrap})
	tok, err := p.app.issuer.Mint("poison-user", time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	c := client{t, "http://" + p.addr, tok}
	ctx := context.Background()
	ps := poisons(t, p.app, fmt.Sprintf("p%d", time.Now().UnixNano()))
	msgIDs := make([]string, len(ps))
	const valid = 8
	for seq := range valid {
		if code := c.tryUpload("flows", seq, synthWAV(seq)); code != http.StatusAccepted {
			t.Fatalf("upload %d: %d", seq, code)
		}
		if seq < len(ps) {
			pz := ps[seq]
			if msgIDs[seq], err = p.app.bus.PublishMessage(ctx, pz.topic, pz.data, pz.attrs, ""); err != nil {
				t.Fatalf("publish %s: %v", pz.name, err)
			}
		}
	}
	c.waitDone("flows", valid)

	// Each poison is held once, with its reason.
	held := map[string][]bus.DeadLetter{} // by original message id
	waitFor(t, "every poison in its dead-letter hold", func() bool {
		clear(held)
		for _, topic := range []string{events.TopicAudio, events.TopicTranscripts, events.TopicEmbeddings} {
			dls, err := p.app.bus.ListDeadLetters(ctx, topic, 0)
			if err != nil {
				t.Fatalf("ListDeadLetters %s: %v", topic, err)
			}
			for _, dl := range dls {
				held[dl.MessageID] = append(held[dl.MessageID], dl)
			}
		}
		return len(held) >= len(ps)
	})
	for i, pz := range ps {
		dls := held[msgIDs[i]]
		if len(dls) != 1 {
			t.Errorf("%s: held %d times, want once", pz.name, len(dls))
			continue
		}
		if !strings.Contains(dls[0].Reason, pz.reason) || !strings.Contains(dls[0].Reason, "permanent") {
			t.Errorf("%s: reason %q, want a permanent failure naming %q", pz.name, dls[0].Reason, pz.reason)
		}
		if pz.handler != "" {
			if n := att.of(pz.handler, pz.eventID); n != 1 {
				t.Errorf("%s: %d handler attempts, want exactly 1", pz.name, n)
			}
		}
		delete(held, msgIDs[i])
	}
	for id, dls := range held {
		t.Errorf("message %s dead-lettered but not poison: %+v", id, dls)
	}
	sc := countStores(t, p.app, p.app.pseudo.User("poison-user"), "flows")
	if sc.indexed != valid || sc.segments != valid || len(sc.vectorIDs) != valid {
		t.Fatalf("valid chunks: %+v, want %d indexed with segments and vectors", sc, valid)
	}
}

// cutProxy forwards TCP connections to a backend until cut: then it drops
// every open connection and resets new ones at once (the port stays
// taken), as a network partition with a fast failure would, until restored.
type cutProxy struct {
	ln      net.Listener
	backend string
	mu      sync.Mutex
	down    bool
	conns   map[net.Conn]struct{}
}

func newCutProxy(t *testing.T, backend string) *cutProxy {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	p := &cutProxy{ln: ln, backend: backend, conns: map[net.Conn]struct{}{}}
	var wg sync.WaitGroup
	t.Cleanup(func() { ln.Close(); p.set(false, true); wg.Wait() })
	wg.Add(1)
	go func() {
		defer wg.Done()
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			wg.Add(1)
			go func() { defer wg.Done(); p.serve(c) }()
		}
	}()
	return p
}

func (p *cutProxy) addr() string { return p.ln.Addr().String() }

// track registers conns, or reports false while cut.
func (p *cutProxy) track(cs ...net.Conn) bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.down {
		return false
	}
	for _, c := range cs {
		p.conns[c] = struct{}{}
	}
	return true
}

func (p *cutProxy) serve(c net.Conn) {
	defer c.Close()
	b, err := net.DialTimeout("tcp", p.backend, 5*time.Second)
	if err != nil {
		return
	}
	defer b.Close()
	if !p.track(c, b) {
		return
	}
	done := make(chan struct{}, 2)
	go func() { _, _ = io.Copy(b, c); done <- struct{}{} }()
	go func() { _, _ = io.Copy(c, b); done <- struct{}{} }()
	<-done
	p.mu.Lock()
	delete(p.conns, c)
	delete(p.conns, b)
	p.mu.Unlock()
}

// set cuts (down) or restores the link; closeAll drops open connections.
func (p *cutProxy) set(down, closeAll bool) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.down = down
	if closeAll {
		for c := range p.conns {
			c.Close()
		}
		clear(p.conns)
	}
}

// TestFirestoreOutageAnswers503AndLosesNothing is the outage on the
// production document store: the Firestore emulator behind a proxy the
// test cuts and restores (the emulator itself keeps its data).
func TestFirestoreOutageAnswers503AndLosesNothing(t *testing.T) {
	_, fsHost := requireEmulators(t)
	proxy := newCutProxy(t, fsHost)
	cfg := testConfig(t)
	cfg.ProjectID = fmt.Sprintf("outage-%d", time.Now().UnixNano())
	cfg.Documents, cfg.FirestoreEmulatorHost = "firestore", proxy.addr()
	// Short, so the edge answers the outage in seconds, not ten (a cold
	// emulator needs more than one for its first call).
	cfg.FirestoreTimeout = 3 * time.Second
	runDocsOutage(t, cfg, func(s docs.Store) (docs.Store, func(up bool)) {
		return s, func(up bool) { proxy.set(!up, !up) }
	})
}

// TestPoisonOnThePubSubEmulator is the poison test on the Pub/Sub
// emulator, where redelivery and dead-letter holds are the real service's.
func TestPoisonOnThePubSubEmulator(t *testing.T) {
	psHost, _ := requireEmulators(t)
	cfg := testConfig(t)
	cfg.ProjectID = fmt.Sprintf("poison-%d", time.Now().UnixNano())
	cfg.Bus, cfg.PubSubEmulatorHost = "gcp", psHost
	runPoison(t, cfg)
}
