package main

import (
	"fmt"
	"math"
	"os"
	"reflect"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/lethe-dev/lethe/app/ingest"
	"github.com/lethe-dev/lethe/infra/audio"
)

// configDefault is the default tag of the Config field read from env.
func configDefault(t *testing.T, env string) string {
	t.Helper()
	typ := reflect.TypeFor[Config]()
	for i := range typ.NumField() {
		if f := typ.Field(i); f.Tag.Get("envconfig") == env {
			return f.Tag.Get("default")
		}
	}
	t.Fatalf("Config has no field for %s", env)
	return ""
}

// readmeLimits returns the "Recording limits" table of README.md: the
// first cell of each row to its second.
func readmeLimits(t *testing.T) map[string]string {
	t.Helper()
	b, err := os.ReadFile("../../README.md")
	if err != nil {
		t.Fatal(err)
	}
	_, section, ok := strings.Cut(string(b), "### Recording limits")
	if !ok {
		t.Fatal("README.md has no Recording limits section")
	}
	rows := map[string]string{}
	for _, line := range strings.Split(section, "\n") {
		if strings.HasPrefix(line, "#") {
			break
		}
		cells := strings.Split(line, "|")
		if len(cells) < 4 || strings.HasPrefix(strings.TrimSpace(cells[1]), "---") {
			continue
		}
		rows[strings.TrimSpace(cells[1])] = strings.TrimSpace(cells[2]) + " | " + strings.TrimSpace(cells[3])
	}
	return rows
}

var (
	mibRe     = regexp.MustCompile(`^(\d+) MiB\b`)
	minutesRe = regexp.MustCompile(`^(\d+) minutes?\b`)
)

func parseMiB(t *testing.T, s string) int64 {
	t.Helper()
	m := mibRe.FindStringSubmatch(s)
	if m == nil {
		t.Fatalf("%q does not start with N MiB", s)
	}
	n, _ := strconv.ParseInt(m[1], 10, 64)
	return n << 20
}

// TestREADMELimits: the limits README.md advertises are the ones the code
// enforces (configuration defaults, the Cloud Run cap the configuration
// allows, the decoder's longest recording, the transcribe worker's pieces)
// and the durations it derives from them are right.
func TestREADMELimits(t *testing.T) {
	rows := readmeLimits(t)
	row := func(label string) string {
		t.Helper()
		v, ok := rows[label]
		if !ok {
			t.Fatalf("README's Recording limits has no row %q (rows: %v)", label, rows)
		}
		return v
	}

	longest := row("longest recording")
	m := minutesRe.FindStringSubmatch(longest)
	if m == nil {
		t.Fatalf("longest recording %q: want N minutes", longest)
	}
	if n, _ := strconv.Atoi(m[1]); time.Duration(n)*time.Minute != audio.MaxDuration || ingest.MaxDuration != audio.MaxDuration {
		t.Errorf("README says the longest recording is %s minutes; the decoder enforces %s", m[1], audio.MaxDuration)
	}

	chunk := row("largest chunk by PUT (`LETHE_MAX_CHUNK_BYTES`)")
	if got, want := strconv.FormatInt(parseMiB(t, chunk), 10), configDefault(t, "LETHE_MAX_CHUNK_BYTES"); got != want {
		t.Errorf("README says LETHE_MAX_CHUNK_BYTES defaults to %s bytes; Config says %s", got, want)
	}
	if !strings.Contains(chunk, fmt.Sprintf("up to %d MiB", cloudRunMaxBody>>20)) {
		t.Errorf("README's chunk row %q does not state the configurable maximum %d MiB", chunk, cloudRunMaxBody>>20)
	}
	over := testConfig(t)
	over.MaxChunkBytes = cloudRunMaxBody + 1
	if over.validate() == nil {
		t.Errorf("LETHE_MAX_CHUNK_BYTES=%d passes validation; README says %d MiB is the most", cloudRunMaxBody+1, cloudRunMaxBody>>20)
	}

	upload := row("largest signed upload (`LETHE_MAX_UPLOAD_BYTES`)")
	uploadBytes := parseMiB(t, upload)
	if got, want := strconv.FormatInt(uploadBytes, 10), configDefault(t, "LETHE_MAX_UPLOAD_BYTES"); got != want {
		t.Errorf("README says LETHE_MAX_UPLOAD_BYTES defaults to %s bytes; Config says %s", got, want)
	}
	// "about N minutes of 16 kHz mono WAV": 32000 bytes a second.
	about := regexp.MustCompile(`about (\d+) minutes of 16 kHz mono WAV`).FindStringSubmatch(upload)
	if about == nil {
		t.Fatalf("upload row %q does not say how long it holds", upload)
	}
	if n, _ := strconv.Atoi(about[1]); float64(n) != math.Round(float64(uploadBytes)/32000/60) {
		t.Errorf("README says %d MiB hold about %d minutes of 16 kHz WAV; they hold %.1f", uploadBytes>>20, n, float64(uploadBytes)/32000/60)
	}
	// The longest upload the README advertises fits the longest recording.
	if d := time.Duration(float64(uploadBytes) / 32000 * float64(time.Second)); d > audio.MaxDuration {
		t.Errorf("a full signed upload of 16 kHz WAV plays %s, longer than the longest recording %s", d, audio.MaxDuration)
	}
	// And the table above it (configuration) says the same default.
	b, _ := os.ReadFile("../../README.md")
	if !strings.Contains(string(b), fmt.Sprintf("| `LETHE_MAX_UPLOAD_BYTES` | %d MiB |", uploadBytes>>20)) {
		t.Errorf("README's configuration table disagrees with its limits table on LETHE_MAX_UPLOAD_BYTES")
	}

	piece := row("transcription piece")
	pm := regexp.MustCompile(`^(\d+) minutes?\b.*last (\d+) seconds`).FindStringSubmatch(piece)
	if pm == nil {
		t.Fatalf("piece row %q: want N minute(s) ... last N seconds", piece)
	}
	mins, _ := strconv.Atoi(pm[1])
	secs, _ := strconv.Atoi(pm[2])
	if time.Duration(mins)*time.Minute != audio.DefaultCutting.Max || time.Duration(secs)*time.Second != audio.DefaultCutting.Search {
		t.Errorf("README says pieces of %d min cut in the last %d s; the worker cuts %s in the last %s", mins, secs, audio.DefaultCutting.Max, audio.DefaultCutting.Search)
	}
}
