package audio

import (
	"bytes"
	"encoding/binary"
	"fmt"
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
		return PCM{}, err
	}
	if !selected {
		return PCM{}, fmt.Errorf("%w: ogg: no Opus stream", ErrUnsupported)
	}
	if !gotTags {
		return PCM{}, fmt.Errorf("%w: opus: no OpusTags header", ErrMalformed)
	}
	tooLong := fmt.Errorf("%w: audio longer than %s", ErrUnsupported, time.Duration(maxSamples)*time.Second/STTRate)
	if lastGranule-int64(head.preSkip) > int64(maxSamples)*opusGranuleRate/STTRate {
		return PCM{}, tooLong
	}

	dec, err := opus.NewDecoderWithOutput(STTRate, 1)
	if err != nil {
		return PCM{}, fmt.Errorf("opus.NewDecoderWithOutput: %w", err)
	}
	preSkip := head.preSkip * STTRate / opusGranuleRate
	buf := make([]int16, opusMaxPacketSamples)
	var out []int16
	for i, pkt := range packets {
		n, err := dec.DecodeToInt16(pkt, buf)
		if err != nil {
			return PCM{}, fmt.Errorf("%w: opus: audio packet %d (config %d): %v", ErrMalformed, i+1, pkt[0]>>3, err)
		}
		if len(out)+n > maxSamples+preSkip {
			return PCM{}, tooLong
		}
		out = append(out, buf[:n]...)
	}

	// The final granule says how many samples are real; the rest is
	// encoder padding (RFC 7845 4.5). Then drop the pre-skip.
	if lastGranule >= int64(head.preSkip) {
		keep := lastGranule * STTRate / opusGranuleRate
		if keep < int64(len(out)) {
			out = out[:keep]
		}
	}
	out = out[min(preSkip, len(out)):]

	if head.gain != 0 {
		g := math.Pow(10, float64(head.gain)/(20*256))
		for i, s := range out {
			out[i] = clamp16(float64(s) * g)
		}
	}
	return PCM{SampleRate: STTRate, Samples: out}, nil
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
