package audio

import (
	"errors"
	"io"
	"runtime"
	"slices"
	"testing"
	"time"
)

// readAll drains s in blocks of n samples.
func readAll(t testing.TB, s *Stream, n int) []int16 {
	t.Helper()
	var out []int16
	buf := make([]int16, n)
	for {
		m, err := s.Read(buf)
		out = append(out, buf[:m]...)
		if errors.Is(err, io.EOF) {
			return out
		}
		if err != nil {
			t.Fatalf("Read: %v", err)
		}
	}
}

// A Stream yields exactly what Decode does, whatever the block size.
func TestOpenMatchesDecode(t *testing.T) {
	tests := []struct{ file, contentType string }{
		{"speech-hello.wav", "audio/wav"},
		{"speech-hello-22050.wav", "audio/wav"},
		{"speech-hello-44100-stereo.wav", "audio/wav"},
		{"speech-hello-16000.l16", "audio/L16;rate=16000"},
		{"speech-hello-16000.l16", "audio/L16;rate=8000;channels=2"},
		{"speech-hello.opus", "audio/ogg;codecs=opus"},
	}
	for _, tc := range tests {
		for _, block := range []int{1, 317, 1920, 1 << 16} {
			t.Run(tc.file+"/"+tc.contentType+"/"+time.Duration(block).String(), func(t *testing.T) {
				body := readTestdata(t, tc.file)
				want, err := Decode(tc.contentType, slices.Clone(body))
				if err != nil {
					t.Fatalf("Decode: %v", err)
				}
				s, err := Open(tc.contentType, body)
				if err != nil {
					t.Fatalf("Open: %v", err)
				}
				if s.SampleRate() != want.SampleRate {
					t.Fatalf("rate %d, Decode says %d", s.SampleRate(), want.SampleRate)
				}
				if got := readAll(t, s, block); !slices.Equal(got, want.Samples) {
					t.Fatalf("%d samples differ from Decode's %d", len(got), len(want.Samples))
				}
				rate, d, err := Probe(tc.contentType, body)
				if err != nil || rate != want.SampleRate || d != Duration(want) {
					t.Fatalf("Probe = %d Hz %v %v, want %d Hz %v", rate, d, err, want.SampleRate, Duration(want))
				}
			})
		}
	}
}

// Open refuses what Decode refuses, with the same kind of error.
func TestOpenRejects(t *testing.T) {
	mono := fmtChunk(wavFormatPCM, 1, 8000, 16)
	tests := []struct {
		name, contentType string
		body              []byte
		want              error
	}{
		{"mp3", "audio/mpeg", []byte("ID3"), ErrUnsupported},
		{"no RIFF", "audio/wav", []byte("RIFX0000WAVE"), ErrUnsupported},
		{"empty data", "audio/wav", riff(nil, chunk{id: "fmt ", body: mono}, chunk{id: "data"}), ErrMalformed},
		{"longer than MaxDuration", "audio/wav", riff(nil, chunk{id: "fmt ", body: mono}, chunk{id: "data", body: make([]byte, 2*(8000*int(MaxDuration/time.Second)+1))}), ErrUnsupported},
		{"L16 without rate", "audio/L16", le16(1), ErrMalformed},
		{"ogg of another codec", "audio/ogg;codecs=vorbis", nil, ErrUnsupported},
		{"not ogg", "audio/ogg", []byte("not an ogg page at all, not even close"), ErrMalformed},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			if _, err := Open(tc.contentType, tc.body); !errors.Is(err, tc.want) {
				t.Fatalf("Open = %v, want %v", err, tc.want)
			}
			if _, _, err := Probe(tc.contentType, tc.body); !errors.Is(err, tc.want) {
				t.Fatalf("Probe = %v, want %v", err, tc.want)
			}
		})
	}
}

// toneAndGaps is seconds of tone with a 200 ms silence every period.
func toneAndGaps(rate int, seconds, period float64) PCM {
	p := sine(rate, 440, seconds, 8000)
	for at := period; at < seconds; at += period {
		lo := int(at * float64(rate))
		hi := min(len(p.Samples), lo+rate/5)
		clear(p.Samples[lo:hi])
	}
	return p
}

func TestSegments(t *testing.T) {
	const rate = 8000
	src := toneAndGaps(rate, 95, 4) // a silence every 4 s: one in every search window
	body := EncodeWAV(src)
	cut := Cutting{Max: 20 * time.Second, Search: 5 * time.Second}
	collect := func(c Cutting) []Segment {
		s, err := Open("audio/wav", body)
		if err != nil {
			t.Fatal(err)
		}
		var out []Segment
		for seg, err := range Segments(s, c) {
			if err != nil {
				t.Fatalf("Segments: %v", err)
			}
			out = append(out, seg)
		}
		return out
	}
	segs := collect(cut)
	var joined []int16
	var next time.Duration
	for i, seg := range segs {
		if seg.Index != i || seg.Start != next {
			t.Fatalf("piece %d: index %d start %v, want start %v", i, seg.Index, seg.Start, next)
		}
		d := Duration(seg.PCM)
		if d > cut.Max || d == 0 {
			t.Fatalf("piece %d lasts %v (max %v)", i, d, cut.Max)
		}
		if i < len(segs)-1 {
			// Every cut but the end of the recording falls in a silence:
			// the last 20 ms of the piece are silent.
			tail := seg.PCM.Samples[len(seg.PCM.Samples)-rate/50:]
			if slices.ContainsFunc(tail, func(v int16) bool { return v != 0 }) {
				t.Errorf("piece %d ends at %v, not in a silence", i, seg.Start+d)
			}
		}
		joined = append(joined, seg.PCM.Samples...)
		next += d
	}
	if !slices.Equal(joined, src.Samples) {
		t.Fatalf("the pieces joined (%d samples) are not the recording (%d)", len(joined), len(src.Samples))
	}
	if len(segs) < 5 {
		t.Fatalf("%d pieces of 95 s at most 20 s each", len(segs))
	}
	// Deterministic: the same bytes cut the same way.
	again := collect(cut)
	for i := range segs {
		if again[i].Start != segs[i].Start || !slices.Equal(again[i].PCM.Samples, segs[i].PCM.Samples) {
			t.Fatalf("piece %d differs on a second pass", i)
		}
	}
	// Resampled pieces for speech-to-text cover the same time.
	var total time.Duration
	for i, seg := range collect(Cutting{Max: cut.Max, Search: cut.Search, Rate: STTRate}) {
		if seg.PCM.SampleRate != STTRate || seg.Start != segs[i].Start {
			t.Fatalf("resampled piece %d: %d Hz from %v", i, seg.PCM.SampleRate, seg.Start)
		}
		total += Duration(seg.PCM)
	}
	if diff := total - Duration(src); diff < -time.Millisecond || diff > time.Millisecond {
		t.Fatalf("resampled pieces last %v, the recording %v", total, Duration(src))
	}
	// Without a search window pieces are cut at Max exactly.
	for i, seg := range collect(Cutting{Max: 20 * time.Second}) {
		if seg.Start != time.Duration(i)*20*time.Second {
			t.Fatalf("piece %d starts at %v", i, seg.Start)
		}
	}
}

// A decoding error part-way ends the pieces with that error.
func TestSegmentsStopOnError(t *testing.T) {
	head, packets := testdataOpusPackets(t)
	bad := slices.Clone(packets)
	bad[len(bad)/2] = []byte{0xff, 0xff, 0xff} // code 3 with an impossible frame count
	s, err := Open("audio/ogg", opusStream(7, head, opusTagsBytes(), bad, 960))
	if err != nil {
		t.Fatalf("Open: %v", err)
	}
	var got error
	for _, err := range Segments(s, Cutting{Max: 500 * time.Millisecond, Rate: STTRate}) {
		if err != nil {
			got = err
		}
	}
	if !errors.Is(got, ErrMalformed) {
		t.Fatalf("Segments ended with %v, want ErrMalformed", got)
	}
}

// peakHeapWhileSegmenting cuts body into STT pieces and returns the largest
// live heap seen above the baseline (which holds body) while a piece is in
// hand, measured after a collection so only live memory counts.
func peakHeapWhileSegmenting(tb testing.TB, contentType string, body []byte) (peak uint64, pieces int) {
	tb.Helper()
	var ms runtime.MemStats
	runtime.GC()
	runtime.ReadMemStats(&ms)
	base := ms.HeapAlloc
	s, err := Open(contentType, body)
	if err != nil {
		tb.Fatal(err)
	}
	for seg, err := range Segments(s, DefaultCutting) {
		if err != nil {
			tb.Fatal(err)
		}
		runtime.GC()
		runtime.ReadMemStats(&ms)
		if ms.HeapAlloc > base {
			peak = max(peak, ms.HeapAlloc-base)
		}
		runtime.KeepAlive(seg) // the piece is in hand while measured
		pieces++
	}
	return peak, pieces
}

// Decoding a long recording holds one piece, not the recording: the live
// heap beyond the encoded body stays under a bound set by DefaultCutting
// (a minute at the native rate plus a minute at 16 kHz, and slack), the
// same for 5 minutes as for 30, while the whole recording as samples at
// 16 kHz would be 57 MiB.
func TestSegmentsBoundedMemory(t *testing.T) {
	if testing.Short() {
		t.Skip("allocates a 30-minute recording")
	}
	const rate = 16000
	bound := uint64(2*int(DefaultCutting.Max/time.Second)*(2*MaxSampleRate+2*STTRate)) + 4<<20
	var peaks []uint64
	for _, minutes := range []int{5, 30} {
		body := EncodeWAV(toneAndGaps(rate, float64(60*minutes), 9))
		peak, pieces := peakHeapWhileSegmenting(t, "audio/wav", body)
		t.Logf("%d min (%d MiB WAV): %d pieces, peak live heap %.1f MiB above the body", minutes, len(body)>>20, pieces, float64(peak)/(1<<20))
		if peak > bound {
			t.Errorf("%d minutes: peak live heap %d bytes above the body, bound %d", minutes, peak, bound)
		}
		if whole := uint64(2 * rate * 60 * minutes); minutes == 30 && peak > whole/4 {
			t.Errorf("30 minutes: peak %d is not far below the whole recording's samples (%d)", peak, whole)
		}
		peaks = append(peaks, peak)
	}
	// Six times the audio, not six times the memory.
	if peaks[1] > 2*peaks[0]+1<<20 {
		t.Errorf("peak live heap grows with duration: %d for 5 min, %d for 30", peaks[0], peaks[1])
	}
}

// BenchmarkSegmentsLong30Min reports the peak live heap of cutting a
// 30-minute 16 kHz WAV into speech-to-text pieces (the body excluded).
func BenchmarkSegmentsLong30Min(b *testing.B) {
	body := EncodeWAV(toneAndGaps(16000, 30*60, 9))
	b.SetBytes(int64(len(body)))
	b.ReportAllocs()
	var peak uint64
	for b.Loop() {
		p, _ := peakHeapWhileSegmenting(b, "audio/wav", body)
		peak = max(peak, p)
	}
	b.ReportMetric(float64(peak)/(1<<20), "peak-MiB")
}

// Open is a parser of outside input: whatever the bytes, it and Read fail
// with a typed error or yield exactly what Decode yields.
func FuzzOpen(f *testing.F) {
	types := []string{"audio/wav", "audio/L16;rate=16000;channels=2", "audio/ogg"}
	f.Add(uint8(0), seedPrefix(readTestdata(f, "speech-hello.wav")))
	f.Add(uint8(1), seedPrefix(readTestdata(f, "speech-hello-16000.l16")))
	f.Add(uint8(2), seedPrefix(readTestdata(f, "speech-hello.opus")))
	f.Fuzz(func(t *testing.T, which uint8, body []byte) {
		ct := types[int(which)%len(types)]
		want, derr := Decode(ct, slices.Clone(body))
		s, err := Open(ct, body)
		if err != nil {
			if !errors.Is(err, ErrMalformed) && !errors.Is(err, ErrUnsupported) {
				t.Fatalf("untyped error %v", err)
			}
			if derr == nil {
				t.Fatalf("Open refuses (%v) what Decode takes", err)
			}
			return
		}
		var got []int16
		buf := make([]int16, 777)
		for {
			n, err := s.Read(buf)
			got = append(got, buf[:n]...)
			if errors.Is(err, io.EOF) {
				break
			}
			if err != nil {
				if !errors.Is(err, ErrMalformed) && !errors.Is(err, ErrUnsupported) {
					t.Fatalf("untyped error %v", err)
				}
				if derr == nil {
					t.Fatalf("Read fails (%v) where Decode succeeds", err)
				}
				return
			}
		}
		if derr != nil {
			if len(got) == 0 && errors.Is(derr, ErrMalformed) {
				return // Decode's "no samples" check
			}
			t.Fatalf("Decode fails (%v) where the stream succeeds", derr)
		}
		if !slices.Equal(got, want.Samples) {
			t.Fatalf("stream yields %d samples, Decode %d", len(got), len(want.Samples))
		}
	})
}
