package bus_test

import (
	"context"
	"testing"

	"github.com/lethe-dev/lethe/infra/bus"
	"github.com/lethe-dev/lethe/infra/bus/bustest"
	"github.com/lethe-dev/lethe/internal/emulators"
)

// TestEmbedded runs the suite on the in-process pstest server, one server
// per test.
func TestEmbedded(t *testing.T) {
	bustest.RunBusTests(t, bustest.Harness{
		Open: func(t *testing.T, cfg bus.Config) *bus.Bus {
			cfg.Embedded = true
			return openBus(t, cfg)
		},
		Capabilities: bustest.Capabilities{
			DeliveryAttempt:      true,
			DeadLetterPolicy:     true,
			SubscriptionPolicies: true,
		},
	})
}

// TestEmulator runs the suite on the gcloud Pub/Sub emulator named by
// PUBSUB_EMULATOR_HOST, e.g. started with
//
//	gcloud beta emulators pubsub start --host-port=127.0.0.1:8085 --project=lethe-test
//
// With LETHE_REQUIRE_EMULATORS=1 (as CI sets) a missing emulator fails the
// test instead of skipping it.
func TestEmulator(t *testing.T) {
	host := emulators.Require(t, emulators.PubSub)
	bustest.RunBusTests(t, bustest.Harness{
		Open: func(t *testing.T, cfg bus.Config) *bus.Bus {
			cfg.ProjectID = "lethe-test"
			cfg.EmulatorHost = host
			return openBus(t, cfg)
		},
		Capabilities: emulatorCapabilities,
	})
}

func openBus(t *testing.T, cfg bus.Config) *bus.Bus {
	t.Helper()
	b, err := bus.Open(context.Background(), cfg)
	if err != nil {
		t.Fatalf("bus.Open: %v", err)
	}
	t.Cleanup(func() {
		if err := b.Close(); err != nil {
			t.Errorf("Close: %v", err)
		}
	})
	return b
}
