package firestoredocs_test

import (
	"fmt"
	"sync"
	"testing"

	"github.com/lethe-dev/lethe/infra/docs"
	"github.com/lethe-dev/lethe/infra/docs/firestoredocs"
)

// TestUpdateAcrossClients: the suite's concurrent writers share one Store,
// whose Updates of one key queue in-process; here each writer has its own
// client, as separate instances would, so only the transaction keeps
// updates from being lost.
func TestUpdateAcrossClients(t *testing.T) {
	host := emulatorHost(t)
	ctx := t.Context()
	h, err := newHarness(ctx, t, host)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(h.Close)
	const clients, each = 3, 3
	k := docs.Key{User: "u1", Collection: "counters", ID: "shared"}
	var wg sync.WaitGroup
	errs := make(chan error, clients*each)
	for range clients {
		s, err := firestoredocs.Open(ctx, h.cfg)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { s.Close() })
		wg.Go(func() {
			for range each {
				errs <- s.Update(ctx, k, func(cur *docs.Doc) (*docs.Doc, error) {
					n := int64(0)
					if cur != nil {
						n = cur.Fields["n"].(int64)
					}
					return &docs.Doc{Data: fmt.Appendf(nil, "%d", n+1), Fields: map[string]any{"n": n + 1}}, nil
				})
			}
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		if err != nil {
			t.Errorf("Update: %v", err)
		}
	}
	s, err := h.MakeStore(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	d, err := s.Get(ctx, k)
	if err != nil {
		t.Fatal(err)
	}
	if n := d.Fields["n"]; n != int64(clients*each) {
		t.Errorf("n = %v after %d updates", n, clients*each)
	}
}
