package reconcile_test

import (
	"bytes"
	"context"
	"errors"
	"log/slog"
	"path/filepath"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/lethe-dev/lethe/app/forget"
	"github.com/lethe-dev/lethe/app/records"
	"github.com/lethe-dev/lethe/events"
	"github.com/lethe-dev/lethe/infra/docs"
	"github.com/lethe-dev/lethe/infra/docs/sqlitedocs"
	"github.com/lethe-dev/lethe/workers/internal/workertest"
	"github.com/lethe-dev/lethe/workers/reconcile"
)

type env struct {
	docs docs.Store
	bus  *workertest.RecordingBus
	reg  *events.Registry
	mu   sync.Mutex
	now  time.Time
	w    *reconcile.Worker
}

func newEnv(t *testing.T, maxRedrives, batch int) *env {
	t.Helper()
	ds, err := sqlitedocs.Open(t.Context(), filepath.Join(t.TempDir(), "docs.db"))
	if err != nil {
		t.Fatalf("sqlitedocs.Open: %v", err)
	}
	t.Cleanup(func() { ds.Close() })
	reg, err := events.NewRegistry()
	if err != nil {
		t.Fatal(err)
	}
	e := &env{docs: ds, bus: &workertest.RecordingBus{}, reg: reg, now: time.Date(2026, 11, 3, 10, 0, 0, 0, time.UTC)}
	e.w = &reconcile.Worker{
		Docs: ds, Bus: e.bus, Events: reg, Logger: slog.New(slog.DiscardHandler),
		Now: e.clock, MaxRedrives: maxRedrives, Batch: batch,
	}
	return e
}

func (e *env) clock() time.Time {
	e.mu.Lock()
	defer e.mu.Unlock()
	return e.now
}

func (e *env) advance(d time.Duration) {
	e.mu.Lock()
	defer e.mu.Unlock()
	e.now = e.now.Add(d)
}

// seed writes a chunk record as the edge and the workers leave it.
func (e *env) seed(t *testing.T, user, cid string, seq int, status string, age time.Duration) records.Chunk {
	t.Helper()
	sum := events.DeriveID("a", user, cid, strconv.Itoa(seq)) + events.DeriveID("b", user, cid, strconv.Itoa(seq))
	at := e.clock().Add(-age)
	c := records.Chunk{
		ConversationID: cid, Seq: seq, Status: status,
		BlobKey: records.AudioKey(user, cid, seq, sum), ContentType: "audio/ogg; codecs=opus", SampleRate: 48000,
		Digest: sum, Size: 5964, Origin: "stream", EventID: records.ChunkEventID(user, cid, seq, sum),
		ReceivedAt: at.Add(-time.Second), UpdatedAt: at,
	}
	d, err := c.Doc(user)
	if err != nil {
		t.Fatal(err)
	}
	if err := e.docs.Put(t.Context(), d); err != nil {
		t.Fatal(err)
	}
	return c
}

func (e *env) data(t *testing.T, user string, c records.Chunk) []byte {
	t.Helper()
	d, err := e.docs.Get(t.Context(), records.ChunkKey(user, c.ConversationID, c.Seq))
	if err != nil {
		t.Fatal(err)
	}
	return d.Data
}

func (e *env) chunk(t *testing.T, user string, c records.Chunk) records.Chunk {
	t.Helper()
	got, err := records.ChunkFrom(docs.Doc{Data: e.data(t, user, c)})
	if err != nil {
		t.Fatal(err)
	}
	return got
}

// checkRedrive asserts p is c's chunk event, with the id the edge used.
func checkRedrive(t *testing.T, e *env, p workertest.Published, user string, c records.Chunk) {
	t.Helper()
	if p.Topic != events.TopicAudio {
		t.Errorf("topic %q", p.Topic)
	}
	if p.Event.ID() != c.EventID || p.Event.ID() != records.ChunkEventID(user, c.ConversationID, c.Seq, c.Digest) {
		t.Errorf("id %q, want the record's %q", p.Event.ID(), c.EventID)
	}
	if p.Event.Type() != events.TypeChunkReceived {
		t.Errorf("type %q", p.Event.Type())
	}
	if want := events.Subject(user, "conversations", c.ConversationID, "chunks", strconv.Itoa(c.Seq)); p.Event.Subject() != want {
		t.Errorf("subject %q, want %q", p.Event.Subject(), want)
	}
	var in events.ChunkReceived
	if err := e.reg.Decode(p.Event, &in); err != nil {
		t.Fatalf("re-driven event does not decode: %v", err)
	}
	want := events.ChunkReceived{User: user, ConversationID: c.ConversationID, Seq: c.Seq, BlobKey: c.BlobKey,
		ContentType: c.ContentType, SampleRate: c.SampleRate, Digest: c.Digest, Size: c.Size, Origin: c.Origin}
	got := in
	got.ReceivedAt = time.Time{}
	if got != want || !in.ReceivedAt.Equal(c.ReceivedAt) {
		t.Errorf("payload %+v, want %+v at %v", in, want, c.ReceivedAt)
	}
}

func byID(pubs []workertest.Published) map[string]workertest.Published {
	m := map[string]workertest.Published{}
	for _, p := range pubs {
		m[p.Event.ID()] = p
	}
	return m
}

func TestRunOnceRedrivesStuckChunks(t *testing.T) {
	e := newEnv(t, 10, 100)
	a, b, gone := workertest.UserID(t, "a"), workertest.UserID(t, "b"), workertest.UserID(t, "gone")
	const bound = 10 * time.Minute
	stuckReceived := e.seed(t, a, "c1", 0, records.StatusReceived, time.Hour)
	stuckTranscribed := e.seed(t, b, "c2", 7, records.StatusTranscribed, time.Hour)
	untouched := map[string]struct {
		user string
		c    records.Chunk
	}{
		"recent received":    {a, e.seed(t, a, "c1", 1, records.StatusReceived, time.Minute)},
		"recent transcribed": {b, e.seed(t, b, "c2", 8, records.StatusTranscribed, bound-time.Second)},
		"old indexed":        {a, e.seed(t, a, "c1", 2, records.StatusIndexed, 24*time.Hour)},
		"old failed":         {b, e.seed(t, b, "c2", 9, records.StatusFailed, 24*time.Hour)},
		"tombstoned user":    {gone, e.seed(t, gone, "c3", 0, records.StatusReceived, time.Hour)},
	}
	if err := e.docs.Put(t.Context(), docs.Doc{Key: records.TombstoneKey(gone), Data: []byte(`{}`)}); err != nil {
		t.Fatal(err)
	}
	before := map[string][]byte{}
	for name, u := range untouched {
		before[name] = e.data(t, u.user, u.c)
	}

	st, err := e.w.RunOnce(t.Context(), bound)
	if err != nil {
		t.Fatalf("RunOnce: %v", err)
	}
	pubs := byID(e.bus.All())
	if len(e.bus.All()) != 2 || len(pubs) != 2 {
		t.Fatalf("published %d events, want the 2 stuck chunks", len(e.bus.All()))
	}
	checkRedrive(t, e, pubs[stuckReceived.EventID], a, stuckReceived)
	checkRedrive(t, e, pubs[stuckTranscribed.EventID], b, stuckTranscribed)
	if st != (reconcile.Stats{Redriven: 2}) {
		t.Errorf("stats %+v, want 2 re-driven", st)
	}
	for _, s := range []struct {
		user string
		c    records.Chunk
	}{{a, stuckReceived}, {b, stuckTranscribed}} {
		got := e.chunk(t, s.user, s.c)
		if got.Status != s.c.Status || got.Redriven != 1 || !got.UpdatedAt.Equal(e.clock()) {
			t.Errorf("%s after re-drive: status %q redriven %d updated %v", records.ChunkID(s.c.ConversationID, s.c.Seq), got.Status, got.Redriven, got.UpdatedAt)
		}
	}
	for name, u := range untouched {
		if !bytes.Equal(e.data(t, u.user, u.c), before[name]) {
			t.Errorf("%s: record changed: %s", name, e.data(t, u.user, u.c))
		}
	}

	// The re-drive itself resets the clock on those chunks: an immediate
	// second pass re-drives nothing.
	if st, err := e.w.RunOnce(t.Context(), bound); err != nil || st.Redriven+st.Failed != 0 {
		t.Errorf("second pass: %+v, %v", st, err)
	}
	if n := len(e.bus.All()); n != 2 {
		t.Errorf("second pass published; %d events in all", n)
	}
}

func TestRunOnceGivesUpAfterMaxRedrives(t *testing.T) {
	const maxRedrives = 2
	e := newEnv(t, maxRedrives, 100)
	user := workertest.UserID(t, "a")
	c := e.seed(t, user, "c1", 0, records.StatusReceived, time.Hour)
	for pass := 1; pass <= maxRedrives; pass++ {
		st, err := e.w.RunOnce(t.Context(), time.Minute)
		if err != nil || st != (reconcile.Stats{Redriven: 1}) {
			t.Fatalf("pass %d: %+v, %v", pass, st, err)
		}
		if n := len(e.bus.All()); n != pass {
			t.Fatalf("pass %d: %d events", pass, n)
		}
		e.advance(time.Hour)
	}
	st, err := e.w.RunOnce(t.Context(), time.Minute)
	if err != nil || st != (reconcile.Stats{Failed: 1}) {
		t.Fatalf("last pass: %+v, %v", st, err)
	}
	if n := len(e.bus.All()); n != maxRedrives {
		t.Errorf("%d events: the chunk was re-driven past the bound", n)
	}
	got := e.chunk(t, user, c)
	if got.Status != records.StatusFailed || got.FailReason == "" {
		t.Errorf("status %q (%q), want failed with a reason", got.Status, got.FailReason)
	}
	// Final: never again.
	e.advance(time.Hour)
	if st, err := e.w.RunOnce(t.Context(), 0); err != nil || st != (reconcile.Stats{}) {
		t.Errorf("after failing: %+v, %v", st, err)
	}
	for _, p := range e.bus.All() {
		checkRedrive(t, e, p, user, c)
	}
}

// Bound 0 (start of a process with an in-memory bus): every non-final
// chunk, however recent, is re-driven.
func TestRunOnceZeroBoundRedrivesAllNonFinal(t *testing.T) {
	e := newEnv(t, 10, 100)
	user := workertest.UserID(t, "a")
	want := []records.Chunk{
		e.seed(t, user, "c1", 0, records.StatusReceived, 0),
		e.seed(t, user, "c1", 1, records.StatusTranscribed, 0),
		e.seed(t, user, "c1", 2, records.StatusReceived, time.Second),
		e.seed(t, user, "c1", 3, records.StatusTranscribed, 30*24*time.Hour),
	}
	e.seed(t, user, "c1", 4, records.StatusIndexed, 0)
	e.seed(t, user, "c1", 5, records.StatusFailed, 0)
	st, err := e.w.RunOnce(t.Context(), 0)
	if err != nil {
		t.Fatal(err)
	}
	if st.Redriven != len(want) || st.Failed != 0 {
		t.Errorf("stats %+v", st)
	}
	pubs := byID(e.bus.All())
	if len(pubs) != len(want) || len(e.bus.All()) != len(want) {
		t.Fatalf("published %d, want %d", len(e.bus.All()), len(want))
	}
	for _, c := range want {
		p, ok := pubs[c.EventID]
		if !ok {
			t.Errorf("%s not re-driven", records.ChunkID(c.ConversationID, c.Seq))
			continue
		}
		checkRedrive(t, e, p, user, c)
	}
}

// One pass handles at most Batch per state, oldest first; the rest wait for
// the next pass.
func TestRunOnceBatch(t *testing.T) {
	e := newEnv(t, 10, 2)
	user := workertest.UserID(t, "a")
	var seeded []records.Chunk
	for i := range 5 {
		seeded = append(seeded, e.seed(t, user, "c1", i, records.StatusReceived, time.Duration(10-i)*time.Hour))
	}
	for pass, wantSeqs := range [][]int{{0, 1}, {2, 3}, {4}} {
		before := len(e.bus.All())
		if _, err := e.w.RunOnce(t.Context(), time.Minute); err != nil {
			t.Fatal(err)
		}
		got := e.bus.All()[before:]
		if len(got) != len(wantSeqs) {
			t.Fatalf("pass %d: %d events, want %d", pass, len(got), len(wantSeqs))
		}
		for i, seq := range wantSeqs {
			if got[i].Event.ID() != seeded[seq].EventID {
				t.Errorf("pass %d: event %d is not seq %d (oldest first)", pass, i, seq)
			}
		}
	}
}

func TestRunOncePublishFailure(t *testing.T) {
	e := newEnv(t, 10, 100)
	user := workertest.UserID(t, "a")
	c := e.seed(t, user, "c1", 0, records.StatusTranscribed, time.Hour)
	e.bus.SetFail(errors.New("bus down"))
	if _, err := e.w.RunOnce(t.Context(), time.Minute); err == nil {
		t.Error("RunOnce hid a publish failure")
	}
	e.bus.SetFail(nil)
	e.advance(time.Hour)
	if _, err := e.w.RunOnce(t.Context(), time.Minute); err != nil {
		t.Fatal(err)
	}
	pubs := e.bus.All()
	if len(pubs) != 1 {
		t.Fatalf("%d events", len(pubs))
	}
	checkRedrive(t, e, pubs[0], user, c)
	if st := e.chunk(t, user, c).Status; st != records.StatusTranscribed {
		t.Errorf("status %q", st)
	}
}

func TestRun(t *testing.T) {
	e := newEnv(t, 10, 100)
	user := workertest.UserID(t, "a")
	c := e.seed(t, user, "c1", 0, records.StatusReceived, 0)
	ctx, cancel := context.WithCancel(t.Context())
	done := make(chan error, 1)
	go func() { done <- e.w.Run(ctx, 0, time.Hour, 5*time.Millisecond) }()
	deadline := time.Now().Add(10 * time.Second)
	for len(e.bus.All()) == 0 && time.Now().Before(deadline) {
		time.Sleep(5 * time.Millisecond)
	}
	// Later passes use the hour bound: the chunk (re-driven "now" on a
	// stopped clock) is not re-driven again.
	time.Sleep(50 * time.Millisecond)
	cancel()
	select {
	case err := <-done:
		if err != nil {
			t.Errorf("Run: %v", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("Run did not return after cancel")
	}
	pubs := e.bus.All()
	if len(pubs) != 1 {
		t.Fatalf("%d events, want 1", len(pubs))
	}
	checkRedrive(t, e, pubs[0], user, c)
}

// TestUnfinishedErasuresAreAnnouncedAgain: an erasure whose announcement was
// lost, or whose process died mid-saga, is announced again once it has sat
// past the bound, and finished ones are left alone.
func TestUnfinishedErasuresAreAnnouncedAgain(t *testing.T) {
	e := newEnv(t, 3, 100)
	saga := &forget.Saga{Docs: e.docs, Bus: e.bus, Events: e.reg, Now: e.clock}
	e.w.Erasures = saga
	e.bus.SetFail(errors.New("bus down"))
	user := workertest.UserID(t, "erased")
	req, err := saga.Request(t.Context(), user, "system")
	if err != nil {
		t.Fatal(err)
	}
	e.bus.SetFail(nil)
	if st, err := e.w.RunOnce(t.Context(), time.Minute); err != nil || st.Erasures != 0 {
		t.Fatalf("fresh erasure re-driven: %+v %v", st, err)
	}
	e.advance(2 * time.Minute)
	st, err := e.w.RunOnce(t.Context(), time.Minute)
	if err != nil || st.Erasures != 1 {
		t.Fatalf("stuck erasure: %+v %v", st, err)
	}
	got := e.bus.All()
	if len(got) != 1 || got[0].Topic != events.TopicLifecycle || got[0].Event.Type() != events.TypeUserErasureRequested {
		t.Fatalf("published %+v", got)
	}
	var p events.UserErasureRequested
	if err := e.reg.Decode(got[0].Event, &p); err != nil || p.RequestID != req.ID || p.User != user {
		t.Fatalf("payload %+v %v", p, err)
	}
}

// TestRunOnceRedrivesChunkWithoutAudio: a chunk with no blob (a text
// memory such as an SMS, or audio a retention sweep deleted) that is stuck
// transcribed is re-driven with an empty blob_key, and the pass goes on.
func TestRunOnceRedrivesChunkWithoutAudio(t *testing.T) {
	e := newEnv(t, 10, 100)
	user := events.DeriveID("user", t.Name())
	c := e.seed(t, user, "sms-abc", 0, records.StatusTranscribed, time.Hour)
	c.BlobKey, c.ContentType, c.SampleRate, c.Origin = "", "text/plain", 0, "twilio"
	d, err := c.Doc(user)
	if err != nil {
		t.Fatal(err)
	}
	if err := e.docs.Put(t.Context(), d); err != nil {
		t.Fatal(err)
	}
	other := e.seed(t, user, "walk", 0, records.StatusReceived, time.Hour)
	if _, err := e.w.RunOnce(t.Context(), time.Minute); err != nil {
		t.Fatalf("RunOnce: %v", err)
	}
	got := byID(e.bus.All())
	if len(got) != 2 {
		t.Fatalf("re-drove %d chunks, want both", len(got))
	}
	checkRedrive(t, e, got[c.EventID], user, c)
	checkRedrive(t, e, got[other.EventID], user, other)
}
