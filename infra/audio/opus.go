package audio

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"math"
	"time"

	"github.com/pion/opus"
)

// Ogg Opus (RFC 7845): an identification header "OpusHead", a comment
// header "OpusTags", then one Opus packet per Ogg packet. Granule positions
// count 48 kHz samples including the pre-skip.
const (
	opusGranuleRate = 48000
	// 120 ms, the longest packet RFC 6716 allows, at STTRate.
	opusMaxPacketSamples = STTRate * 120 / 1000
)

type opusHead struct {
	channels int
	preSkip  int
	gain     int16 // Q7.8 dB
}

func parseOpusHead(p []byte) (opusHead, error) {
	if len(p) < 19 || !bytes.HasPrefix(p, []byte("OpusHead")) {
		return opusHead{}, fmt.Errorf("%w: opus: short OpusHead", ErrMalformed)
	}
	if p[8]>>4 != 0 {
		// Major version bumps are incompatible by definition (RFC 7845 5.1).
		return opusHead{}, fmt.Errorf("%w: opus: OpusHead version %d", ErrUnsupported, p[8])
	}
	h := opusHead{
		channels: int(p[9]),
		preSkip:  int(binary.LittleEndian.Uint16(p[10:12])),
		gain:     int16(binary.LittleEndian.Uint16(p[16:18])),
	}
	if h.channels == 0 {
		return opusHead{}, fmt.Errorf("%w: opus: zero channels", ErrMalformed)
	}
	if family := p[18]; family != 0 {
		return opusHead{}, fmt.Errorf("%w: opus: channel mapping family %d (multistream)", ErrUnsupported, family)
	}
	if h.channels > 2 {
		return opusHead{}, fmt.Errorf("%w: opus: %d channels with mapping family 0", ErrMalformed, h.channels)
	}
	return h, nil
}

// decodeOggOpus demuxes the first Opus stream of an Ogg file and decodes it
// to 16 kHz mono (the decoder downmixes and resamples internally), failing
// with ErrUnsupported past maxSamples: before decoding when the final
// granule position says so, and by the decoded length whatever it says.
func decodeOggOpus(body []byte, maxSamples int) (PCM, error) {
	r, err := openOggOpus(body, maxSamples)
	if err != nil {
		return PCM{}, err
	}
	var out []int16
	buf := make([]int16, opusMaxPacketSamples)
	for {
		n, err := r.Read(buf)
		out = append(out, buf[:n]...)
		if errors.Is(err, io.EOF) {
			return PCM{SampleRate: STTRate, Samples: out}, nil
		}
		if err != nil {
			return PCM{}, err
		}
	}
}

// opusReader decodes the packets of one Opus stream on demand: memory
// beyond the encoded body is one packet of samples, however long the
// recording.
type opusReader struct {
	dec        opus.Decoder
	packets    [][]byte // alias the body (or a demuxer copy): bounded by it
	next       int      // index of the next packet to decode
	buf        []int16  // one decoded packet
	pending    []int16  // what is left of buf to hand out
	decoded    int64    // samples decoded so far, pre-skip included
	preSkip    int64    // samples to drop at the start
	keep       int64    // samples to hand out up to (pre-skip included); -1: all
	maxSamples int64
	gain       float64 // linear; 1: none
	tooLong    error
}

// openOggOpus demuxes and checks the headers; decoding happens in Read.
func openOggOpus(body []byte, maxSamples int) (*opusReader, error) {
	var (
		serial      uint32
		selected    bool
		ended       bool
		head        opusHead
		gotTags     bool
		lastGranule int64 = -1
		packets     [][]byte
	)
	err := demuxOgg(body, func(p oggPacket) error {
		if !selected {
			if !p.BOS || !bytes.HasPrefix(p.Data, []byte("OpusHead")) {
				return nil // another codec's stream, e.g. Skeleton
			}
			h, err := parseOpusHead(p.Data)
			if err != nil {
				return err
			}
			head, serial, selected = h, p.Serial, true
			if p.Granule > 0 {
				return fmt.Errorf("%w: opus: OpusHead page has granule %d", ErrMalformed, p.Granule)
			}
			return nil
		}
		if p.Serial != serial {
			if p.BOS && ended && bytes.HasPrefix(p.Data, []byte("OpusHead")) {
				return fmt.Errorf("%w: opus: chained streams", ErrUnsupported)
			}
			return nil
		}
		if !gotTags {
			if !bytes.HasPrefix(p.Data, []byte("OpusTags")) {
				return fmt.Errorf("%w: opus: second packet is not OpusTags", ErrMalformed)
			}
			gotTags = true
			return nil
		}
		if len(p.Data) == 0 {
			return fmt.Errorf("%w: opus: audio packet %d is empty", ErrMalformed, len(packets)+1)
		}
		packets = append(packets, p.Data) // aliases body or a demuxer copy: bounded by len(body)
		if p.Granule >= 0 {
			lastGranule = p.Granule
		}
		ended = ended || p.EOS
		return nil
	})
	if err != nil {
		return nil, err
	}
	if !selected {
		return nil, fmt.Errorf("%w: ogg: no Opus stream", ErrUnsupported)
	}
	if !gotTags {
		return nil, fmt.Errorf("%w: opus: no OpusTags header", ErrMalformed)
	}
	tooLong := fmt.Errorf("%w of %s", ErrTooLong, time.Duration(maxSamples)*time.Second/STTRate)
	if lastGranule-int64(head.preSkip) > int64(maxSamples)*opusGranuleRate/STTRate {
		return nil, tooLong
	}

	dec, err := opus.NewDecoderWithOutput(STTRate, 1)
	if err != nil {
		return nil, fmt.Errorf("opus.NewDecoderWithOutput: %w", err)
	}
	r := &opusReader{
		dec: dec, packets: packets, buf: make([]int16, opusMaxPacketSamples),
		preSkip: int64(head.preSkip * STTRate / opusGranuleRate), keep: -1,
		maxSamples: int64(maxSamples), gain: 1, tooLong: tooLong,
	}
	if lastGranule >= int64(head.preSkip) {
		r.keep = lastGranule * STTRate / opusGranuleRate
	}
	if head.gain != 0 {
		r.gain = math.Pow(10, float64(head.gain)/(20*256))
	}
	return r, nil
}

// Read fills dst with decoded samples; io.EOF once the stream is done.
func (r *opusReader) Read(dst []int16) (int, error) {
	n := 0
	for n < len(dst) {
		if len(r.pending) == 0 {
			if r.next == len(r.packets) || (r.keep >= 0 && r.decoded >= r.keep) {
				break
			}
			pkt := r.packets[r.next]
			r.packets[r.next] = nil
			r.next++
			m, err := r.dec.DecodeToInt16(pkt, r.buf)
			if err != nil {
				return n, fmt.Errorf("%w: opus: audio packet %d (config %d): %v", ErrMalformed, r.next, pkt[0]>>3, err)
			}
			start, end := r.decoded, r.decoded+int64(m)
			r.decoded = end
			if end > r.maxSamples+r.preSkip {
				return n, r.tooLong
			}
			// Hand out only what lies after the pre-skip and before the
			// final granule position.
			lo, hi := max(start, r.preSkip), end
			if r.keep >= 0 {
				hi = min(hi, r.keep)
			}
			if lo >= hi {
				continue
			}
			r.pending = r.buf[lo-start : hi-start]
		}
		c := copy(dst[n:], r.pending)
		if r.gain != 1 {
			for i, s := range dst[n : n+c] {
				dst[n+i] = clamp16(float64(s) * r.gain)
			}
		}
		r.pending = r.pending[c:]
		n += c
	}
	if n == 0 {
		return 0, io.EOF
	}
	return n, nil
}

func clamp16(v float64) int16 {
	switch {
	case v >= math.MaxInt16:
		return math.MaxInt16
	case v <= math.MinInt16:
		return math.MinInt16
	}
	return int16(math.Round(v))
}
