package pseudonym

import (
	"bytes"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/hex"
	"regexp"
	"testing"
)

func TestUserAndPhone(t *testing.T) {
	secret := bytes.Repeat([]byte{7}, 32)
	p := New(1, secret)
	shape := regexp.MustCompile(`^[1-9a-f][0-9a-f]{31}$`)
	// Known answer, computed independently of the implementation.
	m := hmac.New(sha256.New, secret)
	m.Write([]byte("uid:alice"))
	want := "1" + hex.EncodeToString(m.Sum(nil))[:31]
	if got := p.User("alice"); got != want {
		t.Fatalf("User(alice) = %s, want %s", got, want)
	}
	for _, tc := range []struct{ a, b string }{
		{p.User("alice"), p.User("bob")},
		{p.User("alice"), p.Phone("alice")},
		{p.User("+15551234567"), p.Phone("+15551234567")},
		{p.User("alice"), New(1, bytes.Repeat([]byte{8}, 32)).User("alice")},
		{p.User("alice"), New(2, secret).User("alice")},
		{p.User(""), p.Phone("")},
	} {
		if !shape.MatchString(tc.a) || !shape.MatchString(tc.b) {
			t.Fatalf("pseudonym not 32 lowercase hex led by a version: %q %q", tc.a, tc.b)
		}
		if tc.a == tc.b {
			t.Fatalf("collision: %s", tc.a)
		}
	}
	if p.User("alice") != New(1, secret).User("alice") {
		t.Fatal("not deterministic")
	}
	secret[0] = 0 // New copied it
	if p.User("alice") != want {
		t.Fatal("pseudonymizer shares the caller's secret slice")
	}
}

func TestVersionLeads(t *testing.T) {
	secret := bytes.Repeat([]byte{7}, 32)
	for v, lead := range map[int]byte{1: '1', 9: '9', 10: 'a', MaxVersion: 'f'} {
		if got := New(v, secret).User("alice"); got[0] != lead {
			t.Errorf("version %d: pseudonym %s, want it to start with %c", v, got, lead)
		}
	}
}

func TestNewRefuses(t *testing.T) {
	for _, tc := range []struct {
		name    string
		version int
		secret  []byte
	}{
		{"short secret", 1, make([]byte, 15)},
		{"version 0", 0, make([]byte, 32)},
		{"version 16", 16, make([]byte, 32)},
	} {
		t.Run(tc.name, func(t *testing.T) {
			defer func() {
				if recover() == nil {
					t.Fatalf("New(%d, %d bytes) accepted", tc.version, len(tc.secret))
				}
			}()
			New(tc.version, tc.secret)
		})
	}
}

func BenchmarkUser(b *testing.B) {
	p := New(1, make([]byte, 32))
	for b.Loop() {
		p.User("firebase-uid-0123456789abcdef")
	}
}
