package main

import (
	"context"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/lethe-dev/lethe/infra/audio"
	"github.com/lethe-dev/lethe/infra/stt"
	"github.com/lethe-dev/lethe/infra/stt/pocketsphinx"
)

// Sentences spoken at the start and at the end of the long recordings
// (espeak-ng's klatt2 voice, the one PocketSphinx recognises best; see
// testdata/README.md).
const (
	longFirstWords = "hello world this is a test of the memory pipeline"
	longLastWords  = "this is the end of the test of the long recording"
)

// makeLongWAV makes, with espeak-ng and sox at test time, a mono PCM16 WAV
// at rate that lasts total: longFirstWords at the start, longLastWords at
// the very end, and silence between with a half-second tone in the middle.
func makeLongWAV(t *testing.T, rate int, total time.Duration) []byte {
	t.Helper()
	for _, tool := range []string{"espeak-ng", "sox"} {
		if _, err := exec.LookPath(tool); err != nil {
			t.Fatalf("%s is not installed: apt-get install espeak-ng sox (make test does this where it can)", tool)
		}
	}
	dir := t.TempDir()
	run := func(name string, args ...string) {
		t.Helper()
		if out, err := exec.CommandContext(t.Context(), name, args...).CombinedOutput(); err != nil {
			t.Fatalf("%s %v: %v: %s", name, args, err, out)
		}
	}
	path := func(n string) string { return filepath.Join(dir, n) }
	format := []string{"-r", strconv.Itoa(rate), "-c", "1", "-b", "16", "-e", "signed-integer"}
	run("espeak-ng", "-v", "en-us+klatt2", "-s", "150", "-w", path("first22.wav"), longFirstWords)
	run("espeak-ng", "-v", "en-us+klatt2", "-s", "150", "-w", path("last22.wav"), longLastWords)
	run("sox", append(append([]string{"-D", path("first22.wav")}, format...), path("first.wav"))...)
	run("sox", append(append([]string{"-D", path("last22.wav")}, format...), path("last.wav"))...)
	speech := time.Duration(0)
	for _, n := range []string{"first.wav", "last.wav"} {
		b, err := os.ReadFile(path(n))
		if err != nil {
			t.Fatal(err)
		}
		p, err := audio.Decode("audio/wav", b)
		if err != nil {
			t.Fatal(err)
		}
		speech += audio.Duration(p)
	}
	const tone = 500 * time.Millisecond
	gap := (total - speech - tone) / 2
	secs := func(d time.Duration) string { return strconv.FormatFloat(d.Seconds(), 'f', 3, 64) }
	run("sox", append(append([]string{"-n"}, format...), path("gap.wav"), "trim", "0", secs(gap))...)
	run("sox", append(append([]string{"-n"}, format...), path("tone.wav"), "synth", secs(tone), "sine", "440", "vol", "0.3")...)
	run("sox", "-D", path("first.wav"), path("gap.wav"), path("tone.wav"), path("gap.wav"), path("last.wav"),
		"-t", "wavpcm", path("long.wav"))
	b, err := os.ReadFile(path("long.wav"))
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// trimmingSTT is the recogniser stand-in for recordings of half an hour:
// it trims the silence at both ends of each piece it is given and hands
// what is left to the real recogniser (PocketSphinx), so the speech at the
// start and end is recognised for real while 35 minutes of silence cost
// nothing. It records the text of every piece, in order.
type trimmingSTT struct {
	next stt.Transcriber
	mu   sync.Mutex
	text []string // per call
}

func (s *trimmingSTT) Transcribe(ctx context.Context, pcm audio.PCM) (stt.Transcript, error) {
	const quiet = 64
	lo, hi := 0, len(pcm.Samples)
	for lo < hi && abs16(pcm.Samples[lo]) < quiet {
		lo++
	}
	for hi > lo && abs16(pcm.Samples[hi-1]) < quiet {
		hi--
	}
	var tr stt.Transcript
	if hi > lo {
		// A little silence around the speech helps the recogniser.
		pad := pcm.SampleRate / 4
		lo, hi = max(0, lo-pad), min(len(pcm.Samples), hi+pad)
		var err error
		tr, err = s.next.Transcribe(ctx, audio.PCM{SampleRate: pcm.SampleRate, Samples: pcm.Samples[lo:hi]})
		if err != nil {
			return stt.Transcript{}, err
		}
	}
	tr.Model = "trimmed+pocketsphinx"
	s.mu.Lock()
	s.text = append(s.text, tr.Text)
	s.mu.Unlock()
	return tr, nil
}

// reset forgets what was recognised so far.
func (s *trimmingSTT) reset() {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.text = nil
}

func (s *trimmingSTT) pieces() []string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]string(nil), s.text...)
}

func abs16(v int16) int32 {
	if v < 0 {
		return -int32(v)
	}
	return int32(v)
}

func newTrimmingSTT(t *testing.T) *trimmingSTT {
	t.Helper()
	requirePocketSphinx(t)
	ps, err := pocketsphinx.New(pocketsphinx.Config{})
	if err != nil {
		t.Fatal(err)
	}
	return &trimmingSTT{next: ps}
}

// checkLongTranscribed asserts the recording of cid was recognised in
// pieces, from its first minute to its last, and that words from the first
// and from the last minute each find it by search.
func checkLongTranscribed(t *testing.T, c client, rec *trimmingSTT, cid string, total time.Duration) {
	t.Helper()
	conv := c.waitDoneWithin(cid, 1, 10*time.Minute)
	pieces := rec.pieces()
	wantPieces := int((total + audio.DefaultCutting.Max - 1) / audio.DefaultCutting.Max)
	if len(pieces) < wantPieces || len(pieces) > wantPieces+2 {
		t.Fatalf("%d pieces recognised for %s of audio, want about %d", len(pieces), total, wantPieces)
	}
	first, last := pieces[0], pieces[len(pieces)-1]
	t.Logf("first minute: %q; last minute: %q; transcript %d words", first, last, len(strings.Fields(conv.Transcript)))
	for name, words := range map[string]string{"first": first, "last": last} {
		if len(strings.Fields(words)) < 2 {
			t.Fatalf("the %s minute was recognised as %q: too few words to search", name, words)
		}
		if !strings.Contains(conv.Transcript, words) {
			t.Fatalf("the transcript does not hold the %s minute's words %q", name, words)
		}
		var res searchReply
		code := c.search(words, &res)
		if code != http.StatusOK || len(res.Results) == 0 || res.Results[0].ConversationID != cid {
			t.Fatalf("search for the %s minute's words %q: %d %+v", name, words, code, res.Results)
		}
		if len(res.Results[0].Snippets) == 0 || !strings.Contains(res.Results[0].Snippets[0], words) {
			t.Fatalf("search for the %s minute's words: snippet does not hold them", name)
		}
	}
	// Every piece was recognised once; the silent ones have no words.
	if len(conv.Segments) != 1 {
		t.Fatalf("%d segments, want the chunk's one", len(conv.Segments))
	}
}

// TestLongRecordingByPut: a 12-minute 16 kHz WAV (23 MB) sent as one PUT,
// with LETHE_MAX_CHUNK_BYTES at Cloud Run's 32 MiB, is decoded in pieces
// and transcribed whole; words from its first and last minutes find it.
func TestLongRecordingByPut(t *testing.T) {
	if testing.Short() {
		t.Skip("a 12-minute recording")
	}
	const total = 12 * time.Minute
	body := makeLongWAV(t, 16000, total)
	if len(body) <= 16<<20 || len(body) > cloudRunMaxBody {
		t.Fatalf("the recording is %d bytes: want more than the default chunk limit, within Cloud Run's", len(body))
	}
	rec := newTrimmingSTT(t)
	cfg := testConfig(t)
	cfg.MaxChunkBytes = cloudRunMaxBody
	p := startTestPipeline(t, cfg, overrides{STT: rec})
	tok, err := p.app.issuer.Mint("long-put-uid", time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	c := client{t, "http://" + p.addr, tok}
	// Another conversation first, so search has something to rank against.
	c.upload("dentist", 0, "speech-dentist.wav")
	c.waitDone("dentist", 1)
	rec.reset()
	if code := c.do("PUT", "/v1/conversations/twelve/chunks/0", "audio/wav", body, nil); code != http.StatusAccepted {
		t.Fatalf("PUT 12 minutes: %d", code)
	}
	checkLongTranscribed(t, c, rec, "twelve", total)
}
