// Package emulators is how integration tests find the emulators they run
// against. Without one a test is skipped on a workstation, and fails where
// LETHE_REQUIRE_EMULATORS=1 (CI, make test), so a missing emulator never
// passes CI as a skip. Tests only: cmd/lethe alone reads the environment
// for the program.
package emulators

import (
	"os"
	"testing"
)

// Emulator names an emulator by the variable holding its host:port.
type Emulator string

const (
	PubSub    Emulator = "PUBSUB_EMULATOR_HOST"
	Firestore Emulator = "FIRESTORE_EMULATOR_HOST"
)

// RequiredVar makes a missing emulator a failure when set to 1.
const RequiredVar = "LETHE_REQUIRE_EMULATORS"

// start says how to run the emulator.
func (e Emulator) start() string {
	switch e {
	case PubSub:
		return "gcloud beta emulators pubsub start --host-port=127.0.0.1:8085, then PUBSUB_EMULATOR_HOST=127.0.0.1:8085"
	case Firestore:
		return "gcloud emulators firestore start --host-port=127.0.0.1:8086, then FIRESTORE_EMULATOR_HOST=127.0.0.1:8086"
	default:
		return "set " + string(e)
	}
}

// Require returns the emulator's host:port; when it is not set the test
// is skipped, or fails under LETHE_REQUIRE_EMULATORS=1.
func Require(tb testing.TB, e Emulator) string {
	tb.Helper()
	host := os.Getenv(string(e))
	if host == "" {
		Missing(tb, string(e)+" is not set (make test starts the emulators; or "+e.start()+")")
	}
	return host
}

// Missing skips tb because a service it needs is missing (why says which
// and how to get it), or fails it under LETHE_REQUIRE_EMULATORS=1.
func Missing(tb testing.TB, why string) {
	tb.Helper()
	if os.Getenv(RequiredVar) == "1" {
		tb.Fatal(why + " and " + RequiredVar + "=1")
		return
	}
	tb.Skip(why + " (" + RequiredVar + "=1 makes this a failure)")
}
