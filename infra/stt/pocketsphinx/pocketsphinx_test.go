package pocketsphinx

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/lethe-dev/lethe/infra/audio"
	"github.com/lethe-dev/lethe/infra/stt"
	"github.com/lethe-dev/lethe/infra/stt/stttest"
)

type harness struct{ dir string }

func (h *harness) MakeTranscriber(_ context.Context, t *testing.T) (stt.Transcriber, error) {
	tr, err := New(Config{TempDir: h.dir})
	if err != nil {
		return nil, err
	}
	if err := tr.Check(); err != nil {
		return nil, err
	}
	return tr, nil
}

// Measured: 4-5 of the 5 content words on the sample (see testdata/README.md).
func (h *harness) MinContentWords() int { return 3 }
func (h *harness) Close()               {}

func TestConformance(t *testing.T) {
	stttest.RunConformanceTests(t, func(_ context.Context, t *testing.T) (stttest.Harness, error) {
		return &harness{dir: t.TempDir()}, nil
	})
}

// newReal returns a Transcriber over the installed recogniser; the test
// fails (never skips) when it is missing, with the install hint.
func newReal(t *testing.T, cfg Config) *Transcriber {
	t.Helper()
	if cfg.TempDir == "" {
		cfg.TempDir = t.TempDir()
	}
	tr, err := New(cfg)
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	if err := tr.Check(); err != nil {
		t.Fatalf("Check: %v", err)
	}
	return tr
}

func decodeTestdata(t testing.TB, name, contentType string) audio.PCM {
	t.Helper()
	b, err := os.ReadFile(filepath.Join("..", "..", "..", "testdata", name))
	if err != nil {
		t.Fatalf("os.ReadFile: %v", err)
	}
	p, err := audio.Decode(contentType, b)
	if err != nil {
		t.Fatalf("audio.Decode(%s): %v", name, err)
	}
	return p
}

func assertEmpty(t *testing.T, dir string) {
	t.Helper()
	entries, err := os.ReadDir(dir)
	if err != nil {
		t.Fatalf("os.ReadDir: %v", err)
	}
	if len(entries) != 0 {
		t.Fatalf("%d entries left in the temp dir, first %q", len(entries), entries[0].Name())
	}
}

func words(s string) []string { return strings.Fields(s) }

// Each format of the shared sentence, decoded and resampled, must be
// recognised. The espeak voice is synthetic, so the bar is content words,
// not an exact match; the observed transcripts are logged.
func TestTranscribeTestdata(t *testing.T) {
	tests := []struct {
		file, contentType string
		want              []string // content words that must appear
		min               int
	}{
		{"speech-hello.wav", "audio/wav", []string{"hello", "world", "test", "memory", "pipeline"}, 4},
		{"speech-hello-22050.wav", "audio/wav", []string{"hello", "world", "test", "memory", "pipeline"}, 4},
		{"speech-hello-16000.l16", "audio/L16;rate=16000", []string{"hello", "world", "test", "memory", "pipeline"}, 4},
		{"speech-hello.opus", "audio/ogg;codecs=opus", []string{"hello", "world", "test", "memory", "pipeline"}, 4},
		{"speech-hello-44100-stereo.wav", "audio/wav", []string{"hello", "world"}, 2},
	}
	tr := newReal(t, Config{})
	for _, tc := range tests {
		t.Run(tc.file, func(t *testing.T) {
			got, err := tr.Transcribe(t.Context(), decodeTestdata(t, tc.file, tc.contentType))
			if err != nil {
				t.Fatalf("Transcribe: %v", err)
			}
			t.Logf("transcript of synthetic test speech: %q", got.Text)
			if got.Model != Model {
				t.Errorf("Model %q", got.Model)
			}
			n := 0
			for _, w := range tc.want {
				if slices.Contains(words(got.Text), w) {
					n++
				}
			}
			if n < tc.min {
				t.Fatalf("%d of %v recognised, want >= %d", n, tc.want, tc.min)
			}
			for i, s := range got.Segments {
				if s.Speaker != -1 || s.EndMS <= s.StartMS {
					t.Errorf("segment %d: %+v", i, s)
				}
			}
		})
	}
}

func TestKeywords(t *testing.T) {
	tr := newReal(t, Config{Keywords: []string{"Hello World", "memory pipeline", "goodbye moon"}})
	got, err := tr.Transcribe(t.Context(), decodeTestdata(t, "speech-hello.wav", "audio/wav"))
	if err != nil {
		t.Fatalf("Transcribe: %v", err)
	}
	var texts []string
	for _, s := range got.Segments {
		texts = append(texts, s.Text)
	}
	t.Logf("keyword segments: %q", texts)
	if !slices.Contains(texts, "hello world") || !slices.Contains(texts, "memory pipeline") {
		t.Fatalf("detections %q, want hello world and memory pipeline", texts)
	}
	if slices.Contains(texts, "goodbye moon") {
		t.Fatal("detected a phrase that was not spoken")
	}
	if i, j := slices.Index(texts, "hello world"), slices.Index(texts, "memory pipeline"); i > j {
		t.Fatalf("segments not in time order: %q", texts)
	}
}

func TestGrammar(t *testing.T) {
	g, err := PhraseGrammar([]string{"hello world", "this is a test of the memory pipeline", "goodbye"})
	if err != nil {
		t.Fatal(err)
	}
	tr := newReal(t, Config{Grammar: g})
	got, err := tr.Transcribe(t.Context(), decodeTestdata(t, "speech-hello-22050.wav", "audio/wav"))
	if err != nil {
		t.Fatalf("Transcribe: %v", err)
	}
	if want := "hello world this is a test of the memory pipeline"; got.Text != want {
		t.Fatalf("grammar-constrained transcript %q, want %q", got.Text, want)
	}
}

func TestGrammarErrorsSurface(t *testing.T) {
	g, err := PhraseGrammar([]string{"hello zzqxv"})
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	tr := newReal(t, Config{Grammar: g, TempDir: dir})
	_, err = tr.Transcribe(t.Context(), decodeTestdata(t, "speech-hello.wav", "audio/wav"))
	if err == nil || !strings.Contains(err.Error(), "zzqxv") {
		t.Fatalf("Transcribe with an unknown grammar word = %v, want the decoder's error", err)
	}
	assertEmpty(t, dir)
}

func TestNewValidates(t *testing.T) {
	tests := []struct {
		name string
		cfg  Config
	}{
		{"keywords and grammar", Config{Keywords: []string{"hello"}, Grammar: "#JSGF V1.0; grammar g; public <a> = hello;"}},
		{"keyword not in dictionary", Config{Keywords: []string{"hello zzqxv"}}},
		{"keyword with threshold syntax", Config{Keywords: []string{"hello /1e-5/"}}},
		{"keyword with newline smuggling", Config{Keywords: []string{"hello\n/etc/passwd"}}},
		{"empty keyword", Config{Keywords: []string{"  "}}},
		{"grammar without rule", Config{Grammar: "hello"}},
		{"negative timeout", Config{Timeout: -time.Second}},
		{"threshold above one", Config{KeywordThreshold: 2}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			if _, err := New(tc.cfg); err == nil {
				t.Fatal("New accepted an invalid config")
			}
		})
	}
	if _, err := PhraseGrammar([]string{"a <b>"}); err == nil {
		t.Fatal("PhraseGrammar accepted JSGF syntax inside a phrase")
	}
}

func TestUnavailable(t *testing.T) {
	tests := []struct {
		name string
		cfg  Config
	}{
		{"missing binary", Config{Binary: "/nonexistent/pocketsphinx_continuous"}},
		{"binary not in PATH", Config{Binary: "pocketsphinx_continuous_not_installed"}},
		{"missing acoustic model", Config{HMM: "/nonexistent/en-us"}},
		{"missing dictionary", Config{Dict: "/nonexistent/cmudict.dict"}},
		{"missing language model", Config{LM: "/nonexistent/en-us.lm.bin"}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			tr, err := New(tc.cfg)
			if err != nil {
				t.Fatalf("New: %v", err)
			}
			err = tr.Check()
			if !errors.Is(err, stt.ErrUnavailable) {
				t.Fatalf("Check = %v, want ErrUnavailable", err)
			}
			if !strings.Contains(err.Error(), "apt-get install pocketsphinx pocketsphinx-en-us") {
				t.Fatalf("Check error %q lacks the install hint", err)
			}
		})
	}
	t.Run("Transcribe without binary", func(t *testing.T) {
		dir := t.TempDir()
		tr, err := New(Config{Binary: "/nonexistent/pocketsphinx_continuous", TempDir: dir})
		if err != nil {
			t.Fatal(err)
		}
		_, err = tr.Transcribe(t.Context(), audio.PCM{SampleRate: 16000, Samples: make([]int16, 1600)})
		if !errors.Is(err, stt.ErrUnavailable) {
			t.Fatalf("Transcribe = %v, want ErrUnavailable", err)
		}
		assertEmpty(t, dir)
	})
}

// fakeBinary writes an executable shell script standing in for the recogniser.
func fakeBinary(t *testing.T, script string) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), "fake_pocketsphinx")
	if err := os.WriteFile(path, []byte("#!/bin/sh\n"+script), 0o700); err != nil {
		t.Fatal(err)
	}
	return path
}

// The audio reaches the recogniser through a pipe, never a file: what is
// on disk while it runs is all a SIGKILL could leave behind, and here that
// is nothing.
func TestAudioNeverOnDisk(t *testing.T) {
	dir := t.TempDir()
	// Reports, as word lines, whether -infile is a pipe, how many bytes
	// came through it, and how many entries TempDir holds while it runs.
	bin := fakeBinary(t, `while [ $# -gt 0 ]; do [ "$1" = -infile ] && f="$2"; shift; done
echo "probe"
if [ -p "$f" ]; then echo "pipe 0.000 0.100 1.0"; else echo "notpipe 0.000 0.100 1.0"; fi
echo "bytes$(wc -c < "$f") 0.100 0.200 1.0"
echo "entries$(ls -A '`+dir+`' | wc -l) 0.200 0.300 1.0"
`)
	tr, err := New(Config{Binary: bin, TempDir: dir})
	if err != nil {
		t.Fatal(err)
	}
	// 22.05 kHz in, 16 kHz raw PCM to the recogniser: 1600 samples.
	got, err := tr.Transcribe(t.Context(), audio.PCM{SampleRate: 22050, Samples: make([]int16, 2205)})
	if err != nil {
		t.Fatalf("Transcribe: %v", err)
	}
	if got.Text != "pipe bytes3200 entries0" {
		t.Fatalf("recogniser saw %q, want pipe bytes3200 entries0", got.Text)
	}
	assertEmpty(t, dir)

	// With a grammar the private directory exists during the run, holding
	// the grammar only.
	g, err := PhraseGrammar([]string{"hello"})
	if err != nil {
		t.Fatal(err)
	}
	tr, err = New(Config{Binary: fakeBinary(t, `echo "probe"
for f in '`+dir+`'/*/*; do echo "$(basename "$f")$(stat -c %a "$f") 0.000 0.100 1.0"; done
`), TempDir: dir, Grammar: g})
	if err != nil {
		t.Fatal(err)
	}
	if got, err := tr.Transcribe(t.Context(), audio.PCM{SampleRate: 16000, Samples: make([]int16, 160)}); err != nil || got.Text != "grammar.gram600" {
		t.Fatalf("files during a grammar run: %q (%v), want grammar.gram600 only", got.Text, err)
	}
	assertEmpty(t, dir)

	t.Run("after failure", func(t *testing.T) {
		tr, err := New(Config{Binary: fakeBinary(t, "exit 3\n"), TempDir: dir})
		if err != nil {
			t.Fatal(err)
		}
		if _, err := tr.Transcribe(t.Context(), audio.PCM{SampleRate: 16000, Samples: make([]int16, 160)}); err == nil {
			t.Fatal("exit status 3 was not an error")
		}
		assertEmpty(t, dir)
	})
}

func TestCancelKillsProcess(t *testing.T) {
	dir := t.TempDir()
	pidFile := filepath.Join(t.TempDir(), "pid")
	bin := fakeBinary(t, "echo $$ > "+pidFile+"\nexec sleep 60\n")
	tr, err := New(Config{Binary: bin, TempDir: dir})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(t.Context())
	done := make(chan error, 1)
	go func() {
		_, err := tr.Transcribe(ctx, audio.PCM{SampleRate: 16000, Samples: make([]int16, 1600)})
		done <- err
	}()
	var pid int
	for deadline := time.Now().Add(10 * time.Second); pid == 0; {
		if b, err := os.ReadFile(pidFile); err == nil && strings.HasSuffix(string(b), "\n") {
			if pid, err = strconv.Atoi(strings.TrimSpace(string(b))); err != nil {
				t.Fatal(err)
			}
		}
		if time.Now().After(deadline) {
			t.Fatal("fake recogniser did not start")
		}
		time.Sleep(10 * time.Millisecond)
	}
	cancel()
	select {
	case err := <-done:
		if !errors.Is(err, context.Canceled) {
			t.Fatalf("Transcribe = %v, want context.Canceled", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("Transcribe did not return after cancel")
	}
	// The process was killed and reaped: the pid no longer exists.
	if err := syscall.Kill(pid, 0); !errors.Is(err, syscall.ESRCH) {
		t.Fatalf("kill(%d, 0) = %v: recogniser still running", pid, err)
	}
	assertEmpty(t, dir)
}

func TestTimeout(t *testing.T) {
	dir := t.TempDir()
	tr, err := New(Config{Binary: fakeBinary(t, "exec sleep 60\n"), TempDir: dir, Timeout: 200 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	_, err = tr.Transcribe(t.Context(), audio.PCM{SampleRate: 16000, Samples: make([]int16, 160)})
	if !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("Transcribe = %v, want DeadlineExceeded", err)
	}
	assertEmpty(t, dir)
}

func TestOutputIsBounded(t *testing.T) {
	dir := t.TempDir()
	tr, err := New(Config{Binary: fakeBinary(t, "exec yes hello\n"), TempDir: dir, Timeout: 20 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	_, err = tr.Transcribe(t.Context(), audio.PCM{SampleRate: 16000, Samples: make([]int16, 160)})
	// Killed on overflow, long before the 20 s timeout.
	if err == nil || errors.Is(err, context.DeadlineExceeded) || !strings.Contains(err.Error(), "exceeds") {
		t.Fatalf("Transcribe with endless output = %v, want the output limit error", err)
	}
	assertEmpty(t, dir)
}

func TestRealProcessCancel(t *testing.T) {
	dir := t.TempDir()
	tr := newReal(t, Config{TempDir: dir})
	ctx, cancel := context.WithTimeout(t.Context(), 150*time.Millisecond)
	defer cancel()
	start := time.Now()
	_, err := tr.Transcribe(ctx, decodeTestdata(t, "speech-hello.wav", "audio/wav"))
	if !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("Transcribe = %v, want DeadlineExceeded", err)
	}
	if d := time.Since(start); d > 5*time.Second {
		t.Fatalf("returned %s after the deadline", d)
	}
	assertEmpty(t, dir)
}

func TestParseOutput(t *testing.T) {
	tests := []struct {
		name     string
		out      string
		keywords bool
		text     string
		segs     []stt.Segment
	}{
		{
			name: "lm with fillers and alternates",
			out: "the ah world\n<s> 0.000 0.020 0.99\nthe(2) 0.030 0.130 0.07\n[NOISE] 0.14 0.2 0.5\nworld 0.370 0.760 0.46\n<sil> 0.770 0.810 0.71\n</s> 2.700 3.450 1.0\n" +
				"again\n<s> 4.0 4.1 1\nagain 4.100 4.500 0.5\n</s> 4.5 4.6 1\n",
			text: "the world again",
			segs: []stt.Segment{{StartMS: 30, EndMS: 760, Text: "the world", Speaker: -1}, {StartMS: 4100, EndMS: 4500, Text: "again", Speaker: -1}},
		},
		{
			name:     "keyword detections sorted by time",
			out:      "memory pipeline  hello world \nmemory pipeline  6.590 7.620 0.81\nhello world  4.840 5.500 0.82\n",
			keywords: true,
			text:     "hello world memory pipeline",
			segs:     []stt.Segment{{StartMS: 4840, EndMS: 5500, Text: "hello world", Speaker: -1}, {StartMS: 6590, EndMS: 7620, Text: "memory pipeline", Speaker: -1}},
		},
		{
			name: "jsgf null transitions",
			out:  "hello world\nhello 0.000 0.330 1.0\n(NULL) 0.330 0.330 1.0\nworld 0.340 0.780 1.0\n",
			text: "hello world",
			segs: []stt.Segment{{StartMS: 0, EndMS: 780, Text: "hello world", Speaker: -1}},
		},
		{name: "silence", out: "\n<s> 0.000 0.790 1.0\n</s> 0.800 0.870 1.0\n"},
		{name: "nothing", out: ""},
		{name: "hypothesis without times", out: "hello there\n", text: "hello there", segs: []stt.Segment{{Text: "hello there", Speaker: -1}}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			got := parseOutput([]byte(tc.out), tc.keywords)
			if got.Text != tc.text || !slices.Equal(got.Segments, tc.segs) {
				t.Fatalf("parseOutput = %q %+v, want %q %+v", got.Text, got.Segments, tc.text, tc.segs)
			}
		})
	}
}

func FuzzParseOutput(f *testing.F) {
	f.Add([]byte("hello world\n<s> 0.000 0.020 0.99\nhello 0.030 0.130 0.07\n"), false)
	f.Add([]byte("memory pipeline\nmemory pipeline 6.590 7.620 0.81\n"), true)
	f.Fuzz(func(t *testing.T, out []byte, keywords bool) {
		got := parseOutput(out, keywords)
		for _, s := range got.Segments {
			if s.EndMS < s.StartMS || s.Text == "" || !strings.Contains(got.Text, s.Text) {
				t.Fatalf("bad segment %+v in %q", s, got.Text)
			}
		}
	})
}

// Reports seconds of processing per second of audio (real time factor),
// model loading included, as "rtf".
func BenchmarkTranscribe(b *testing.B) {
	tr, err := New(Config{TempDir: b.TempDir()})
	if err != nil {
		b.Fatal(err)
	}
	if err := tr.Check(); err != nil {
		b.Fatal(err)
	}
	pcm := decodeTestdata(b, "speech-hello.wav", "audio/wav")
	start := time.Now()
	for b.Loop() {
		if _, err := tr.Transcribe(b.Context(), pcm); err != nil {
			b.Fatal(err)
		}
	}
	b.ReportMetric(time.Since(start).Seconds()/float64(b.N)/audio.Duration(pcm).Seconds(), "rtf")
}
