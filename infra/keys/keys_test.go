package keys

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/lethe-dev/lethe/infra/docs"
	"github.com/lethe-dev/lethe/infra/keys/filekek"
	"github.com/tink-crypto/tink-go/v2/insecurecleartextkeyset"
	"github.com/tink-crypto/tink-go/v2/keyset"
)

// memStore is an in-memory KeysetStore.
type memStore struct {
	mu      sync.Mutex
	sets    map[string]Wrapped
	tombs   map[string]bool
	creates atomic.Int64 // successful CreateIfAbsent calls
}

func newMemStore() *memStore {
	return &memStore{sets: map[string]Wrapped{}, tombs: map[string]bool{}}
}

func (m *memStore) Load(_ context.Context, user string) (Wrapped, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	w, ok := m.sets[user]
	if !ok {
		return Wrapped{}, ErrNoKey
	}
	return Wrapped{Keyset: bytes.Clone(w.Keyset), MAC: bytes.Clone(w.MAC)}, nil
}

func (m *memStore) CreateIfAbsent(_ context.Context, user string, wrapped Wrapped) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	if _, ok := m.sets[user]; ok {
		return ErrExists
	}
	m.sets[user] = Wrapped{Keyset: bytes.Clone(wrapped.Keyset), MAC: bytes.Clone(wrapped.MAC)}
	m.creates.Add(1)
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

// fakeDocs is a minimal in-memory docs.Driver: enough for
// DocsKeysetStore, with the port's NotFound / AlreadyExists semantics.
type fakeDocs struct {
	mu   sync.Mutex
	docs map[docs.Key]docs.Doc
}

func newFakeDocs() *fakeDocs { return &fakeDocs{docs: map[docs.Key]docs.Doc{}} }

func (f *fakeDocs) Get(_ context.Context, k docs.Key) (docs.Doc, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	d, ok := f.docs[k]
	if !ok {
		return docs.Doc{}, docs.ErrNotFound
	}
	d.Data = bytes.Clone(d.Data)
	return d, nil
}

func (f *fakeDocs) Put(_ context.Context, d docs.Doc) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	d.Data = bytes.Clone(d.Data)
	f.docs[d.Key] = d
	return nil
}

func (f *fakeDocs) Create(_ context.Context, d docs.Doc) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	if _, ok := f.docs[d.Key]; ok {
		return docs.ErrAlreadyExists
	}
	d.Data = bytes.Clone(d.Data)
	f.docs[d.Key] = d
	return nil
}

func (f *fakeDocs) Update(_ context.Context, k docs.Key, fn func(*docs.Doc) (*docs.Doc, error)) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	var cur *docs.Doc
	if d, ok := f.docs[k]; ok {
		cur = &d
	}
	next, err := fn(cur)
	if err != nil {
		return err
	}
	if next == nil {
		delete(f.docs, k)
		return nil
	}
	next.Key = k
	f.docs[k] = *next
	return nil
}

func (f *fakeDocs) Transact(_ context.Context, read []docs.Key, fn func([]*docs.Doc) ([]docs.Write, error)) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	cur := make([]*docs.Doc, len(read))
	for i, k := range read {
		if d, ok := f.docs[k]; ok {
			cur[i] = &d
		}
	}
	ws, err := fn(cur)
	if err != nil {
		return err
	}
	for _, w := range ws {
		if _, ok := f.docs[w.Doc.Key]; ok && w.Create {
			return docs.ErrAlreadyExists
		}
	}
	for _, w := range ws {
		if w.Delete {
			delete(f.docs, w.Doc.Key)
			continue
		}
		f.docs[w.Doc.Key] = w.Doc
	}
	return nil
}

func (f *fakeDocs) Delete(_ context.Context, k docs.Key) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	delete(f.docs, k)
	return nil
}

func (f *fakeDocs) DeleteMany(context.Context, []docs.Key) (int, error) {
	return 0, errors.New("fakeDocs: DeleteMany not needed by keys")
}

func (f *fakeDocs) Query(context.Context, docs.Query, *docs.Position) ([]docs.Doc, error) {
	return nil, errors.New("fakeDocs: Query not needed by keys")
}

func (f *fakeDocs) DeleteUser(_ context.Context, user string) (int, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	n := 0
	for k := range f.docs {
		if k.User == user {
			delete(f.docs, k)
			n++
		}
	}
	return n, nil
}

func (f *fakeDocs) CountUser(_ context.Context, user string) (int, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	n := 0
	for k := range f.docs {
		if k.User == user {
			n++
		}
	}
	return n, nil
}

func (f *fakeDocs) ErrorCode(error) error { return nil }

func (f *fakeDocs) As(any) bool { return false }

func (f *fakeDocs) Close() error { return nil }

// storeCase gives every Keyring test both stores: the in-memory one and the
// docs adapter over a fake docs.Driver.
type storeCase struct {
	name string
	make func() (KeysetStore, func(user string))
}

var storeCases = []storeCase{
	{"mem", func() (KeysetStore, func(string)) {
		m := newMemStore()
		return m, func(u string) { m.mu.Lock(); m.tombs[u] = true; m.mu.Unlock() }
	}},
	{"docs", func() (KeysetStore, func(string)) {
		f := newFakeDocs()
		return NewDocsKeysetStore(docs.New(f)), func(u string) {
			f.Put(context.Background(), docs.Doc{Key: TombstoneKey(u), Data: []byte(`{}`)})
		}
	}},
}

func testKEK(t testing.TB) *filekek.KEK {
	t.Helper()
	kek, err := filekek.Open(filepath.Join(t.TempDir(), "kek"))
	if err != nil {
		t.Fatal(err)
	}
	return kek
}

const (
	alice = "0123456789abcdef0123456789abcdef"
	bob   = "fedcba9876543210fedcba9876543210"
)

func forEachStore(t *testing.T, fn func(t *testing.T, store KeysetStore, tombstone func(string), kek *filekek.KEK)) {
	for _, sc := range storeCases {
		t.Run(sc.name, func(t *testing.T) {
			store, tomb := sc.make()
			fn(t, store, tomb, testKEK(t))
		})
	}
}

func TestSealOpen(t *testing.T) {
	forEachStore(t, func(t *testing.T, store KeysetStore, _ func(string), kek *filekek.KEK) {
		ctx := context.Background()
		k := NewKeyring(kek, store, Options{})
		ad := AD(alice, "conversations", "c1", "transcript")
		for _, pt := range [][]byte{nil, []byte("remind me to call Anna"), bytes.Repeat([]byte("x"), 1<<20)} {
			ct, err := k.Seal(ctx, alice, pt, ad)
			if err != nil {
				t.Fatalf("Seal: %v", err)
			}
			if len(pt) > 8 && bytes.Contains(ct, pt[:9]) {
				t.Fatal("ciphertext contains plaintext")
			}
			got, err := k.Open(ctx, alice, ct, ad)
			if err != nil {
				t.Fatalf("Open: %v", err)
			}
			if !bytes.Equal(got, pt) {
				t.Fatal("round trip changed the plaintext")
			}
		}
		// Another Keyring over the same store and KEK (a restart) opens it.
		ct, _ := k.Seal(ctx, alice, []byte("persisted"), ad)
		got, err := NewKeyring(kek, store, Options{}).Open(ctx, alice, ct, ad)
		if err != nil || string(got) != "persisted" {
			t.Fatalf("Open after restart: %v", err)
		}
		// A different KEK cannot unwrap the stored keyset.
		if _, err := NewKeyring(testKEK(t), store, Options{}).Open(ctx, alice, ct, ad); err == nil {
			t.Fatal("a different KEK opened the data")
		}
	})
}

func TestWrongAssociatedData(t *testing.T) {
	forEachStore(t, func(t *testing.T, store KeysetStore, _ func(string), kek *filekek.KEK) {
		ctx := context.Background()
		k := NewKeyring(kek, store, Options{})
		ad := AD(alice, "conversations", "c1", "transcript")
		ct, err := k.Seal(ctx, alice, []byte("secret"), ad)
		if err != nil {
			t.Fatal(err)
		}
		for name, bad := range map[string][]byte{
			"other user":       AD(bob, "conversations", "c1", "transcript"),
			"other collection": AD(alice, "notes", "c1", "transcript"),
			"other doc":        AD(alice, "conversations", "c2", "transcript"),
			"other field":      AD(alice, "conversations", "c1", "title"),
			"none":             nil,
		} {
			if _, err := k.Open(ctx, alice, ct, bad); !errors.Is(err, ErrDecrypt) {
				t.Errorf("%s: Open = %v, want ErrDecrypt", name, err)
			}
		}
		tampered := bytes.Clone(ct)
		tampered[len(tampered)-1] ^= 1
		if _, err := k.Open(ctx, alice, tampered, ad); !errors.Is(err, ErrDecrypt) {
			t.Errorf("tampered: Open = %v, want ErrDecrypt", err)
		}
		if _, err := k.Open(ctx, alice, []byte("short"), ad); !errors.Is(err, ErrDecrypt) {
			t.Errorf("garbage: Open = %v, want ErrDecrypt", err)
		}
	})
}

func TestCrossUser(t *testing.T) {
	forEachStore(t, func(t *testing.T, store KeysetStore, _ func(string), kek *filekek.KEK) {
		ctx := context.Background()
		k := NewKeyring(kek, store, Options{})
		ad := []byte("shared-ad")
		ct, err := k.Seal(ctx, alice, []byte("alice's"), ad)
		if err != nil {
			t.Fatal(err)
		}
		// Bob without a key: ErrNoKey; with his own key: ErrDecrypt.
		if _, err := k.Open(ctx, bob, ct, ad); !errors.Is(err, ErrNoKey) {
			t.Fatalf("Open as keyless bob = %v, want ErrNoKey", err)
		}
		if _, err := k.Seal(ctx, bob, []byte("bob's"), ad); err != nil {
			t.Fatal(err)
		}
		if _, err := k.Open(ctx, bob, ct, ad); !errors.Is(err, ErrDecrypt) {
			t.Fatalf("Open alice's ciphertext as bob = %v, want ErrDecrypt", err)
		}
		// Swapping wrapped keysets between users fails too: the KEK binds
		// each to its user.
		wa, _ := store.Load(ctx, alice)
		store.Delete(ctx, bob)
		store.CreateIfAbsent(ctx, bob, wa)
		if _, err := NewKeyring(kek, store, Options{}).Open(ctx, bob, ct, ad); err == nil || errors.Is(err, ErrNoKey) {
			t.Fatalf("alice's keyset planted under bob unwrapped: %v", err)
		}
	})
}

func TestKeysetStoredWrapped(t *testing.T) {
	forEachStore(t, func(t *testing.T, store KeysetStore, _ func(string), kek *filekek.KEK) {
		ctx := context.Background()
		if _, err := NewKeyring(kek, store, Options{}).Seal(ctx, alice, []byte("x"), nil); err != nil {
			t.Fatal(err)
		}
		stored, err := store.Load(ctx, alice)
		if err != nil {
			t.Fatal(err)
		}
		wrapped := stored.Keyset
		rd := func() keyset.Reader { return keyset.NewBinaryReader(bytes.NewReader(wrapped)) }
		for _, wrong := range [][]byte{[]byte(bob), nil, []byte(alice + "x")} {
			if _, err := keyset.ReadWithAssociatedData(rd(), kek, wrong); err == nil {
				t.Fatalf("stored keyset unwraps with associated data %q", wrong)
			}
		}
		h, err := keyset.ReadWithAssociatedData(rd(), kek, []byte(alice))
		if err != nil {
			t.Fatalf("stored keyset does not unwrap with the user as AD: %v", err)
		}
		if _, err := insecurecleartextkeyset.Read(rd()); err == nil {
			t.Fatal("stored bytes parse as a cleartext keyset")
		}
		for _, key := range insecurecleartextkeyset.KeysetMaterial(h).GetKey() {
			raw := key.GetKeyData().GetValue()
			if len(raw) < 32 {
				t.Fatalf("key material of %d bytes: test is void", len(raw))
			}
			// The serialized AesGcmKey ends with the 32-byte key.
			if bytes.Contains(wrapped, raw[len(raw)-32:]) {
				t.Fatal("stored keyset contains the raw key")
			}
		}
		// The digest key is wrapped too, bound to the user and its role.
		for _, wrong := range [][]byte{MACAD(bob), []byte(alice), nil} {
			if _, err := kek.Decrypt(stored.MAC, wrong); err == nil {
				t.Fatalf("stored digest key unwraps with associated data %q", wrong)
			}
		}
		mac, err := kek.Decrypt(stored.MAC, MACAD(alice))
		if err != nil || len(mac) != 32 {
			t.Fatalf("stored digest key does not unwrap (%d bytes, %v)", len(mac), err)
		}
		if bytes.Contains(stored.MAC, mac) || bytes.Contains(stored.Keyset, mac) {
			t.Fatal("stored keys contain the raw digest key")
		}
	})
}

func TestConcurrentFirstUse(t *testing.T) {
	forEachStore(t, func(t *testing.T, store KeysetStore, _ func(string), kek *filekek.KEK) {
		ctx := context.Background()
		// Two keyrings stand for two processes: their caches are separate,
		// so only the store can make them agree.
		rings := []*Keyring{NewKeyring(kek, store, Options{}), NewKeyring(kek, store, Options{})}
		var wg sync.WaitGroup
		cts := make([][]byte, 16)
		start := make(chan struct{})
		for i := range cts {
			wg.Go(func() {
				<-start
				ct, err := rings[i%2].Seal(ctx, alice, fmt.Appendf(nil, "msg %d", i), nil)
				if err != nil {
					t.Error(err)
				}
				cts[i] = ct
			})
		}
		close(start)
		wg.Wait()
		if t.Failed() {
			return
		}
		if m, ok := store.(*memStore); ok && m.creates.Load() != 1 {
			t.Fatalf("%d keysets created, want 1", m.creates.Load())
		}
		fresh := NewKeyring(kek, store, Options{})
		for i, ct := range cts {
			pt, err := fresh.Open(ctx, alice, ct, nil)
			if err != nil || string(pt) != fmt.Sprintf("msg %d", i) {
				t.Fatalf("ciphertext %d does not open with the stored keyset: %v", i, err)
			}
		}
	})
}

func TestShred(t *testing.T) {
	forEachStore(t, func(t *testing.T, store KeysetStore, _ func(string), kek *filekek.KEK) {
		ctx := context.Background()
		k := NewKeyring(kek, store, Options{})
		ct, err := k.Seal(ctx, alice, []byte("forget me"), nil)
		if err != nil {
			t.Fatal(err)
		}
		bobCT, _ := k.Seal(ctx, bob, []byte("keep me"), nil)
		if err := k.Shred(ctx, alice); err != nil {
			t.Fatal(err)
		}
		if _, err := k.Open(ctx, alice, ct, nil); !errors.Is(err, ErrNoKey) {
			t.Fatalf("Open after Shred = %v, want ErrNoKey", err)
		}
		if _, err := store.Load(ctx, alice); !errors.Is(err, ErrNoKey) {
			t.Fatalf("store still has the keyset: %v", err)
		}
		if _, err := k.Open(ctx, bob, bobCT, nil); err != nil {
			t.Fatalf("Shred of alice broke bob: %v", err)
		}
		if err := k.Shred(ctx, alice); err != nil {
			t.Fatalf("second Shred: %v", err)
		}
		// Without a tombstone a new key may be made, but the old data stays lost.
		if _, err := k.Seal(ctx, alice, []byte("new"), nil); err != nil {
			t.Fatal(err)
		}
		if _, err := k.Open(ctx, alice, ct, nil); !errors.Is(err, ErrDecrypt) {
			t.Fatalf("old ciphertext under the new key = %v, want ErrDecrypt", err)
		}
	})
}

func TestTombstone(t *testing.T) {
	forEachStore(t, func(t *testing.T, store KeysetStore, tombstone func(string), kek *filekek.KEK) {
		ctx := context.Background()
		k := NewKeyring(kek, store, Options{})
		ct, err := k.Seal(ctx, alice, []byte("x"), nil)
		if err != nil {
			t.Fatal(err)
		}
		tombstone(alice)
		// The cached key must not outlive the tombstone.
		if _, err := k.Seal(ctx, alice, []byte("y"), nil); !errors.Is(err, ErrTombstoned) {
			t.Fatalf("Seal for tombstoned user = %v, want ErrTombstoned", err)
		}
		if _, err := k.Open(ctx, alice, ct, nil); !errors.Is(err, ErrTombstoned) {
			t.Fatalf("Open for tombstoned user = %v, want ErrTombstoned", err)
		}
		// A tombstoned user who never had a key never gets one.
		tombstone(bob)
		if _, err := k.Seal(ctx, bob, []byte("y"), nil); !errors.Is(err, ErrTombstoned) {
			t.Fatalf("Seal = %v, want ErrTombstoned", err)
		}
		if _, err := store.Load(ctx, bob); !errors.Is(err, ErrNoKey) {
			t.Fatalf("a keyset was created for a tombstoned user: %v", err)
		}
	})
}

// raceStore tombstones the user right after CreateIfAbsent succeeds: the
// window between Seal's tombstone check and its key creation.
type raceStore struct{ *memStore }

func (r raceStore) CreateIfAbsent(ctx context.Context, user string, w Wrapped) error {
	err := r.memStore.CreateIfAbsent(ctx, user, w)
	r.mu.Lock()
	r.tombs[user] = true
	r.mu.Unlock()
	return err
}

func TestTombstoneDuringCreate(t *testing.T) {
	ctx := context.Background()
	store := raceStore{newMemStore()}
	k := NewKeyring(testKEK(t), store, Options{})
	if _, err := k.Seal(ctx, alice, []byte("x"), nil); !errors.Is(err, ErrTombstoned) {
		t.Fatalf("Seal = %v, want ErrTombstoned", err)
	}
	if _, err := store.Load(ctx, alice); !errors.Is(err, ErrNoKey) {
		t.Fatalf("keyset left behind for a user tombstoned mid-create: %v", err)
	}
}

func TestCacheBoundAndTTL(t *testing.T) {
	ctx := context.Background()
	store := newMemStore()
	kek := testKEK(t)
	k := NewKeyring(kek, store, Options{CacheSize: 2, CacheTTL: time.Minute})
	now := time.Unix(1e9, 0)
	k.now = func() time.Time { return now }
	users := []string{"u1", "u2", "u3", "u4", "u5"}
	cts := map[string][]byte{}
	for _, u := range users {
		ct, err := k.Seal(ctx, u, []byte(u), nil)
		if err != nil {
			t.Fatal(err)
		}
		cts[u] = ct
	}
	if n := k.lru.Len(); n != 2 || len(k.byKey) != 2 {
		t.Fatalf("cache holds %d (%d) keysets, bound 2", n, len(k.byKey))
	}
	for _, u := range users {
		if pt, err := k.Open(ctx, u, cts[u], nil); err != nil || string(pt) != u {
			t.Fatalf("evicted user %s does not reload: %v", u, err)
		}
	}
	// Another process shreds u5, cached here: still usable within the TTL,
	// gone after it.
	if _, err := k.Open(ctx, "u5", cts["u5"], nil); err != nil {
		t.Fatal(err)
	}
	other := NewKeyring(kek, store, Options{})
	if err := other.Shred(ctx, "u5"); err != nil {
		t.Fatal(err)
	}
	now = now.Add(2 * time.Minute)
	if _, err := k.Open(ctx, "u5", cts["u5"], nil); !errors.Is(err, ErrNoKey) {
		t.Fatalf("Open after remote Shred and TTL = %v, want ErrNoKey", err)
	}
}

func TestDocsKeysetStoreLayout(t *testing.T) {
	ctx := context.Background()
	f := newFakeDocs()
	s := NewDocsKeysetStore(docs.New(f))
	if _, err := s.Load(ctx, alice); !errors.Is(err, ErrNoKey) {
		t.Fatalf("Load absent = %v", err)
	}
	if err := s.CreateIfAbsent(ctx, alice, Wrapped{Keyset: []byte{1, 2, 3}, MAC: []byte{4, 5}}); err != nil {
		t.Fatal(err)
	}
	if err := s.CreateIfAbsent(ctx, alice, Wrapped{Keyset: []byte{9}, MAC: []byte{9}}); !errors.Is(err, ErrExists) {
		t.Fatalf("second CreateIfAbsent = %v, want ErrExists", err)
	}
	if w, err := s.Load(ctx, alice); err != nil || !slices.Equal(w.Keyset, []byte{1, 2, 3}) || !slices.Equal(w.MAC, []byte{4, 5}) {
		t.Fatalf("Load = %v %v", w, err)
	}
	d, err := f.Get(ctx, docs.Key{User: alice, Collection: "keys", ID: "dek"})
	if err != nil {
		t.Fatalf("keyset not at users/{user}/keys/dek: %v", err)
	}
	if !strings.HasPrefix(string(d.Data), `{"v":2,`) {
		t.Fatalf("stored doc %s", d.Data)
	}
	if dead, err := s.Tombstoned(ctx, alice); err != nil || dead {
		t.Fatalf("Tombstoned = %v %v", dead, err)
	}
	f.Put(ctx, docs.Doc{Key: docs.Key{User: "", Collection: "tombstones", ID: alice}, Data: []byte(`{}`)})
	if dead, err := s.Tombstoned(ctx, alice); err != nil || !dead {
		t.Fatalf("Tombstoned = %v %v, want true", dead, err)
	}
	if dead, _ := s.Tombstoned(ctx, bob); dead {
		t.Fatal("tombstone leaked to another user")
	}
	if err := s.Delete(ctx, alice); err != nil {
		t.Fatal(err)
	}
	if err := s.Delete(ctx, alice); err != nil {
		t.Fatalf("Delete absent: %v", err)
	}
	if n, _ := f.CountUser(ctx, alice); n != 0 {
		t.Fatalf("%d docs left for the user", n)
	}
	// A keyset stored before digest keys still loads, without one.
	f.Put(ctx, docs.Doc{Key: KeysetKey(bob), Data: []byte(`{"v":1,"wrapped":"AQ=="}`)})
	if w, err := s.Load(ctx, bob); err != nil || !slices.Equal(w.Keyset, []byte{1}) || w.MAC != nil {
		t.Fatalf("Load v1 = %v %v", w, err)
	}
	for _, bad := range []string{`{"v":2,"wrapped":"AQ=="}`, `{"v":3,"wrapped":"AQ==","mac":"AQ=="}`, `{"v":1}`} {
		f.Put(ctx, docs.Doc{Key: KeysetKey(bob), Data: []byte(bad)})
		if _, err := s.Load(ctx, bob); err == nil {
			t.Fatalf("Load accepted %s", bad)
		}
	}
}

func TestDigest(t *testing.T) {
	forEachStore(t, func(t *testing.T, store KeysetStore, tombstone func(string), kek *filekek.KEK) {
		ctx := context.Background()
		k := NewKeyring(kek, store, Options{})
		audio := []byte("RIFF....WAVEfmt plaintext audio")
		d1, err := k.Digest(ctx, alice, audio)
		if err != nil {
			t.Fatal(err)
		}
		if !regexp.MustCompile(`^[0-9a-f]{64}$`).MatchString(d1) {
			t.Fatalf("digest %q is not 64 lowercase hex", d1)
		}
		plain := sha256.Sum256(audio)
		if d1 == hex.EncodeToString(plain[:]) {
			t.Fatal("digest is the plain SHA-256")
		}
		// Deterministic per user, across restarts; distinct across users
		// and contents.
		if d, err := NewKeyring(kek, store, Options{}).Digest(ctx, alice, audio); err != nil || d != d1 {
			t.Fatalf("digest after a restart = %s (%v), want %s", d, err, d1)
		}
		if d, _ := k.Digest(ctx, bob, audio); d == d1 {
			t.Fatal("two users share a digest of the same bytes")
		}
		if d, _ := k.Digest(ctx, alice, append(audio, 0)); d == d1 {
			t.Fatal("two contents share a digest")
		}
		// Its key is the one Seal made: Digest first, then Seal, one keyset.
		ct, err := k.Seal(ctx, alice, []byte("x"), nil)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := NewKeyring(kek, store, Options{}).Open(ctx, alice, ct, nil); err != nil {
			t.Fatal(err)
		}

		// After Shred the digest cannot be recomputed: a new key gives
		// another value, and a tombstone refuses.
		if err := k.Shred(ctx, alice); err != nil {
			t.Fatal(err)
		}
		after, err := k.Digest(ctx, alice, audio)
		if err != nil {
			t.Fatal(err)
		}
		if after == d1 {
			t.Fatal("the digest survived Shred")
		}
		tombstone(alice)
		if _, err := k.Digest(ctx, alice, audio); !errors.Is(err, ErrTombstoned) {
			t.Fatalf("Digest for a tombstoned user = %v, want ErrTombstoned", err)
		}
		if _, err := k.Digest(ctx, "", audio); err == nil {
			t.Fatal("Digest for an empty user")
		}
	})
}

func TestDigestRefusesKeysetWithoutDigestKey(t *testing.T) {
	ctx := context.Background()
	kek := testKEK(t)
	store := newMemStore()
	k := NewKeyring(kek, store, Options{})
	ct, err := k.Seal(ctx, alice, []byte("old"), nil)
	if err != nil {
		t.Fatal(err)
	}
	w, _ := store.Load(ctx, alice)
	store.Delete(ctx, alice)
	store.CreateIfAbsent(ctx, alice, Wrapped{Keyset: w.Keyset}) // as stored before digests
	old := NewKeyring(kek, store, Options{})
	if pt, err := old.Open(ctx, alice, ct, nil); err != nil || string(pt) != "old" {
		t.Fatalf("Open of a keyset without digest key = %q %v", pt, err)
	}
	if _, err := old.Digest(ctx, alice, []byte("x")); err == nil {
		t.Fatal("Digest without a digest key")
	}
	// A digest key planted from another user does not unwrap.
	if _, err := k.Digest(ctx, bob, []byte("x")); err != nil {
		t.Fatal(err)
	}
	wb, _ := store.Load(ctx, bob)
	store.Delete(ctx, alice)
	store.CreateIfAbsent(ctx, alice, Wrapped{Keyset: w.Keyset, MAC: wb.MAC})
	if _, err := NewKeyring(kek, store, Options{}).Digest(ctx, alice, []byte("x")); err == nil {
		t.Fatal("bob's digest key planted under alice unwrapped")
	}
}

func TestEmptyUser(t *testing.T) {
	k := NewKeyring(testKEK(t), newMemStore(), Options{})
	if _, err := k.Seal(context.Background(), "", []byte("x"), nil); err == nil {
		t.Fatal("Seal for empty user succeeded")
	}
}

func benchKeyring(b *testing.B) (*Keyring, []byte) {
	kek, err := filekek.Open(filepath.Join(b.TempDir(), "kek"))
	if err != nil {
		b.Fatal(err)
	}
	return NewKeyring(kek, newMemStore(), Options{}), bytes.Repeat([]byte("a"), 4096)
}

func BenchmarkSeal4KiB(b *testing.B) {
	k, pt := benchKeyring(b)
	ctx := context.Background()
	ad := AD(alice, "conversations", "c1", "transcript")
	b.SetBytes(int64(len(pt)))
	for b.Loop() {
		if _, err := k.Seal(ctx, alice, pt, ad); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkOpen4KiB(b *testing.B) {
	k, pt := benchKeyring(b)
	ctx := context.Background()
	ad := AD(alice, "conversations", "c1", "transcript")
	ct, err := k.Seal(ctx, alice, pt, ad)
	if err != nil {
		b.Fatal(err)
	}
	b.SetBytes(int64(len(pt)))
	for b.Loop() {
		if _, err := k.Open(ctx, alice, ct, ad); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkFirstSeal includes keyset creation and wrapping: the cost of a
// new user.
func BenchmarkFirstSeal(b *testing.B) {
	k, pt := benchKeyring(b)
	ctx := context.Background()
	i := 0
	for b.Loop() {
		if _, err := k.Seal(ctx, fmt.Sprint("user", i), pt[:64], nil); err != nil {
			b.Fatal(err)
		}
		i++
	}
}
