package main

import (
	"encoding/json"
	"os"
	"os/exec"
	"strings"
	"testing"
)

// TestProcessingRecordsFromEnvironment: the record printed by the binary
// follows the environment it runs in, and names no secret.
func TestProcessingRecordsFromEnvironment(t *testing.T) {
	run := func(t *testing.T, format string, env ...string) string {
		t.Helper()
		cmd := exec.Command(os.Args[0], "processing-records", "--format", format)
		cmd.Env = append(letheEnv(t.TempDir()), env...)
		out, err := cmd.CombinedOutput()
		if err != nil {
			t.Fatalf("lethe processing-records %v: %v\n%s", env, err, out)
		}
		return string(out)
	}
	const secret = "dg-secret-6f1e2a"
	base := run(t, "json")
	for _, tc := range []struct {
		name string
		env  []string
		want string
	}{
		{"deepgram", []string{"LETHE_STT=deepgram", "DEEPGRAM_API_KEY=" + secret}, "Deepgram (api.deepgram.com"},
		{"audio days", []string{"LETHE_RETENTION_AUDIO_DAYS=4"}, "audio: 4 days"},
		{"transcript days", []string{"LETHE_RETENTION_TRANSCRIPT_DAYS=60"}, "transcripts: 60 days"},
		{"journal", []string{"LETHE_ERASURE_JOURNAL=/srv/journal-x1"}, "/srv/journal-x1"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			out := run(t, "json", tc.env...)
			var r struct {
				Activities []struct{ Name string } `json:"activities"`
			}
			if err := json.Unmarshal([]byte(out), &r); err != nil || len(r.Activities) == 0 {
				t.Fatalf("not a record: %v\n%s", err, out)
			}
			if out == base || !strings.Contains(out, tc.want) || strings.Contains(base, tc.want) {
				t.Fatalf("record does not follow %v (want %q):\n%s", tc.env, tc.want, out)
			}
			if strings.Contains(out, secret) {
				t.Fatal("the record prints an API key")
			}
			if md := run(t, "markdown", tc.env...); !strings.Contains(md, "# Record of processing activities") || !strings.Contains(md, tc.want) {
				t.Fatalf("markdown:\n%s", md)
			}
		})
	}
}
