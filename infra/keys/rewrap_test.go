package keys_test

import (
	"bytes"
	"path/filepath"
	"testing"

	"github.com/lethe-dev/lethe/infra/docs/sqlitedocs"
	"github.com/lethe-dev/lethe/infra/keys"
	"github.com/lethe-dev/lethe/infra/keys/filekek"
	"github.com/lethe-dev/lethe/infra/keys/secrets"
)

// TestRewrapRotatesTheKEK: after a rewrap from KEK A to KEK B, a keyring
// on B opens everything sealed before, with the same digests and the same
// identity secrets, and a keyring on A opens nothing; running again
// (a resumed rotation) changes nothing.
func TestRewrapRotatesTheKEK(t *testing.T) {
	ctx := t.Context()
	dir := t.TempDir()
	store, err := sqlitedocs.Open(ctx, filepath.Join(dir, "docs.db"))
	if err != nil {
		t.Fatal(err)
	}
	defer store.Close()
	kekA, err := filekek.Open(filepath.Join(dir, "a.json"))
	if err != nil {
		t.Fatal(err)
	}
	kekB, err := filekek.Open(filepath.Join(dir, "b.json"))
	if err != nil {
		t.Fatal(err)
	}
	ringA := keys.NewKeyring(kekA, keys.NewDocsKeysetStore(store), keys.Options{})
	users := []string{"u0000000000000000000000000000001", "u0000000000000000000000000000002", "u0000000000000000000000000000003"}
	sealed, digests := map[string][]byte{}, map[string]string{}
	for _, u := range users {
		if sealed[u], err = ringA.Seal(ctx, u, []byte("memory of "+u), []byte(u+"|ad")); err != nil {
			t.Fatal(err)
		}
		if digests[u], err = ringA.Digest(ctx, u, []byte("audio")); err != nil {
			t.Fatal(err)
		}
	}
	secret, err := secrets.New(store, kekA).Get(ctx, secrets.UIDHMAC, 1)
	if err != nil {
		t.Fatal(err)
	}

	for round := range 2 {
		n, err := keys.RewrapKeysets(ctx, store, kekA, kekB, nil)
		if err != nil || n != len(users) {
			t.Fatalf("round %d: RewrapKeysets = %d, %v", round, n, err)
		}
		if n, err := secrets.Rewrap(ctx, store, kekA, kekB); err != nil || n != 1 {
			t.Fatalf("round %d: secrets.Rewrap = %d, %v", round, n, err)
		}
		ringB := keys.NewKeyring(kekB, keys.NewDocsKeysetStore(store), keys.Options{})
		freshA := keys.NewKeyring(kekA, keys.NewDocsKeysetStore(store), keys.Options{})
		for _, u := range users {
			pt, err := ringB.Open(ctx, u, sealed[u], []byte(u+"|ad"))
			if err != nil || string(pt) != "memory of "+u {
				t.Fatalf("round %d: %s under the new KEK: %q %v", round, u, pt, err)
			}
			if d, err := ringB.Digest(ctx, u, []byte("audio")); err != nil || d != digests[u] {
				t.Fatalf("round %d: digest changed: %v", round, err)
			}
			if _, err := freshA.Open(ctx, u, sealed[u], []byte(u+"|ad")); err == nil {
				t.Fatalf("round %d: the old KEK still unwraps %s", round, u)
			}
		}
		got, err := secrets.New(store, kekB).Get(ctx, secrets.UIDHMAC, 1)
		if err != nil || !bytes.Equal(got, secret) {
			t.Fatalf("round %d: identity secret under the new KEK: %v", round, err)
		}
	}
	// A keyset neither KEK unwraps stops the rotation loudly.
	kekC, err := filekek.Open(filepath.Join(dir, "c.json"))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := keys.RewrapKeysets(ctx, store, kekC, kekC, nil); err == nil {
		t.Fatal("rewrap with a KEK that wraps nothing succeeded")
	}
}
