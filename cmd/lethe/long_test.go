package main

import (
	"context"
	"encoding/json"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/fsouza/fake-gcs-server/fakestorage"

	"github.com/lethe-dev/lethe/infra/audio"
	"github.com/lethe-dev/lethe/infra/stt"
	"github.com/lethe-dev/lethe/infra/stt/pocketsphinx"
)

// Sentences spoken at the start and at the end of the long recordings
// (espeak-ng's klatt2 voice, the one PocketSphinx recognises best; see
// testdata/README.md).
const (
	longFirstWords = "hello world this is a test of the memory pipeline"
	longLastWords  = "this is the end of the memory test"
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
// nothing. It records what it heard in every call.
type trimmingSTT struct {
	next  stt.Transcriber
	mu    sync.Mutex
	heard []heard
}

// heard is one call: its text, and how much silence led and trailed the
// sound in the piece (the first piece of a recording that starts speaking
// at once has next to none before; the last, next to none after).
type heard struct {
	text        string
	lead, trail time.Duration
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
	h := heard{
		lead:  time.Duration(lo) * time.Second / time.Duration(pcm.SampleRate),
		trail: time.Duration(len(pcm.Samples)-hi) * time.Second / time.Duration(pcm.SampleRate),
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
	h.text = tr.Text
	s.mu.Lock()
	s.heard = append(s.heard, h)
	s.mu.Unlock()
	return tr, nil
}

// reset forgets what was heard so far.
func (s *trimmingSTT) reset() {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.heard = nil
}

// firstAndLast returns the text of the piece whose sound starts at its
// very beginning and is followed by a long silence, and of the one whose
// sound runs to its very end: the recording's first and last minutes.
// Pieces are told by their sound, not by call order, which redeliveries
// running side by side interleave.
func (s *trimmingSTT) firstAndLast(t *testing.T) (first, last string) {
	t.Helper()
	s.mu.Lock()
	defer s.mu.Unlock()
	const edge = time.Second
	for _, h := range s.heard {
		if h.text == "" {
			continue
		}
		if h.lead < edge && h.trail > 10*edge {
			first = h.text
		}
		if h.trail < edge {
			last = h.text
		}
	}
	if first == "" || last == "" || first == last {
		t.Fatalf("no distinct first and last pieces with speech among %d recognised: %+v", len(s.heard), s.heard)
	}
	return first, last
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
	first, last := rec.firstAndLast(t)
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
	// One segment for the chunk, however many pieces and redeliveries,
	// and it covers the whole recording.
	var full struct {
		Segments []struct {
			DurationMS int64 `json:"duration_ms"`
		} `json:"segments"`
	}
	if code := c.do("GET", "/v1/conversations/"+cid, "", nil, &full); code != http.StatusOK || len(full.Segments) != 1 {
		t.Fatalf("conversation %s: %d, %d segments, want the chunk's one", cid, code, len(full.Segments))
	}
	if d := time.Duration(full.Segments[0].DurationMS) * time.Millisecond; d < total-time.Second || d > total+time.Second {
		t.Fatalf("the segment covers %s of the %s recording", d, total)
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

// TestLongRecordingBySignedUpload: a 35-minute recording (8 kHz WAV made
// at test time, 33.6 MB) PUT to a signed URL of fake-gcs-server under the
// default LETHE_MAX_UPLOAD_BYTES arrives by the bucket's notification and
// is transcribed whole, words from its first and last minutes found by
// search. An hour is refused before any URL is issued; a recording longer
// than it declared is refused when it arrives, never accepted.
func TestLongRecordingBySignedUpload(t *testing.T) {
	if testing.Short() {
		t.Skip("a 35-minute recording")
	}
	const total = 35 * time.Minute
	body := makeLongWAV(t, 8000, total)
	rec := newTrimmingSTT(t)
	maxUpload := parseBytes(t, configDefault(t, "LETHE_MAX_UPLOAD_BYTES"))
	p, gcs := startSignedUploadPipeline(t, "lethe-e2e-long", maxUpload, overrides{STT: rec})
	tok, err := p.app.issuer.Mint("long-upload-uid", time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	c := client{t, "http://" + p.addr, tok}
	ticket := func(cid, contentType string, size int, d time.Duration) (int, uploadURLReply) {
		t.Helper()
		var signed uploadURLReply
		req, _ := json.Marshal(map[string]any{"content_type": contentType, "size": size, "duration_ms": d.Milliseconds()})
		code := c.do("POST", "/v1/conversations/"+cid+"/chunks/0/upload-url", "application/json", req, &signed)
		return code, signed
	}

	// An hour of 8 kHz WAV fits the byte limit; its duration does not.
	if code, _ := ticket("hour", "audio/wav", 8000*2*3600+44, time.Hour); code != http.StatusRequestEntityTooLarge {
		t.Fatalf("upload-url for an hour: %d, want 413", code)
	}

	code, signed := ticket("thirtyfive", "audio/wav", len(body), total)
	if code != http.StatusOK {
		t.Fatalf("upload-url for 35 minutes: %d", code)
	}
	putSigned(t, gcs.URL(), signed, body)
	checkLongTranscribed(t, c, rec, "thirtyfive", total)

	// Declared 30 minutes, sends 41 (raw 8 kHz L16, 39 MB): the uploads
	// worker decodes what arrived, refuses it and deletes the upload.
	liar := make([]byte, 2*8000*int((41*time.Minute)/time.Second))
	code, signed = ticket("liar", "audio/L16;rate=8000", len(liar), 30*time.Minute)
	if code != http.StatusOK {
		t.Fatalf("upload-url for a declared 30 minutes: %d", code)
	}
	putSigned(t, gcs.URL(), signed, liar)
	waitFor(t, "the over-long upload to be refused and purged", func() bool {
		list, err := gcs.ListObjectsWithOptionsPaginated("lethe-e2e-long", fakestorage.ListOptions{Prefix: "uploads/", Versions: true})
		return err == nil && len(list.Objects) == 0
	})
	if code := c.do("GET", "/v1/conversations/liar", "", nil, nil); code != http.StatusNotFound {
		t.Fatalf("the over-long upload became a conversation: %d", code)
	}
}

func parseBytes(t *testing.T, s string) int64 {
	t.Helper()
	n, err := strconv.ParseInt(s, 10, 64)
	if err != nil {
		t.Fatal(err)
	}
	return n
}
