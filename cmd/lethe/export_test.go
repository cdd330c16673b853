package main

import (
	"archive/zip"
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/lethe-dev/lethe/app/records"
	"github.com/lethe-dev/lethe/workers/export"
)

// TestExportThroughPipelineAndCLI: `lethe run` builds an export on its
// lifecycle subscription; then `lethe users export` builds one in its own
// process from the same data dir and writes the decrypted ZIP, owner-only.
func TestExportThroughPipelineAndCLI(t *testing.T) {
	cfg := testConfig(t)
	cfg.Workers = "transcribe,embed,store,lifecycle"
	cfg.ExportMaxBytes, cfg.ExportURLTTL, cfg.RetentionExportDays = 64<<20, time.Minute, 7
	p := startTestPipeline(t, cfg, overrides{STT: instantSTT{}})
	tok, err := p.app.issuer.Mint("exporter", time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	c := client{t: t, base: "http://" + p.addr, tok: tok}
	c.upload("trip", 0, "speech-hello.wav")
	c.waitDone("trip", 1)
	var req struct{ ID string }
	if code := c.do("POST", "/v1/me/export", "", nil, &req); code != http.StatusAccepted {
		t.Fatalf("POST /v1/me/export: %d", code)
	}
	deadline := time.Now().Add(30 * time.Second)
	var st struct {
		State       string
		DownloadURL string `json:"download_url"`
	}
	for {
		if code := c.do("GET", "/v1/me/export/"+req.ID, "", nil, &st); code != http.StatusOK {
			t.Fatalf("GET export: %d", code)
		}
		if st.State == records.ExportDone {
			break
		}
		if st.State == records.ExportFailed || time.Now().After(deadline) {
			t.Fatalf("export state %q", st.State)
		}
		time.Sleep(50 * time.Millisecond)
	}
	// The edge's download URL, signed with the shared key: the owner gets
	// the ZIP, another account a 403.
	other, err := p.app.issuer.Mint("someone-else", time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		tok  string
		want int
	}{{tok, http.StatusOK}, {other, http.StatusForbidden}} {
		if st.DownloadURL == "" {
			t.Fatal("no download_url: the URL key is not wired")
		}
		rq, _ := http.NewRequest("GET", c.base+st.DownloadURL, nil)
		rq.Header.Set("Authorization", "Bearer "+tc.tok)
		resp, err := http.DefaultClient.Do(rq)
		if err != nil {
			t.Fatal(err)
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != tc.want {
			t.Fatalf("download: %d, want %d", resp.StatusCode, tc.want)
		}
		if tc.want == http.StatusOK {
			if _, err := zip.NewReader(bytes.NewReader(body), int64(len(body))); err != nil {
				t.Fatalf("the download is not a ZIP: %v", err)
			}
		}
	}
	if err := p.stop(); err != nil {
		t.Fatal(err)
	}

	out := filepath.Join(t.TempDir(), "alice.zip")
	run := func(args ...string) (string, int) {
		cmd := exec.Command(os.Args[0], append([]string{"users", "export"}, args...)...)
		cmd.Env = letheEnv(cfg.DataDir)
		var stdout, stderr bytes.Buffer
		cmd.Stdout, cmd.Stderr = &stdout, &stderr
		err := cmd.Run()
		code := 0
		if ee, ok := err.(*exec.ExitError); ok {
			code = ee.ExitCode()
		} else if err != nil {
			t.Fatal(err)
		}
		return stdout.String() + stderr.String(), code
	}
	text, code := run("exporter", "--out", out)
	if code != 0 {
		t.Fatalf("lethe users export: exit %d: %s", code, text)
	}
	for _, want := range []string{"building", "audio files: 1", "segments: 1", "wrote " + out} {
		if !strings.Contains(text, want) {
			t.Errorf("output lacks %q:\n%s", want, text)
		}
	}
	fi, err := os.Stat(out)
	if err != nil {
		t.Fatal(err)
	}
	if fi.Mode().Perm() != 0o600 {
		t.Errorf("archive mode %v, want 0600", fi.Mode().Perm())
	}
	zr, err := zip.OpenReader(out)
	if err != nil {
		t.Fatalf("the archive does not open: %v", err)
	}
	defer zr.Close()
	files := map[string][]byte{}
	for _, f := range zr.File {
		rc, err := f.Open()
		if err != nil {
			t.Fatal(err)
		}
		files[f.Name], _ = io.ReadAll(rc)
		rc.Close()
	}
	var m export.Manifest
	if err := json.Unmarshal(files[export.FileManifest], &m); err != nil {
		t.Fatal(err)
	}
	for _, f := range m.Files {
		sum := sha256.Sum256(files[f.Path])
		if hex.EncodeToString(sum[:]) != f.SHA256 {
			t.Errorf("%s does not match its manifest digest", f.Path)
		}
	}
	wav, _ := readTestdata("speech-hello.wav")
	if !bytes.Equal(files["audio/trip/0000000.wav"], wav) {
		t.Error("the CLI archive's audio is not the upload")
	}
	if !bytes.Contains(files[export.FileSegments], []byte("instant words")) {
		t.Error("the CLI archive lacks the decrypted transcript")
	}
	if !bytes.Contains(files[export.FileAudit], []byte(`"export.ready"`)) {
		t.Error("the CLI archive's audit trail lacks the first export")
	}

	for _, tc := range []struct {
		name string
		args []string
		code int
	}{
		{"no uid", nil, 2},
		{"two uids", []string{"a", "b"}, 2},
		{"unknown flag", []string{"a", "--zip"}, 2},
	} {
		if text, code := run(tc.args...); code != tc.code {
			t.Errorf("%s: exit %d, want %d: %s", tc.name, code, tc.code, text)
		}
	}
}
