package audio

import (
	"encoding/binary"
	"math"
	"os"
	"path/filepath"
	"testing"
)

func readTestdata(t testing.TB, name string) []byte {
	t.Helper()
	b, err := os.ReadFile(filepath.Join("..", "..", "testdata", name))
	if err != nil {
		t.Fatalf("os.ReadFile: %v", err)
	}
	return b
}

// chunk is one RIFF chunk for building test WAV files; size overrides the
// declared size when non-nil.
type chunk struct {
	id   string
	body []byte
	size *uint32
	pad  bool // write the pad byte after an odd body
}

func u32(v uint32) *uint32 { return &v }

// riff builds RIFF/WAVE bytes from chunks; riffSize overrides the header's
// size field when non-nil.
func riff(riffSize *uint32, chunks ...chunk) []byte {
	b := []byte("RIFF\x00\x00\x00\x00WAVE")
	for _, c := range chunks {
		b = append(b, c.id...)
		size := uint32(len(c.body))
		if c.size != nil {
			size = *c.size
		}
		b = binary.LittleEndian.AppendUint32(b, size)
		b = append(b, c.body...)
		if c.pad && len(c.body)%2 == 1 {
			b = append(b, 0)
		}
	}
	size := uint32(len(b) - 8)
	if riffSize != nil {
		size = *riffSize
	}
	binary.LittleEndian.PutUint32(b[4:8], size)
	return b
}

// fmtChunk is a plain WAVE_FORMAT_PCM (or other tag) fmt body.
func fmtChunk(tag uint16, channels, rate, bits int) []byte {
	b := binary.LittleEndian.AppendUint16(nil, tag)
	b = binary.LittleEndian.AppendUint16(b, uint16(channels))
	b = binary.LittleEndian.AppendUint32(b, uint32(rate))
	align := channels * bits / 8
	b = binary.LittleEndian.AppendUint32(b, uint32(rate*align))
	b = binary.LittleEndian.AppendUint16(b, uint16(align))
	b = binary.LittleEndian.AppendUint16(b, uint16(bits))
	return b
}

// extensibleFmt is a WAVE_FORMAT_EXTENSIBLE fmt body with the given subformat code.
func extensibleFmt(sub uint16, channels, rate, bits, validBits int) []byte {
	b := fmtChunk(wavFormatExtensible, channels, rate, bits)
	b = binary.LittleEndian.AppendUint16(b, 22)
	b = binary.LittleEndian.AppendUint16(b, uint16(validBits))
	b = binary.LittleEndian.AppendUint32(b, 0x3) // front left | front right
	b = binary.LittleEndian.AppendUint16(b, sub)
	return append(b, wavGUIDTail...)
}

func le16(samples ...int16) []byte {
	var b []byte
	for _, s := range samples {
		b = binary.LittleEndian.AppendUint16(b, uint16(s))
	}
	return b
}

// oggPage builds one page with a correct CRC.
func oggPage(flags byte, granule int64, serial, seq uint32, lacing, body []byte) []byte {
	b := []byte("OggS\x00")
	b = append(b, flags)
	b = binary.LittleEndian.AppendUint64(b, uint64(granule))
	b = binary.LittleEndian.AppendUint32(b, serial)
	b = binary.LittleEndian.AppendUint32(b, seq)
	b = append(b, 0, 0, 0, 0, byte(len(lacing)))
	b = append(b, lacing...)
	b = append(b, body...)
	binary.LittleEndian.PutUint32(b[22:26], oggCRC(oggCRCTable(), b))
	return b
}

// oggMux lays packets out as one logical stream, at most maxSegs lacing
// values per page, so long packets span pages. granules[i] is the granule
// of packet i (used when it is the last packet ending on its page).
func oggMux(serial uint32, packets [][]byte, granules []int64, maxSegs int) []byte {
	type seg struct {
		n      byte
		packet int
		last   bool
	}
	var segs []seg
	for i, p := range packets {
		n := len(p)
		for n >= 255 {
			segs = append(segs, seg{255, i, false})
			n -= 255
		}
		segs = append(segs, seg{byte(n), i, true})
	}
	var out []byte
	var seq uint32
	continued := false
	offsets := make([]int, len(packets)) // bytes of packet i already written
	for start := 0; start < len(segs); start += maxSegs {
		end := min(start+maxSegs, len(segs))
		var lacing, body []byte
		granule := int64(-1)
		for _, s := range segs[start:end] {
			lacing = append(lacing, s.n)
			o := offsets[s.packet]
			body = append(body, packets[s.packet][o:o+int(s.n)]...)
			offsets[s.packet] += int(s.n)
			if s.last {
				granule = granules[s.packet]
			}
		}
		var flags byte
		if continued {
			flags |= oggFlagContinued
		}
		if start == 0 {
			flags |= oggFlagBOS
		}
		if end == len(segs) {
			flags |= oggFlagEOS
		}
		out = append(out, oggPage(flags, granule, serial, seq, lacing, body)...)
		seq++
		continued = !segs[end-1].last
	}
	return out
}

// opusStream re-muxes Opus audio packets behind the given headers, one page
// per header and then pages of up to 50 segments.
func opusStream(serial uint32, head, tags []byte, audio [][]byte, granuleStep int64) []byte {
	out := oggPage(oggFlagBOS, 0, serial, 0, []byte{byte(len(head))}, head)
	lacing := []byte{}
	n := len(tags)
	for n >= 255 {
		lacing = append(lacing, 255)
		n -= 255
	}
	lacing = append(lacing, byte(n))
	out = append(out, oggPage(0, 0, serial, 1, lacing, tags)...)
	seq := uint32(2)
	for i := 0; i < len(audio); i += 50 {
		end := min(i+50, len(audio))
		var l, body []byte
		for _, p := range audio[i:end] {
			l = append(l, byte(len(p))) // test packets are < 255 bytes
			body = append(body, p...)
		}
		var flags byte
		if end == len(audio) {
			flags = oggFlagEOS
		}
		out = append(out, oggPage(flags, int64(end)*granuleStep, serial, seq, l, body)...)
		seq++
	}
	return out
}

// opusHeadBytes is an RFC 7845 identification header.
func opusHeadBytes(channels byte, preSkip uint16, gain int16, family byte) []byte {
	b := []byte("OpusHead\x01")
	b = append(b, channels)
	b = binary.LittleEndian.AppendUint16(b, preSkip)
	b = binary.LittleEndian.AppendUint32(b, 16000)
	b = binary.LittleEndian.AppendUint16(b, uint16(gain))
	b = append(b, family)
	if family != 0 {
		b = append(b, 1, 0, 0) // stream count, coupled count, mapping
	}
	return b
}

func opusTagsBytes() []byte {
	b := []byte("OpusTags")
	b = binary.LittleEndian.AppendUint32(b, 4)
	b = append(b, "test"...)
	return binary.LittleEndian.AppendUint32(b, 0)
}

// testdataOpusPackets returns the audio packets of testdata/speech-hello.opus.
func testdataOpusPackets(t testing.TB) (head []byte, audio [][]byte) {
	t.Helper()
	i := 0
	err := demuxOgg(readTestdata(t, "speech-hello.opus"), func(p oggPacket) error {
		switch i {
		case 0:
			head = append([]byte(nil), p.Data...)
		case 1:
		default:
			audio = append(audio, append([]byte(nil), p.Data...))
		}
		i++
		return nil
	})
	if err != nil {
		t.Fatalf("demuxOgg: %v", err)
	}
	return head, audio
}

func sine(rate int, freq float64, seconds float64, amp float64) PCM {
	n := int(float64(rate) * seconds)
	s := make([]int16, n)
	for i := range s {
		s[i] = int16(amp * math.Sin(2*math.Pi*freq*float64(i)/float64(rate)))
	}
	return PCM{SampleRate: rate, Samples: s}
}

// rms over the middle of s, away from edge effects.
func rms(s []int16) float64 {
	s = s[len(s)/4 : 3*len(s)/4]
	var sum float64
	for _, v := range s {
		sum += float64(v) * float64(v)
	}
	return math.Sqrt(sum / float64(len(s)))
}

// correlation is the normalised cross-correlation of a and b at lag 0.
func correlation(a, b []int16) float64 {
	n := min(len(a), len(b))
	var ab, aa, bb float64
	for i := range n {
		x, y := float64(a[i]), float64(b[i])
		ab += x * y
		aa += x * x
		bb += y * y
	}
	return ab / math.Sqrt(aa*bb)
}
