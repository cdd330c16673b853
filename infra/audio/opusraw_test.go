package audio_test

import (
	"os"
	"testing"

	"github.com/lethe-dev/lethe/infra/audio"
)

// The raw packets of the Ogg file, decoded one by one, give the same audio
// as decoding the file (the pre-skip aside).
func TestOpusPacketsDecodeOneByOne(t *testing.T) {
	ogg, err := os.ReadFile("../../testdata/speech-hello.opus")
	if err != nil {
		t.Fatal(err)
	}
	pkts, err := audio.OpusPackets(ogg)
	if err != nil {
		t.Fatal(err)
	}
	whole, err := audio.Decode("audio/ogg", ogg)
	if err != nil {
		t.Fatal(err)
	}
	dec, err := audio.NewOpusPacketDecoder()
	if err != nil {
		t.Fatal(err)
	}
	total := 0
	for i, p := range pkts {
		s, err := dec.Decode(p)
		if err != nil {
			t.Fatalf("packet %d: %v", i, err)
		}
		if len(s) != audio.STTRate/50 {
			t.Fatalf("packet %d: %d samples, want 20 ms", i, len(s))
		}
		total += len(s)
	}
	if total < len(whole.Samples) || total > len(whole.Samples)+audio.STTRate/10 {
		t.Fatalf("packets decode to %d samples, the file to %d", total, len(whole.Samples))
	}
	if _, err := dec.Decode(nil); err == nil {
		t.Fatal("an empty packet decoded")
	}
	if _, err := audio.OpusPackets([]byte("not ogg")); err == nil {
		t.Fatal("garbage demuxed")
	}
}
