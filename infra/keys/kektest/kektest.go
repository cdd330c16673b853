// Package kektest is the conformance suite for key-encryption keys: every
// KEK adapter (local key file, Cloud KMS) must pass it. An adapter's own
// test only supplies a Harness.
package kektest

import (
	"bytes"
	"context"
	"fmt"
	"sync"
	"testing"

	"github.com/tink-crypto/tink-go/v2/aead"
	"github.com/tink-crypto/tink-go/v2/keyset"
	"github.com/tink-crypto/tink-go/v2/tink"
)

// Capabilities declares how a KEK adapter legitimately differs.
type Capabilities struct {
	// Persistent: OpenKEK called again (a restart) yields the same key, so
	// ciphertext from the first opens with the second.
	Persistent bool
}

// Harness gives access to one KEK private to the test.
type Harness interface {
	// OpenKEK opens the test's KEK; with Persistent, every call reopens
	// the same key from its storage.
	OpenKEK(ctx context.Context) (tink.AEAD, error)
	Capabilities() Capabilities
	Close()
}

// HarnessMaker makes a Harness for one test; name resources from t.Name().
type HarnessMaker func(ctx context.Context, t *testing.T) (Harness, error)

// RunConformanceTests runs the suite against the adapter newHarness makes.
func RunConformanceTests(t *testing.T, newHarness HarnessMaker) {
	tests := []struct {
		name string
		fn   func(t *testing.T, h Harness, kek tink.AEAD)
	}{
		{"RoundTrip", testRoundTrip},
		{"ADMismatch", testADMismatch},
		{"Tampered", testTampered},
		{"Randomised", testRandomised},
		{"WrapsKeyset", testWrapsKeyset},
		{"Persistence", testPersistence},
		{"Concurrent", testConcurrent},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			ctx := context.Background()
			h, err := newHarness(ctx, t)
			if err != nil {
				t.Fatalf("newHarness: %v", err)
			}
			t.Cleanup(h.Close)
			kek, err := h.OpenKEK(ctx)
			if err != nil {
				t.Fatalf("OpenKEK: %v", err)
			}
			tc.fn(t, h, kek)
		})
	}
}

func testRoundTrip(t *testing.T, _ Harness, kek tink.AEAD) {
	for _, size := range []int{0, 1, 32, 1000, 64 << 10} {
		pt := bytes.Repeat([]byte{0xa5}, size)
		for _, ad := range [][]byte{nil, []byte("user-1")} {
			ct, err := kek.Encrypt(pt, ad)
			if err != nil {
				t.Fatalf("Encrypt(%d bytes): %v", size, err)
			}
			if size >= 16 && bytes.Contains(ct, pt) {
				t.Fatalf("ciphertext contains the plaintext")
			}
			got, err := kek.Decrypt(ct, ad)
			if err != nil {
				t.Fatalf("Decrypt(%d bytes): %v", size, err)
			}
			if !bytes.Equal(got, pt) {
				t.Fatalf("round trip of %d bytes changed the data", size)
			}
		}
	}
}

func testADMismatch(t *testing.T, _ Harness, kek tink.AEAD) {
	ct, err := kek.Encrypt([]byte("wrapped keyset"), []byte("user-a"))
	if err != nil {
		t.Fatal(err)
	}
	for _, ad := range [][]byte{[]byte("user-b"), []byte("user-a "), []byte("USER-A"), nil, {}} {
		if _, err := kek.Decrypt(ct, ad); err == nil {
			t.Errorf("Decrypt with associated data %q succeeded", ad)
		}
	}
}

func testTampered(t *testing.T, _ Harness, kek tink.AEAD) {
	ad := []byte("user-a")
	ct, err := kek.Encrypt([]byte("a short secret"), ad)
	if err != nil {
		t.Fatal(err)
	}
	for i := range ct {
		bad := bytes.Clone(ct)
		bad[i] ^= 0x01
		if _, err := kek.Decrypt(bad, ad); err == nil {
			t.Fatalf("Decrypt accepted a ciphertext with byte %d flipped", i)
		}
	}
	for _, bad := range [][]byte{nil, ct[:len(ct)-1], ct[:5], append(bytes.Clone(ct), 0)} {
		if _, err := kek.Decrypt(bad, ad); err == nil {
			t.Fatalf("Decrypt accepted a %d-byte mangled ciphertext", len(bad))
		}
	}
}

func testRandomised(t *testing.T, _ Harness, kek tink.AEAD) {
	a, err := kek.Encrypt([]byte("same"), []byte("ad"))
	if err != nil {
		t.Fatal(err)
	}
	b, err := kek.Encrypt([]byte("same"), []byte("ad"))
	if err != nil {
		t.Fatal(err)
	}
	if bytes.Equal(a, b) {
		t.Fatal("two encryptions of the same plaintext are equal (nonce reuse?)")
	}
}

// testWrapsKeyset is the KEK's one real job: wrapping a Tink keyset bound
// to a user.
func testWrapsKeyset(t *testing.T, _ Harness, kek tink.AEAD) {
	h, err := keyset.NewHandle(aead.AES256GCMKeyTemplate())
	if err != nil {
		t.Fatal(err)
	}
	var buf bytes.Buffer
	if err := h.WriteWithAssociatedData(keyset.NewBinaryWriter(&buf), kek, []byte("user-a")); err != nil {
		t.Fatalf("WriteWithAssociatedData: %v", err)
	}
	if _, err := keyset.ReadWithAssociatedData(keyset.NewBinaryReader(bytes.NewReader(buf.Bytes())), kek, []byte("user-b")); err == nil {
		t.Fatal("keyset wrapped for user-a unwrapped as user-b")
	}
	h2, err := keyset.ReadWithAssociatedData(keyset.NewBinaryReader(bytes.NewReader(buf.Bytes())), kek, []byte("user-a"))
	if err != nil {
		t.Fatalf("ReadWithAssociatedData: %v", err)
	}
	p1, err := aead.New(h)
	if err != nil {
		t.Fatal(err)
	}
	p2, err := aead.New(h2)
	if err != nil {
		t.Fatal(err)
	}
	ct, err := p1.Encrypt([]byte("x"), nil)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := p2.Decrypt(ct, nil); err != nil {
		t.Fatalf("unwrapped keyset is not the same key: %v", err)
	}
}

func testPersistence(t *testing.T, h Harness, kek tink.AEAD) {
	if !h.Capabilities().Persistent {
		t.Skip("adapter declares no persistence")
	}
	ct, err := kek.Encrypt([]byte("survives restart"), []byte("ad"))
	if err != nil {
		t.Fatal(err)
	}
	again, err := h.OpenKEK(context.Background())
	if err != nil {
		t.Fatalf("OpenKEK again: %v", err)
	}
	pt, err := again.Decrypt(ct, []byte("ad"))
	if err != nil || string(pt) != "survives restart" {
		t.Fatalf("reopened KEK cannot decrypt: %v", err)
	}
}

func testConcurrent(t *testing.T, _ Harness, kek tink.AEAD) {
	var wg sync.WaitGroup
	errs := make(chan error, 16)
	for g := range 8 {
		wg.Go(func() {
			for i := range 50 {
				pt := fmt.Appendf(nil, "%d/%d", g, i)
				ad := fmt.Appendf(nil, "user-%d", g)
				ct, err := kek.Encrypt(pt, ad)
				if err != nil {
					errs <- err
					return
				}
				got, err := kek.Decrypt(ct, ad)
				if err != nil || !bytes.Equal(got, pt) {
					errs <- fmt.Errorf("concurrent round trip: %v", err)
					return
				}
			}
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
}
