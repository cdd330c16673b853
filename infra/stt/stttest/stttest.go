// Package stttest is the conformance suite every stt.Transcriber adapter
// runs, in the manner of gocloud.dev's drivertest. Its speech is the shared
// espeak-ng recording in testdata/ ("hello world this is a test of the
// memory pipeline"); a fake backend must answer with text of that sentence.
package stttest

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/lethe-dev/lethe/infra/audio"
	"github.com/lethe-dev/lethe/infra/stt"
)

// Harness makes a fresh Transcriber per test.
type Harness interface {
	MakeTranscriber(ctx context.Context, t *testing.T) (stt.Transcriber, error)
	// MinContentWords is how many of ContentWords the transcript of the
	// sample must contain: recognisers differ in accuracy on synthetic speech.
	MinContentWords() int
	Close()
}

// HarnessMaker creates a Harness for one test.
type HarnessMaker func(ctx context.Context, t *testing.T) (Harness, error)

// ContentWords are the words of the sample sentence that carry meaning.
func ContentWords() []string { return []string{"hello", "world", "test", "memory", "pipeline"} }

// SamplePath is the shared 16 kHz sample, relative to the module root.
const SamplePath = "testdata/speech-hello.wav"

// RunConformanceTests runs the suite against the adapter newHarness makes.
func RunConformanceTests(t *testing.T, newHarness HarnessMaker) {
	t.Run("RecognisesSpeech", func(t *testing.T) { withTranscriber(t, newHarness, testRecognisesSpeech) })
	t.Run("SegmentsAreConsistent", func(t *testing.T) { withTranscriber(t, newHarness, testSegmentsConsistent) })
	t.Run("Silence", func(t *testing.T) { withTranscriber(t, newHarness, testSilence) })
	t.Run("EmptyAudio", func(t *testing.T) { withTranscriber(t, newHarness, testEmpty) })
	t.Run("CanceledContext", func(t *testing.T) { withTranscriber(t, newHarness, testCanceled) })
	t.Run("Concurrent", func(t *testing.T) { withTranscriber(t, newHarness, testConcurrent) })
}

func withTranscriber(t *testing.T, newHarness HarnessMaker, f func(*testing.T, Harness, stt.Transcriber)) {
	ctx := t.Context()
	h, err := newHarness(ctx, t)
	if err != nil {
		t.Fatalf("newHarness: %v", err)
	}
	defer h.Close()
	tr, err := h.MakeTranscriber(ctx, t)
	if err != nil {
		t.Fatalf("MakeTranscriber: %v", err)
	}
	f(t, h, tr)
}

// Sample loads the shared speech sample as 16 kHz PCM.
func Sample(t testing.TB) audio.PCM {
	t.Helper()
	_, file, _, _ := runtime.Caller(0)
	root := filepath.Join(filepath.Dir(file), "..", "..", "..")
	b, err := os.ReadFile(filepath.Join(root, SamplePath))
	if err != nil {
		t.Fatalf("os.ReadFile: %v", err)
	}
	p, err := audio.Decode("audio/wav", b)
	if err != nil {
		t.Fatalf("audio.Decode: %v", err)
	}
	return p
}

// ContentWordsIn counts ContentWords present in text.
func ContentWordsIn(text string) int {
	have := map[string]bool{}
	for _, w := range strings.Fields(strings.ToLower(text)) {
		have[strings.Trim(w, ".,!?;:\"'")] = true
	}
	n := 0
	for _, w := range ContentWords() {
		if have[w] {
			n++
		}
	}
	return n
}

func testRecognisesSpeech(t *testing.T, h Harness, tr stt.Transcriber) {
	got, err := tr.Transcribe(t.Context(), Sample(t))
	if err != nil {
		t.Fatalf("Transcribe: %v", err)
	}
	if got.Model == "" {
		t.Error("Transcript.Model is empty")
	}
	if n := ContentWordsIn(got.Text); n < h.MinContentWords() {
		t.Fatalf("transcript %q has %d of the content words %v, want >= %d", got.Text, n, ContentWords(), h.MinContentWords())
	}
}

func testSegmentsConsistent(t *testing.T, _ Harness, tr stt.Transcriber) {
	pcm := Sample(t)
	got, err := tr.Transcribe(t.Context(), pcm)
	if err != nil {
		t.Fatalf("Transcribe: %v", err)
	}
	if len(got.Segments) == 0 {
		t.Fatal("no segments for speech")
	}
	durMS := audio.Duration(pcm).Milliseconds()
	var prevStart int64
	for i, s := range got.Segments {
		if s.StartMS < 0 || s.EndMS < s.StartMS || s.EndMS > durMS+500 {
			t.Errorf("segment %d spans %d..%d ms of %d ms audio", i, s.StartMS, s.EndMS, durMS)
		}
		if s.StartMS < prevStart {
			t.Errorf("segment %d starts at %d ms, before segment %d", i, s.StartMS, i-1)
		}
		prevStart = s.StartMS
		if strings.TrimSpace(s.Text) == "" {
			t.Errorf("segment %d has no text", i)
		}
		if !strings.Contains(got.Text, s.Text) {
			t.Errorf("segment %d text is not part of the transcript text", i)
		}
		if s.Speaker < -1 {
			t.Errorf("segment %d speaker %d", i, s.Speaker)
		}
	}
}

func testSilence(t *testing.T, _ Harness, tr stt.Transcriber) {
	got, err := tr.Transcribe(t.Context(), audio.PCM{SampleRate: audio.STTRate, Samples: make([]int16, audio.STTRate)})
	if err != nil {
		t.Fatalf("Transcribe(silence): %v", err)
	}
	if n := ContentWordsIn(got.Text); n > 0 {
		t.Fatalf("silence transcribed with %d sample words", n)
	}
}

func testEmpty(t *testing.T, _ Harness, tr stt.Transcriber) {
	got, err := tr.Transcribe(t.Context(), audio.PCM{SampleRate: audio.STTRate})
	if err != nil {
		t.Fatalf("Transcribe(empty): %v", err)
	}
	if got.Text != "" || len(got.Segments) != 0 {
		t.Fatalf("empty audio gave %d segments", len(got.Segments))
	}
}

func testCanceled(t *testing.T, _ Harness, tr stt.Transcriber) {
	ctx, cancel := context.WithCancel(t.Context())
	cancel()
	start := time.Now()
	_, err := tr.Transcribe(ctx, Sample(t))
	if !errors.Is(err, context.Canceled) {
		t.Fatalf("Transcribe(canceled) = %v, want context.Canceled", err)
	}
	if d := time.Since(start); d > 5*time.Second {
		t.Fatalf("canceled call took %s", d)
	}
}

func testConcurrent(t *testing.T, h Harness, tr stt.Transcriber) {
	pcm := Sample(t)
	const n = 3
	var wg sync.WaitGroup
	errs := make([]error, n)
	texts := make([]string, n)
	for i := range n {
		wg.Go(func() {
			got, err := tr.Transcribe(t.Context(), pcm)
			errs[i], texts[i] = err, got.Text
		})
	}
	wg.Wait()
	for i := range n {
		if errs[i] != nil {
			t.Fatalf("call %d: %v", i, errs[i])
		}
		if c := ContentWordsIn(texts[i]); c < h.MinContentWords() {
			t.Fatalf("call %d: %d content words", i, c)
		}
	}
}
