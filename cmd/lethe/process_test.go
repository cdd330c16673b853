package main

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"io"
	"net/http"
	"os"
	"os/exec"
	"strings"
	"syscall"
	"testing"
	"time"
)

// TestMain lets tests run this test binary as the lethe binary itself
// (LETHE_TEST_BE_MAIN=1), so process-level tests need no separate build.
func TestMain(m *testing.M) {
	if os.Getenv("LETHE_TEST_BE_MAIN") == "1" {
		os.Exit(realMain(os.Args[1:], os.Stdout, os.Stderr))
	}
	os.Exit(m.Run())
}

type lethe struct {
	t      testing.TB
	cmd    *exec.Cmd
	addr   string
	stderr *bytes.Buffer
}

func letheEnv(dataDir string, extra ...string) []string {
	env := []string{
		"LETHE_TEST_BE_MAIN=1", "LETHE_DATA_DIR=" + dataDir, "LETHE_ADDR=127.0.0.1:0",
		"LETHE_LOG_LEVEL=warn", "PATH=" + os.Getenv("PATH"), "HOME=" + os.Getenv("HOME"),
	}
	return append(env, extra...)
}

// startLethe runs `lethe run` and waits for the address it prints.
func startLethe(t testing.TB, dataDir string, extra ...string) *lethe {
	t.Helper()
	cmd := exec.Command(os.Args[0], "run")
	cmd.Env = letheEnv(dataDir, extra...)
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	l := &lethe{t: t, cmd: cmd, stderr: &bytes.Buffer{}}
	cmd.Stderr = l.stderr
	start := time.Now()
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = cmd.Process.Kill(); _ = cmd.Wait() })
	found := make(chan string, 1)
	go func() {
		sc := bufio.NewScanner(stdout)
		for sc.Scan() {
			if a, ok := strings.CutPrefix(sc.Text(), "lethe: listening on http://"); ok {
				found <- a
			}
		}
		_, _ = io.Copy(io.Discard, stdout)
	}()
	select {
	case l.addr = <-found:
	case <-time.After(60 * time.Second):
		t.Fatalf("lethe run printed no address; stderr: %s", l.stderr)
	}
	t.Logf("lethe run listening after %v", time.Since(start).Round(time.Millisecond))
	return l
}

func mintToken(t *testing.T, dataDir, uid string) string {
	t.Helper()
	cmd := exec.Command(os.Args[0], "token", "--uid", uid)
	cmd.Env = letheEnv(dataDir)
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("lethe token: %v", err)
	}
	tok := strings.TrimSpace(string(out))
	if strings.Count(tok, ".") != 2 || strings.ContainsAny(tok, " \n") {
		t.Fatalf("lethe token printed %q, want only a JWT", tok)
	}
	return tok
}

func TestRunAnswersHealthzAndStopsOnSIGTERM(t *testing.T) {
	requirePocketSphinx(t)
	l := startLethe(t, t.TempDir())
	resp, err := http.Get("http://" + l.addr + "/healthz")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != 200 {
		t.Fatalf("healthz %d", resp.StatusCode)
	}
	resp, err = http.Get("http://" + l.addr + "/readyz")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != 200 {
		t.Fatalf("readyz %d", resp.StatusCode)
	}
	if err := l.cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- l.cmd.Wait() }()
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("exit after SIGTERM: %v; stderr: %s", err, l.stderr)
		}
	case <-time.After(30 * time.Second):
		t.Fatal("lethe run did not stop on SIGTERM")
	}
}

// TestKillAfterAckLosesNothing: kill -9 right after the edge acknowledged a
// chunk and before any worker ran; on restart the chunk is transcribed.
func TestKillAfterAckLosesNothing(t *testing.T) {
	requirePocketSphinx(t)
	dir := t.TempDir()
	// First life: the edge only, so nothing can transcribe before the kill.
	l := startLethe(t, dir, "LETHE_WORKERS=none")
	c := client{t, "http://" + l.addr, mintToken(t, dir, "crash-user")}
	c.upload("crash", 0, "speech-hello.wav")
	c.upload("crash", 1, "speech-dentist.wav")
	if err := l.cmd.Process.Kill(); err != nil { // SIGKILL: no shutdown code runs
		t.Fatal(err)
	}
	_ = l.cmd.Wait()

	// Second life: everything. The in-memory bus lost the events; the
	// reconciler finds the chunks in the store and re-drives them.
	l2 := startLethe(t, dir)
	c.base = "http://" + l2.addr
	conv := c.waitDone("crash", 2)
	for _, ch := range conv.Chunks {
		if ch.Status != "indexed" {
			t.Fatalf("chunk %d is %s after restart, want indexed", ch.Seq, ch.Status)
		}
	}
	if !strings.Contains(conv.Transcript, "hello") || !strings.Contains(conv.Transcript, "afternoon") {
		t.Fatalf("transcript after restart: %q", conv.Transcript)
	}
}

func TestConfigErrorsNameTheVariable(t *testing.T) {
	for _, tc := range []struct{ env, want string }{
		{"LETHE_ENV=staging", "LETHE_ENV"},
		{"LETHE_HANDLER_TIMEOUT=soon", "LETHE_HANDLER_TIMEOUT"},
		{"LETHE_WORKERS=transcribe,teleport", "LETHE_WORKERS"},
		{"LETHE_MAX_CHUNK_BYTES=99999999999", "LETHE_MAX_CHUNK_BYTES"},
		{"LETHE_MAX_UPLOAD_BYTES=0", "LETHE_MAX_UPLOAD_BYTES"},
		{"LETHE_UPLOAD_URL_TTL=200h", "LETHE_UPLOAD_URL_TTL"},
		{"LETHE_RETENTION_AUDIO_DAYS=-1", "LETHE_RETENTION_AUDIO_DAYS"},
		{"LETHE_RETENTION_EXPORT_DAYS=36501", "LETHE_RETENTION_EXPORT_DAYS"},
		{"LETHE_RETENTION_SWEEP_EVERY=10ms", "LETHE_RETENTION_SWEEP_EVERY"},
		{"LETHE_ENV=production", "refused when LETHE_ENV=production"},
		{"LETHE_ERASURE_JOURNAL=gs://", "LETHE_ERASURE_JOURNAL"},
	} {
		t.Run(tc.env, func(t *testing.T) {
			cmd := exec.CommandContext(context.Background(), os.Args[0], "run")
			cmd.Env = append(letheEnv(t.TempDir()), tc.env)
			out, err := cmd.CombinedOutput()
			if err == nil {
				t.Fatal("lethe run started with an invalid configuration")
			}
			if !strings.Contains(string(out), tc.want) {
				t.Fatalf("error does not name %s: %s", tc.want, out)
			}
		})
	}
}

func TestHelpAndVersion(t *testing.T) {
	for _, args := range [][]string{{"help"}, {"version"}} {
		cmd := exec.Command(os.Args[0], args...)
		cmd.Env = letheEnv(t.TempDir())
		out, err := cmd.Output()
		if err != nil {
			t.Fatalf("lethe %v: %v", args, err)
		}
		if args[0] == "help" && (!strings.Contains(string(out), "LETHE_DATA_DIR") || !strings.Contains(string(out), "lexical")) {
			t.Fatalf("help lacks the configuration table or the embedder note: %s", out)
		}
	}
}

// TestProductionGuard: every dangerous or unshareable setting is refused
// in production, and a fully production configuration passes the guard.
func TestProductionGuard(t *testing.T) {
	prod := Config{Env: envProduction, Bus: "gcp", Documents: "firestore", Blobs: "gcs", Vectors: "pinecone",
		KEK: "gcpkms://projects/p/locations/l/keyRings/r/cryptoKeys/k", RateLimit: "redis://10.0.0.3:6379/0", Auth: "firebase",
		TwilioAuthToken: "twilio-token", PublicURL: "https://lethe.example", ErasureJournal: "gs://lethe-erasure-journal"}
	if err := prod.guardProduction(); err != nil {
		t.Fatalf("production configuration refused: %v", err)
	}
	for _, tc := range []struct {
		name   string
		change func(*Config)
		want   string
	}{
		{"embedded bus", func(c *Config) { c.Bus = "embedded" }, "LETHE_BUS=embedded"},
		{"pubsub emulator", func(c *Config) { c.PubSubEmulatorHost = "127.0.0.1:8085" }, "PUBSUB_EMULATOR_HOST"},
		{"firestore emulator", func(c *Config) { c.FirestoreEmulatorHost = "127.0.0.1:8086" }, "FIRESTORE_EMULATOR_HOST"},
		{"auth emulator", func(c *Config) { c.FirebaseAuthEmulator = "127.0.0.1:9099" }, "FIREBASE_AUTH_EMULATOR_HOST"},
		{"storage emulator", func(c *Config) { c.StorageEmulatorHost = "127.0.0.1:4443" }, "STORAGE_EMULATOR_HOST"},
		{"gcs endpoint", func(c *Config) { c.GCSEndpoint = "http://127.0.0.1:4443" }, "LETHE_GCS_ENDPOINT"},
		{"local issuer", func(c *Config) { c.Auth = "local" }, "LETHE_AUTH=local"},
		{"local KEK", func(c *Config) { c.KEK = "file" }, "LETHE_KEK=file"},
		{"sqlite", func(c *Config) { c.Documents = "sqlite" }, "LETHE_DOCUMENTS=sqlite"},
		{"dir blobs", func(c *Config) { c.Blobs = "dir" }, "LETHE_BLOBS=dir"},
		{"flat vectors", func(c *Config) { c.Vectors = "flat" }, "LETHE_VECTORS=flat"},
		{"memory limits", func(c *Config) { c.RateLimit = "memory" }, "LETHE_RATELIMIT=memory"},
		{"twilio signature skip", func(c *Config) { c.TwilioSkipSigVerify = true }, "INF_TWILIO_SKIP_SIG_VERIFY"},
		{"no twilio token", func(c *Config) { c.TwilioAuthToken = "" }, "INF_TWILIO_AUTH_TOKEN"},
		{"public URL not https", func(c *Config) { c.PublicURL = "http://lethe.example" }, "LETHE_PUBLIC_URL"},
		{"local erasure journal", func(c *Config) { c.ErasureJournal = "" }, "LETHE_ERASURE_JOURNAL"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c := prod
			tc.change(&c)
			err := c.guardProduction()
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("guard: %v, want a refusal naming %s", err, tc.want)
			}
		})
	}
	allowed := prod
	allowed.Documents, allowed.Blobs, allowed.AllowEmbedded = "sqlite", "dir", true
	if err := allowed.guardProduction(); err != nil {
		t.Fatalf("LETHE_ALLOW_EMBEDDED=true still refused: %v", err)
	}
}

func TestPineconeEnsureIndexNeedsKey(t *testing.T) {
	cmd := exec.Command(os.Args[0], "pinecone", "ensure-index")
	cmd.Env = letheEnv(t.TempDir())
	out, err := cmd.CombinedOutput()
	var ee *exec.ExitError
	if !errors.As(err, &ee) || ee.ExitCode() != 2 || !strings.Contains(string(out), "PINECONE_API_KEY") {
		t.Fatalf("exit %v, output %s; want a usage error naming PINECONE_API_KEY", err, out)
	}
}
