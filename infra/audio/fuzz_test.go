package audio

import (
	"encoding/binary"
	"errors"
	"testing"
	"time"
)

// Fuzz seeds are cut to a few KB so each execution stays fast.
func seedPrefix(b []byte) []byte { return b[:min(len(b), 4096)] }

func FuzzDecodeWAV(f *testing.F) {
	f.Add(seedPrefix(readTestdata(f, "speech-hello.wav")))
	f.Add(seedPrefix(readTestdata(f, "speech-hello-44100-stereo.wav")))
	mono := fmtChunk(wavFormatPCM, 1, 16000, 16)
	f.Add(riff(nil, chunk{id: "JUNK", body: []byte{1, 2, 3}, pad: true}, chunk{id: "fmt ", body: mono}, chunk{id: "data", body: le16(1, 2)}))
	f.Add(riff(u32(streamingSize), chunk{id: "fmt ", body: extensibleFmt(wavFormatPCM, 2, 48000, 16, 16)}, chunk{id: "data", size: u32(streamingSize), body: le16(1, 2, 3)}))
	f.Fuzz(func(t *testing.T, body []byte) {
		p, err := decodeWAV(body)
		if err != nil {
			if !errors.Is(err, ErrMalformed) && !errors.Is(err, ErrUnsupported) {
				t.Fatalf("untyped error %v", err)
			}
			return
		}
		// Output is bounded by the bytes given, whatever the header says.
		if 2*len(p.Samples) > len(body) {
			t.Fatalf("%d samples from %d bytes", len(p.Samples), len(body))
		}
		if p.SampleRate < MinSampleRate || p.SampleRate > MaxSampleRate {
			t.Fatalf("rate %d", p.SampleRate)
		}
	})
}

func FuzzDemuxOgg(f *testing.F) {
	f.Add(seedPrefix(readTestdata(f, "speech-hello.opus")))
	f.Add(oggMux(5, [][]byte{[]byte("a"), make([]byte, 600), {}}, []int64{0, 1, 2}, 2))
	f.Fuzz(func(t *testing.T, data []byte) {
		total := 0
		err := demuxOgg(data, func(p oggPacket) error {
			total += len(p.Data)
			return nil
		})
		if err != nil && !errors.Is(err, ErrMalformed) && !errors.Is(err, ErrUnsupported) {
			t.Fatalf("untyped error %v", err)
		}
		if total > len(data) {
			t.Fatalf("%d packet bytes from %d input bytes", total, len(data))
		}
	})
}

func FuzzDecode(f *testing.F) {
	fuzzContentTypes := []string{
		"audio/wav", "audio/L16;rate=16000", "audio/L16;rate=44100;channels=2",
		"audio/ogg;codecs=opus", "audio/opus", "audio/mpeg", "audio/L16",
	}
	f.Add(uint8(0), seedPrefix(readTestdata(f, "speech-hello.wav")))
	f.Add(uint8(1), seedPrefix(readTestdata(f, "speech-hello-16000.l16")))
	f.Add(uint8(3), seedPrefix(readTestdata(f, "speech-hello.opus")))
	f.Add(uint8(4), readTestdata(f, "speech-hello.opus"))
	f.Fuzz(func(t *testing.T, ct uint8, body []byte) {
		p, err := Decode(fuzzContentTypes[int(ct)%len(fuzzContentTypes)], body)
		if err != nil {
			if !errors.Is(err, ErrMalformed) && !errors.Is(err, ErrUnsupported) {
				t.Fatalf("untyped error %v", err)
			}
			return
		}
		if len(p.Samples) == 0 {
			t.Fatal("success with no samples")
		}
		if Duration(p) > MaxDuration {
			t.Fatalf("duration %s", Duration(p))
		}
	})
}

func FuzzResample(f *testing.F) {
	f.Add(uint16(44100), uint16(16000), []byte{1, 2, 3, 4, 5, 6})
	f.Add(uint16(8000), uint16(16000), []byte{0xff, 0x7f, 0, 0x80})
	f.Fuzz(func(t *testing.T, from, to uint16, raw []byte) {
		in := PCM{SampleRate: MinSampleRate + int(from)%(MaxSampleRate-MinSampleRate+1), Samples: make([]int16, len(raw)/2)}
		for i := range in.Samples {
			in.Samples[i] = int16(binary.LittleEndian.Uint16(raw[2*i:]))
		}
		rate := MinSampleRate + int(to)%(MaxSampleRate-MinSampleRate+1)
		out := Resample(in, rate)
		if out.SampleRate != rate {
			t.Fatalf("rate %d, want %d", out.SampleRate, rate)
		}
		// Same duration to within one output sample.
		if d := Duration(out) - Duration(in); d > time.Second/time.Duration(rate) || d < -time.Second/time.Duration(rate) {
			t.Fatalf("duration changed by %s", d)
		}
	})
}
