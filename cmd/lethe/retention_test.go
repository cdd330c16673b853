package main

import (
	"context"
	"errors"
	"net/http"
	"os"
	"os/exec"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/lethe-dev/lethe/app/audit"
	"github.com/lethe-dev/lethe/app/records"
	"github.com/lethe-dev/lethe/infra/blobs"
)

// clock is a settable clock for the whole pipeline.
type clock struct {
	mu sync.Mutex
	t  time.Time
}

func (c *clock) now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.t
}

func (c *clock) advance(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.t = c.t.Add(d)
}

// retentionConfig is the test pipeline with the lifecycle worker and a
// fast sweep timer.
func retentionConfig(t *testing.T, audioDays int) Config {
	cfg := testConfig(t)
	cfg.Workers = "transcribe,embed,store,lifecycle"
	cfg.RetentionAudioDays, cfg.RetentionTranscriptDays, cfg.RetentionVectorDays, cfg.RetentionExportDays = audioDays, 30, 30, 7
	cfg.RetentionSweepEvery = 100 * time.Millisecond
	return cfg
}

// chunkAudio returns the chunk record's blob key and whether that blob
// exists.
func chunkAudio(t *testing.T, p *pipeline, uid, cid string, seq int) (string, bool) {
	t.Helper()
	ctx := context.Background()
	d, err := p.app.docs.Get(ctx, records.ChunkKey(p.app.pseudo.User(uid), cid, seq))
	if err != nil {
		t.Fatalf("docs.Get chunk: %v", err)
	}
	c, err := records.ChunkFrom(d)
	if err != nil {
		t.Fatal(err)
	}
	listed, err := p.app.blobs.List(ctx, records.AudioPrefix(p.app.pseudo.User(uid))+cid+"/")
	if err != nil {
		t.Fatal(err)
	}
	return c.BlobKey, len(listed) > 0
}

// TestRetentionAudioZeroDaysEndToEnd: with audio_days 0, the sweep after
// transcription deletes the audio, and the transcript stays readable and
// searchable through the API.
func TestRetentionAudioZeroDaysEndToEnd(t *testing.T) {
	cfg := retentionConfig(t, 0)
	p := startTestPipeline(t, cfg, overrides{STT: instantSTT{}})
	tok, err := p.app.issuer.Mint("forgetful", time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	c := client{t, "http://" + p.addr, tok}
	c.upload("memo", 0, "speech-hello.wav")
	conv := c.waitDone("memo", 1)
	if len(conv.Segments) != 1 {
		t.Fatalf("conversation %+v", conv)
	}
	waitFor(t, "the audio sweep", func() bool { k, ok := chunkAudio(t, p, "forgetful", "memo", 0); return k == "" && !ok })
	var after conversationReply
	if code := c.do("GET", "/v1/conversations/memo", "", nil, &after); code != http.StatusOK ||
		len(after.Segments) != 1 || after.Segments[0].Text != conv.Segments[0].Text {
		t.Fatalf("after the sweep: %d %+v", code, after)
	}
	var found searchReply
	if code := c.search("instant", &found); code != http.StatusOK || len(found.Results) != 1 {
		t.Errorf("search after the audio sweep: %d %+v", code, found)
	}
}

// TestRetentionTranscriptsExpireEndToEnd: with an injected clock, the
// transcript and its vector go at the first sweep after transcript_days,
// not before; the user's own policy (PUT) is what applies.
func TestRetentionTranscriptsExpireEndToEnd(t *testing.T) {
	cfg := retentionConfig(t, 30)
	clk := &clock{t: time.Now().UTC()}
	p := startTestPipeline(t, cfg, overrides{STT: instantSTT{}, Now: clk.now})
	tok, err := p.app.issuer.Mint("short-memory", time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	c := client{t, "http://" + p.addr, tok}
	policy := `{"audio_days": 1, "transcript_days": 2, "vector_days": 5, "export_days": 1}`
	if code := c.do("PUT", "/v1/me/retention", "application/json", []byte(policy), nil); code != http.StatusOK {
		t.Fatalf("PUT retention: %d", code)
	}
	c.upload("memo", 0, "speech-hello.wav")
	c.waitDone("memo", 1)
	search := func() int {
		var found searchReply
		if code := c.search("instant", &found); code != http.StatusOK {
			t.Fatalf("search: %d", code)
		}
		return len(found.Results)
	}
	segments := func() int {
		var conv conversationReply
		if code := c.do("GET", "/v1/conversations/memo", "", nil, &conv); code != http.StatusOK {
			t.Fatalf("GET conversation: %d", code)
		}
		return len(conv.Segments)
	}
	// Just before the transcript's expiry: sweeps run, the audio (1 day)
	// goes, the words stay.
	clk.advance(2*24*time.Hour - time.Minute)
	waitFor(t, "the audio sweep", func() bool { k, ok := chunkAudio(t, p, "short-memory", "memo", 0); return k == "" && !ok })
	if segments() != 1 || search() != 1 {
		t.Fatal("the transcript went before its expiry")
	}
	clk.advance(time.Minute)
	// One sweep deletes the segment and the vector side by side: wait for
	// both, then the vector index itself must be empty.
	waitFor(t, "the transcript and vector sweep", func() bool { return segments() == 0 && search() == 0 })
	n, err := p.app.vectors.Count(context.Background(), p.app.pseudo.User("short-memory"))
	if err != nil || n != 0 {
		t.Errorf("%d vectors left, %v", n, err)
	}
}

// TestRetentionSweepCommand runs `lethe retention sweep` as a process over a
// data dir holding transcribed audio that is due: the dry run prints the
// counts and deletes nothing; the sweep deletes, prints the same counts,
// and leaves an audit entry by the operator.
func TestRetentionSweepCommand(t *testing.T) {
	cfg := testConfig(t) // no lifecycle worker: no sweep timer
	cfg.RetentionAudioDays, cfg.RetentionTranscriptDays, cfg.RetentionVectorDays = 0, 365, 365
	p := startTestPipeline(t, cfg, overrides{STT: instantSTT{}})
	tok, err := p.app.issuer.Mint("cli-user", time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	c := client{t, "http://" + p.addr, tok}
	c.upload("memo", 0, "speech-hello.wav")
	c.upload("memo", 1, "speech-dentist.wav")
	c.waitDone("memo", 2)
	blobKey, _ := chunkAudio(t, p, "cli-user", "memo", 0)
	if err := p.stop(); err != nil {
		t.Fatal(err)
	}
	run := func(args ...string) string {
		t.Helper()
		cmd := exec.Command(os.Args[0], append([]string{"retention"}, args...)...)
		cmd.Env = letheEnv(cfg.DataDir, "LETHE_RETENTION_AUDIO_DAYS=0")
		out, err := cmd.CombinedOutput()
		if err != nil {
			t.Fatalf("lethe retention %v: %v\n%s", args, err, out)
		}
		return string(out)
	}
	dry := run("sweep", "--dry-run")
	for _, want := range []string{"dry run", "page 1: 2 entries", "audio.blobs", "would delete"} {
		if !strings.Contains(dry, want) {
			t.Errorf("dry run output lacks %q:\n%s", want, dry)
		}
	}
	a, err := openApp(context.Background(), cfg, testLogger(t), overrides{})
	if err != nil {
		t.Fatal(err)
	}
	if _, _, err := a.blobs.Read(context.Background(), blobKey); err != nil {
		t.Fatalf("the dry run deleted audio: %v", err)
	}
	a.close()
	out := run("sweep")
	for _, want := range []string{"page 1: 2 entries", "done: 2 entries"} {
		if !strings.Contains(out, want) {
			t.Errorf("sweep output lacks %q:\n%s", want, out)
		}
	}
	for _, name := range []string{"audio.blobs", "audio.records", "expiries.docs"} {
		if countIn(dry, name) != 2 || countIn(out, name) != 2 {
			t.Errorf("%s: dry run %d, sweep %d; want 2 and 2", name, countIn(dry, name), countIn(out, name))
		}
	}
	if again := run("sweep"); !strings.Contains(again, "nothing is due") {
		t.Errorf("second sweep:\n%s", again)
	}
	a, err = openApp(context.Background(), cfg, testLogger(t), overrides{})
	if err != nil {
		t.Fatal(err)
	}
	defer a.close()
	if _, _, err := a.blobs.Read(context.Background(), blobKey); !errors.Is(err, blobs.ErrNotFound) {
		t.Errorf("audio after the sweep: %v", err)
	}
	if _, err := a.docs.Get(context.Background(), records.SegmentKey(a.pseudo.User("cli-user"), "memo", 0)); err != nil {
		t.Errorf("transcript after the audio sweep: %v", err)
	}
	entries, _, err := (&audit.Log{Docs: a.docs}).List(context.Background(), audit.Filter{})
	if err != nil {
		t.Fatal(err)
	}
	byOperator := 0
	for _, e := range entries {
		if e.Action == audit.ActionRetentionSweep && e.Actor == audit.ActorOperator {
			byOperator++
		}
	}
	if byOperator != 2 {
		t.Errorf("%d sweep audit entries by the operator, want 2 (the dry run writes none)", byOperator)
	}
	cmd := exec.Command(os.Args[0], "retention", "sweep", "--page", "0")
	cmd.Env = letheEnv(cfg.DataDir)
	if out, err := cmd.CombinedOutput(); err == nil || !strings.Contains(string(out), "want: retention sweep") {
		t.Errorf("bad flag: %v\n%s", err, out)
	}
}

// countIn reads the count of name from a printed table ("name  N").
func countIn(out, name string) int {
	m := regexp.MustCompile(`(?m)^` + regexp.QuoteMeta(name) + `\s+(\d+)$`).FindStringSubmatch(out)
	if m == nil {
		return -1
	}
	n, _ := strconv.Atoi(m[1])
	return n
}
