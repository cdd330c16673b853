package keys

import (
	"bytes"
	"container/list"
	"context"
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/tink-crypto/tink-go/v2/aead"
	"github.com/tink-crypto/tink-go/v2/keyset"
	"github.com/tink-crypto/tink-go/v2/tink"
)

// ErrExists: CreateIfAbsent found a keyset already stored for the user.
var ErrExists = errors.New("keys: keyset already exists")

// Wrapped is a user's key material as stored, every part wrapped by the
// KEK and bound to the user.
type Wrapped struct {
	// Keyset is the Tink AEAD keyset, wrapped with the user as associated
	// data.
	Keyset []byte
	// MAC is the 32-byte digest key, wrapped with MACAD(user); nil in
	// keysets stored before digests existed.
	MAC []byte
}

// MACAD is the associated data wrapping a user's digest key.
func MACAD(user string) []byte { return []byte(user + "|digest") }

// macKeySize is the length of a digest key.
const macKeySize = 32

// KEK is the key-encryption key wrapping every user's keys (Cloud KMS in
// production). Each call takes the caller's context, so a slow or
// unreachable KMS is bounded by the request's deadline and by shutdown.
// Its method set is tink.AEADWithContext, which Tink's keyset functions
// take.
type KEK interface {
	EncryptWithContext(ctx context.Context, plaintext, associatedData []byte) ([]byte, error)
	DecryptWithContext(ctx context.Context, ciphertext, associatedData []byte) ([]byte, error)
}

// kekFailure wraps err from a KEK call, keeping the context's error
// visible to errors.Is when the call ended because ctx did (Tink and gRPC
// flatten it into text).
func kekFailure(ctx context.Context, call string, err error) error {
	if cerr := ctx.Err(); cerr != nil {
		return fmt.Errorf("%s: %w (%w)", call, cerr, err)
	}
	return fmt.Errorf("%s: %w", call, err)
}

// KeysetStore keeps each user's wrapped keys and the erasure tombstones.
// It never sees an unwrapped key.
type KeysetStore interface {
	// Load returns the wrapped keys, ErrNoKey when absent.
	Load(ctx context.Context, user string) (Wrapped, error)
	// CreateIfAbsent stores wrapped only if the user has no keys, else
	// ErrExists; it is what makes concurrent first use end with one key.
	CreateIfAbsent(ctx context.Context, user string, wrapped Wrapped) error
	// Delete removes the keyset (crypto-shredding); absent is not an error.
	Delete(ctx context.Context, user string) error
	// Tombstoned reports whether the user asked to be erased.
	Tombstoned(ctx context.Context, user string) (bool, error)
}

// Options tune a Keyring; the zero value gives the defaults.
type Options struct {
	// CacheSize bounds how many unwrapped keysets stay in memory
	// (default 1024), least recently used evicted first.
	CacheSize int
	// CacheTTL bounds how long an unwrapped keyset is used without
	// re-reading the store (default 1 minute), so a Shred done by another
	// process takes effect here within it. Tombstones are checked on every
	// call regardless.
	CacheTTL time.Duration
}

// Keyring is the Sealer: envelope encryption with one Tink AES256-GCM
// keyset per user, wrapped by the KEK with the user as associated data.
type Keyring struct {
	kek   KEK
	store KeysetStore
	max   int
	ttl   time.Duration
	now   func() time.Time

	mu    sync.Mutex
	lru   *list.List // of *cached, most recent first
	byKey map[string]*list.Element
	epoch uint64 // bumped by every Shred; a load that spans one is not cached
}

var _ Sealer = (*Keyring)(nil)

type cached struct {
	user   string
	keys   userKeys
	expiry time.Time
}

// userKeys are a user's unwrapped keys.
type userKeys struct {
	aead tink.AEAD
	mac  []byte // nil for a keyset stored before digests existed
}

// NewKeyring returns a Keyring over store, wrapping keysets with kek.
func NewKeyring(kek KEK, store KeysetStore, opts Options) *Keyring {
	if opts.CacheSize <= 0 {
		opts.CacheSize = 1024
	}
	if opts.CacheTTL <= 0 {
		opts.CacheTTL = time.Minute
	}
	return &Keyring{
		kek: kek, store: store, max: opts.CacheSize, ttl: opts.CacheTTL, now: time.Now,
		lru: list.New(), byKey: map[string]*list.Element{},
	}
}

var errEmptyUser = errors.New("keys: empty user")

// Seal encrypts plaintext with the user's data key, creating the key on
// first use unless the user is tombstoned.
func (k *Keyring) Seal(ctx context.Context, user string, plaintext, ad []byte) ([]byte, error) {
	if err := k.checkTombstone(ctx, user); err != nil {
		return nil, err
	}
	uk, err := k.userKeys(ctx, user, true)
	if err != nil {
		return nil, err
	}
	ct, err := uk.aead.Encrypt(plaintext, ad)
	if err != nil {
		return nil, fmt.Errorf("aead.Encrypt: %w", err)
	}
	return ct, nil
}

// Open decrypts: ErrTombstoned for an erased user, ErrNoKey when the key is
// gone, ErrDecrypt when ciphertext or associated data do not match.
func (k *Keyring) Open(ctx context.Context, user string, ciphertext, ad []byte) ([]byte, error) {
	if err := k.checkTombstone(ctx, user); err != nil {
		return nil, err
	}
	uk, err := k.userKeys(ctx, user, false)
	if err != nil {
		return nil, err
	}
	pt, err := uk.aead.Decrypt(ciphertext, ad)
	if err != nil {
		// Tink's message adds nothing; callers branch on ErrDecrypt.
		return nil, fmt.Errorf("aead.Decrypt: %w", ErrDecrypt)
	}
	return pt, nil
}

// Digest returns the keyed digest of data for the user: 64 lowercase hex
// digits of HMAC-SHA256 under the user's digest key, creating the user's
// keys on first use unless the user is tombstoned. It is deterministic for
// a user (so it can name and deduplicate content) but, unlike a plain
// hash, cannot be recomputed once Shred has destroyed the key.
func (k *Keyring) Digest(ctx context.Context, user string, data []byte) (string, error) {
	if err := k.checkTombstone(ctx, user); err != nil {
		return "", err
	}
	uk, err := k.userKeys(ctx, user, true)
	if err != nil {
		return "", err
	}
	if uk.mac == nil {
		return "", fmt.Errorf("keys: the user's keyset predates digest keys: %w", ErrNoKey)
	}
	m := hmac.New(sha256.New, uk.mac)
	m.Write(data)
	return hex.EncodeToString(m.Sum(nil)), nil
}

// Shred deletes the user's wrapped keyset and forgets the cached one:
// everything sealed for the user becomes unreadable. Idempotent.
func (k *Keyring) Shred(ctx context.Context, user string) error {
	if user == "" {
		return errEmptyUser
	}
	k.evict(user)
	if err := k.store.Delete(ctx, user); err != nil {
		return fmt.Errorf("KeysetStore.Delete: %w", err)
	}
	k.evict(user)
	return nil
}

func (k *Keyring) checkTombstone(ctx context.Context, user string) error {
	if user == "" {
		return errEmptyUser
	}
	dead, err := k.store.Tombstoned(ctx, user)
	if err != nil {
		return fmt.Errorf("KeysetStore.Tombstoned: %w", err)
	}
	if dead {
		k.evict(user)
		return ErrTombstoned
	}
	return nil
}

// userKeys returns the user's keys from the cache or the store, creating
// them when create is set and none exist.
func (k *Keyring) userKeys(ctx context.Context, user string, create bool) (userKeys, error) {
	k.mu.Lock()
	epoch := k.epoch
	if e, ok := k.byKey[user]; ok {
		c := e.Value.(*cached)
		if k.now().Before(c.expiry) {
			k.lru.MoveToFront(e)
			k.mu.Unlock()
			return c.keys, nil
		}
		k.lru.Remove(e)
		delete(k.byKey, user)
	}
	k.mu.Unlock()

	wrapped, err := k.store.Load(ctx, user)
	switch {
	case errors.Is(err, ErrNoKey) && create:
		wrapped, err = k.create(ctx, user)
		if err != nil {
			return userKeys{}, err
		}
	case errors.Is(err, ErrNoKey):
		return userKeys{}, ErrNoKey
	case err != nil:
		return userKeys{}, fmt.Errorf("KeysetStore.Load: %w", err)
	}
	h, err := keyset.ReadWithContext(ctx, keyset.NewBinaryReader(bytes.NewReader(wrapped.Keyset)), k.kek, []byte(user))
	if err != nil {
		return userKeys{}, kekFailure(ctx, "keyset.ReadWithContext", err)
	}
	uk := userKeys{}
	if uk.aead, err = aead.New(h); err != nil {
		return userKeys{}, fmt.Errorf("aead.New: %w", err)
	}
	if wrapped.MAC != nil {
		if uk.mac, err = k.kek.DecryptWithContext(ctx, wrapped.MAC, MACAD(user)); err != nil {
			return userKeys{}, kekFailure(ctx, "kek.Decrypt digest key", err)
		}
		if len(uk.mac) != macKeySize {
			return userKeys{}, fmt.Errorf("keys: digest key of %d bytes", len(uk.mac))
		}
	}
	k.put(user, uk, epoch)
	return uk, nil
}

// create makes, wraps and stores a keyset and a digest key. Losing a race
// to another process (ErrExists) is normal: the winner's keys are loaded
// instead.
func (k *Keyring) create(ctx context.Context, user string) (Wrapped, error) {
	h, err := keyset.NewHandle(aead.AES256GCMKeyTemplate())
	if err != nil {
		return Wrapped{}, fmt.Errorf("keyset.NewHandle: %w", err)
	}
	var buf bytes.Buffer
	if err := h.WriteWithContext(ctx, keyset.NewBinaryWriter(&buf), k.kek, []byte(user)); err != nil {
		return Wrapped{}, kekFailure(ctx, "keyset.WriteWithContext", err)
	}
	mac := make([]byte, macKeySize)
	if _, err := rand.Read(mac); err != nil {
		return Wrapped{}, fmt.Errorf("rand.Read: %w", err)
	}
	wrappedMAC, err := k.kek.EncryptWithContext(ctx, mac, MACAD(user))
	if err != nil {
		return Wrapped{}, kekFailure(ctx, "kek.Encrypt digest key", err)
	}
	w := Wrapped{Keyset: buf.Bytes(), MAC: wrappedMAC}
	err = k.store.CreateIfAbsent(ctx, user, w)
	if errors.Is(err, ErrExists) {
		w, err := k.store.Load(ctx, user)
		if err != nil {
			return Wrapped{}, fmt.Errorf("KeysetStore.Load: %w", err)
		}
		return w, nil
	}
	if err != nil {
		return Wrapped{}, fmt.Errorf("KeysetStore.CreateIfAbsent: %w", err)
	}
	// An erasure may have tombstoned the user between our check and the
	// create; its shred step may already have run, so undo the key here.
	dead, err := k.store.Tombstoned(ctx, user)
	if err != nil {
		return Wrapped{}, fmt.Errorf("KeysetStore.Tombstoned: %w", err)
	}
	if dead {
		if err := k.store.Delete(ctx, user); err != nil {
			return Wrapped{}, fmt.Errorf("KeysetStore.Delete: %w", err)
		}
		return Wrapped{}, ErrTombstoned
	}
	return w, nil
}

func (k *Keyring) put(user string, uk userKeys, epoch uint64) {
	k.mu.Lock()
	defer k.mu.Unlock()
	if k.epoch != epoch {
		return // a Shred ran while we loaded: the key may be gone
	}
	c := &cached{user: user, keys: uk, expiry: k.now().Add(k.ttl)}
	if e, ok := k.byKey[user]; ok {
		e.Value = c
		k.lru.MoveToFront(e)
		return
	}
	k.byKey[user] = k.lru.PushFront(c)
	for k.lru.Len() > k.max {
		last := k.lru.Back()
		k.lru.Remove(last)
		delete(k.byKey, last.Value.(*cached).user)
	}
}

func (k *Keyring) evict(user string) {
	k.mu.Lock()
	defer k.mu.Unlock()
	k.epoch++
	if e, ok := k.byKey[user]; ok {
		k.lru.Remove(e)
		delete(k.byKey, user)
	}
}

// HasKey reports whether the user still has a stored keyset (an erasure
// verifies that it does not).
func (k *Keyring) HasKey(ctx context.Context, user string) (bool, error) {
	if user == "" {
		return false, errEmptyUser
	}
	_, err := k.store.Load(ctx, user)
	switch {
	case err == nil:
		return true, nil
	case errors.Is(err, ErrNoKey):
		return false, nil
	default:
		return false, fmt.Errorf("KeysetStore.Load: %w", err)
	}
}
