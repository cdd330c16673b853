package bus_test

import (
	"context"
	"errors"
	"testing"

	"github.com/cloudevents/sdk-go/v2/event"

	"github.com/lethe-dev/lethe/events"
	"github.com/lethe-dev/lethe/infra/bus"
)

func TestByTypeRoutesAndRefusesUnknownTypes(t *testing.T) {
	var got []string
	h := bus.ByType(map[string]bus.Handler{
		events.TypeRetentionSweep: func(ctx context.Context, e event.Event) error { got = append(got, "sweep"); return nil },
		events.TypeUserErasureRequested: func(ctx context.Context, e event.Event) error {
			got = append(got, "erase")
			return errors.New("transient")
		},
	})
	for _, tc := range []struct {
		typ       string
		permanent bool
		err       bool
	}{
		{events.TypeRetentionSweep, false, false},
		{events.TypeUserErasureRequested, false, true},
		{events.TypeUserExportRequested, true, true},
		{"dev.lethe.unknown.v1", true, true},
	} {
		e := event.New()
		e.SetType(tc.typ)
		err := h(t.Context(), e)
		if (err != nil) != tc.err || events.IsPermanent(err) != tc.permanent {
			t.Errorf("%s: err %v, want err=%v permanent=%v", tc.typ, err, tc.err, tc.permanent)
		}
	}
	if len(got) != 2 || got[0] != "sweep" || got[1] != "erase" {
		t.Fatalf("routed %v", got)
	}
}
