package forget_test

import (
	"testing"

	"github.com/lethe-dev/lethe/app/audit"
	"github.com/lethe-dev/lethe/app/forget"
	"github.com/lethe-dev/lethe/app/phones"
)

// TestEraseCoversTwilio: call records and number ownerships live outside
// the user's documents (webhooks look them up by call SID and number
// hash); the erasure counts them, deletes them, verifies zero, and leaves
// another user's alone.
func TestEraseCoversTwilio(t *testing.T) {
	e := newEnv(t)
	ix := phones.Index{Docs: e.docs}
	e.saga.Twilio = ix
	ctx := t.Context()
	calls := &phones.Calls{Docs: e.docs}
	for i, c := range []struct{ sid, owner string }{
		{"CA00000000000000000000000000000001", alice},
		{"CA00000000000000000000000000000002", alice},
		{"CA00000000000000000000000000000003", bob},
	} {
		if err := calls.Start(ctx, c.sid, c.owner, "ringing"); err != nil {
			t.Fatalf("call %d: %v", i, err)
		}
	}
	e.populate(alice, 1)
	req, err := e.saga.Request(ctx, alice, audit.UserActor(alice))
	if err != nil {
		t.Fatal(err)
	}
	done, err := e.saga.Run(ctx, req.ID)
	if err != nil {
		t.Fatal(err)
	}
	if got := done.Receipt.Stores[forget.StoreTwilio]; got != (forget.StoreCount{Found: 2, Deleted: 2}) {
		t.Fatalf("receipt twilio = %+v", got)
	}
	if n, err := ix.Held(ctx, alice); err != nil || n != 0 {
		t.Fatalf("alice holds %d (%v)", n, err)
	}
	if n, err := ix.Held(ctx, bob); err != nil || n != 1 {
		t.Fatalf("bob holds %d (%v), want his call", n, err)
	}
}
