package filekek

import (
	"bytes"
	"context"
	"os"
	"path/filepath"
	"sync"
	"testing"

	"github.com/lethe-dev/lethe/infra/keys/kektest"
	"github.com/tink-crypto/tink-go/v2/tink"
)

type harness struct{ path string }

func (h *harness) OpenKEK(context.Context) (tink.AEAD, error) { return Open(h.path) }
func (h *harness) Capabilities() kektest.Capabilities {
	return kektest.Capabilities{Persistent: true}
}
func (h *harness) Close() {}

func TestConformance(t *testing.T) {
	kektest.RunConformanceTests(t, func(_ context.Context, t *testing.T) (kektest.Harness, error) {
		return &harness{path: filepath.Join(t.TempDir(), "keys", "kek.bin")}, nil
	})
}

func TestCreatedPrivate(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "keys")
	path := filepath.Join(dir, "kek.bin")
	if _, err := Open(path); err != nil {
		t.Fatal(err)
	}
	for p, want := range map[string]os.FileMode{dir: 0o700, path: 0o600} {
		st, err := os.Stat(p)
		if err != nil {
			t.Fatal(err)
		}
		if st.Mode().Perm() != want {
			t.Errorf("%s: mode %v, want %v", filepath.Base(p), st.Mode().Perm(), want)
		}
	}
	entries, _ := os.ReadDir(dir)
	if len(entries) != 1 {
		t.Fatalf("temp files left beside the key: %v", entries)
	}
}

func TestRefusesWidePermissions(t *testing.T) {
	for _, mode := range []os.FileMode{0o640, 0o604, 0o660, 0o644, 0o666} {
		t.Run(mode.String(), func(t *testing.T) {
			path := filepath.Join(t.TempDir(), "kek.bin")
			if _, err := Open(path); err != nil {
				t.Fatal(err)
			}
			if err := os.Chmod(path, mode); err != nil {
				t.Fatal(err)
			}
			if _, err := Open(path); err == nil {
				t.Fatalf("Open accepted a key file with mode %v", mode)
			}
		})
	}
}

func TestRefusesBadFiles(t *testing.T) {
	dir := t.TempDir()
	garbage := filepath.Join(dir, "garbage")
	if err := os.WriteFile(garbage, []byte("not a keyset"), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := Open(garbage); err == nil {
		t.Fatal("Open accepted garbage")
	}
	sub := filepath.Join(dir, "adir")
	if err := os.Mkdir(sub, 0o700); err != nil {
		t.Fatal(err)
	}
	if _, err := Open(sub); err == nil {
		t.Fatal("Open accepted a directory")
	}
}

func TestDistinctFilesDistinctKeys(t *testing.T) {
	a, err := Open(filepath.Join(t.TempDir(), "a"))
	if err != nil {
		t.Fatal(err)
	}
	b, err := Open(filepath.Join(t.TempDir(), "b"))
	if err != nil {
		t.Fatal(err)
	}
	ct, err := a.Encrypt([]byte("x"), nil)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := b.Decrypt(ct, nil); err == nil {
		t.Fatal("two fresh key files hold the same key")
	}
}

// TestConcurrentFirstOpen: processes starting together must agree on one
// key, or data sealed by one is lost to the other.
func TestConcurrentFirstOpen(t *testing.T) {
	path := filepath.Join(t.TempDir(), "kek.bin")
	keks := make([]tink.AEAD, 8)
	var wg sync.WaitGroup
	for i := range keks {
		wg.Go(func() {
			k, err := Open(path)
			if err != nil {
				t.Error(err)
				return
			}
			keks[i] = k
		})
	}
	wg.Wait()
	if t.Failed() {
		return
	}
	for i, k := range keks {
		ct, err := k.Encrypt([]byte("p"), []byte("ad"))
		if err != nil {
			t.Fatal(err)
		}
		for j, other := range keks {
			if pt, err := other.Decrypt(ct, []byte("ad")); err != nil || !bytes.Equal(pt, []byte("p")) {
				t.Fatalf("KEK %d cannot decrypt KEK %d's ciphertext: %v", j, i, err)
			}
		}
	}
}
