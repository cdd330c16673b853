package pseudonym

import (
	"bytes"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/hex"
	"os"
	"path/filepath"
	"regexp"
	"sync"
	"testing"
)

func TestUserAndPhone(t *testing.T) {
	secret := bytes.Repeat([]byte{7}, 32)
	p := New(secret)
	shape := regexp.MustCompile(`^[0-9a-f]{32}$`)
	// Known answer, computed independently of the implementation.
	m := hmac.New(sha256.New, secret)
	m.Write([]byte("uid:alice"))
	want := hex.EncodeToString(m.Sum(nil))[:32]
	if got := p.User("alice"); got != want {
		t.Fatalf("User(alice) = %s, want %s", got, want)
	}
	for _, tc := range []struct{ a, b string }{
		{p.User("alice"), p.User("bob")},
		{p.User("alice"), p.Phone("alice")},
		{p.User("+15551234567"), p.Phone("+15551234567")},
		{p.User("alice"), New(bytes.Repeat([]byte{8}, 32)).User("alice")},
		{p.User(""), p.Phone("")},
	} {
		if !shape.MatchString(tc.a) || !shape.MatchString(tc.b) {
			t.Fatalf("pseudonym not 32 lowercase hex: %q %q", tc.a, tc.b)
		}
		if tc.a == tc.b {
			t.Fatalf("collision: %s", tc.a)
		}
	}
	if p.User("alice") != New(secret).User("alice") {
		t.Fatal("not deterministic")
	}
	secret[0] = 0 // New copied it
	if p.User("alice") != want {
		t.Fatal("pseudonymizer shares the caller's secret slice")
	}
}

func TestNewRefusesShortSecret(t *testing.T) {
	defer func() {
		if recover() == nil {
			t.Fatal("New accepted a 15-byte secret")
		}
	}()
	New(make([]byte, 15))
}

func TestLoadOrCreateSecret(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "keys")
	path := filepath.Join(dir, "pseudonym.secret")
	s1, err := LoadOrCreateSecret(path)
	if err != nil {
		t.Fatal(err)
	}
	if len(s1) != 32 || bytes.Equal(s1, make([]byte, 32)) {
		t.Fatalf("secret %d bytes / all zero", len(s1))
	}
	st, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	if st.Mode().Perm() != 0o600 {
		t.Fatalf("mode %v, want 0600", st.Mode().Perm())
	}
	if st, _ := os.Stat(dir); st.Mode().Perm() != 0o700 {
		t.Fatalf("dir mode %v, want 0700", st.Mode().Perm())
	}
	s2, err := LoadOrCreateSecret(path)
	if err != nil || !bytes.Equal(s1, s2) {
		t.Fatalf("reload gave a different secret (%v)", err)
	}
	other, err := LoadOrCreateSecret(filepath.Join(t.TempDir(), "s"))
	if err != nil || bytes.Equal(other, s1) {
		t.Fatalf("two fresh secrets are equal (%v)", err)
	}
}

func TestLoadOrCreateSecretRefuses(t *testing.T) {
	dir := t.TempDir()
	wide := filepath.Join(dir, "wide")
	os.WriteFile(wide, make([]byte, 32), 0o600)
	os.Chmod(wide, 0o644)
	short := filepath.Join(dir, "short")
	os.WriteFile(short, make([]byte, 31), 0o600)
	long := filepath.Join(dir, "long")
	os.WriteFile(long, make([]byte, 33), 0o600)
	for _, p := range []string{wide, short, long, dir} {
		if _, err := LoadOrCreateSecret(p); err == nil {
			t.Errorf("accepted %s", filepath.Base(p))
		}
	}
}

func TestConcurrentCreate(t *testing.T) {
	path := filepath.Join(t.TempDir(), "s")
	got := make([][]byte, 8)
	var wg sync.WaitGroup
	for i := range got {
		wg.Go(func() {
			s, err := LoadOrCreateSecret(path)
			if err != nil {
				t.Error(err)
			}
			got[i] = s
		})
	}
	wg.Wait()
	for _, s := range got[1:] {
		if !bytes.Equal(s, got[0]) {
			t.Fatal("concurrent first runs made different secrets")
		}
	}
}

func BenchmarkUser(b *testing.B) {
	p := New(make([]byte, 32))
	for b.Loop() {
		p.User("firebase-uid-0123456789abcdef")
	}
}
