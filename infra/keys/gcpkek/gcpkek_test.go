package gcpkek

import (
	"bytes"
	"context"
	"errors"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/lethe-dev/lethe/infra/keys"
	"github.com/lethe-dev/lethe/infra/keys/gcpkek/fakekms"
	"github.com/lethe-dev/lethe/infra/keys/kektest"
	"github.com/tink-crypto/tink-go/v2/tink"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

// keyName names a CryptoKey after the test, within KMS's id rules.
func keyName(t testing.TB) string {
	id := regexp.MustCompile(`[^A-Za-z0-9_-]`).ReplaceAllString(t.Name(), "-")
	if len(id) > 63 {
		id = id[len(id)-63:]
	}
	return "projects/lethe-test/locations/global/keyRings/lethe/cryptoKeys/" + id
}

// startKMS runs a fake Cloud KMS holding the test's key.
func startKMS(t testing.TB) (*fakekms.Server, string) {
	t.Helper()
	srv, err := fakekms.Start()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(srv.Close)
	name := keyName(t)
	if err := srv.CreateKey(name); err != nil {
		t.Fatal(err)
	}
	return srv, name
}

// open opens the KEK through the real Tink client against srv.
func open(t testing.TB, srv *fakekms.Server, uri string) *KEK {
	t.Helper()
	a, err := Open(context.Background(), uri, srv.ClientOptions()...)
	if err != nil {
		t.Fatalf("Open: %v", err)
	}
	k := a
	t.Cleanup(func() { k.Close() })
	return k
}

// harness: the fake keeps its keys while it runs, and every OpenKEK is a
// new client and connection, as after a restart: persistent.
type harness struct {
	srv *fakekms.Server
	uri string

	mu     sync.Mutex
	opened []*KEK
}

func (h *harness) OpenKEK(ctx context.Context) (tink.AEAD, error) {
	a, err := Open(ctx, h.uri, h.srv.ClientOptions()...)
	if err != nil {
		return nil, err
	}
	h.mu.Lock()
	defer h.mu.Unlock()
	h.opened = append(h.opened, a)
	return a, nil
}

func (h *harness) Capabilities() kektest.Capabilities {
	return kektest.Capabilities{Persistent: true}
}

func (h *harness) Close() {
	h.mu.Lock()
	defer h.mu.Unlock()
	for _, k := range h.opened {
		k.Close()
	}
	h.srv.Close()
}

func TestConformance(t *testing.T) {
	kektest.RunConformanceTests(t, func(_ context.Context, t *testing.T) (kektest.Harness, error) {
		srv, err := fakekms.Start()
		if err != nil {
			return nil, err
		}
		name := keyName(t)
		if err := srv.CreateKey(name); err != nil {
			srv.Close()
			return nil, err
		}
		// lethe's spelling of the scheme, as LETHE_KEK holds it.
		return &harness{srv: srv, uri: "gcpkms://" + name}, nil
	})
}

func TestOpenUnknownKey(t *testing.T) {
	srv, name := startKMS(t)
	_, err := Open(context.Background(), "gcp-kms://"+name+"-missing", srv.ClientOptions()...)
	if status.Code(err) != codes.NotFound {
		t.Fatalf("Open of a missing key: %v, want NotFound", err)
	}
}

func TestOpenMalformedURI(t *testing.T) {
	srv, name := startKMS(t)
	for _, uri := range []string{
		"",
		name,
		"file",
		"gcp-kms://",
		"gcp-kms:/" + name,
		"aws-kms://" + name,
		"gcp-kms://" + name + "/cryptoKeyVersions/1",
		"gcp-kms://" + name + "/",
		"gcp-kms:///" + name,
		"gcp-kms://" + strings.Replace(name, "keyRings", "keyrings", 1),
		"gcp-kms://" + strings.Replace(name, "locations/global", "locations/", 1),
		"gcp-kms://" + name + " ",
		"gcp-kms://" + name + "?x=1",
		"gcp-kms://" + name + strings.Repeat("k", 64),
		"gcp-kms://projects/P_UPPER/locations/global/keyRings/r/cryptoKeys/k",
	} {
		t.Run(uri, func(t *testing.T) {
			_, err := Open(context.Background(), uri, srv.ClientOptions()...)
			if !errors.Is(err, ErrKeyURI) || !strings.Contains(err.Error(), "LETHE_KEK") {
				t.Fatalf("Open(%q) = %v, want an error naming LETHE_KEK", uri, err)
			}
		})
	}
	if n := srv.Calls(); n != 0 {
		t.Fatalf("malformed URIs reached KMS %d times", n)
	}
}

func TestNormalizeURI(t *testing.T) {
	const rest = "projects/my-proj-1/locations/europe-west1/keyRings/lethe_ring/cryptoKeys/kek-1"
	for _, in := range []string{
		"gcp-kms://" + rest,
		"gcpkms://" + rest,
		"GCP-KMS://" + rest,
		"GcpKms://" + rest,
	} {
		got, err := NormalizeURI(in)
		if err != nil || got != "gcp-kms://"+rest {
			t.Errorf("NormalizeURI(%q) = %q, %v", in, got, err)
		}
	}
	for _, ok := range []string{
		"gcpkms://projects/123456789/locations/global/keyRings/r/cryptoKeys/k",
		"gcpkms://projects/example.com:proj/locations/us/keyRings/R-1/cryptoKeys/K_2",
	} {
		if _, err := NormalizeURI(ok); err != nil {
			t.Errorf("NormalizeURI(%q): %v", ok, err)
		}
	}
}

// TestKMSRejects: tampering and a wrong user are refused by KMS itself
// (InvalidArgument), not merely by a client-side check.
func TestKMSRejects(t *testing.T) {
	srv, name := startKMS(t)
	k := open(t, srv, "gcpkms://"+name)
	ct, err := k.Encrypt([]byte("wrapped keyset"), []byte("user-a"))
	if err != nil {
		t.Fatal(err)
	}
	tampered := bytes.Clone(ct)
	tampered[len(tampered)-1] ^= 0x80
	for _, tc := range []struct {
		name   string
		ct, ad []byte
	}{
		{"tampered", tampered, []byte("user-a")},
		{"wrong associated data", ct, []byte("user-b")},
		{"no associated data", ct, nil},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if _, err := k.Decrypt(tc.ct, tc.ad); status.Code(err) != codes.InvalidArgument {
				t.Fatalf("Decrypt: %v, want InvalidArgument from KMS", err)
			}
		})
	}
	if pt, err := k.Decrypt(ct, []byte("user-a")); err != nil || string(pt) != "wrapped keyset" {
		t.Fatalf("Decrypt of the untouched ciphertext: %v", err)
	}
}

// TestOtherKeyCannotDecrypt: two CryptoKeys on one KMS are two keys.
func TestOtherKeyCannotDecrypt(t *testing.T) {
	srv, name := startKMS(t)
	if err := srv.CreateKey(name + "-other"); err != nil {
		t.Fatal(err)
	}
	a := open(t, srv, "gcpkms://"+name)
	b := open(t, srv, "gcpkms://"+name+"-other")
	ct, err := a.Encrypt([]byte("p"), []byte("ad"))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := b.Decrypt(ct, []byte("ad")); err == nil {
		t.Fatal("another CryptoKey decrypted the ciphertext")
	}
}

// TestCorruptedInTransit: Tink's client checks KMS's CRC32C fields, so
// data damaged on the way back is an error, never a wrong key.
func TestCorruptedInTransit(t *testing.T) {
	srv, name := startKMS(t)
	k := open(t, srv, "gcpkms://"+name)
	ct, err := k.Encrypt([]byte("p"), []byte("ad"))
	if err != nil {
		t.Fatal(err)
	}
	srv.CorruptResponses(true)
	if _, err := k.Encrypt([]byte("p"), []byte("ad")); err == nil || !strings.Contains(err.Error(), "corrupted") {
		t.Fatalf("Encrypt with a corrupted response: %v", err)
	}
	if _, err := k.Decrypt(ct, []byte("ad")); err == nil || !strings.Contains(err.Error(), "corrupted") {
		t.Fatalf("Decrypt with a corrupted response: %v", err)
	}
	if _, err := Open(context.Background(), "gcpkms://"+name, srv.ClientOptions()...); err == nil {
		t.Fatal("Open's probe accepted a corrupted response")
	}
}

// TestRotation: rotating the CryptoKey in KMS keeps old wrapped keysets
// readable.
func TestRotation(t *testing.T) {
	srv, name := startKMS(t)
	k := open(t, srv, "gcpkms://"+name)
	old, err := k.Encrypt([]byte("before"), []byte("ad"))
	if err != nil {
		t.Fatal(err)
	}
	if err := srv.Rotate(name); err != nil {
		t.Fatal(err)
	}
	newer, err := k.Encrypt([]byte("after"), []byte("ad"))
	if err != nil {
		t.Fatal(err)
	}
	for want, ct := range map[string][]byte{"before": old, "after": newer} {
		if pt, err := k.Decrypt(ct, []byte("ad")); err != nil || string(pt) != want {
			t.Fatalf("Decrypt(%s) after rotation: %q, %v", want, pt, err)
		}
	}
}

func TestOpenHonoursContext(t *testing.T) {
	srv, name := startKMS(t)
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	start := time.Now()
	if _, err := Open(ctx, "gcpkms://"+name, srv.ClientOptions()...); err == nil {
		t.Fatal("Open with a cancelled context succeeded")
	}
	if d := time.Since(start); d > 10*time.Second {
		t.Fatalf("Open with a cancelled context took %v", d)
	}
}

func TestOpenKMSDown(t *testing.T) {
	srv, name := startKMS(t)
	srv.Close()
	// The client retries Unavailable for up to 60 s; Open's deadline must
	// cut that short.
	ctx, cancel := context.WithTimeout(context.Background(), 300*time.Millisecond)
	defer cancel()
	start := time.Now()
	if _, err := Open(ctx, "gcpkms://"+name, srv.ClientOptions()...); err == nil {
		t.Fatal("Open succeeded with KMS down")
	}
	if d := time.Since(start); d > 10*time.Second {
		t.Fatalf("Open ignored its deadline: %v", d)
	}
}

// memStore is an in-memory keys.KeysetStore (as in infra/keys' tests).
type memStore struct {
	mu    sync.Mutex
	sets  map[string]keys.Wrapped
	tombs map[string]bool
}

func newMemStore() *memStore {
	return &memStore{sets: map[string]keys.Wrapped{}, tombs: map[string]bool{}}
}

func (m *memStore) Load(_ context.Context, user string) (keys.Wrapped, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	w, ok := m.sets[user]
	if !ok {
		return keys.Wrapped{}, keys.ErrNoKey
	}
	return keys.Wrapped{Keyset: bytes.Clone(w.Keyset), MAC: bytes.Clone(w.MAC)}, nil
}

func (m *memStore) CreateIfAbsent(_ context.Context, user string, wrapped keys.Wrapped) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	if _, ok := m.sets[user]; ok {
		return keys.ErrExists
	}
	m.sets[user] = keys.Wrapped{Keyset: bytes.Clone(wrapped.Keyset), MAC: bytes.Clone(wrapped.MAC)}
	return nil
}

func (m *memStore) Delete(_ context.Context, user string) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	delete(m.sets, user)
	return nil
}

func (m *memStore) Tombstoned(_ context.Context, user string) (bool, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.tombs[user], nil
}

// TestKeyring: the envelope works end to end with the KMS KEK, survives a
// restart (new client, new Keyring, same store), binds each wrapped
// keyset to its user, and unwraps a keyset once per cache lifetime.
func TestKeyring(t *testing.T) {
	ctx := context.Background()
	srv, name := startKMS(t)
	store := newMemStore()
	ring := keys.NewKeyring(open(t, srv, "gcpkms://"+name), store, keys.Options{})
	ad := keys.AD("user-a", "conversations", "c1", "transcript")

	ct, err := ring.Seal(ctx, "user-a", []byte("hello"), ad)
	if err != nil {
		t.Fatalf("Seal: %v", err)
	}
	calls := srv.Calls()
	for range 5 {
		if pt, err := ring.Open(ctx, "user-a", ct, ad); err != nil || string(pt) != "hello" {
			t.Fatalf("Open: %q, %v", pt, err)
		}
	}
	if srv.Calls() != calls {
		t.Errorf("cached keyset still called KMS %d times", srv.Calls()-calls)
	}

	// Restart: a new KMS client and an empty cache read the stored keyset.
	ring2 := keys.NewKeyring(open(t, srv, "gcp-kms://"+name), store, keys.Options{})
	if pt, err := ring2.Open(ctx, "user-a", ct, ad); err != nil || string(pt) != "hello" {
		t.Fatalf("Open after restart: %q, %v", pt, err)
	}

	// user-a's wrapped keyset moved to user-b does not unwrap: the KEK
	// binds it to the user.
	w, err := store.Load(ctx, "user-a")
	if err != nil {
		t.Fatal(err)
	}
	if err := store.CreateIfAbsent(ctx, "user-b", w); err != nil {
		t.Fatal(err)
	}
	if _, err := ring2.Open(ctx, "user-b", ct, ad); err == nil {
		t.Fatal("user-a's keyset opened as user-b")
	}

	if err := ring2.Shred(ctx, "user-a"); err != nil {
		t.Fatal(err)
	}
	if _, err := ring2.Open(ctx, "user-a", ct, ad); !errors.Is(err, keys.ErrNoKey) {
		t.Fatalf("Open after Shred: %v, want ErrNoKey", err)
	}
}

func FuzzNormalizeURI(f *testing.F) {
	for _, s := range []string{
		"gcpkms://projects/p/locations/global/keyRings/r/cryptoKeys/k",
		"gcp-kms://projects/example.com:p/locations/us/keyRings/R_1/cryptoKeys/k-2",
		"gcp-kms://projects/p/locations/l/keyRings/r/cryptoKeys/k/cryptoKeyVersions/1",
		"file", "", "gcp-kms://", "GCPKMS://projects//locations",
	} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		got, err := NormalizeURI(s)
		if err != nil {
			if !errors.Is(err, ErrKeyURI) {
				t.Fatalf("error %v is not ErrKeyURI", err)
			}
			return
		}
		if !strings.HasPrefix(got, "gcp-kms://projects/") || strings.Count(got, "/") != 9 {
			t.Fatalf("NormalizeURI(%q) = %q", s, got)
		}
		if strings.ContainsAny(got[len("gcp-kms://"):], " ?#%\\\x00") {
			t.Fatalf("NormalizeURI(%q) = %q keeps characters outside KMS ids", s, got)
		}
		again, err := NormalizeURI(got)
		if err != nil || again != got {
			t.Fatalf("not idempotent: %q -> %q, %v", got, again, err)
		}
	})
}

// TestCallsHonourContext: with KMS hanging, every path that reaches it
// (the KEK itself, a keyring creating a key, a keyring unwrapping one, a
// process-wide secret) returns promptly with the caller's context error,
// so a request deadline or shutdown is never held up by KMS.
func TestCallsHonourContext(t *testing.T) {
	srv, name := startKMS(t)
	kek := open(t, srv, "gcpkms://"+name)
	// A user whose keyset exists before KMS hangs, so Open must unwrap it.
	store := newMemStore()
	ad := keys.AD("user-old", "conversations", "c1", "transcript")
	ct, err := keys.NewKeyring(kek, store, keys.Options{}).Seal(context.Background(), "user-old", []byte("x"), ad)
	if err != nil {
		t.Fatal(err)
	}
	wrapped, err := kek.EncryptWithContext(context.Background(), []byte("secret"), []byte("ad"))
	if err != nil {
		t.Fatal(err)
	}
	srv.Hang(true)
	calls := []struct {
		name string
		call func(ctx context.Context) error
	}{
		{"Encrypt", func(ctx context.Context) error {
			_, err := kek.EncryptWithContext(ctx, []byte("x"), nil)
			return err
		}},
		{"Decrypt", func(ctx context.Context) error {
			_, err := kek.DecryptWithContext(ctx, wrapped, []byte("ad"))
			return err
		}},
		{"Keyring.Seal creating a key", func(ctx context.Context) error {
			_, err := keys.NewKeyring(kek, newMemStore(), keys.Options{}).Seal(ctx, "user-new", []byte("x"), nil)
			return err
		}},
		{"Keyring.Open unwrapping a key", func(ctx context.Context) error {
			_, err := keys.NewKeyring(kek, store, keys.Options{}).Open(ctx, "user-old", ct, ad)
			return err
		}},
	}
	ends := []struct {
		name string
		ctx  func() (context.Context, context.CancelFunc)
		want error
	}{
		{"deadline", func() (context.Context, context.CancelFunc) {
			return context.WithTimeout(context.Background(), 200*time.Millisecond)
		}, context.DeadlineExceeded},
		{"cancel", func() (context.Context, context.CancelFunc) {
			ctx, cancel := context.WithCancel(context.Background())
			time.AfterFunc(200*time.Millisecond, cancel)
			return ctx, cancel
		}, context.Canceled},
	}
	for _, c := range calls {
		for _, end := range ends {
			t.Run(c.name+"/"+end.name, func(t *testing.T) {
				ctx, cancel := end.ctx()
				defer cancel()
				start := time.Now()
				err := c.call(ctx)
				if d := time.Since(start); d > 5*time.Second {
					t.Fatalf("returned after %v with KMS hanging", d)
				}
				if !errors.Is(err, end.want) {
					t.Fatalf("err = %v, want %v", err, end.want)
				}
			})
		}
	}
}
