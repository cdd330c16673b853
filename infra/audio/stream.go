package audio

import (
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"iter"
	"mime"
	"time"
)

// Stream decodes one recording a block at a time. Beyond the encoded body
// it holds one Opus packet of samples at most, so a 35-minute recording
// costs what its bytes cost, not three times that again as samples.
type Stream struct {
	rate int
	r    sampleReader
}

type sampleReader interface {
	// Read fills dst with mono samples; io.EOF once there are no more.
	Read(dst []int16) (int, error)
}

// Open checks the container and headers of body (as Decode does) and
// returns a Stream over its samples at their native rate (Opus: 16 kHz).
// Errors from Open and from Read wrap ErrUnsupported or ErrMalformed.
// The Stream aliases body: it must not change while the Stream is read.
func Open(contentType string, body []byte) (*Stream, error) {
	mt, params, err := mime.ParseMediaType(contentType)
	if err != nil {
		return nil, fmt.Errorf("%w: content type: %v", ErrUnsupported, err)
	}
	switch mt {
	case "audio/wav", "audio/wave", "audio/x-wav", "audio/vnd.wave":
		data, f, err := wavData(body)
		if err != nil {
			return nil, err
		}
		return pcmStream(&pcmFrames{data: data, channels: f.channels}, f.sampleRate)
	case "audio/l16":
		rate, channels, err := l16Format(params, body)
		if err != nil {
			return nil, err
		}
		return pcmStream(&pcmFrames{data: body, channels: channels, bigEndian: true}, rate)
	case "audio/ogg", "audio/opus":
		if c, ok := params["codecs"]; ok && c != "opus" {
			return nil, fmt.Errorf("%w: audio/ogg codec %q", ErrUnsupported, truncate(c))
		}
		r, err := openOggOpus(body, int(MaxDuration/time.Second)*STTRate)
		if err != nil {
			return nil, err
		}
		return &Stream{rate: STTRate, r: r}, nil
	default:
		return nil, fmt.Errorf("%w: media type %q", ErrUnsupported, truncate(mt))
	}
}

func pcmStream(f *pcmFrames, rate int) (*Stream, error) {
	if err := checkLength(int64(f.frames()), rate); err != nil {
		return nil, err
	}
	if f.frames() == 0 {
		return nil, fmt.Errorf("%w: no audio samples", ErrMalformed)
	}
	return &Stream{rate: rate, r: f}, nil
}

// SampleRate is the rate of the samples Read returns.
func (s *Stream) SampleRate() int { return s.rate }

// Read fills dst with mono samples; io.EOF once there are no more.
func (s *Stream) Read(dst []int16) (int, error) { return s.r.Read(dst) }

// Probe reads the whole stream without keeping it: what an intake needs
// to know that every byte decodes and how long the recording plays, in
// memory of one block. A recording without samples is malformed.
func Probe(contentType string, body []byte) (rate int, d time.Duration, err error) {
	s, err := Open(contentType, body)
	if err != nil {
		return 0, 0, err
	}
	buf := make([]int16, 4096)
	var n int64
	for {
		m, err := s.Read(buf)
		n += int64(m)
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			return 0, 0, err
		}
	}
	if n == 0 {
		return 0, 0, fmt.Errorf("%w: no audio samples", ErrMalformed)
	}
	return s.rate, time.Duration(n * int64(time.Second) / int64(s.rate)), nil
}

// pcmFrames converts interleaved 16-bit frames to mono on demand.
type pcmFrames struct {
	data      []byte
	channels  int
	bigEndian bool
}

func (f *pcmFrames) frames() int { return len(f.data) / (2 * f.channels) }

func (f *pcmFrames) Read(dst []int16) (int, error) {
	n := f.read(dst)
	if n == 0 && len(dst) > 0 {
		return 0, io.EOF
	}
	return n, nil
}

// read converts up to len(dst) frames and consumes them.
func (f *pcmFrames) read(dst []int16) int {
	frameSize := 2 * f.channels
	n := min(len(dst), f.frames())
	var order binary.ByteOrder = binary.LittleEndian
	if f.bigEndian {
		order = binary.BigEndian
	}
	for i := range n {
		b := f.data[i*frameSize:]
		s := int32(int16(order.Uint16(b)))
		if f.channels == 2 {
			s = (s + int32(int16(order.Uint16(b[2:])))) / 2
		}
		dst[i] = int16(s)
	}
	f.data = f.data[n*frameSize:]
	return n
}

// Segment is one piece of a recording, resampled for speech-to-text.
type Segment struct {
	Index int           // 0, 1, ... in order
	Start time.Duration // where it starts in the recording
	PCM   PCM
}

// Cutting is how Segments cuts a recording.
type Cutting struct {
	// Max is the longest piece; Search is how much of its end is searched
	// for the quietest moment to cut at (0: cut at Max exactly).
	Max, Search time.Duration
	// Rate is the sample rate of the pieces (0: the stream's own).
	Rate int
}

// DefaultCutting: one-minute pieces at most, cut in the quietest 20 ms of
// their last ten seconds, at the rate speech-to-text wants.
var DefaultCutting = Cutting{Max: time.Minute, Search: 10 * time.Second, Rate: STTRate}

// quietWindow is the span whose energy picks a cut.
const quietWindow = 20 * time.Millisecond

// Segments cuts s into consecutive pieces of at most c.Max, each cut where
// its last c.Search is quietest so that a cut falls between words where
// there is a pause. The same bytes and Cutting give the same pieces, which
// is what makes a piece a unit of work that can be retried alone. Memory:
// one piece at the native rate and one resampled, whatever the duration.
// A decoding error ends the sequence with that error.
func Segments(s *Stream, c Cutting) iter.Seq2[Segment, error] {
	return func(yield func(Segment, error) bool) {
		rate := s.rate
		maxN := max(1, int(int64(c.Max)*int64(rate)/int64(time.Second)))
		searchN := min(maxN-1, int(int64(c.Search)*int64(rate)/int64(time.Second)))
		win := max(1, int(int64(quietWindow)*int64(rate)/int64(time.Second)))
		buf := make([]int16, maxN)
		have := 0 // samples in buf
		var start int64
		eof := false
		for index := 0; ; index++ {
			for !eof && have < maxN {
				n, err := s.Read(buf[have:])
				have += n
				if errors.Is(err, io.EOF) {
					eof = true
				} else if err != nil {
					yield(Segment{}, err)
					return
				}
			}
			if have == 0 {
				return
			}
			cut := have
			if !eof && searchN >= win {
				cut = quietestCut(buf[:have], have-searchN, win)
			}
			p := PCM{SampleRate: rate, Samples: buf[:cut]}
			if c.Rate > 0 && c.Rate != rate {
				p = Resample(p, c.Rate)
			} else {
				p.Samples = append([]int16(nil), p.Samples...)
			}
			seg := Segment{Index: index, Start: time.Duration(start * int64(time.Second) / int64(rate)), PCM: p}
			if !yield(seg, nil) {
				return
			}
			start += int64(cut)
			have = copy(buf, buf[cut:have])
		}
	}
}

// quietestCut returns the end of the lowest-energy window of win samples
// that starts at or after from (ties: the later, so pieces stay long).
func quietestCut(s []int16, from, win int) int {
	from = max(0, from)
	best, bestAt := int64(-1), len(s)
	var e int64
	for i := from; i < len(s); i++ {
		v := int64(s[i])
		e += v * v
		if i-from >= win {
			o := int64(s[i-win])
			e -= o * o
		}
		if i-from+1 >= win && (best < 0 || e <= best) {
			best, bestAt = e, i+1
		}
	}
	return bestAt
}
