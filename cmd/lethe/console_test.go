package main

import (
	"bufio"
	"context"
	"encoding/json"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// requireBrowser finds Debian's chromium, node and the installed
// playwright-core (scripts/browser; `make test` installs all three where it
// can, and .ci/run always does).
func requireBrowser(t *testing.T) (script string) {
	t.Helper()
	for _, bin := range []string{"chromium", "node"} {
		if _, err := exec.LookPath(bin); err != nil {
			t.Fatalf("%s is not installed: apt-get install chromium nodejs, then npm ci --prefix scripts/browser (make test does this where it can)", bin)
		}
	}
	dir, err := filepath.Abs("../../scripts/browser")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(filepath.Join(dir, "node_modules", "playwright-core")); err != nil {
		t.Fatalf("playwright-core is not installed: npm ci --prefix scripts/browser (%v)", err)
	}
	return filepath.Join(dir, "console-e2e.mjs")
}

// TestConsoleInBrowser drives the dev console in headless Chromium: sign in
// with a dev token, record from the microphone (Chromium's fake device
// playing a spoken WAV) over the streaming WebSocket, watch the chunks
// reach "indexed" and the transcript appear, find it by search, and erase
// the account. The server side is checked after: the account answers 410.
func TestConsoleInBrowser(t *testing.T) {
	script := requireBrowser(t)
	requirePocketSphinx(t)
	cfg := testConfig(t)
	p := startTestPipeline(t, cfg, overrides{})
	const uid = "console-browser-uid"
	tok, err := p.app.issuer.Mint(uid, time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	audio, err := filepath.Abs("../../testdata/speech-hello.wav")
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(t.Context(), 6*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, "node", script)
	cmd.Env = append(os.Environ(),
		"LETHE_URL=http://"+p.addr, "LETHE_TOKEN="+tok, "FAKE_AUDIO="+audio, "CID=console-e2e")
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	var stderr strings.Builder
	cmd.Stderr = &stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	steps := map[string]map[string]any{}
	sc := bufio.NewScanner(out)
	for sc.Scan() {
		var st map[string]any
		if json.Unmarshal(sc.Bytes(), &st) != nil {
			continue
		}
		name, _ := st["step"].(string)
		steps[name] = st
		t.Logf("browser: %s", sc.Text())
	}
	if err := cmd.Wait(); err != nil {
		t.Fatalf("browser run: %v (last steps %v)\n%s", err, steps, stderr.String())
	}
	for _, want := range []string{"signed-in", "first-ack", "stopped", "transcript", "found", "erased"} {
		if _, ok := steps[want]; !ok {
			t.Fatalf("the browser never reached %q: %v", want, steps)
		}
	}
	// The erasure was real: the account is gone on the server.
	c := client{t, "http://" + p.addr, tok}
	if code := c.do("GET", "/v1/conversations/console-e2e", "", nil, nil); code != http.StatusGone {
		t.Fatalf("after the console's erasure GET conversation = %d, want 410", code)
	}
}

// TestConsoleServedOnlyInDevelopment: the page and its assets carry a
// strict CSP and no external reference; production serves no console.
func TestConsoleServedOnlyInDevelopment(t *testing.T) {
	cfg := testConfig(t)
	p := startTestPipeline(t, cfg, overrides{STT: instantSTT{}})
	for _, path := range []string{"/", "/console/console.js", "/console/pcm-worklet.js", "/console/console.css"} {
		resp, err := http.Get("http://" + p.addr + path)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != http.StatusOK || !strings.Contains(resp.Header.Get("Content-Security-Policy"), "default-src 'none'") {
			t.Fatalf("GET %s: %d, CSP %q", path, resp.StatusCode, resp.Header.Get("Content-Security-Policy"))
		}
	}
	cfg.Env = "production"
	if devConsole(cfg) != nil {
		t.Fatal("production would serve the dev console")
	}
	cfg.Env, cfg.Console = "development", false
	if devConsole(cfg) != nil {
		t.Fatal("LETHE_CONSOLE=false still serves the console")
	}
}
