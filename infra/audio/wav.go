package audio

import (
	"bytes"
	"encoding/binary"
	"fmt"
)

const (
	wavFormatPCM        = 0x0001
	wavFormatFloat      = 0x0003
	wavFormatExtensible = 0xFFFE
	// streamingSize is what writers that cannot seek back leave in size fields.
	streamingSize = 0xFFFFFFFF
)

// ksdataformatSubtypePCM minus its first two bytes (the format code).
var wavGUIDTail = []byte{0x00, 0x00, 0x00, 0x00, 0x10, 0x00, 0x80, 0x00, 0x00, 0xAA, 0x00, 0x38, 0x9B, 0x71}

type wavFormat struct {
	channels   int
	sampleRate int
}

// decodeWAV parses RIFF/WAVE PCM16, mono or stereo (downmixed). Sizes in the
// file are only trusted after checking them against the bytes we hold, so
// nothing is allocated beyond len(body).
func decodeWAV(body []byte) (PCM, error) {
	data, f, err := wavData(body)
	if err != nil {
		return PCM{}, err
	}
	return pcm16LE(data, f)
}

// wavData finds the sample bytes of a RIFF/WAVE PCM16 file (whole frames,
// aliasing body) and their format, without converting any.
func wavData(body []byte) ([]byte, wavFormat, error) {
	if len(body) < 12 {
		return nil, wavFormat{}, fmt.Errorf("%w: wav: %d bytes is shorter than a RIFF header", ErrMalformed, len(body))
	}
	switch string(body[0:4]) {
	case "RIFF":
	case "RIFX", "RF64", "BW64":
		return nil, wavFormat{}, fmt.Errorf("%w: wav: %q container", ErrUnsupported, body[0:4])
	default:
		return nil, wavFormat{}, fmt.Errorf("%w: wav: no RIFF magic", ErrMalformed)
	}
	if string(body[8:12]) != "WAVE" {
		return nil, wavFormat{}, fmt.Errorf("%w: wav: RIFF form is not WAVE", ErrMalformed)
	}
	riffSize := binary.LittleEndian.Uint32(body[4:8])
	streaming := riffSize == 0 || riffSize == streamingSize

	var format *wavFormat
	off := 12
	for {
		if len(body)-off < 8 {
			if format == nil {
				return nil, wavFormat{}, fmt.Errorf("%w: wav: no fmt chunk", ErrMalformed)
			}
			return nil, wavFormat{}, fmt.Errorf("%w: wav: no data chunk", ErrMalformed)
		}
		id := string(body[off : off+4])
		size := binary.LittleEndian.Uint32(body[off+4 : off+8])
		off += 8
		remaining := len(body) - off

		if id == "data" {
			if format == nil {
				return nil, wavFormat{}, fmt.Errorf("%w: wav: data chunk before fmt chunk", ErrMalformed)
			}
			var data []byte
			switch {
			case size == streamingSize || (size == 0 && streaming):
				// Written by a streaming encoder: the data runs to the end,
				// and a cut-off final frame is dropped.
				data = body[off:]
				data = data[:len(data)-len(data)%(2*format.channels)]
			case uint64(size) > uint64(remaining):
				return nil, wavFormat{}, fmt.Errorf("%w: wav: data chunk of %d bytes but only %d remain", ErrMalformed, size, remaining)
			default:
				data = body[off : off+int(size)]
				if len(data)%(2*format.channels) != 0 {
					return nil, wavFormat{}, fmt.Errorf("%w: wav: data chunk of %d bytes is not whole frames", ErrMalformed, size)
				}
			}
			return data, *format, nil
		}

		if uint64(size) > uint64(remaining) {
			return nil, wavFormat{}, fmt.Errorf("%w: wav: %q chunk of %d bytes but only %d remain", ErrMalformed, sanitizeID(id), size, remaining)
		}
		chunk := body[off : off+int(size)]
		if id == "fmt " {
			if format != nil {
				return nil, wavFormat{}, fmt.Errorf("%w: wav: second fmt chunk", ErrMalformed)
			}
			f, err := parseWAVFormat(chunk)
			if err != nil {
				return nil, wavFormat{}, err
			}
			format = &f
		}
		// Chunks are word-aligned; a missing final pad byte is tolerated.
		off += int(size) + int(size&1)
		if off > len(body) {
			off = len(body)
		}
	}
}

func parseWAVFormat(c []byte) (wavFormat, error) {
	if len(c) < 16 {
		return wavFormat{}, fmt.Errorf("%w: wav: fmt chunk of %d bytes", ErrMalformed, len(c))
	}
	tag := binary.LittleEndian.Uint16(c[0:2])
	channels := int(binary.LittleEndian.Uint16(c[2:4]))
	rate := int(binary.LittleEndian.Uint32(c[4:8]))
	blockAlign := int(binary.LittleEndian.Uint16(c[12:14]))
	bits := int(binary.LittleEndian.Uint16(c[14:16]))

	if tag == wavFormatExtensible {
		if len(c) < 40 || binary.LittleEndian.Uint16(c[16:18]) < 22 {
			return wavFormat{}, fmt.Errorf("%w: wav: WAVE_FORMAT_EXTENSIBLE fmt chunk too short", ErrMalformed)
		}
		if !bytes.Equal(c[26:40], wavGUIDTail) {
			return wavFormat{}, fmt.Errorf("%w: wav: extensible subformat is not a WAVE format GUID", ErrUnsupported)
		}
		tag = binary.LittleEndian.Uint16(c[24:26])
		if valid := int(binary.LittleEndian.Uint16(c[18:20])); valid != 0 && valid != bits {
			return wavFormat{}, fmt.Errorf("%w: wav: %d valid bits in %d-bit container", ErrUnsupported, valid, bits)
		}
	}
	switch tag {
	case wavFormatPCM:
	case wavFormatFloat:
		return wavFormat{}, fmt.Errorf("%w: wav: IEEE float samples", ErrUnsupported)
	default:
		return wavFormat{}, fmt.Errorf("%w: wav: format tag 0x%04x", ErrUnsupported, tag)
	}
	if channels == 0 {
		return wavFormat{}, fmt.Errorf("%w: wav: zero channels", ErrMalformed)
	}
	if channels > 2 {
		return wavFormat{}, fmt.Errorf("%w: wav: %d channels", ErrUnsupported, channels)
	}
	if bits != 16 {
		return wavFormat{}, fmt.Errorf("%w: wav: %d-bit PCM", ErrUnsupported, bits)
	}
	if blockAlign != 2*channels {
		return wavFormat{}, fmt.Errorf("%w: wav: block align %d for %d channels of 16 bits", ErrMalformed, blockAlign, channels)
	}
	if err := checkRate(rate); err != nil {
		return wavFormat{}, err
	}
	return wavFormat{channels: channels, sampleRate: rate}, nil
}

// pcm16LE turns little-endian interleaved frames into mono samples.
func pcm16LE(data []byte, f wavFormat) (PCM, error) {
	frames := &pcmFrames{data: data, channels: f.channels}
	if err := checkLength(int64(frames.frames()), f.sampleRate); err != nil {
		return PCM{}, err
	}
	out := make([]int16, frames.frames())
	frames.read(out)
	return PCM{SampleRate: f.sampleRate, Samples: out}, nil
}

// sanitizeID keeps chunk ids printable in error messages.
func sanitizeID(id string) string {
	b := []byte(id)
	for i, c := range b {
		if c < 0x20 || c > 0x7e {
			b[i] = '?'
		}
	}
	return string(b)
}

// EncodeWAV writes p as a canonical 44-byte-header mono PCM16 WAV file.
func EncodeWAV(p PCM) []byte {
	out := make([]byte, WAVHeaderLen+2*len(p.Samples))
	PutWAVHeader(out, p.SampleRate, len(p.Samples))
	for i, s := range p.Samples {
		binary.LittleEndian.PutUint16(out[WAVHeaderLen+2*i:], uint16(s))
	}
	return out
}

// WAVHeaderLen is the length of the header PutWAVHeader writes.
const WAVHeaderLen = 44

// PutWAVHeader writes into b[:WAVHeaderLen] the canonical header of a mono
// PCM16 WAV file of samples samples at sampleRate, whose little-endian
// samples follow: a stream buffers its audio behind it, ready to send.
func PutWAVHeader(b []byte, sampleRate, samples int) {
	dataLen := 2 * samples
	copy(b[0:4], "RIFF")
	binary.LittleEndian.PutUint32(b[4:8], uint32(36+dataLen))
	copy(b[8:16], "WAVEfmt ")
	binary.LittleEndian.PutUint32(b[16:20], 16)
	binary.LittleEndian.PutUint16(b[20:22], wavFormatPCM)
	binary.LittleEndian.PutUint16(b[22:24], 1)
	binary.LittleEndian.PutUint32(b[24:28], uint32(sampleRate))
	binary.LittleEndian.PutUint32(b[28:32], uint32(2*sampleRate))
	binary.LittleEndian.PutUint16(b[32:34], 2)
	binary.LittleEndian.PutUint16(b[34:36], 16)
	copy(b[36:40], "data")
	binary.LittleEndian.PutUint32(b[40:44], uint32(dataLen))
}
