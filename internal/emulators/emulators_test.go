package emulators_test

import (
	"fmt"
	"strings"
	"testing"

	"github.com/lethe-dev/lethe/internal/emulators"
)

// recorder is a testing.TB that records Skip and Fatal instead of ending
// the test.
type recorder struct {
	testing.TB
	skipped, failed string
}

func (r *recorder) Helper()                           {}
func (r *recorder) Skip(args ...any)                  { r.skipped = fmt.Sprint(args...) }
func (r *recorder) Fatal(args ...any)                 { r.failed = fmt.Sprint(args...) }
func (r *recorder) Skipf(format string, args ...any)  { r.skipped = fmt.Sprintf(format, args...) }
func (r *recorder) Fatalf(format string, args ...any) { r.failed = fmt.Sprintf(format, args...) }

func TestRequire(t *testing.T) {
	for _, tc := range []struct {
		name, host, required string
		want                 string // returned host
		skip, fail           bool
	}{
		{"set", "127.0.0.1:8085", "", "127.0.0.1:8085", false, false},
		{"set and required", "127.0.0.1:8085", "1", "127.0.0.1:8085", false, false},
		{"missing", "", "", "", true, false},
		{"missing and required", "", "1", "", false, true},
		{"missing, required is not 1", "", "true", "", true, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Setenv(string(emulators.PubSub), tc.host)
			t.Setenv(emulators.RequiredVar, tc.required)
			r := &recorder{TB: t}
			if got := emulators.Require(r, emulators.PubSub); got != tc.want {
				t.Errorf("Require = %q, want %q", got, tc.want)
			}
			if (r.skipped != "") != tc.skip || (r.failed != "") != tc.fail {
				t.Fatalf("skipped %q, failed %q; want skip %v, fail %v", r.skipped, r.failed, tc.skip, tc.fail)
			}
			if msg := r.skipped + r.failed; msg != "" && !strings.Contains(msg, "PUBSUB_EMULATOR_HOST") {
				t.Errorf("message %q does not name the variable", msg)
			}
		})
	}
}
