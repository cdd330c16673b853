package main

import (
	"bytes"
	"context"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"cloud.google.com/go/firestore"
	"github.com/fsouza/fake-gcs-server/fakestorage"

	"github.com/lethe-dev/lethe/app/forget"
	"github.com/lethe-dev/lethe/app/records"
	"github.com/lethe-dev/lethe/infra/backup"
	"github.com/lethe-dev/lethe/infra/docs"
	"github.com/lethe-dev/lethe/infra/embed"
)

// holdings counts what the stores hold for user: documents, blobs,
// vectors, and whether a data key exists.
func holdings(t *testing.T, a *app, user string) map[string]int {
	t.Helper()
	ctx := context.Background()
	out := map[string]int{}
	var err error
	if out[forget.StoreDocuments], err = a.docs.CountUser(ctx, user); err != nil {
		t.Fatal(err)
	}
	for _, p := range forget.BlobPrefixes(user) {
		objs, err := a.blobs.List(ctx, p)
		if err != nil {
			t.Fatal(err)
		}
		out[forget.StoreBlobs] += len(objs)
	}
	if out[forget.StoreVectors], err = a.vectors.Count(ctx, user); err != nil {
		t.Fatal(err)
	}
	has, err := a.keys.HasKey(ctx, user)
	if err != nil {
		t.Fatal(err)
	}
	if has {
		out[forget.StoreKeys] = 1
	}
	return out
}

// vectorHits queries user's namespace directly with the embedding of q.
func vectorHits(t *testing.T, a *app, user, q string) int {
	t.Helper()
	vecs, err := a.embedder.Embed(context.Background(), []string{q}, embed.Query)
	if err != nil {
		t.Fatal(err)
	}
	m, err := a.vectors.Query(context.Background(), user, vecs[0], 10, nil)
	if err != nil {
		t.Fatal(err)
	}
	return len(m)
}

// eraseMe erases the client's account and waits for the receipt.
func (c client) eraseMe() erasureReply {
	c.t.Helper()
	var er erasureReply
	if code := c.do("DELETE", "/v1/me", "", nil, &er); code != http.StatusAccepted {
		c.t.Fatalf("DELETE /v1/me: %d", code)
	}
	if done := c.waitErased(er.ID); done.State != forget.StateDone {
		c.t.Fatalf("erasure: %+v", done)
	}
	return er
}

func runCmd(t *testing.T, f func(stdout, stderr *bytes.Buffer) error) (string, error) {
	t.Helper()
	var out, errb bytes.Buffer
	err := f(&out, &errb)
	return out.String() + errb.String(), err
}

// TestRestoreDrillNeverBringsBackAnErasedUser: alice and bob record
// memories; a backup is taken while lethe runs; alice erases her account;
// the backup is restored into a new data dir. A changed archive and a
// wrong key are refused; a restore without the journal's replay would
// bring alice back (and cannot serve); lethe restore replays it, so
// alice's documents, blobs, vectors and keyset are gone and her memories
// unsearchable, while bob's are intact and searchable.
func TestRestoreDrillNeverBringsBackAnErasedUser(t *testing.T) {
	requirePocketSphinx(t)
	ctx := context.Background()
	keyFile := filepath.Join(t.TempDir(), "backup.key")
	if _, err := runCmd(t, func(o, e *bytes.Buffer) error {
		return cmdBackup(ctx, Config{}, []string{"keygen", "--out", keyFile}, o, e)
	}); err != nil {
		t.Fatal(err)
	}
	cfg := testConfig(t)
	cfg.BackupKeyFile = keyFile
	cfg.ErasureJournal = filepath.Join(t.TempDir(), "journal")

	p := startTestPipeline(t, cfg, overrides{})
	const aliceUID, bobUID = "alice-drill-uid-41f", "bob-drill-uid-9c2"
	mint := func(a *app, uid string) string {
		tok, err := a.issuer.Mint(uid, time.Hour)
		if err != nil {
			t.Fatal(err)
		}
		return tok
	}
	base := "http://" + p.addr
	alice, bob := client{t, base, mint(p.app, aliceUID)}, client{t, base, mint(p.app, bobUID)}
	alice.upload("aliceHelloQ1", 0, "speech-hello.wav")
	alice.upload("aliceDentQ1", 0, "speech-dentist.wav")
	bob.upload("bobDentistQ1", 0, "speech-dentist.wav")
	aliceConv := alice.waitDone("aliceHelloQ1", 1)
	alice.waitDone("aliceDentQ1", 1)
	bobConv := bob.waitDone("bobDentistQ1", 1)
	aliceUser, bobUser := p.app.pseudo.User(aliceUID), p.app.pseudo.User(bobUID)
	aliceQuery := strings.Join(strings.Fields(aliceConv.Transcript)[:2], " ")
	bobQuery := strings.Join(strings.Fields(bobConv.Transcript)[:3], " ")
	bobBefore := holdings(t, p.app, bobUser)

	// The backup, taken while lethe serves.
	archive := filepath.Join(t.TempDir(), "lethe.backup")
	out, err := runCmd(t, func(o, e *bytes.Buffer) error { return cmdBackup(ctx, cfg, []string{"--out", archive}, o, e) })
	if err != nil {
		t.Fatalf("backup: %v\n%s", err, out)
	}

	alice.eraseMe()
	if err := p.stop(); err != nil {
		t.Fatal(err)
	}

	// Refusals: the archive changed in one byte, a wrong key, a non-empty
	// data dir. Each leaves the target untouched.
	good, err := os.ReadFile(archive)
	if err != nil {
		t.Fatal(err)
	}
	tampered := filepath.Join(t.TempDir(), "tampered.backup")
	bad := bytes.Clone(good)
	bad[len(bad)/2] ^= 0x80
	if err := os.WriteFile(tampered, bad, 0o600); err != nil {
		t.Fatal(err)
	}
	otherKey := filepath.Join(t.TempDir(), "other.key")
	if err := backup.GenerateKey(otherKey); err != nil {
		t.Fatal(err)
	}
	target := cfg
	target.DataDir = filepath.Join(t.TempDir(), "restored")
	for name, args := range map[string][]string{
		"tampered":  {"--in", tampered},
		"wrong key": {"--in", archive, "--key", otherKey},
	} {
		out, err := runCmd(t, func(o, e *bytes.Buffer) error { return cmdRestore(ctx, target, testLogger(t), args, o, e) })
		if err == nil || !strings.Contains(err.Error(), "refused") {
			t.Fatalf("%s archive: %v, want refused\n%s", name, err, out)
		}
		if _, err := os.Stat(target.DataDir); !os.IsNotExist(err) {
			t.Fatalf("%s archive left %s behind: %v", name, target.DataDir, err)
		}
	}
	if _, err := runCmd(t, func(o, e *bytes.Buffer) error {
		return cmdRestore(ctx, cfg, testLogger(t), []string{"--in", archive}, o, e)
	}); err == nil || !strings.Contains(err.Error(), "not empty") {
		t.Fatalf("restore over the live data dir: %v, want not empty", err)
	}
	// On another machine the journal must be pointed at, not made anew.
	elsewhere := target
	elsewhere.ErasureJournal = filepath.Join(t.TempDir(), "no-journal-here")
	if _, err := runCmd(t, func(o, e *bytes.Buffer) error {
		return cmdRestore(ctx, elsewhere, testLogger(t), []string{"--in", archive}, o, e)
	}); err == nil || !strings.Contains(err.Error(), "erasure journal") {
		t.Fatalf("restore without the journal: %v, want a refusal naming it", err)
	}
	if _, err := os.Stat(target.DataDir); !os.IsNotExist(err) {
		t.Fatalf("a refused restore left %s behind: %v", target.DataDir, err)
	}

	// The archive alone brings alice back, and such a directory cannot
	// serve: without the journal's replay the test below could not fail.
	raw := cfg
	raw.DataDir = filepath.Join(t.TempDir(), "raw")
	f, err := os.Open(archive)
	if err != nil {
		t.Fatal(err)
	}
	key, err := backup.LoadKey(keyFile)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := backup.Restore(ctx, f, key, raw.DataDir, false); err != nil {
		t.Fatal(err)
	}
	f.Close()
	if _, err := startPipeline(ctx, raw, testLogger(t), roles{edge: true}, overrides{}); err == nil || !strings.Contains(err.Error(), "erasures reapply") {
		t.Fatalf("a restore pending its journal served: %v", err)
	}
	rawApp, err := openApp(ctx, raw, testLogger(t), overrides{})
	if err != nil {
		t.Fatal(err)
	}
	if h := holdings(t, rawApp, aliceUser); h[forget.StoreDocuments] == 0 || h[forget.StoreBlobs] == 0 || h[forget.StoreVectors] == 0 || h[forget.StoreKeys] == 0 {
		t.Fatalf("the backup does not hold alice (%v): the drill proves nothing", h)
	}
	rawApp.close()

	// The drill: lethe restore, which replays the journal.
	out, err = runCmd(t, func(o, e *bytes.Buffer) error {
		return cmdRestore(ctx, target, testLogger(t), []string{"--in", archive}, o, e)
	})
	if err != nil {
		t.Fatalf("restore: %v\n%s", err, out)
	}
	if !strings.Contains(out, "1 erased users checked") {
		t.Fatalf("restore output:\n%s", out)
	}
	if pending, _ := backup.Pending(target.DataDir); pending {
		t.Fatal("still pending after the replay")
	}
	p2 := startTestPipeline(t, target, overrides{})
	base2 := "http://" + p2.addr
	for store, n := range holdings(t, p2.app, aliceUser) {
		if n != 0 {
			t.Errorf("restored: alice has %d in %s", n, store)
		}
	}
	if n := vectorHits(t, p2.app, aliceUser, aliceQuery); n != 0 {
		t.Errorf("restored: alice's memories answer %d vector queries", n)
	}
	// A fresh token of alice's is refused: the tombstone came back too.
	if code := (client{t, base2, mint(p2.app, aliceUID)}).search(aliceQuery, nil); code != http.StatusGone {
		t.Errorf("restored: alice's search answered %d, want 410", code)
	}
	if got := holdings(t, p2.app, bobUser); got[forget.StoreDocuments] != bobBefore[forget.StoreDocuments] ||
		got[forget.StoreBlobs] != bobBefore[forget.StoreBlobs] || got[forget.StoreVectors] != bobBefore[forget.StoreVectors] || got[forget.StoreKeys] != 1 {
		t.Fatalf("restored: bob holds %v, had %v", got, bobBefore)
	}
	bob2 := client{t, base2, mint(p2.app, bobUID)}
	var again conversationReply
	if code := bob2.do("GET", "/v1/conversations/bobDentistQ1", "", nil, &again); code != http.StatusOK || again.Transcript != bobConv.Transcript {
		t.Fatalf("restored: bob's conversation %d %q", code, again.Transcript)
	}
	var res searchReply
	if code := bob2.search(bobQuery, &res); code != http.StatusOK || len(res.Results) == 0 || res.Results[0].ConversationID != "bobDentistQ1" {
		t.Fatalf("restored: bob's search %d %+v", code, res.Results)
	}
}

// userSnapshot is what a point-in-time copy from before an erasure holds
// of one user: their Firestore subtree, their objects and their vector
// file.
type userSnapshot struct {
	docs    map[*firestore.DocumentRef]map[string]any
	objects []fakestorage.Object
	vectors []byte
}

func snapshotUser(t *testing.T, cfg Config, gcs *fakestorage.Server, user string) userSnapshot {
	t.Helper()
	ctx := t.Context()
	c, err := firestore.NewClient(ctx, cfg.ProjectID)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	s := userSnapshot{docs: map[*firestore.DocumentRef]map[string]any{}}
	walkFirestore(t, c.Collection(docs.UsersCollection).Doc(user).Collections(ctx), func(ref *firestore.DocumentRef, data map[string]any) {
		if data != nil {
			s.docs[ref] = data
		}
	})
	list, err := gcs.ListObjectsWithOptionsPaginated(cfg.GCSBucket, fakestorage.ListOptions{Prefix: "users/" + user + "/"})
	if err != nil {
		t.Fatal(err)
	}
	for _, o := range list.Objects {
		full, err := gcs.GetObject(cfg.GCSBucket, o.Name)
		if err != nil {
			t.Fatal(err)
		}
		s.objects = append(s.objects, full)
	}
	if s.vectors, err = os.ReadFile(filepath.Join(dataPaths{cfg.DataDir}.vectors(), user+".vec")); err != nil {
		t.Fatal(err)
	}
	return s
}

// rollBack puts the snapshot back, as a point-in-time recovery (and the
// bucket's noncurrent versions, and a vector backup) would.
func (s userSnapshot) rollBack(t *testing.T, cfg Config, gcs *fakestorage.Server, user string) {
	t.Helper()
	for ref, data := range s.docs {
		if _, err := ref.Set(t.Context(), data); err != nil {
			t.Fatal(err)
		}
	}
	for _, o := range s.objects {
		gcs.CreateObject(fakestorage.Object{ObjectAttrs: fakestorage.ObjectAttrs{BucketName: cfg.GCSBucket, Name: o.Name,
			ContentType: o.ContentType, Metadata: o.Metadata}, Content: o.Content})
	}
	if err := os.WriteFile(filepath.Join(dataPaths{cfg.DataDir}.vectors(), user+".vec"), s.vectors, 0o600); err != nil {
		t.Fatal(err)
	}
}

// TestErasuresReapplyAfterPointInTimeRecovery: on Firestore, Cloud Storage
// (fake-gcs) and a journal in a bucket of its own: alice is erased, then
// her documents, objects and vectors come back as a point-in-time
// recovery from before the erasure would bring them (tombstone and
// erasure record included, since they are newer). `lethe erasures
// reapply` finds her in the journal and erases her again; bob is intact.
func TestErasuresReapplyAfterPointInTimeRecovery(t *testing.T) {
	psHost, fsHost := requireEmulators(t)
	gcs := newFakeGCS(t, "lethe-pitr")
	gcs.CreateBucketWithOpts(fakestorage.CreateBucketOpts{Name: "lethe-pitr-journal"})
	cfg := emulatorConfig(t, psHost, fsHost, gcs.URL(), "lethe-pitr")
	cfg.ErasureJournal = "gs://lethe-pitr-journal/erasures"
	ctx := context.Background()

	p := startTestPipeline(t, cfg, overrides{STT: instantSTT{}})
	const aliceUID, bobUID = "alice-pitr-uid-77a", "bob-pitr-uid-3d0"
	tok := func(uid string) string {
		s, err := p.app.issuer.Mint(uid, time.Hour)
		if err != nil {
			t.Fatal(err)
		}
		return s
	}
	base := "http://" + p.addr
	alice, bob := client{t, base, tok(aliceUID)}, client{t, base, tok(bobUID)}
	alice.upload("alicePitrA", 0, "speech-hello.wav")
	bob.upload("bobPitrB", 0, "speech-dentist.wav")
	alice.waitDone("alicePitrA", 1)
	bobConv := bob.waitDone("bobPitrB", 1)
	aliceUser, bobUser := p.app.pseudo.User(aliceUID), p.app.pseudo.User(bobUID)
	bobBefore := holdings(t, p.app, bobUser)
	snap := snapshotUser(t, cfg, gcs, aliceUser)

	er := alice.eraseMe()
	if err := p.stop(); err != nil {
		t.Fatal(err)
	}

	// The recovery: alice's data as it was, and no trace of the erasure.
	snap.rollBack(t, cfg, gcs, aliceUser)
	a, err := openApp(ctx, cfg, testLogger(t), overrides{})
	if err != nil {
		t.Fatal(err)
	}
	for _, k := range []docs.Key{records.TombstoneKey(aliceUser), forget.ErasureKey(er.ID)} {
		if err := a.docs.Delete(ctx, k); err != nil {
			t.Fatal(err)
		}
	}
	if h := holdings(t, a, aliceUser); h[forget.StoreDocuments] == 0 || h[forget.StoreBlobs] == 0 || h[forget.StoreVectors] == 0 || h[forget.StoreKeys] == 0 {
		t.Fatalf("the recovery did not bring alice back (%v): the test proves nothing", h)
	}
	a.close()

	out, err := runCmd(t, func(o, e *bytes.Buffer) error {
		return cmdErasures(ctx, cfg, testLogger(t), []string{"reapply"}, o)
	})
	if err != nil || !strings.Contains(out, "1 erased users checked") {
		t.Fatalf("erasures reapply: %v\n%s", err, out)
	}

	p2 := startTestPipeline(t, cfg, overrides{STT: instantSTT{}})
	for store, n := range holdings(t, p2.app, aliceUser) {
		if n != 0 {
			t.Errorf("after reapply: alice has %d in %s", n, store)
		}
	}
	base2 := "http://" + p2.addr
	if code := (client{t, base2, tok(aliceUID)}).do("GET", "/v1/conversations", "", nil, nil); code != http.StatusGone {
		t.Errorf("after reapply: alice's token answered %d, want 410", code)
	}
	if got := holdings(t, p2.app, bobUser); fmt.Sprint(got) != fmt.Sprint(bobBefore) {
		t.Fatalf("after reapply: bob holds %v, had %v", got, bobBefore)
	}
	var again conversationReply
	if code := (client{t, base2, tok(bobUID)}).do("GET", "/v1/conversations/bobPitrB", "", nil, &again); code != http.StatusOK || again.Transcript != bobConv.Transcript {
		t.Fatalf("after reapply: bob's conversation %d %q", code, again.Transcript)
	}
}
