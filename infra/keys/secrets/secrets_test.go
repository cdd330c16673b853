package secrets_test

import (
	"bytes"
	"context"
	"encoding/json"
	"path/filepath"
	"sync"
	"testing"

	"github.com/lethe-dev/lethe/infra/docs"
	"github.com/lethe-dev/lethe/infra/docs/sqlitedocs"
	"github.com/lethe-dev/lethe/infra/keys/filekek"
	"github.com/lethe-dev/lethe/infra/keys/secrets"
)

func openDocs(t *testing.T, path string) docs.Store {
	t.Helper()
	s, err := sqlitedocs.Open(context.Background(), path)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	return s
}

func openKEK(t *testing.T, path string) *filekek.KEK {
	t.Helper()
	kek, err := filekek.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	return kek
}

func TestGetCreatesOnceAndReloads(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	kek := openKEK(t, filepath.Join(dir, "kek"))
	d := openDocs(t, filepath.Join(dir, "docs.db"))
	s := secrets.New(d, kek)

	uid, err := s.Get(ctx, secrets.UIDHMAC, 1)
	if err != nil {
		t.Fatal(err)
	}
	if len(uid) != secrets.Size || bytes.Equal(uid, make([]byte, secrets.Size)) {
		t.Fatalf("secret = %x", uid)
	}
	// Another process (another Store, another connection to the same file)
	// reads the same secret back.
	again, err := secrets.New(openDocs(t, filepath.Join(dir, "docs.db")), kek).Get(ctx, secrets.UIDHMAC, 1)
	if err != nil || !bytes.Equal(again, uid) {
		t.Fatalf("reloaded %x (%v), want %x", again, err, uid)
	}
	// Names and versions are distinct secrets.
	seen := map[string]bool{string(uid): true}
	for _, tc := range []struct {
		name    string
		version int
	}{{secrets.LogHMAC, 1}, {secrets.ExportURL, 1}, {secrets.UIDHMAC, 2}} {
		v, err := s.Get(ctx, tc.name, tc.version)
		if err != nil {
			t.Fatal(err)
		}
		if seen[string(v)] {
			t.Fatalf("%s.v%d repeats another secret", tc.name, tc.version)
		}
		seen[string(v)] = true
	}
	// At rest the secret is wrapped, not stored.
	doc, err := d.Get(ctx, secrets.Key(secrets.UIDHMAC, 1))
	if err != nil {
		t.Fatal(err)
	}
	if doc.Key.User != "" || bytes.Contains(doc.Data, uid) {
		t.Fatalf("stored %+v holds the plaintext secret or is not global", doc.Key)
	}
}

func TestConcurrentCreatorsEndWithOneSecret(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	kek := openKEK(t, filepath.Join(dir, "kek"))
	const n = 8
	got := make([][]byte, n)
	errs := make([]error, n)
	var wg sync.WaitGroup
	start := make(chan struct{})
	for i := range n {
		// One store connection per creator, as separate instances would have.
		s := secrets.New(openDocs(t, filepath.Join(dir, "docs.db")), kek)
		wg.Add(1)
		go func() {
			defer wg.Done()
			<-start
			got[i], errs[i] = s.Get(ctx, secrets.UIDHMAC, 1)
		}()
	}
	close(start)
	wg.Wait()
	for i := range n {
		if errs[i] != nil {
			t.Fatal(errs[i])
		}
		if !bytes.Equal(got[i], got[0]) {
			t.Fatalf("creator %d got %x, creator 0 got %x", i, got[i], got[0])
		}
	}
}

func TestRefusesWhatDoesNotUnwrap(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	d := openDocs(t, filepath.Join(dir, "docs.db"))
	kek := openKEK(t, filepath.Join(dir, "kek"))
	if _, err := secrets.New(d, kek).Get(ctx, secrets.UIDHMAC, 1); err != nil {
		t.Fatal(err)
	}
	orig, err := d.Get(ctx, secrets.Key(secrets.UIDHMAC, 1))
	if err != nil {
		t.Fatal(err)
	}

	// Another KEK: an error, and the stored secret is not replaced.
	if _, err := secrets.New(d, openKEK(t, filepath.Join(dir, "other-kek"))).Get(ctx, secrets.UIDHMAC, 1); err == nil {
		t.Fatal("Get unwrapped with another KEK")
	}
	after, err := d.Get(ctx, secrets.Key(secrets.UIDHMAC, 1))
	if err != nil || !bytes.Equal(after.Data, orig.Data) {
		t.Fatalf("stored secret changed after a failed unwrap (%v)", err)
	}

	// A wrapped secret moved to another name does not unwrap.
	moved := orig
	moved.Key = secrets.Key(secrets.LogHMAC, 1)
	if err := d.Put(ctx, moved); err != nil {
		t.Fatal(err)
	}
	if _, err := secrets.New(d, kek).Get(ctx, secrets.LogHMAC, 1); err == nil {
		t.Fatal("a secret moved to another name unwrapped")
	}

	// Unknown format version.
	bad, _ := json.Marshal(map[string]any{"v": 9, "wrapped": []byte("x")})
	if err := d.Put(ctx, docs.Doc{Key: secrets.Key(secrets.ExportURL, 1), Data: bad}); err != nil {
		t.Fatal(err)
	}
	if _, err := secrets.New(d, kek).Get(ctx, secrets.ExportURL, 1); err == nil {
		t.Fatal("Get accepted an unknown format")
	}

	for _, tc := range []struct {
		name    string
		version int
	}{{"", 1}, {"UID", 1}, {"a/b", 1}, {secrets.UIDHMAC, 0}} {
		if _, err := secrets.New(d, kek).Get(ctx, tc.name, tc.version); err == nil {
			t.Errorf("Get(%q, %d) accepted", tc.name, tc.version)
		}
	}
}
