package audio

import (
	"bytes"
	"fmt"

	"github.com/pion/opus"
)

// OpusPackets returns the audio packets of the first Opus stream of an Ogg
// Opus file (RFC 7845), without its headers: the raw packets a wearable
// streams. The packets alias body or a demuxer copy.
func OpusPackets(body []byte) ([][]byte, error) {
	var (
		serial   uint32
		selected bool
		headers  int
		packets  [][]byte
	)
	err := demuxOgg(body, func(p oggPacket) error {
		if !selected {
			if p.BOS && bytes.HasPrefix(p.Data, []byte("OpusHead")) {
				serial, selected, headers = p.Serial, true, 1
			}
			return nil
		}
		if p.Serial != serial {
			return nil
		}
		if headers < 2 { // OpusTags
			headers++
			return nil
		}
		packets = append(packets, p.Data)
		return nil
	})
	if err != nil {
		return nil, err
	}
	if !selected {
		return nil, fmt.Errorf("%w: ogg: no Opus stream", ErrUnsupported)
	}
	return packets, nil
}

// OpusPacketDecoder decodes raw Opus packets (no container) of one stream to
// mono PCM at STTRate. It keeps the decoder's state between packets, so a
// stream's packets go through one decoder in order. Not safe for concurrent
// use.
type OpusPacketDecoder struct {
	dec opus.Decoder
	buf []int16
}

// NewOpusPacketDecoder returns a decoder for one stream.
func NewOpusPacketDecoder() (*OpusPacketDecoder, error) {
	dec, err := opus.NewDecoderWithOutput(STTRate, 1)
	if err != nil {
		return nil, fmt.Errorf("opus.NewDecoderWithOutput: %w", err)
	}
	return &OpusPacketDecoder{dec: dec, buf: make([]int16, opusMaxPacketSamples)}, nil
}

// Decode decodes one packet; the samples are valid until the next call.
// A packet that does not decode (or that needs CELT, which the pure-Go
// decoder lacks) fails with ErrMalformed or ErrUnsupported.
func (d *OpusPacketDecoder) Decode(pkt []byte) ([]int16, error) {
	if len(pkt) == 0 {
		return nil, fmt.Errorf("%w: opus: empty packet", ErrMalformed)
	}
	n, err := d.dec.DecodeToInt16(pkt, d.buf)
	if err != nil {
		return nil, fmt.Errorf("%w: opus: packet (config %d): %v", ErrMalformed, pkt[0]>>3, err)
	}
	return d.buf[:n], nil
}
