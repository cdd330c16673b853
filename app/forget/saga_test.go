package forget_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/cloudevents/sdk-go/v2/event"

	"github.com/lethe-dev/lethe/app/audit"
	"github.com/lethe-dev/lethe/app/forget"
	"github.com/lethe-dev/lethe/app/records"
	"github.com/lethe-dev/lethe/events"
	"github.com/lethe-dev/lethe/infra/blobs"
	"github.com/lethe-dev/lethe/infra/blobs/dirblobs"
	"github.com/lethe-dev/lethe/infra/docs"
	"github.com/lethe-dev/lethe/infra/docs/sqlitedocs"
	"github.com/lethe-dev/lethe/infra/keys"
	"github.com/lethe-dev/lethe/infra/keys/filekek"
	"github.com/lethe-dev/lethe/infra/ratelimit"
	"github.com/lethe-dev/lethe/infra/ratelimit/memlimit"
	"github.com/lethe-dev/lethe/infra/vectors"
	"github.com/lethe-dev/lethe/infra/vectors/flatvectors"
	"github.com/lethe-dev/lethe/internal/testbus"
)

const (
	alice = "a11ce000000000000000000000000001"
	bob   = "b0b00000000000000000000000000002"
)

// env is a saga over real embedded adapters in the test's directory.
type env struct {
	t      testing.TB
	dir    string
	docs   docs.Store
	blobs  blobs.Bucket
	vecs   vectors.Index
	keys   *keys.Keyring
	rates  *memlimit.Limiter
	bus    *testbus.Recorder
	events *events.Registry
	saga   *forget.Saga
}

func rateKeys(user string) []string { return []string{"user:" + user, "search:" + user} }

func newEnv(t testing.TB) *env {
	t.Helper()
	dir := t.TempDir()
	ctx := t.Context()
	d, err := sqlitedocs.Open(ctx, filepath.Join(dir, "docs.db"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { d.Close() })
	b, err := dirblobs.Open(filepath.Join(dir, "blobs"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { b.Close() })
	v, err := flatvectors.Open(filepath.Join(dir, "vectors"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { v.Close() })
	kek, err := filekek.Open(filepath.Join(dir, "kek.json"))
	if err != nil {
		t.Fatal(err)
	}
	reg, err := events.NewRegistry()
	if err != nil {
		t.Fatal(err)
	}
	e := &env{t: t, dir: dir, docs: d, blobs: b, vecs: v, rates: memlimit.New(memlimit.Options{}),
		keys: keys.NewKeyring(kek, keys.NewDocsKeysetStore(d), keys.Options{}), bus: &testbus.Recorder{}, events: reg}
	e.saga = &forget.Saga{Docs: d, Blobs: b, Vectors: v, Keys: e.keys, Rates: e.rates, RateKeys: rateKeys,
		Audit: &audit.Log{Docs: d}, Bus: e.bus, Events: reg}
	return e
}

// populate gives user n conversations, each with a chunk record, a sealed
// segment, a sealed audio blob and a vector, plus rate-limit counters.
func (e *env) populate(user string, n int) {
	t, ctx := e.t, e.t.Context()
	for i := range n {
		cid := fmt.Sprintf("conv-%d", i)
		now := time.Now().UTC()
		conv, _ := records.Conversation{ID: cid, CreatedAt: now, UpdatedAt: now}.Doc(user)
		blobKey := fmt.Sprintf("users/%s/audio/%s/0000000-x.sealed", user, cid)
		chunk, _ := records.Chunk{ConversationID: cid, Seq: 0, Status: records.StatusIndexed, BlobKey: blobKey, UpdatedAt: now}.Doc(user)
		sealed, err := e.keys.Seal(ctx, user, []byte("secret words "+cid), keys.AD(user, records.Segments, records.ChunkID(cid, 0), "text"))
		if err != nil {
			t.Fatal(err)
		}
		seg, _ := records.Segment{ConversationID: cid, Seq: 0, SealedText: sealed, CreatedAt: now}.Doc(user)
		for _, doc := range []docs.Doc{conv, chunk, seg} {
			if err := e.docs.Put(ctx, doc); err != nil {
				t.Fatal(err)
			}
		}
		if _, err := e.blobs.Write(ctx, blobKey, bytes.NewReader(sealed), blobs.WriteOptions{}); err != nil {
			t.Fatal(err)
		}
		vec := make([]float32, 8)
		vec[i%8] = 1
		if err := e.vecs.Upsert(ctx, user, []vectors.Record{{ID: records.VectorID(cid, 0), Values: vec}}); err != nil {
			t.Fatal(err)
		}
	}
	for _, k := range rateKeys(user) {
		if _, err := e.rates.Allow(ctx, k, ratelimit.PerMinute(10, 5)); err != nil {
			t.Fatal(err)
		}
	}
}

func (e *env) count(user string) map[string]int {
	ctx := e.t.Context()
	n, err := e.docs.CountUser(ctx, user)
	if err != nil {
		e.t.Fatal(err)
	}
	objs, err := e.blobs.List(ctx, "users/"+user+"/")
	if err != nil {
		e.t.Fatal(err)
	}
	nv, err := e.vecs.Count(ctx, user)
	if err != nil {
		e.t.Fatal(err)
	}
	held, _ := e.rates.Held(ctx, rateKeys(user)...)
	return map[string]int{"documents": n, "blobs": len(objs), "vectors": nv, "ratelimit": held}
}

func TestEraseUserEverywhereKeepsOthers(t *testing.T) {
	e := newEnv(t)
	e.populate(alice, 5)
	e.populate(bob, 3)
	bobBefore := e.count(bob)
	ctx := t.Context()

	req, err := e.saga.Request(ctx, alice, audit.UserActor(alice))
	if err != nil {
		t.Fatal(err)
	}
	if req.State != forget.StatePending || req.ID != forget.ErasureID(alice) {
		t.Fatalf("request: %+v", req)
	}
	sent := e.bus.All()
	if len(sent) != 1 || sent[0].Topic != events.TopicLifecycle || sent[0].Event.Type() != events.TypeUserErasureRequested {
		t.Fatalf("announced %d events", len(sent))
	}
	// The tombstone is immediate: no key can be made or used from here on.
	if _, err := e.keys.Seal(ctx, alice, []byte("late"), nil); !errors.Is(err, keys.ErrTombstoned) {
		t.Fatalf("Seal after request: %v, want ErrTombstoned", err)
	}
	again, err := e.saga.Request(ctx, alice, audit.UserActor(alice))
	if err != nil || again.ID != req.ID {
		t.Fatalf("second request: %+v %v", again, err)
	}
	if err := e.saga.Handle(ctx, sent[0].Event); err != nil {
		t.Fatalf("Handle: %v", err)
	}
	done, err := e.saga.Status(ctx, req.ID)
	if err != nil {
		t.Fatal(err)
	}
	if done.State != forget.StateDone || done.Receipt.FinishedAt.IsZero() {
		t.Fatalf("state %+v", done)
	}
	// 5 conversations × (conversation, chunk, segment) + the keyset.
	want := map[string]forget.StoreCount{
		forget.StoreDocuments: {Found: 16, Deleted: 16}, forget.StoreBlobs: {Found: 5, Deleted: 5},
		forget.StoreVectors: {Found: 5, Deleted: 5}, forget.StoreKeys: {Found: 1, Deleted: 1},
		forget.StoreRateLimit: {Found: 2, Deleted: 2},
	}
	for store, w := range want {
		if got := done.Receipt.Stores[store]; got != w {
			t.Errorf("receipt %s = %+v, want %+v", store, got, w)
		}
	}
	for store, n := range e.count(alice) {
		if n != 0 {
			t.Errorf("alice still has %d in %s", n, store)
		}
	}
	if got := e.count(bob); fmt.Sprint(got) != fmt.Sprint(bobBefore) {
		t.Fatalf("bob's data changed: %v, was %v", got, bobBefore)
	}
	// Running again, or redelivering, changes nothing.
	if err := e.saga.Handle(ctx, sent[0].Event); err != nil {
		t.Fatal(err)
	}
	// The trail shows every step, with counts and no content.
	entries, _, err := (&audit.Log{Docs: e.docs}).List(ctx, audit.Filter{Subject: alice, Limit: 100})
	if err != nil {
		t.Fatal(err)
	}
	actions := map[string]int{}
	for _, en := range entries {
		actions[en.Action]++
	}
	if actions[audit.ActionErasureRequested] != 1 || actions[audit.ActionErasureStep] != 6 || actions[audit.ActionErasureDone] != 1 {
		t.Fatalf("audit actions %v", actions)
	}
}

// failingBlobs is a driver that fails DeletePrefix after deleting one
// object, once: a crash in the middle of the delete step.
type failingBlobs struct {
	blobs.Driver
	Bucket blobs.Bucket // the same store, undecorated
	mu     sync.Mutex
	failed bool
}

func (f *failingBlobs) DeletePrefix(ctx context.Context, prefix string) (int, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.failed {
		return f.Driver.DeletePrefix(ctx, prefix)
	}
	f.failed = true
	objs, err := f.Bucket.List(ctx, prefix)
	if err != nil || len(objs) == 0 {
		return 0, errors.New("injected failure")
	}
	if err := f.Bucket.Delete(ctx, objs[0].Key); err != nil {
		return 0, err
	}
	return 1, errors.New("injected failure after one delete")
}

func TestEraseResumesAfterAFailureMidStep(t *testing.T) {
	e := newEnv(t)
	e.populate(alice, 4)
	ctx := t.Context()
	e.saga.Blobs = blobs.New(&failingBlobs{Driver: e.blobs.Driver(), Bucket: e.blobs})
	req, err := e.saga.Request(ctx, alice, audit.ActorOperator)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := e.saga.Run(ctx, req.ID); err == nil {
		t.Fatal("Run with a failing store: no error")
	}
	mid, _ := e.saga.Status(ctx, req.ID)
	if mid.State != forget.StateRunning || mid.Step != forget.StepShred {
		t.Fatalf("after the failure: state %s step %s, want running after shred", mid.State, mid.Step)
	}
	done, err := e.saga.Run(ctx, req.ID)
	if err != nil || done.State != forget.StateDone {
		t.Fatalf("resume: %+v %v", done, err)
	}
	if c := done.Receipt.Stores[forget.StoreBlobs]; c.Found != 4 || c.Deleted != 4 || c.Remaining != 0 {
		t.Fatalf("blobs receipt %+v, want 4 found and deleted", c)
	}
}

// laggingVectors is an eventually consistent index that has not yet
// applied the namespace delete: Count still sees the vectors.
type laggingVectors struct {
	vectors.Driver
	lagRounds int
	calls     int
}

func (l *laggingVectors) DeleteNamespace(ctx context.Context, ns string) error {
	l.calls++
	if l.calls <= l.lagRounds {
		return nil
	}
	return l.Driver.DeleteNamespace(ctx, ns)
}

func TestEraseVerifiesAndGoesRoundUntilNothingIsLeft(t *testing.T) {
	for _, tc := range []struct {
		lag       int
		wantState string
	}{
		{lag: 1, wantState: forget.StateDone},
		{lag: forget.MaxVerifyRounds + 1, wantState: forget.StateFailed},
	} {
		t.Run(fmt.Sprintf("lag%d", tc.lag), func(t *testing.T) {
			e := newEnv(t)
			e.populate(alice, 2)
			ctx := t.Context()
			e.saga.Vectors = vectors.New(&laggingVectors{Driver: e.vecs.Driver(), lagRounds: tc.lag})
			req, err := e.saga.Request(ctx, alice, audit.ActorOperator)
			if err != nil {
				t.Fatal(err)
			}
			var last forget.Erasure
			for range forget.MaxVerifyRounds + 2 {
				last, err = e.saga.Run(ctx, req.ID)
				if err == nil {
					break
				}
				if events.IsPermanent(err) {
					t.Fatalf("incomplete erasure is poison: %v", err)
				}
			}
			if last.State != tc.wantState {
				t.Fatalf("state %s (%s), want %s", last.State, last.Error, tc.wantState)
			}
			if tc.wantState == forget.StateFailed && last.Receipt.Stores[forget.StoreVectors].Remaining == 0 {
				t.Fatal("failed erasure does not say what is left")
			}
		})
	}
}

func TestHandleRefusesForgedAndMalformedEvents(t *testing.T) {
	e := newEnv(t)
	ctx := t.Context()
	req, err := e.saga.Request(ctx, alice, audit.ActorOperator)
	if err != nil {
		t.Fatal(err)
	}
	mk := func(user, id string) event.Event {
		ev, err := e.events.New(events.TypeUserErasureRequested, events.Subject(user), events.UserErasureRequested{User: user, RequestID: id, RequestedAt: time.Now()})
		if err != nil {
			t.Fatal(err)
		}
		return ev
	}
	malformed := mk(alice, req.ID)
	_ = malformed.SetData("application/json", []byte(`{"user":"x"}`))
	for name, ev := range map[string]event.Event{
		"unknown erasure":    mk(alice, "no-such-erasure"),
		"another user's id":  mk(bob, req.ID),
		"malformed payload":  malformed,
		"other type on path": func() event.Event { x := mk(alice, req.ID); x.SetType(events.TypeUserExportRequested); return x }(),
	} {
		if err := e.saga.Handle(ctx, ev); !events.IsPermanent(err) {
			t.Errorf("%s: %v, want permanent", name, err)
		}
	}
	if st, _ := e.saga.Status(ctx, req.ID); st.State != forget.StatePending {
		t.Fatalf("forged events moved the erasure to %s", st.State)
	}
}

func TestRequestSurvivesAnAnnounceFailure(t *testing.T) {
	e := newEnv(t)
	e.bus.SetFail(errors.New("bus down"))
	ctx := t.Context()
	req, err := e.saga.Request(ctx, alice, audit.ActorOperator)
	if err != nil {
		t.Fatalf("request with the bus down: %v", err)
	}
	left, err := e.saga.Unfinished(ctx, time.Now().Add(time.Minute), 10)
	if err != nil || len(left) != 1 || left[0].ID != req.ID {
		t.Fatalf("unfinished: %+v %v", left, err)
	}
	if _, err := e.saga.Request(ctx, "", audit.ActorOperator); !errors.Is(err, docs.ErrInvalid) {
		t.Fatalf("empty user: %v", err)
	}
}

func TestEraseOneConversation(t *testing.T) {
	e := newEnv(t)
	e.populate(alice, 3)
	e.populate(bob, 1)
	ctx := t.Context()
	c := &forget.Conversations{Docs: e.docs, Blobs: e.blobs, Vectors: e.vecs, Audit: &audit.Log{Docs: e.docs}}
	// Bob has no conv-2: erasing it touches nothing of alice's.
	if _, err := c.Erase(ctx, bob, "conv-2", audit.UserActor(bob)); !errors.Is(err, forget.ErrNoConversation) {
		t.Fatalf("bob erases alice's conversation id: %v", err)
	}
	rec, err := c.Erase(ctx, alice, "conv-1", audit.UserActor(alice))
	if err != nil {
		t.Fatal(err)
	}
	want := map[string]forget.StoreCount{
		forget.StoreDocuments: {Found: 3, Deleted: 3}, forget.StoreBlobs: {Found: 1, Deleted: 1}, forget.StoreVectors: {Found: 1, Deleted: 1},
	}
	for store, w := range want {
		if rec.Stores[store] != w {
			t.Errorf("%s: %+v, want %+v", store, rec.Stores[store], w)
		}
	}
	got := e.count(alice)
	if got["documents"] != 3*3+1-3 || got["blobs"] != 2 || got["vectors"] != 2 {
		t.Fatalf("alice after deleting one of three conversations: %v", got)
	}
	if _, err := e.docs.Get(ctx, records.ConversationKey(bob, "conv-0")); err != nil {
		t.Fatalf("bob's conversation: %v", err)
	}
	if _, err := c.Erase(ctx, alice, "conv-1", audit.UserActor(alice)); !errors.Is(err, forget.ErrNoConversation) {
		t.Fatalf("second erase: %v", err)
	}
	for _, bad := range []string{"", "../x", "a b"} {
		if _, err := c.Erase(ctx, alice, bad, audit.UserActor(alice)); !errors.Is(err, docs.ErrInvalid) {
			t.Errorf("cid %q: %v", bad, err)
		}
	}
	entries, _, _ := (&audit.Log{Docs: e.docs}).List(ctx, audit.Filter{Subject: alice})
	if len(entries) != 1 || entries[0].Action != audit.ActionConversationDeleted || entries[0].Counts["documents.deleted"] != 3 {
		t.Fatalf("audit %+v", entries)
	}
}
