package twilioapi_test

import (
	"bytes"
	"context"
	"errors"
	"strings"
	"testing"

	"github.com/lethe-dev/lethe/infra/twilioapi"
	"github.com/lethe-dev/lethe/infra/twilioapi/twiliofake"
)

const (
	account = "AC0123456789abcdef0123456789abcdef"
	token   = "fake-auth-token"
	recSID  = "RE0123456789abcdef0123456789abcdef"
)

func newClient(t *testing.T, base, tok string) *twilioapi.Client {
	t.Helper()
	c, err := twilioapi.New(twilioapi.Config{BaseURL: base, AccountSID: account, AuthToken: tok, From: "+15005550006", MaxRecordingBytes: 1 << 10})
	if err != nil {
		t.Fatal(err)
	}
	return c
}

func TestSendSMS(t *testing.T) {
	fake := twiliofake.New(account, token)
	defer fake.Close()
	ctx := context.Background()
	if err := newClient(t, fake.URL, token).SendSMS(ctx, "+15551230000", "code 123456"); err != nil {
		t.Fatal(err)
	}
	if m := fake.Messages(); len(m) != 1 || m[0].To != "+15551230000" || m[0].Body != "code 123456" || m[0].From != "+15005550006" {
		t.Fatalf("messages %+v", m)
	}
	if err := newClient(t, fake.URL, "wrong").SendSMS(ctx, "+15551230000", "x"); !errors.Is(err, twilioapi.ErrRejected) {
		t.Fatalf("wrong token: %v, want ErrRejected", err)
	}
}

func TestRecordingLifecycle(t *testing.T) {
	fake := twiliofake.New(account, token)
	defer fake.Close()
	ctx := context.Background()
	c := newClient(t, fake.URL, token)
	wav := []byte("RIFF....WAVEfmt fake audio")
	fake.AddRecording(recSID, wav, 2)
	for i := range 2 {
		if _, err := c.FetchRecording(ctx, recSID); !errors.Is(err, twilioapi.ErrNotReady) {
			t.Fatalf("fetch %d before ready: %v, want ErrNotReady", i, err)
		}
	}
	rec, err := c.FetchRecording(ctx, recSID)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(rec.Audio, wav) || !strings.HasPrefix(rec.ContentType, "audio/") {
		t.Fatalf("got %q %s", rec.Audio, rec.ContentType)
	}
	for range 2 { // the second delete finds nothing: not an error
		if err := c.DeleteRecording(ctx, recSID); err != nil {
			t.Fatal(err)
		}
	}
	if d := fake.Deleted(); len(d) != 1 || d[0] != recSID {
		t.Fatalf("deleted %v", d)
	}
	if _, err := c.FetchRecording(ctx, recSID); !errors.Is(err, twilioapi.ErrNotReady) {
		t.Fatalf("fetch after delete: %v", err)
	}
}

func TestRecordingRefusals(t *testing.T) {
	fake := twiliofake.New(account, token)
	defer fake.Close()
	ctx := context.Background()
	c := newClient(t, fake.URL, token)
	fake.AddRecording(recSID, bytes.Repeat([]byte{1}, 2<<10), 0)
	if _, err := c.FetchRecording(ctx, recSID); !errors.Is(err, twilioapi.ErrTooLarge) {
		t.Fatalf("oversized: %v", err)
	}
	for _, sid := range []string{"../../Messages", "RE123", "https://evil.example/x"} {
		if _, err := c.FetchRecording(ctx, sid); !errors.Is(err, twilioapi.ErrRejected) {
			t.Fatalf("sid %q: %v", sid, err)
		}
	}
	if _, err := newClient(t, fake.URL, "wrong").FetchRecording(ctx, recSID); !errors.Is(err, twilioapi.ErrRejected) {
		t.Fatalf("wrong token: %v", err)
	}
	for _, cfg := range []twilioapi.Config{
		{BaseURL: "ftp://x", AccountSID: account, AuthToken: token},
		{BaseURL: fake.URL, AccountSID: "AC1", AuthToken: token},
		{BaseURL: fake.URL, AccountSID: account},
	} {
		if _, err := twilioapi.New(cfg); err == nil {
			t.Fatalf("New(%+v) accepted", cfg)
		}
	}
}
