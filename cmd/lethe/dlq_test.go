package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"maps"
	"net/http"
	"os"
	"os/exec"
	"strings"
	"testing"
	"time"

	"cloud.google.com/go/pubsub/v2/apiv1/pubsubpb"

	"github.com/lethe-dev/lethe/events"
	"github.com/lethe-dev/lethe/functions"
	"github.com/lethe-dev/lethe/infra/bus"
	"github.com/lethe-dev/lethe/internal/emulators"
)

// deadLetterChunk dead-letters a chunk event on the audio topic, as the
// transcribe receiver does with poison, and returns its message.
func deadLetterChunk(t *testing.T, a *app, id string, data []byte) map[string]string {
	t.Helper()
	ev, err := a.events.NewWithID(id, events.TypeChunkReceived, events.Subject("0123456789abcdef0123456789abcdef", "conversations", "c1", "chunks", "0"), events.ChunkReceived{
		User: "0123456789abcdef0123456789abcdef", ConversationID: "c1", BlobKey: "users/0123456789abcdef0123456789abcdef/chunks/c1/0", ContentType: "audio/wav",
		Digest: strings.Repeat("d", 64), Size: 10, Origin: "app", ReceivedAt: time.Date(2026, 12, 1, 0, 0, 0, 0, time.UTC),
	})
	if err != nil {
		t.Fatalf("events.New: %v", err)
	}
	good, attrs, err := bus.ToMessage(ev)
	if err != nil {
		t.Fatal(err)
	}
	if data == nil {
		data = good
	}
	if err := a.bus.DeadLetter(context.Background(), events.TopicAudio, workerTranscribe, "m-"+id, data, attrs, events.Permanentf("poison for now")); err != nil {
		t.Fatalf("DeadLetter: %v", err)
	}
	return attrs
}

// TestDeadLettersOnTheBus: the CLI and the admin routes list the held dead
// letters of a topic without their data and without consuming them, and
// replay them to the topic's subscription stripped of the dead-letter
// attributes; one that no longer validates stays.
func TestDeadLettersOnTheBus(t *testing.T) {
	cfg := testConfig(t)
	cfg.Workers = "lifecycle" // nothing consumes the audio topic: replays wait there
	p := startTestPipeline(t, cfg, overrides{STT: instantSTT{}})
	ctx := context.Background()
	want := map[string]map[string]string{
		"evt-1": deadLetterChunk(t, p.app, "evt-1", nil),
		"evt-2": deadLetterChunk(t, p.app, "evt-2", nil),
	}
	deadLetterChunk(t, p.app, "evt-bad", []byte(`{"user":1}`))
	admin := newDeadLetterAdmin(p.app, time.Now)
	cli := func(args ...string) string {
		t.Helper()
		run, err := parseDLQ(args, io.Discard)
		if err != nil {
			t.Fatalf("parseDLQ %v: %v", args, err)
		}
		var out bytes.Buffer
		if err := run(ctx, admin, &out); err != nil {
			t.Fatalf("dlq %v: %v", args, err)
		}
		return out.String()
	}

	var listed []functions.DeadLetter
	out := cli("list", "audio")
	for line := range strings.Lines(out) {
		var dl functions.DeadLetter
		if err := json.Unmarshal([]byte(line), &dl); err != nil {
			t.Fatalf("dlq list line %q: %v", line, err)
		}
		listed = append(listed, dl)
	}
	ids := map[string]string{}
	for _, dl := range listed {
		ids[dl.EventID] = dl.ID
		if dl.Reason != "permanent: poison for now" || dl.Subscription != workerTranscribe || dl.EventType != events.TypeChunkReceived {
			t.Errorf("listed %+v", dl)
		}
	}
	if len(listed) != 3 || strings.Contains(out, "users/0123456789abcdef0123456789abcdef/chunks") {
		t.Fatalf("dlq list: %q, want 3 dead letters and none of their data", out)
	}

	tok, err := p.app.issuer.MintWithRoles("root", []string{"admin"}, time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	c := client{t, "http://" + p.addr, tok}
	var page struct {
		DeadLetters []functions.DeadLetter `json:"dead_letters"`
	}
	if code := c.do("GET", "/v1/admin/dlq/audio", "", nil, &page); code != http.StatusOK || len(page.DeadLetters) != 3 {
		t.Fatalf("GET /v1/admin/dlq/audio: %d %+v, want the 3 dead letters still held", code, page)
	}
	var res functions.ReplayResult
	body, _ := json.Marshal(functions.ReplayRequest{ID: ids["evt-1"]})
	if code := c.do("POST", "/v1/admin/dlq/audio/replay", "application/json", body, &res); code != http.StatusOK || res.Replayed != 1 || res.Skipped != 0 {
		t.Fatalf("replay evt-1 over HTTP: %d %+v", code, res)
	}
	if code := c.do("POST", "/v1/admin/dlq/audio/replay", "application/json", []byte(`{"id":"nope"}`), nil); code != http.StatusNotFound {
		t.Fatalf("replay of an unknown id over HTTP: %d, want 404", code)
	}

	out = cli("replay", "audio", "--all")
	if !strings.Contains(out, "replayed "+ids["evt-2"]+" "+events.TypeChunkReceived+" evt-2\n") ||
		!strings.Contains(out, "skipped  "+ids["evt-bad"]+" "+events.TypeChunkReceived+" evt-bad: validate") ||
		!strings.HasSuffix(out, "1 replayed to audio, 1 left in its dead letters (they still fail validation)\n") {
		t.Fatalf("dlq replay --all printed %q", out)
	}
	if out := cli("list", "audio"); strings.Count(out, "\n") != 1 || !strings.Contains(out, `"event_id":"evt-bad"`) {
		t.Fatalf("after the replays dlq list printed %q, want evt-bad only", out)
	}

	// The replayed messages wait in the transcribe subscription as they
	// were first published.
	got := map[string]map[string]string{}
	deadline := time.Now().Add(30 * time.Second)
	for len(got) < 2 && time.Now().Before(deadline) {
		resp, err := p.app.bus.Client().SubscriptionAdminClient.Pull(ctx, &pubsubpb.PullRequest{Subscription: p.app.bus.SubscriptionName(workerTranscribe), MaxMessages: 10})
		if err != nil {
			t.Fatalf("Pull: %v", err)
		}
		for _, rm := range resp.GetReceivedMessages() {
			got[rm.GetMessage().GetAttributes()["ce-id"]] = rm.GetMessage().GetAttributes()
		}
	}
	if len(got) != 2 || !maps.Equal(got["evt-1"], want["evt-1"]) || !maps.Equal(got["evt-2"], want["evt-2"]) {
		t.Fatalf("transcribe subscription got %v, want evt-1 and evt-2 with their original attributes %v", got, want)
	}
}

func TestDLQArguments(t *testing.T) {
	for _, args := range [][]string{
		nil, {"list"}, {"show", "audio"}, {"list", "nosuch"}, {"list", "audio-dead-letter"}, {"list", "audio", "extra"},
		{"list", "audio", "-n", "0"}, {"replay", "audio"}, {"replay", "audio", "--id", "1", "--all"}, {"replay", "audio", "--nope"},
	} {
		if _, err := parseDLQ(args, io.Discard); !errors.As(err, new(usageError)) {
			t.Errorf("dlq %q: %v, want a usage error", args, err)
		}
	}
	for _, args := range [][]string{{"list", "audio"}, {"list", "lifecycle", "-n", "5"}, {"replay", "gcs-uploads", "--id", "12"}, {"replay", "twilio", "--all"}} {
		if _, err := parseDLQ(args, io.Discard); err != nil {
			t.Errorf("dlq %q: %v", args, err)
		}
	}
	// The embedded bus lives in one process: another one sees no dead letters.
	if err := cmdDLQ(context.Background(), testConfig(t), testLogger(t), []string{"list", "audio"}, io.Discard, io.Discard); !errors.As(err, new(usageError)) {
		t.Errorf("dlq on the embedded bus: %v, want a usage error", err)
	}
}

// TestDLQProcess: `lethe dlq` as a process refuses the embedded bus (its
// dead letters live in another process) and bad arguments with exit 2, and
// help lists it.
func TestDLQProcess(t *testing.T) {
	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"dlq", "list", "audio"}, "LETHE_BUS=gcp"},
		{[]string{"dlq", "replay", "audio", "--id", "1", "--all"}, "want: dlq list TOPIC"},
	} {
		cmd := exec.Command(os.Args[0], tc.args...)
		cmd.Env = letheEnv(t.TempDir())
		out, err := cmd.CombinedOutput()
		var ee *exec.ExitError
		if !errors.As(err, &ee) || ee.ExitCode() != 2 || !strings.Contains(string(out), tc.want) {
			t.Errorf("lethe %v: exit %v, output %s; want exit 2 naming %s", tc.args, err, out, tc.want)
		}
	}
	cmd := exec.Command(os.Args[0], "help")
	cmd.Env = letheEnv(t.TempDir())
	if out, err := cmd.Output(); err != nil || !strings.Contains(string(out), "lethe dlq replay TOPIC --id ID|--all") {
		t.Errorf("help: %v, lacks dlq: %s", err, out)
	}
}

// TestDLQProcessOnEmulator: against the Pub/Sub emulator (LETHE_BUS=gcp),
// `lethe dlq list` and `lethe dlq replay --all` in their own process see and
// replay what another process dead-lettered.
func TestDLQProcessOnEmulator(t *testing.T) {
	host := emulators.Require(t, emulators.PubSub)
	cfg := testConfig(t)
	cfg.ProjectID = fmt.Sprintf("dlq-%d", time.Now().UnixNano())
	cfg.Bus, cfg.PubSubEmulatorHost = "gcp", host
	a, err := openApp(context.Background(), cfg, testLogger(t), overrides{STT: instantSTT{}})
	if err != nil {
		t.Fatalf("openApp: %v", err)
	}
	t.Cleanup(a.close)
	deadLetterChunk(t, a, "evt-1", nil)
	deadLetterChunk(t, a, "evt-bad", []byte(`{"user":1}`))

	lethe := func(args ...string) string {
		t.Helper()
		cmd := exec.Command(os.Args[0], append([]string{"dlq"}, args...)...)
		cmd.Env = letheEnv(t.TempDir(), "LETHE_BUS=gcp", "PUBSUB_EMULATOR_HOST="+host, "LETHE_PROJECT="+cfg.ProjectID)
		out, err := cmd.Output()
		if err != nil {
			t.Fatalf("lethe dlq %v: %v", args, err)
		}
		return string(out)
	}
	if out := lethe("list", "audio"); strings.Count(out, "\n") != 2 || !strings.Contains(out, `"event_id":"evt-1"`) {
		t.Fatalf("lethe dlq list audio: %q, want evt-1 and evt-bad", out)
	}
	if out := lethe("replay", "audio", "--all"); !strings.Contains(out, " evt-1\n") || !strings.Contains(out, " evt-bad: validate") ||
		!strings.HasSuffix(out, "1 replayed to audio, 1 left in its dead letters (they still fail validation)\n") {
		t.Fatalf("lethe dlq replay audio --all: %q", out)
	}
	if out := lethe("list", "audio"); strings.Count(out, "\n") != 1 || !strings.Contains(out, `"event_id":"evt-bad"`) {
		t.Fatalf("after the replay, lethe dlq list audio: %q, want evt-bad only", out)
	}
}
