package export_test

import (
	"context"
	"strings"
	"testing"

	"github.com/lethe-dev/lethe/app/phones"
	"github.com/lethe-dev/lethe/infra/keys/pseudonym"
	"github.com/lethe-dev/lethe/workers/export"
	"github.com/lethe-dev/lethe/workers/internal/workertest"
)

type codeSink struct{ last string }

func (c *codeSink) SendSMS(_ context.Context, _, body string) error { c.last = body; return nil }

// TestArchiveHoldsPhonesAndCalls: the export lists the user's proven
// phones (masked: the number itself is not kept anywhere) and their calls,
// and nothing of another user's.
func TestArchiveHoldsPhonesAndCalls(t *testing.T) {
	e := newEnv(t)
	ctx := t.Context()
	alice, bob := workertest.UserID(t, "alice"), workertest.UserID(t, "bob")
	sms := &codeSink{}
	reg := &phones.Registry{Docs: e.Docs, Hash: pseudonym.New(1, []byte("0123456789abcdef0123456789abcdef")).Phone, Digest: e.Keys, SMS: sms}
	p, err := reg.Add(ctx, alice, "+15551230042")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := reg.Verify(ctx, alice, p.ID, sms.last[len("Your lethe code is "):len("Your lethe code is ")+6]); err != nil {
		t.Fatal(err)
	}
	calls := &phones.Calls{Docs: e.Docs}
	if err := calls.Start(ctx, "CA0000000000000000000000000000000a", alice, "ringing"); err != nil {
		t.Fatal(err)
	}
	if err := calls.Start(ctx, "CA0000000000000000000000000000000b", bob, "ringing"); err != nil {
		t.Fatal(err)
	}
	x, ev := e.request(t, alice)
	if err := e.w.Handle(ctx, ev); err != nil {
		t.Fatal(err)
	}
	got, _ := files(t, e.open(t, alice, e.record(t, alice, x.ID)))
	ls := lines[map[string]any](t, got[export.FilePhones])
	if len(ls) != 2 || ls[0]["masked"] != "+1••••••••42" || ls[0]["verified"] != true || ls[1]["sid"] != "CA0000000000000000000000000000000a" {
		t.Fatalf("phones.ndjson = %v", ls)
	}
	if strings.Contains(string(got[export.FilePhones]), "5551230042") {
		t.Fatal("the archive holds the number")
	}
}
