package main

import (
	"context"
	"net/http"
	"net/url"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/coder/websocket"

	"github.com/lethe-dev/lethe/infra/audio"
	"github.com/lethe-dev/lethe/internal/streamtest"
)

// TestStreamEndToEnd streams the spoken sentence into lethe run as PCM16,
// dropping the connection mid-stream and resuming, and as Opus packets,
// waiting on the socket for the first transcript: each conversation ends
// with every chunk exactly once, transcribed, and found by search.
func TestStreamEndToEnd(t *testing.T) {
	requirePocketSphinx(t)
	streamSlice(t, testConfig(t))
}

// TestStreamEndToEndOnEmulators is the same on the production adapters:
// Firestore and Pub/Sub emulators, fake-gcs.
func TestStreamEndToEndOnEmulators(t *testing.T) {
	psHost, fsHost := requireEmulators(t)
	requirePocketSphinx(t)
	gcs := newFakeGCS(t, "lethe-stream-audio")
	streamSlice(t, emulatorConfig(t, psHost, fsHost, gcs.URL(), "lethe-stream-audio"))
}

func streamSlice(t *testing.T, cfg Config) {
	cfg.StreamChunkSeconds = 2
	// PocketSphinx on shared cores can take longer than the default idle
	// timeout to transcribe a chunk the Opus case waits for.
	cfg.StreamIdleTimeout = 5 * time.Minute
	p := startTestPipeline(t, cfg, overrides{})
	tok, err := p.app.issuer.Mint("streamer-e2e", time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	c := client{t, "http://" + p.addr, tok}
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	wav, err := readTestdata("speech-hello.wav")
	if err != nil {
		t.Fatal(err)
	}
	pcm, err := audio.Decode("audio/wav", wav)
	if err != nil {
		t.Fatal(err)
	}
	ogg, err := readTestdata("speech-hello.opus")
	if err != nil {
		t.Fatal(err)
	}
	packets, err := audio.OpusPackets(ogg)
	if err != nil {
		t.Fatal(err)
	}
	opts := func(codec, cid string) streamtest.Options {
		return streamtest.Options{Token: tok, Query: url.Values{"conversation_id": {cid}, "codec": {codec}, "sample_rate": {"16000"}}}
	}
	for _, tc := range []struct {
		name   string
		stream func(t *testing.T, cid string) (acks []int)
	}{
		{"pcm16-drop-resume", func(t *testing.T, cid string) []int {
			s, err := streamtest.Dial(ctx, c.base, opts("pcm16", cid))
			if err != nil {
				t.Fatal(err)
			}
			// Chunk 0 acked, then part of chunk 1 sent and the
			// connection dropped: that part is lost in flight.
			cut := 16000 * 5 / 2 // 2.5 s of the 3.3 s sentence
			if err := s.SendPCM(ctx, pcm.Samples[:cut], 3333); err != nil {
				t.Fatal(err)
			}
			if m, err := s.Next(ctx); err != nil || m.Type != "ack" || *m.Seq != 0 {
				t.Fatalf("want ack 0, got %+v %v", m, err)
			}
			if err := s.SendPCM(ctx, pcm.Samples[cut:cut+6000], 3333); err != nil {
				t.Fatal(err)
			}
			s.Conn.CloseNow()
			s, err = streamtest.DialResuming(ctx, c.base, opts("pcm16", cid))
			if err != nil {
				t.Fatal(err)
			}
			if s.Hello.LastSeq == nil || *s.Hello.EndMS != 2000 {
				t.Fatalf("hello after the drop: last_seq %v end_ms %v, want chunk 0 to 2000 ms", s.Hello.LastSeq, s.Hello.EndMS)
			}
			if err := s.SendPCM(ctx, pcm.Samples[s.ResumeMS()*16:], 3333); err != nil {
				t.Fatal(err)
			}
			return endStream(t, ctx, s)
		}},
		{"opus-transcript-on-socket", func(t *testing.T, cid string) []int {
			s, err := streamtest.Dial(ctx, c.base, opts("opus", cid))
			if err != nil {
				t.Fatal(err)
			}
			if err := s.SendPackets(ctx, packets); err != nil {
				t.Fatal(err)
			}
			var acks []int
			for {
				m, err := s.Next(ctx)
				if err != nil {
					t.Fatalf("waiting for the first transcript: %v", err)
				}
				if m.Type == "ack" {
					acks = append(acks, *m.Seq)
				}
				if m.Type == "transcript" && *m.Seq == 0 {
					t.Logf("transcript on the socket: %q", m.Text)
					break
				}
			}
			return append(acks, endStream(t, ctx, s)...)
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			cid := strings.ReplaceAll(t.Name(), "/", "-")
			acks := tc.stream(t, cid)
			conv := c.waitDone(cid, 2)
			var seqs []int
			for _, ch := range conv.Chunks {
				seqs = append(seqs, ch.Seq)
			}
			if !slices.Equal(seqs, []int{0, 1}) || acks[len(acks)-1] != 1 {
				t.Fatalf("chunks %v, acks %v: want 0 and 1 exactly once", seqs, acks)
			}
			words := strings.Fields(conv.Transcript)
			t.Logf("transcript: %q", conv.Transcript)
			if len(words) < 2 {
				t.Fatalf("transcript %q is too short to search", conv.Transcript)
			}
			var res searchReply
			if code := c.search(strings.Join(words[:2], " "), &res); code != http.StatusOK {
				t.Fatalf("search: %d", code)
			}
			if !slices.ContainsFunc(res.Results, func(r struct {
				ConversationID string   `json:"conversation_id"`
				Score          float64  `json:"score"`
				Snippets       []string `json:"snippets"`
			}) bool {
				return r.ConversationID == cid
			}) {
				t.Fatalf("search for %q does not find %s: %+v", words[:2], cid, res.Results)
			}
		})
	}
}

// endStream sends end and reads the remaining acks up to the close, which
// must be 1000.
func endStream(t *testing.T, ctx context.Context, s *streamtest.Client) []int {
	t.Helper()
	if err := s.End(ctx); err != nil {
		t.Fatal(err)
	}
	var acks []int
	code, err := s.Drain(ctx, func(m streamtest.Message) error {
		if m.Type == "ack" {
			acks = append(acks, *m.Seq)
		}
		return nil
	})
	if err != nil || code != websocket.StatusNormalClosure {
		t.Fatalf("end: close %d, %v", code, err)
	}
	return acks
}
