package main

import (
	"context"
	"fmt"
	"net/url"
	"os"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/lethe-dev/lethe/infra/auth/localissuer"
	"github.com/lethe-dev/lethe/internal/streamtest"
)

const (
	benchStreamFrame = 100 * time.Millisecond // one binary message of audio
	benchStreamChunk = 10                     // LETHE_STREAM_CHUNK_SECONDS (the default)
)

// benchStreamLevels: open streams the benchmark ramps through; it stops at
// the first level where an ack took 1 s or more (or never came).
var benchStreamLevels = []int{100, 250, 375, 500, 750, 1000}

// benchStream is one real-time PCM16 client: it sends a frame every
// benchStreamFrame and records when the frame completing each chunk went
// out and when its ack came back.
type benchStream struct {
	c        *streamtest.Client
	mu       sync.Mutex
	sentDone map[int]time.Time // chunk seq → its last frame written
	acked    map[int]time.Time
	err      error
}

func (s *benchStream) run(ctx context.Context, start time.Time) {
	const rate = 16000
	frame := make([]int16, rate*int(benchStreamFrame/time.Millisecond)/1000)
	for i := range frame {
		frame[i] = int16(1000 * (i % 16)) // audio content does not matter to the edge
	}
	perChunk := benchStreamChunk * int(time.Second/benchStreamFrame)
	go func() {
		for {
			m, err := s.c.Next(ctx)
			if err != nil {
				return
			}
			if m.Type == "ack" {
				s.mu.Lock()
				s.acked[*m.Seq] = time.Now()
				s.mu.Unlock()
			}
		}
	}()
	for i := 0; ; i++ {
		select {
		case <-ctx.Done():
			return
		case <-time.After(time.Until(start.Add(time.Duration(i) * benchStreamFrame))):
		}
		if err := s.c.SendPCM(ctx, frame, 1<<20); err != nil {
			if ctx.Err() == nil {
				s.mu.Lock()
				s.err = err
				s.mu.Unlock()
			}
			return
		}
		if (i+1)%perChunk == 0 {
			s.mu.Lock()
			s.sentDone[(i+1)/perChunk-1] = time.Now()
			s.mu.Unlock()
		}
	}
}

// worst is the slowest ack of a chunk completed within [from, to); a chunk
// completed more than a second before `to` and not acked counts as its
// age. ok is false when the stream failed.
func (s *benchStream) worst(from, to time.Time) (time.Duration, bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	var w time.Duration
	for seq, sent := range s.sentDone {
		if sent.Before(from) || !sent.Before(to) {
			continue
		}
		if a, ok := s.acked[seq]; ok {
			w = max(w, a.Sub(sent))
		} else if to.Sub(sent) > time.Second {
			w = max(w, to.Sub(sent))
		}
	}
	return w, s.err == nil
}

// BenchmarkTableStreams: how many concurrent real-time PCM16 streams one
// `lethe run` (embedded adapters, workers off: the edge's share) holds with
// every ack under a second, and its RSS per open stream. The clients run
// in this process on the same cores, as the upload benchmark's do.
func BenchmarkTableStreams(b *testing.B) {
	for range b.N {
		dir := b.TempDir()
		l := startLethe(b, dir, "LETHE_WORKERS=none", fmt.Sprintf("LETHE_STREAM_CHUNK_SECONDS=%d", benchStreamChunk),
			"LETHE_STREAM_MAX_PER_USER=1", "LETHE_RATE_USER_PER_MIN=0")
		iss, err := localissuer.Open(dataPaths{dir}.issuer())
		if err != nil {
			b.Fatal(err)
		}
		time.Sleep(2 * time.Second)
		base, err := benchRSS(l.cmd.Process.Pid)
		if err != nil {
			b.Fatal(err)
		}
		ctx, cancel := context.WithCancel(context.Background())
		var streams []*benchStream
		var wg sync.WaitGroup
		held, perStream, worstHeld := 0, 0.0, time.Duration(0)
		period := time.Duration(benchStreamChunk) * time.Second
		for _, level := range benchStreamLevels {
			// New streams start spread over one chunk period, as
			// independent wearables do.
			rampStart := time.Now()
			for n := len(streams); n < level; n++ {
				tok, err := iss.Mint(fmt.Sprintf("bench-stream-%d", n), time.Hour)
				if err != nil {
					b.Fatal(err)
				}
				c, err := streamtest.Dial(ctx, "http://"+l.addr, streamtest.Options{Token: tok, Query: url.Values{
					"conversation_id": {fmt.Sprintf("s%d", n)}, "codec": {"pcm16"}, "sample_rate": {"16000"},
				}})
				if err != nil {
					b.Fatalf("stream %d: %v", n, err)
				}
				s := &benchStream{c: c, sentDone: map[int]time.Time{}, acked: map[int]time.Time{}}
				streams = append(streams, s)
				offset := time.Duration(n%level) * period / time.Duration(level)
				wg.Go(func() { s.run(ctx, rampStart.Add(offset)) })
			}
			// Every stream has a full chunk at this level after one
			// period; the next period is the measured window.
			from := time.Now().Add(period)
			to := from.Add(period)
			time.Sleep(time.Until(to) + time.Second)
			rss, err := benchRSS(l.cmd.Process.Pid)
			if err != nil {
				b.Fatal(err)
			}
			var worst time.Duration
			failed := 0
			for _, s := range streams {
				w, ok := s.worst(from, to)
				worst = max(worst, w)
				if !ok {
					failed++
				}
			}
			b.Logf("%d streams: slowest ack %v, %d failed streams, RSS %.0f MiB (%.3f MiB/stream)",
				level, worst.Round(time.Millisecond), failed, rss/(1<<20), (rss-base)/float64(level)/(1<<20))
			if worst >= time.Second || failed > 0 {
				break
			}
			held, perStream, worstHeld = level, (rss-base)/float64(level)/(1<<20), worst
		}
		cancel()
		for _, s := range streams {
			s.c.Conn.CloseNow()
		}
		wg.Wait()
		b.ReportMetric(float64(held), "streams-held")
		b.ReportMetric(perStream, "MiB/stream")
		b.ReportMetric(float64(worstHeld)/float64(time.Millisecond), "slowest-ack-ms")
	}
}

// benchRSS is the VmRSS of pid in bytes.
func benchRSS(pid int) (float64, error) {
	status, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return 0, err
	}
	for line := range strings.SplitSeq(string(status), "\n") {
		var kb float64
		if _, err := fmt.Sscanf(line, "VmRSS: %f kB", &kb); err == nil {
			return kb * 1024, nil
		}
	}
	return 0, fmt.Errorf("no VmRSS in /proc/%d/status", pid)
}
