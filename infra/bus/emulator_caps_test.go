package bus_test

import "github.com/lethe-dev/lethe/infra/bus/bustest"

// emulatorCapabilities: what the gcloud emulator was measured to support.
var emulatorCapabilities = bustest.Capabilities{
	DeliveryAttempt:      true,
	DeadLetterPolicy:     true,
	SubscriptionPolicies: true,
}
