package audio

import (
	"bytes"
	"errors"
	"math"
	"slices"
	"testing"
	"time"
)

// The testdata sentence is 52410 samples at 16 kHz (see testdata/README.md).
const helloSamples16k = 52410

func TestDecodeTestdata(t *testing.T) {
	tests := []struct {
		file        string
		contentType string
		rate        int
		samples     int
	}{
		{"speech-hello.wav", "audio/wav", 16000, helloSamples16k},
		{"speech-hello.wav", "audio/x-wav", 16000, helloSamples16k},
		{"speech-hello.wav", "Audio/WAVE", 16000, helloSamples16k},
		{"speech-hello-22050.wav", "audio/wav", 22050, 72227},
		{"speech-hello-44100-stereo.wav", "audio/wav", 44100, 55358},
		{"speech-hello-16000.l16", "audio/L16;rate=16000", 16000, helloSamples16k},
		{"speech-hello-16000.l16", "audio/l16; rate=16000; channels=1", 16000, helloSamples16k},
		// Opus trims encoder padding by the final granule: exact length.
		{"speech-hello.opus", "audio/ogg; codecs=opus", 16000, helloSamples16k},
		{"speech-hello.opus", "audio/ogg", 16000, helloSamples16k},
		{"speech-hello.opus", "audio/opus", 16000, helloSamples16k},
	}
	for _, tc := range tests {
		t.Run(tc.file+"/"+tc.contentType, func(t *testing.T) {
			p, err := Decode(tc.contentType, readTestdata(t, tc.file))
			if err != nil {
				t.Fatalf("Decode: %v", err)
			}
			if p.SampleRate != tc.rate || len(p.Samples) != tc.samples {
				t.Fatalf("got %d samples at %d Hz, want %d at %d", len(p.Samples), p.SampleRate, tc.samples, tc.rate)
			}
			if rms(p.Samples) < 300 {
				t.Fatalf("rms %.0f: decoded audio is near silent", rms(p.Samples))
			}
		})
	}
}

// The decoders must agree with sox's own conversions of the same speech.
func TestDecodeMatchesReference(t *testing.T) {
	ref, err := Decode("audio/wav", readTestdata(t, "speech-hello.wav"))
	if err != nil {
		t.Fatal(err)
	}
	t.Run("L16 is bit-exact", func(t *testing.T) {
		p, err := Decode("audio/L16;rate=16000", readTestdata(t, "speech-hello-16000.l16"))
		if err != nil {
			t.Fatal(err)
		}
		if !slices.Equal(p.Samples, ref.Samples) {
			t.Fatal("L16 samples differ from the WAV samples")
		}
	})
	t.Run("22050 resampled", func(t *testing.T) {
		p, err := Decode("audio/wav", readTestdata(t, "speech-hello-22050.wav"))
		if err != nil {
			t.Fatal(err)
		}
		r := Resample(p, 16000)
		if len(r.Samples) != len(ref.Samples) {
			t.Fatalf("resampled to %d samples, sox made %d", len(r.Samples), len(ref.Samples))
		}
		if c := correlation(r.Samples, ref.Samples); c < 0.995 {
			t.Fatalf("correlation with sox's resampling %.4f, want >= 0.995", c)
		}
	})
	t.Run("opus", func(t *testing.T) {
		p, err := Decode("audio/ogg;codecs=opus", readTestdata(t, "speech-hello.opus"))
		if err != nil {
			t.Fatal(err)
		}
		// SILK at 16 kbit/s is not waveform-exact, but it is time-aligned
		// after the pre-skip, so the waveforms still correlate.
		c := correlation(p.Samples, ref.Samples)
		t.Logf("opus/pcm correlation %.3f", c)
		if c < 0.5 {
			t.Fatalf("correlation %.3f: decoded Opus does not match the source", c)
		}
	})
}

func TestDecodeWAVLayouts(t *testing.T) {
	mono := fmtChunk(wavFormatPCM, 1, 16000, 16)
	stereo := fmtChunk(wavFormatPCM, 2, 8000, 16)
	tests := []struct {
		name string
		body []byte
		rate int
		want []int16
	}{
		{"plain", riff(nil, chunk{id: "fmt ", body: mono}, chunk{id: "data", body: le16(1, -2, 3)}), 16000, []int16{1, -2, 3}},
		{"stereo downmix", riff(nil, chunk{id: "fmt ", body: stereo}, chunk{id: "data", body: le16(100, 300, -32768, -32768, 32767, 32767, 1, 2)}), 8000, []int16{200, -32768, 32767, 1}},
		{"extensible PCM", riff(nil, chunk{id: "fmt ", body: extensibleFmt(wavFormatPCM, 2, 48000, 16, 16)}, chunk{id: "data", body: le16(10, 20)}), 48000, []int16{15}},
		{"unknown chunks with odd size and padding", riff(nil,
			chunk{id: "JUNK", body: []byte{1, 2, 3}, pad: true},
			chunk{id: "fmt ", body: mono},
			chunk{id: "LIST", body: []byte("INFOISFT\x05\x00\x00\x00lavf\x00"), pad: true},
			chunk{id: "data", body: le16(7, 8)},
			chunk{id: "id3 ", body: []byte{9}}), 16000, []int16{7, 8}},
		{"fmt chunk with cbSize extension", riff(nil, chunk{id: "fmt ", body: append(slices.Clone(mono), 0, 0)}, chunk{id: "data", body: le16(5)}), 16000, []int16{5}},
		{"streaming data size 0xFFFFFFFF, cut final frame", riff(u32(streamingSize), chunk{id: "fmt ", body: mono}, chunk{id: "data", size: u32(streamingSize), body: append(le16(4, 5), 0x01)}), 16000, []int16{4, 5}},
		{"streaming data size 0 with RIFF size 0", riff(u32(0), chunk{id: "fmt ", body: mono}, chunk{id: "data", size: u32(0), body: le16(6, 7)}), 16000, []int16{6, 7}},
		{"wrong RIFF size is ignored", riff(u32(12345678), chunk{id: "fmt ", body: mono}, chunk{id: "data", body: le16(3)}), 16000, []int16{3}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			p, err := Decode("audio/wav", tc.body)
			if err != nil {
				t.Fatalf("Decode: %v", err)
			}
			if p.SampleRate != tc.rate || !slices.Equal(p.Samples, tc.want) {
				t.Fatalf("got %v at %d Hz, want %v at %d", p.Samples, p.SampleRate, tc.want, tc.rate)
			}
		})
	}
}

func TestDecodeRejects(t *testing.T) {
	mono := fmtChunk(wavFormatPCM, 1, 16000, 16)
	good := riff(nil, chunk{id: "fmt ", body: mono}, chunk{id: "data", body: le16(1, 2)})
	head, packets := testdataOpusPackets(t)
	opusOK := opusStream(7, head, opusTagsBytes(), packets[:10], 960)
	corruptCRC := slices.Clone(opusOK)
	corruptCRC[len(corruptCRC)-1] ^= 0xFF
	tests := []struct {
		name        string
		contentType string
		body        []byte
		want        error
	}{
		// content types
		{"unparseable content type", "audio/", good, ErrUnsupported},
		{"mp3", "audio/mpeg", good, ErrUnsupported},
		{"webm", "audio/webm;codecs=opus", good, ErrUnsupported},
		{"ogg vorbis", "audio/ogg;codecs=vorbis", opusOK, ErrUnsupported},
		{"empty content type", "", good, ErrUnsupported},

		// WAV
		{"empty body", "audio/wav", nil, ErrMalformed},
		{"truncated header", "audio/wav", good[:10], ErrMalformed},
		{"wrong magic", "audio/wav", append([]byte("RIFX"), good[4:]...), ErrUnsupported},
		{"not RIFF", "audio/wav", append([]byte("JUNK"), good[4:]...), ErrMalformed},
		{"not WAVE", "audio/wav", append(append(slices.Clone(good[:8]), "AVI "...), good[12:]...), ErrMalformed},
		{"RF64", "audio/wav", append([]byte("RF64"), good[4:]...), ErrUnsupported},
		{"no fmt chunk", "audio/wav", riff(nil, chunk{id: "LIST", body: []byte("abcd")}), ErrMalformed},
		{"no data chunk", "audio/wav", riff(nil, chunk{id: "fmt ", body: mono}), ErrMalformed},
		{"data before fmt", "audio/wav", riff(nil, chunk{id: "data", body: le16(1)}, chunk{id: "fmt ", body: mono}), ErrMalformed},
		{"two fmt chunks", "audio/wav", riff(nil, chunk{id: "fmt ", body: mono}, chunk{id: "fmt ", body: mono}, chunk{id: "data", body: le16(1)}), ErrMalformed},
		{"fmt chunk too short", "audio/wav", riff(nil, chunk{id: "fmt ", body: mono[:14]}, chunk{id: "data", body: le16(1)}), ErrMalformed},
		{"chunk size beyond file", "audio/wav", riff(nil, chunk{id: "fmt ", body: mono}, chunk{id: "LIST", size: u32(1 << 30), body: []byte("ab")}), ErrMalformed},
		{"chunk size 0xFFFFFFFF", "audio/wav", riff(nil, chunk{id: "fmt ", size: u32(streamingSize), body: mono}), ErrMalformed},
		{"data size larger than file", "audio/wav", riff(nil, chunk{id: "fmt ", body: mono}, chunk{id: "data", size: u32(1000), body: le16(1, 2)}), ErrMalformed},
		{"data size not whole frames", "audio/wav", riff(nil, chunk{id: "fmt ", body: mono}, chunk{id: "data", body: []byte{1, 2, 3}}), ErrMalformed},
		{"zero data", "audio/wav", riff(nil, chunk{id: "fmt ", body: mono}, chunk{id: "data"}), ErrMalformed},
		{"zero channels", "audio/wav", riff(nil, chunk{id: "fmt ", body: fmtChunk(1, 0, 16000, 16)}, chunk{id: "data", body: le16(1)}), ErrMalformed},
		{"six channels", "audio/wav", riff(nil, chunk{id: "fmt ", body: fmtChunk(1, 6, 16000, 16)}, chunk{id: "data", body: make([]byte, 12)}), ErrUnsupported},
		{"8-bit PCM", "audio/wav", riff(nil, chunk{id: "fmt ", body: fmtChunk(1, 1, 16000, 8)}, chunk{id: "data", body: []byte{1, 2}}), ErrUnsupported},
		{"24-bit PCM", "audio/wav", riff(nil, chunk{id: "fmt ", body: fmtChunk(1, 1, 16000, 24)}, chunk{id: "data", body: []byte{1, 2, 3}}), ErrUnsupported},
		{"float WAV", "audio/wav", riff(nil, chunk{id: "fmt ", body: fmtChunk(wavFormatFloat, 1, 16000, 32)}, chunk{id: "data", body: make([]byte, 4)}), ErrUnsupported},
		{"float extensible", "audio/wav", riff(nil, chunk{id: "fmt ", body: extensibleFmt(wavFormatFloat, 1, 16000, 32, 32)}, chunk{id: "data", body: make([]byte, 4)}), ErrUnsupported},
		{"extensible 12 valid bits", "audio/wav", riff(nil, chunk{id: "fmt ", body: extensibleFmt(wavFormatPCM, 1, 16000, 16, 12)}, chunk{id: "data", body: le16(1)}), ErrUnsupported},
		{"extensible truncated", "audio/wav", riff(nil, chunk{id: "fmt ", body: extensibleFmt(wavFormatPCM, 1, 16000, 16, 16)[:30]}, chunk{id: "data", body: le16(1)}), ErrMalformed},
		{"mu-law", "audio/wav", riff(nil, chunk{id: "fmt ", body: fmtChunk(7, 1, 8000, 8)}, chunk{id: "data", body: []byte{1}}), ErrUnsupported},
		{"bad block align", "audio/wav", riff(nil, chunk{id: "fmt ", body: func() []byte { b := slices.Clone(mono); b[12] = 4; return b }()}, chunk{id: "data", body: le16(1)}), ErrMalformed},
		{"rate too low", "audio/wav", riff(nil, chunk{id: "fmt ", body: fmtChunk(1, 1, 4000, 16)}, chunk{id: "data", body: le16(1)}), ErrUnsupported},
		{"rate too high", "audio/wav", riff(nil, chunk{id: "fmt ", body: fmtChunk(1, 1, 96000, 16)}, chunk{id: "data", body: le16(1)}), ErrUnsupported},
		{"rate zero", "audio/wav", riff(nil, chunk{id: "fmt ", body: fmtChunk(1, 1, 0, 16)}, chunk{id: "data", body: le16(1)}), ErrUnsupported},
		{"longer than MaxDuration", "audio/wav", riff(nil, chunk{id: "fmt ", body: fmtChunk(1, 1, 8000, 16)}, chunk{id: "data", body: make([]byte, 2*(8000*int(MaxDuration/time.Second)+1))}), ErrUnsupported},

		// L16
		{"L16 without rate", "audio/L16", le16(1, 2), ErrMalformed},
		{"L16 bad rate", "audio/L16;rate=fast", le16(1, 2), ErrMalformed},
		{"L16 rate out of range", "audio/L16;rate=192000", le16(1, 2), ErrUnsupported},
		{"L16 zero channels", "audio/L16;rate=16000;channels=0", le16(1, 2), ErrMalformed},
		{"L16 three channels", "audio/L16;rate=16000;channels=3", make([]byte, 6), ErrUnsupported},
		{"L16 odd length", "audio/L16;rate=16000", []byte{1, 2, 3}, ErrMalformed},
		{"L16 stereo partial frame", "audio/L16;rate=16000;channels=2", []byte{1, 2, 3, 4, 5, 6}, ErrMalformed},
		{"L16 empty", "audio/L16;rate=16000", nil, ErrMalformed},
		{"L16 too long", "audio/L16;rate=8000", make([]byte, 2*(8000*int(MaxDuration/time.Second)+1)), ErrUnsupported},

		// Ogg / Opus
		{"ogg garbage", "audio/ogg", []byte("definitely not ogg"), ErrMalformed},
		{"ogg empty", "audio/ogg", nil, ErrMalformed},
		{"ogg bad CRC", "audio/ogg", corruptCRC, ErrMalformed},
		{"ogg truncated", "audio/ogg", opusOK[:len(opusOK)-5], ErrMalformed},
		{"ogg without opus stream", "audio/ogg", oggMux(3, [][]byte{[]byte("\x01vorbis..."), []byte("x")}, []int64{0, 10}, 255), ErrUnsupported},
		{"opus multistream", "audio/ogg", opusStream(7, opusHeadBytes(1, 312, 0, 1), opusTagsBytes(), packets[:3], 960), ErrUnsupported},
		{"opus zero channels", "audio/ogg", opusStream(7, opusHeadBytes(0, 312, 0, 0), opusTagsBytes(), packets[:3], 960), ErrMalformed},
		{"opus three channels family 0", "audio/ogg", opusStream(7, opusHeadBytes(3, 312, 0, 0), opusTagsBytes(), packets[:3], 960), ErrMalformed},
		{"opus version 16", "audio/ogg", opusStream(7, func() []byte { h := opusHeadBytes(1, 312, 0, 0); h[8] = 16; return h }(), opusTagsBytes(), packets[:3], 960), ErrUnsupported},
		{"opus short head", "audio/ogg", opusStream(7, []byte("OpusHead\x01\x01"), opusTagsBytes(), packets[:3], 960), ErrMalformed},
		{"opus missing tags", "audio/ogg", opusStream(7, head, packets[0], packets[1:3], 960), ErrMalformed},
		{"opus headers only", "audio/ogg", opusStream(7, head, opusTagsBytes(), nil, 960), ErrMalformed},
		{"opus empty packet", "audio/ogg", opusStream(7, head, opusTagsBytes(), [][]byte{packets[0], {}}, 960), ErrMalformed},
		{"opus broken packet", "audio/ogg", opusStream(7, head, opusTagsBytes(), [][]byte{{9<<3 | 3, 0x86, 0}}, 960), ErrMalformed},
		{"opus chained", "audio/ogg", append(slices.Clone(opusOK), opusStream(8, head, opusTagsBytes(), packets[:3], 960)...), ErrUnsupported},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			p, err := Decode(tc.contentType, tc.body)
			if !errors.Is(err, tc.want) {
				t.Fatalf("Decode = %d samples, %v; want %v", len(p.Samples), err, tc.want)
			}
		})
	}
}

// Two-byte Opus packets expand to 120 ms each: the bound must come from
// decoded length, not from the body size.
func TestDecodeOpusTooLong(t *testing.T) {
	head, _ := testdataOpusPackets(t)
	tiny := []byte{9<<3 | 3, 6} // SILK WB, code 3, six empty 20 ms frames: 120 ms
	n := int(MaxDuration/(120*time.Millisecond)) + 1
	audio := make([][]byte, n)
	for i := range audio {
		audio[i] = tiny
	}
	t.Run("declared by granule", func(t *testing.T) {
		body := opusStream(7, head, opusTagsBytes(), audio, 5760)
		_, err := Decode("audio/ogg", body)
		if !errors.Is(err, ErrUnsupported) {
			t.Fatalf("Decode(%d bytes, %d packets of 120 ms) = %v, want ErrUnsupported", len(body), n, err)
		}
	})
	t.Run("granules lie", func(t *testing.T) {
		// Granule 0 on every page: only the decoded length can tell.
		const limit = 16000 // one second
		body := opusStream(7, head, opusTagsBytes(), audio[:9], 0)
		if _, err := decodeOggOpus(body, limit); !errors.Is(err, ErrUnsupported) {
			t.Fatalf("decodeOggOpus(9 x 120 ms, limit 1 s) = %v, want ErrUnsupported", err)
		}
		p, err := decodeOggOpus(opusStream(7, head, opusTagsBytes(), audio[:8], 0), limit)
		if err != nil {
			t.Fatalf("decodeOggOpus(8 x 120 ms, limit 1 s): %v", err)
		}
		if got, want := len(p.Samples), 8*1920-312/3; got != want {
			t.Fatalf("%d samples, want %d", got, want)
		}
	})
}

func TestDecodeOpusGainAndSkeleton(t *testing.T) {
	head, packets := testdataOpusPackets(t)
	base, err := Decode("audio/ogg", opusStream(7, head, opusTagsBytes(), packets, 960))
	if err != nil {
		t.Fatal(err)
	}
	loud := slices.Clone(head)
	loud[16], loud[17] = 0x00, 0x06 // +6 dB in Q7.8
	p, err := Decode("audio/ogg", opusStream(7, loud, opusTagsBytes(), packets, 960))
	if err != nil {
		t.Fatal(err)
	}
	if ratio := rms(p.Samples) / rms(base.Samples); math.Abs(ratio-1.995) > 0.05 {
		t.Fatalf("+6 dB output gain scaled rms by %.3f, want ~1.995", ratio)
	}

	// A Skeleton-like stream before the Opus stream is skipped.
	skel := oggPage(oggFlagBOS|oggFlagEOS, 0, 99, 0, []byte{8}, []byte("fishead\x00"))
	body := append(skel, opusStream(7, head, opusTagsBytes(), packets, 960)...)
	q, err := Decode("audio/ogg", body)
	if err != nil {
		t.Fatalf("Decode with a leading skeleton stream: %v", err)
	}
	if !slices.Equal(q.Samples, base.Samples) {
		t.Fatal("skeleton stream changed the decoded audio")
	}
}

func TestDemuxOgg(t *testing.T) {
	big := bytes.Repeat([]byte("0123456789"), 100) // 1000 bytes: 4 lacing values of 255 + 1
	exact := bytes.Repeat([]byte{0xAB}, 255)       // needs a 0 terminator
	packets := [][]byte{[]byte("first"), big, {}, exact, []byte("last")}
	granules := []int64{0, 100, 200, 300, 400}
	for _, maxSegs := range []int{1, 2, 3, 255} {
		var got [][]byte
		var gotGranules []int64
		err := demuxOgg(oggMux(5, packets, granules, maxSegs), func(p oggPacket) error {
			if p.Serial != 5 {
				t.Errorf("serial %d", p.Serial)
			}
			if p.BOS != (len(got) == 0) {
				t.Errorf("packet %d: BOS %v", len(got), p.BOS)
			}
			got = append(got, slices.Clone(p.Data))
			gotGranules = append(gotGranules, p.Granule)
			return nil
		})
		if err != nil {
			t.Fatalf("maxSegs %d: %v", maxSegs, err)
		}
		if len(got) != len(packets) {
			t.Fatalf("maxSegs %d: %d packets, want %d", maxSegs, len(got), len(packets))
		}
		for i := range packets {
			if !bytes.Equal(got[i], packets[i]) {
				t.Fatalf("maxSegs %d: packet %d differs (len %d, want %d)", maxSegs, i, len(got[i]), len(packets[i]))
			}
		}
		if gotGranules[len(gotGranules)-1] != 400 {
			t.Fatalf("maxSegs %d: last granule %d", maxSegs, gotGranules[len(gotGranules)-1])
		}
	}

	// Two interleaved streams.
	a := oggPage(oggFlagBOS, 0, 1, 0, []byte{1}, []byte("a"))
	b := oggPage(oggFlagBOS, 0, 2, 0, []byte{1}, []byte("b"))
	a2 := oggPage(oggFlagEOS, 5, 1, 1, []byte{2}, []byte("a2"))
	var seen []string
	if err := demuxOgg(slices.Concat(a, b, a2), func(p oggPacket) error {
		seen = append(seen, string(p.Data))
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(seen, []string{"a", "b", "a2"}) {
		t.Fatalf("interleaved packets %q", seen)
	}
}

func TestDemuxOggRejects(t *testing.T) {
	bos := oggPage(oggFlagBOS, 0, 1, 0, []byte{3}, []byte("abc"))
	open := oggPage(oggFlagBOS, -1, 1, 0, []byte{255}, bytes.Repeat([]byte{1}, 255))
	tests := []struct {
		name string
		data []byte
		want error
	}{
		{"empty", nil, ErrMalformed},
		{"truncated header", bos[:20], ErrMalformed},
		{"no capture pattern", append([]byte("OggX"), bos[4:]...), ErrMalformed},
		{"version 1", func() []byte { b := slices.Clone(bos); b[4] = 1; return b }(), ErrUnsupported},
		{"CRC mismatch", func() []byte { b := slices.Clone(bos); b[len(b)-1] = 'x'; return b }(), ErrMalformed},
		{"truncated segment table", oggPage(oggFlagBOS, 0, 1, 0, []byte{3, 3}, []byte("abcabc"))[:28], ErrMalformed},
		{"truncated body", bos[:len(bos)-1], ErrMalformed},
		{"garbage after page", append(slices.Clone(bos), "junk"...), ErrMalformed},
		{"first page without BOS", oggPage(0, 0, 1, 0, []byte{1}, []byte("a")), ErrMalformed},
		{"second BOS", slices.Concat(bos, oggPage(oggFlagBOS, 0, 1, 1, []byte{1}, []byte("a"))), ErrMalformed},
		{"lost page", slices.Concat(bos, oggPage(0, 0, 1, 2, []byte{1}, []byte("a"))), ErrMalformed},
		{"continuation with nothing to continue", slices.Concat(bos, oggPage(oggFlagContinued, 0, 1, 1, []byte{1}, []byte("a"))), ErrMalformed},
		{"packet cut off", slices.Concat(open, oggPage(0, 0, 1, 1, []byte{1}, []byte("a"))), ErrMalformed},
		{"ends inside packet", open, ErrMalformed},
		{"EOS inside packet", oggPage(oggFlagBOS|oggFlagEOS, 0, 1, 0, []byte{255}, bytes.Repeat([]byte{1}, 255)), ErrMalformed},
		{"page after EOS", slices.Concat(oggPage(oggFlagBOS|oggFlagEOS, 0, 1, 0, []byte{1}, []byte("a")), oggPage(0, 0, 1, 1, []byte{1}, []byte("b"))), ErrMalformed},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			err := demuxOgg(tc.data, func(oggPacket) error { return nil })
			if !errors.Is(err, tc.want) {
				t.Fatalf("demuxOgg = %v, want %v", err, tc.want)
			}
		})
	}
}

func TestResample(t *testing.T) {
	tests := []struct {
		name      string
		from, to  int
		freq      float64
		wantRatio float64 // output rms / input rms
		tolerance float64
	}{
		{"44100 to 16000 passband 1 kHz", 44100, 16000, 1000, 1, 0.02},
		{"48000 to 16000 passband 6 kHz", 48000, 16000, 6000, 1, 0.02},
		{"22050 to 16000 passband 3 kHz", 22050, 16000, 3000, 1, 0.02},
		{"8000 to 16000 passband 3 kHz", 8000, 16000, 3000, 1, 0.02},
		{"11025 to 16000 passband 440 Hz", 11025, 16000, 440, 1, 0.02},
		{"16001 to 16000 (no common factor)", 16001, 16000, 1000, 1, 0.02},
		// Above the new Nyquist: must be filtered out, not aliased down.
		{"44100 to 16000 stopband 10 kHz", 44100, 16000, 10000, 0, 0.01},
		{"48000 to 16000 stopband 9 kHz", 48000, 16000, 9000, 0, 0.01},
		{"22050 to 16000 stopband 9.5 kHz", 22050, 16000, 9500, 0, 0.01},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			in := sine(tc.from, tc.freq, 0.5, 10000)
			out := Resample(in, tc.to)
			if out.SampleRate != tc.to {
				t.Fatalf("rate %d", out.SampleRate)
			}
			wantLen := (len(in.Samples)*tc.to + tc.from - 1) / tc.from
			if len(out.Samples) != wantLen {
				t.Fatalf("%d samples, want %d", len(out.Samples), wantLen)
			}
			ratio := rms(out.Samples) / rms(in.Samples)
			if math.Abs(ratio-tc.wantRatio) > tc.tolerance {
				t.Fatalf("rms ratio %.4f, want %.2f±%.2f", ratio, tc.wantRatio, tc.tolerance)
			}
			if tc.wantRatio == 1 {
				// The tone keeps its frequency: compare with an ideal sine at the new rate.
				ideal := sine(tc.to, tc.freq, 0.5, 10000)
				mid := len(ideal.Samples) / 4
				if c := correlation(out.Samples[mid:3*mid], ideal.Samples[mid:3*mid]); c < 0.999 {
					t.Fatalf("correlation with ideal tone %.5f", c)
				}
			}
		})
	}

	t.Run("same rate is identity", func(t *testing.T) {
		in := sine(16000, 300, 0.1, 1000)
		if out := Resample(in, 16000); !slices.Equal(out.Samples, in.Samples) {
			t.Fatal("changed samples")
		}
	})
	t.Run("empty and invalid", func(t *testing.T) {
		if out := Resample(PCM{SampleRate: 44100}, 16000); out.SampleRate != 16000 || len(out.Samples) != 0 {
			t.Fatalf("empty: %+v", out)
		}
		in := PCM{SampleRate: 0, Samples: []int16{1}}
		if out := Resample(in, 16000); out.SampleRate != 0 {
			t.Fatalf("rate 0 input: %+v", out)
		}
	})
	t.Run("full scale clips instead of wrapping", func(t *testing.T) {
		// A full-scale step overshoots (Gibbs); overshoot must saturate.
		in := PCM{SampleRate: 44100, Samples: make([]int16, 4410)}
		for i := range in.Samples {
			in.Samples[i] = -32768
			if i >= 2205 {
				in.Samples[i] = 32767
			}
		}
		out := Resample(in, 16000)
		step := 2205 * 16000 / 44100
		for i, s := range out.Samples {
			if i < step-3 && s > 0 || i > step+3 && s < 0 {
				t.Fatalf("sample %d (step at %d) is %d: wrapped", i, step, s)
			}
		}
		if out.Samples[len(out.Samples)/2+100] != 32767 || out.Samples[100] != -32768 {
			t.Fatalf("plateaus %d, %d: want full scale", out.Samples[100], out.Samples[len(out.Samples)/2+100])
		}
	})
}

func TestEncodeWAVRoundTrip(t *testing.T) {
	in := PCM{SampleRate: 16000, Samples: []int16{0, 1, -1, 32767, -32768, 1234}}
	b := EncodeWAV(in)
	if len(b) != 44+2*len(in.Samples) {
		t.Fatalf("%d bytes", len(b))
	}
	out, err := Decode("audio/wav", b)
	if err != nil {
		t.Fatal(err)
	}
	if out.SampleRate != in.SampleRate || !slices.Equal(out.Samples, in.Samples) {
		t.Fatalf("round trip: %+v", out)
	}
	ref := readTestdata(t, "speech-hello.wav")
	p, err := Decode("audio/wav", ref)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(EncodeWAV(p), ref) {
		t.Fatal("EncodeWAV of the sox-made file is not byte-identical to it")
	}
}

func TestDuration(t *testing.T) {
	tests := []struct {
		p    PCM
		want time.Duration
	}{
		{PCM{SampleRate: 16000, Samples: make([]int16, 16000)}, time.Second},
		{PCM{SampleRate: 8000, Samples: make([]int16, 4)}, 500 * time.Microsecond},
		{PCM{SampleRate: 0, Samples: make([]int16, 4)}, 0},
		{PCM{SampleRate: 16000}, 0},
	}
	for _, tc := range tests {
		if got := Duration(tc.p); got != tc.want {
			t.Errorf("Duration(%d samples at %d) = %s, want %s", len(tc.p.Samples), tc.p.SampleRate, got, tc.want)
		}
	}
}

func BenchmarkDecodeOpus(b *testing.B) {
	body := readTestdata(b, "speech-hello.opus")
	for b.Loop() {
		if _, err := Decode("audio/ogg", body); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkResample44100To16000(b *testing.B) {
	p := sine(44100, 440, 10, 8000)
	b.SetBytes(int64(2 * len(p.Samples)))
	for b.Loop() {
		Resample(p, 16000)
	}
}
