// Package pocketsphinx is the embedded speech-to-text adapter: CMU
// PocketSphinx 0.8 (5prealpha) from Debian, driven through its
// pocketsphinx_continuous program. No network, no cgo.
//
// The audio (user content) never touches the disk: each call feeds it,
// resampled to 16 kHz raw PCM, through the recogniser's stdin, and reads its
// log from stderr, so a SIGKILL of either process leaves nothing behind.
// Only keyword and grammar files (operator configuration) go to a private
// directory (0700), removed before returning. The transcript is never
// logged.
package pocketsphinx

import (
	"bufio"
	"bytes"
	"cmp"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/lethe-dev/lethe/infra/audio"
	"github.com/lethe-dev/lethe/infra/stt"
)

// Model names the recogniser in every Transcript.
const Model = "pocketsphinx-en-us-0.8"

// InstallHint is the command that provides the binary and the model.
const InstallHint = "apt-get install pocketsphinx pocketsphinx-en-us"

// Debian's paths (packages pocketsphinx and pocketsphinx-en-us).
const (
	DefaultBinary           = "pocketsphinx_continuous"
	DefaultHMM              = "/usr/share/pocketsphinx/model/en-us/en-us"
	DefaultLM               = "/usr/share/pocketsphinx/model/en-us/en-us.lm.bin"
	DefaultDict             = "/usr/share/pocketsphinx/model/en-us/cmudict-en-us.dict"
	DefaultKeywordThreshold = 1e-30
)

const (
	maxStdout = 1 << 20 // a transcript of 10 minutes is a few KB with word times
	maxLog    = 1 << 20
	// Fixed cost (model load) plus a generous multiple of real time, for
	// when Config.Timeout is zero. Measured here: ~0.6 s per audio second.
	baseTimeout     = 30 * time.Second
	timeoutPerAudio = 3
)

// errOutputTooLarge: the recogniser printed more than maxStdout bytes.
var errOutputTooLarge = fmt.Errorf("recogniser output exceeds %d bytes", maxStdout)

// Config selects the binary, the model and the search mode. Keywords and
// Grammar are mutually exclusive; with neither, the n-gram LM is used.
type Config struct {
	Binary string // path or name looked up in PATH; default DefaultBinary
	HMM    string // acoustic model directory; default DefaultHMM
	LM     string // n-gram language model; default DefaultLM
	Dict   string // pronunciation dictionary; default DefaultDict

	// Keywords switches to keyphrase spotting: only these phrases are
	// reported, one segment per detection. Every word must be in Dict.
	Keywords []string
	// KeywordThreshold is -kws_threshold; lower finds more (and more false)
	// detections. Default DefaultKeywordThreshold.
	KeywordThreshold float64
	// Grammar is a JSGF grammar (see PhraseGrammar) that constrains what
	// can be recognised: the "phrase grammar".
	Grammar string

	// Timeout bounds one Transcribe call; zero means 30 s plus 3x the audio length.
	Timeout time.Duration
	// TempDir is where the private per-call directory for keyword and
	// grammar files is made; "" is os.TempDir(). Audio never goes there.
	TempDir string
}

// Transcriber implements stt.Transcriber. It holds no mutable state and is
// safe for concurrent use; each call runs its own process.
type Transcriber struct {
	cfg Config
}

var _ stt.Transcriber = (*Transcriber)(nil)

// New validates cfg and fills defaults. It does not require the recogniser
// to be installed: call Check for that (at start, to tell the operator).
func New(cfg Config) (*Transcriber, error) {
	if cfg.Binary == "" {
		cfg.Binary = DefaultBinary
	}
	if cfg.HMM == "" {
		cfg.HMM = DefaultHMM
	}
	if cfg.LM == "" {
		cfg.LM = DefaultLM
	}
	if cfg.Dict == "" {
		cfg.Dict = DefaultDict
	}
	if cfg.KeywordThreshold == 0 {
		cfg.KeywordThreshold = DefaultKeywordThreshold
	}
	if cfg.KeywordThreshold < 0 || cfg.KeywordThreshold > 1 {
		return nil, fmt.Errorf("pocketsphinx.New: keyword threshold %g outside (0, 1]", cfg.KeywordThreshold)
	}
	if cfg.Timeout < 0 {
		return nil, fmt.Errorf("pocketsphinx.New: negative timeout %s", cfg.Timeout)
	}
	if len(cfg.Keywords) > 0 && cfg.Grammar != "" {
		return nil, errors.New("pocketsphinx.New: Keywords and Grammar are mutually exclusive")
	}
	if cfg.Grammar != "" && (strings.ContainsRune(cfg.Grammar, 0) || !strings.Contains(cfg.Grammar, "public")) {
		return nil, errors.New("pocketsphinx.New: Grammar is not a JSGF grammar with a public rule")
	}
	kws := make([]string, 0, len(cfg.Keywords))
	for _, k := range cfg.Keywords {
		words, err := phraseWords(k)
		if err != nil {
			return nil, fmt.Errorf("pocketsphinx.New: keyword: %w", err)
		}
		kws = append(kws, strings.Join(words, " "))
	}
	cfg.Keywords = kws
	// A keyword missing from the dictionary is silently never found by
	// pocketsphinx_continuous, so refuse it here. A missing dictionary is
	// Check's business.
	if len(kws) > 0 {
		if err := checkInDict(cfg.Dict, kws); err != nil && !errors.Is(err, fs.ErrNotExist) {
			return nil, fmt.Errorf("pocketsphinx.New: %w", err)
		}
	}
	return &Transcriber{cfg: cfg}, nil
}

// Check reports, wrapping stt.ErrUnavailable, whether the binary and the
// model files are there, with the command that installs them.
func (t *Transcriber) Check() error {
	if _, err := t.binary(); err != nil {
		return err
	}
	files := []struct{ what, path string }{
		{"acoustic model", filepath.Join(t.cfg.HMM, "mdef")},
		{"acoustic model", filepath.Join(t.cfg.HMM, "means")},
		{"dictionary", t.cfg.Dict},
	}
	if len(t.cfg.Keywords) == 0 && t.cfg.Grammar == "" {
		files = append(files, struct{ what, path string }{"language model", t.cfg.LM})
	}
	for _, f := range files {
		fi, err := os.Stat(f.path)
		if err != nil || fi.IsDir() {
			return unavailable("%s %s not found", f.what, f.path)
		}
	}
	return nil
}

func unavailable(format string, args ...any) error {
	return fmt.Errorf("%w: pocketsphinx: %s (install with: %s)", stt.ErrUnavailable, fmt.Sprintf(format, args...), InstallHint)
}

func (t *Transcriber) binary() (string, error) {
	path, err := exec.LookPath(t.cfg.Binary)
	if err != nil {
		return "", unavailable("program %s not found", t.cfg.Binary)
	}
	return path, nil
}

// Transcribe recognises pcm (any rate; resampled to 16 kHz). Empty audio
// gives an empty transcript.
func (t *Transcriber) Transcribe(ctx context.Context, pcm audio.PCM) (stt.Transcript, error) {
	if pcm.SampleRate <= 0 {
		return stt.Transcript{}, fmt.Errorf("pocketsphinx: %w: sample rate %d", audio.ErrMalformed, pcm.SampleRate)
	}
	if len(pcm.Samples) == 0 {
		return stt.Transcript{Model: Model}, nil
	}
	bin, err := t.binary()
	if err != nil {
		return stt.Transcript{}, err
	}
	pcm = audio.Resample(pcm, audio.STTRate)

	timeout := t.cfg.Timeout
	if timeout == 0 {
		timeout = baseTimeout + timeoutPerAudio*audio.Duration(pcm)
	}
	ctx, cancelTimeout := context.WithTimeout(ctx, timeout)
	defer cancelTimeout()
	ctx, cancel := context.WithCancelCause(ctx)
	defer cancel(nil)

	// An -infile without the .wav suffix is read as raw little-endian
	// 16-bit PCM, sequentially: a pipe is enough.
	args := []string{
		"-infile", "/dev/stdin",
		"-hmm", t.cfg.HMM,
		"-dict", t.cfg.Dict,
		"-samprate", "16000",
		"-time", "yes",
	}
	dir := "/"
	if len(t.cfg.Keywords) > 0 || t.cfg.Grammar != "" {
		if dir, err = os.MkdirTemp(t.cfg.TempDir, "lethe-stt-"); err != nil { // mode 0700
			return stt.Transcript{}, fmt.Errorf("pocketsphinx: os.MkdirTemp: %w", err)
		}
		defer os.RemoveAll(dir)
	}
	switch {
	case len(t.cfg.Keywords) > 0:
		kws := filepath.Join(dir, "keywords.txt")
		if err := writePrivate(kws, []byte(strings.Join(t.cfg.Keywords, "\n")+"\n")); err != nil {
			return stt.Transcript{}, err
		}
		args = append(args, "-kws", kws, "-kws_threshold", strconv.FormatFloat(t.cfg.KeywordThreshold, 'g', -1, 64))
	case t.cfg.Grammar != "":
		gram := filepath.Join(dir, "grammar.gram")
		if err := writePrivate(gram, []byte(t.cfg.Grammar)); err != nil {
			return stt.Transcript{}, err
		}
		args = append(args, "-jsgf", gram)
	default:
		args = append(args, "-lm", t.cfg.LM)
	}

	// Too much output means something is wrong: stop the process at once.
	stdout := &boundedBuffer{limit: maxStdout, overflowed: func() { cancel(errOutputTooLarge) }}
	stderr := &boundedBuffer{limit: maxLog}       // the decoder log
	cmd := exec.CommandContext(ctx, bin, args...) // no shell: paths are arguments
	cmd.Dir = dir
	cmd.Env = []string{"LC_ALL=C"}
	cmd.Stdin = bytes.NewReader(rawPCM(pcm))
	cmd.Stdout = stdout
	cmd.Stderr = stderr
	cmd.WaitDelay = 2 * time.Second // do not hang on pipes after a kill
	runErr := cmd.Run()

	if ctx.Err() != nil {
		return stt.Transcript{}, fmt.Errorf("pocketsphinx: %s: %w", filepath.Base(bin), context.Cause(ctx))
	}
	if stdout.overflow {
		return stt.Transcript{}, fmt.Errorf("pocketsphinx: %w", errOutputTooLarge)
	}
	if runErr != nil {
		var ee *exec.ExitError
		if errors.As(runErr, &ee) {
			return stt.Transcript{}, fmt.Errorf("pocketsphinx: %s: %v: %s", filepath.Base(bin), runErr, firstLogError(stderr.Bytes()))
		}
		if errors.Is(runErr, fs.ErrNotExist) || errors.Is(runErr, fs.ErrPermission) {
			return stt.Transcript{}, unavailable("cannot run %s: %v", bin, runErr)
		}
		return stt.Transcript{}, fmt.Errorf("pocketsphinx: exec.Cmd.Run: %w", runErr)
	}
	tr := parseOutput(stdout.Bytes(), len(t.cfg.Keywords) > 0)
	tr.Model = Model
	return tr, nil
}

// rawPCM is pcm as little-endian 16-bit samples, what the recogniser reads
// from a file without a WAV header.
func rawPCM(pcm audio.PCM) []byte {
	out := make([]byte, 2*len(pcm.Samples))
	for i, s := range pcm.Samples {
		binary.LittleEndian.PutUint16(out[2*i:], uint16(s))
	}
	return out
}

func writePrivate(path string, data []byte) error {
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
	if err != nil {
		return fmt.Errorf("pocketsphinx: os.OpenFile: %w", err)
	}
	if _, err := f.Write(data); err != nil {
		f.Close()
		return fmt.Errorf("pocketsphinx: write %s: %w", filepath.Base(path), err)
	}
	if err := f.Close(); err != nil {
		return fmt.Errorf("pocketsphinx: close %s: %w", filepath.Base(path), err)
	}
	return nil
}

// firstLogError returns the first ERROR or FATAL line of the decoder log:
// these name files, options and grammar words, never recognised speech.
func firstLogError(log []byte) string {
	if len(log) == 0 {
		return "no decoder log"
	}
	sc := bufio.NewScanner(bytes.NewReader(log))
	sc.Buffer(make([]byte, 0, 4096), 64<<10)
	for sc.Scan() {
		line := sc.Text()
		if strings.HasPrefix(line, "ERROR:") || strings.HasPrefix(line, "FATAL") {
			if len(line) > 300 {
				line = line[:300]
			}
			return line
		}
	}
	return "no error in decoder log"
}

// boundedBuffer keeps the first limit bytes and records that more came,
// while still accepting writes so the child never blocks on a full pipe.
// It must not embed bytes.Buffer: io.Copy would use the promoted ReadFrom
// and bypass the limit.
type boundedBuffer struct {
	buf        bytes.Buffer
	limit      int
	overflow   bool
	overflowed func() // called once, when the limit is first passed
}

func (b *boundedBuffer) Write(p []byte) (int, error) {
	if room := b.limit - b.buf.Len(); room < len(p) {
		if !b.overflow && b.overflowed != nil {
			b.overflowed()
		}
		b.overflow = true
		b.buf.Write(p[:max(room, 0)])
		return len(p), nil
	}
	return b.buf.Write(p)
}

func (b *boundedBuffer) Bytes() []byte { return b.buf.Bytes() }

// phraseWords lower-cases a phrase and checks it is plain words, so it can
// go into a keyword file or a JSGF rule without escaping.
func phraseWords(phrase string) ([]string, error) {
	words := strings.Fields(strings.ToLower(phrase))
	if len(words) == 0 {
		return nil, errors.New("empty phrase")
	}
	for _, w := range words {
		for _, r := range w {
			if (r < 'a' || r > 'z') && r != '\'' && r != '-' && r != '.' {
				return nil, fmt.Errorf("phrase word %q: only letters, apostrophes, hyphens and dots", w)
			}
		}
	}
	return words, nil
}

// PhraseGrammar builds a JSGF grammar that accepts any sequence of the
// given phrases, for Config.Grammar.
func PhraseGrammar(phrases []string) (string, error) {
	if len(phrases) == 0 {
		return "", errors.New("pocketsphinx.PhraseGrammar: no phrases")
	}
	alts := make([]string, 0, len(phrases))
	for _, p := range phrases {
		words, err := phraseWords(p)
		if err != nil {
			return "", fmt.Errorf("pocketsphinx.PhraseGrammar: %w", err)
		}
		alts = append(alts, strings.Join(words, " "))
	}
	return "#JSGF V1.0;\ngrammar lethe;\npublic <utterance> = ( " + strings.Join(alts, " | ") + " ) + ;\n", nil
}

// checkInDict reports the first keyword word that the dictionary lacks.
func checkInDict(dictPath string, phrases []string) error {
	need := map[string]bool{}
	for _, p := range phrases {
		for _, w := range strings.Fields(p) {
			need[w] = false
		}
	}
	f, err := os.Open(dictPath)
	if err != nil {
		return err
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		line := sc.Text()
		word, _, _ := strings.Cut(line, " ")
		if i := strings.IndexByte(word, '('); i > 0 {
			word = word[:i] // alternative pronunciation: "word(2)"
		}
		if _, ok := need[word]; ok {
			need[word] = true
		}
	}
	if err := sc.Err(); err != nil {
		return fmt.Errorf("read dictionary: %w", err)
	}
	var missing []string
	for w, found := range need {
		if !found {
			missing = append(missing, w)
		}
	}
	if len(missing) > 0 {
		slices.Sort(missing)
		return fmt.Errorf("keyword words not in dictionary %s: %s", dictPath, strings.Join(missing, ", "))
	}
	return nil
}

// parseOutput reads pocketsphinx_continuous -time yes output: per utterance
// one hypothesis line, then "word start end confidence" lines with times in
// seconds from the start of the file. In keyword mode a "word" is a whole
// detected phrase and each detection becomes its own segment.
func parseOutput(out []byte, keywords bool) stt.Transcript {
	type utterance struct {
		hyp   string
		words []stt.Segment
	}
	var utts []utterance
	sc := bufio.NewScanner(bytes.NewReader(out))
	sc.Buffer(make([]byte, 0, 4096), maxStdout)
	for sc.Scan() {
		fields := strings.Fields(sc.Text())
		if w, ok := wordLine(fields); ok {
			if len(utts) == 0 {
				utts = append(utts, utterance{})
			}
			u := &utts[len(utts)-1]
			if w.Text != "" {
				u.words = append(u.words, w)
			}
			continue
		}
		utts = append(utts, utterance{hyp: strings.Join(fields, " ")})
	}

	var segs []stt.Segment
	for _, u := range utts {
		switch {
		case len(u.words) == 0:
			// No word times (should not happen with -time yes): keep the text.
			if text := cleanWords(strings.Fields(u.hyp)); text != "" {
				segs = append(segs, stt.Segment{Text: text, Speaker: -1})
			}
		case keywords:
			segs = append(segs, u.words...)
		default:
			texts := make([]string, len(u.words))
			for i, w := range u.words {
				texts[i] = w.Text
			}
			segs = append(segs, stt.Segment{
				StartMS: u.words[0].StartMS,
				EndMS:   u.words[len(u.words)-1].EndMS,
				Text:    strings.Join(texts, " "),
				Speaker: -1,
			})
		}
	}
	slices.SortStableFunc(segs, func(a, b stt.Segment) int { return cmp.Compare(a.StartMS, b.StartMS) })
	texts := make([]string, len(segs))
	for i, s := range segs {
		texts[i] = s.Text
	}
	return stt.Transcript{Text: strings.Join(texts, " "), Segments: segs}
}

// wordLine parses "w1 [w2 ...] start end confidence"; fillers and silence
// come back with empty Text.
func wordLine(fields []string) (stt.Segment, bool) {
	n := len(fields)
	if n < 4 {
		return stt.Segment{}, false
	}
	var v [3]float64
	for i := range v {
		f, err := strconv.ParseFloat(fields[n-3+i], 64)
		if err != nil || f < 0 || f > 1e6 {
			return stt.Segment{}, false
		}
		v[i] = f
	}
	if v[1] < v[0] {
		return stt.Segment{}, false
	}
	return stt.Segment{
		StartMS: int64(v[0]*1000 + 0.5),
		EndMS:   int64(v[1]*1000 + 0.5),
		Text:    cleanWords(fields[:n-3]),
		Speaker: -1,
	}, true
}

// cleanWords drops sentence markers, silence and noise fillers and strips
// alternative-pronunciation suffixes ("the(2)").
func cleanWords(words []string) string {
	out := make([]string, 0, len(words))
	for _, w := range words {
		if w == "" || w == "(NULL)" || w[0] == '<' || w[0] == '[' || strings.HasPrefix(w, "++") {
			continue
		}
		if i := strings.IndexByte(w, '('); i > 0 && strings.HasSuffix(w, ")") {
			w = w[:i]
		}
		out = append(out, w)
	}
	return strings.Join(out, " ")
}
