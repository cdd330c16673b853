package main

// The benchmarks behind `make bench`'s table (cmd/benchtable runs them with
// -benchtime 1x and reads their custom metrics). Each one measures a figure
// and, where there is one, its floor in the same run, so the ratio compares
// numbers taken under the same load on the same machine.

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"math"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/lethe-dev/lethe/app/records"
	"github.com/lethe-dev/lethe/infra/audio"
	"github.com/lethe-dev/lethe/infra/docs"
	"github.com/lethe-dev/lethe/infra/embed"
)

const (
	// benchClients upload at once, each as its own user and conversation.
	benchClients = 16
	// benchUploadsPerClient bounds the upload scenario (16 × 150 = 2,400
	// uploads: a few seconds at the edge's current rate).
	benchUploadsPerClient = 150
	// benchPacedSeconds: in the latency phase each client sends one
	// 1-second chunk per second, as a recording client does.
	benchPacedSeconds = 10
	// benchBurstPerClient: in the throughput phase every client sends this
	// many chunks back to back (16 × 40 = 640 chunks).
	benchBurstPerClient = 40
)

// benchChunkWAV is a 1-second 16 kHz PCM16 mono WAV (32,044 bytes): a tone
// with a per-chunk phase, so no two chunks have the same bytes.
func benchChunkWAV(seed int) []byte {
	const rate = 16000
	s := make([]int16, rate)
	for i := range s {
		s[i] = int16(8000 * math.Sin(2*math.Pi*440*float64(i+seed*37)/rate))
	}
	return audio.EncodeWAV(audio.PCM{SampleRate: rate, Samples: s})
}

// benchHTTPClient keeps one connection per load client alive, for the edge
// and the bare handler alike.
func benchHTTPClient() *http.Client {
	t := http.DefaultTransport.(*http.Transport).Clone()
	t.MaxIdleConns, t.MaxIdleConnsPerHost = 2*benchClients, 2*benchClients
	return &http.Client{Transport: t, Timeout: time.Minute}
}

// loadResult is one load run: every request's latency and the wall time.
type benchLoadResult struct {
	lat     []time.Duration
	elapsed time.Duration
	cpu     time.Duration // this process's CPU time (user+system) during the run
}

func (r benchLoadResult) perSecond() float64 { return float64(len(r.lat)) / r.elapsed.Seconds() }

func (r benchLoadResult) cpuPerOp() time.Duration { return r.cpu / time.Duration(len(r.lat)) }

// percentile of sorted latencies (nearest rank).
func benchPercentile(sorted []time.Duration, p float64) time.Duration {
	if len(sorted) == 0 {
		return 0
	}
	i := int(math.Ceil(p/100*float64(len(sorted)))) - 1
	return sorted[max(i, 0)]
}

func benchMS(d time.Duration) float64 { return float64(d) / float64(time.Millisecond) }

func benchProcessCPU() time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// runLoad has benchClients clients send perClient requests each, back to
// back; send(client, i) does one request and returns an error unless it was
// accepted.
func benchLoad(perClient int, send func(client, i int) error) (benchLoadResult, error) {
	lats := make([][]time.Duration, benchClients)
	errs := make([]error, benchClients)
	var wg sync.WaitGroup
	cpu0, start := benchProcessCPU(), time.Now()
	for c := range benchClients {
		wg.Go(func() {
			for i := range perClient {
				t0 := time.Now()
				if err := send(c, i); err != nil {
					errs[c] = err
					return
				}
				lats[c] = append(lats[c], time.Since(t0))
			}
		})
	}
	wg.Wait()
	r := benchLoadResult{elapsed: time.Since(start), cpu: benchProcessCPU() - cpu0}
	if err := errors.Join(errs...); err != nil {
		return r, err
	}
	r.lat = slices.Concat(lats...)
	slices.Sort(r.lat)
	return r, nil
}

// put sends one chunk and reads the reply.
func benchPut(hc *http.Client, url, tok string, body []byte) error {
	req, err := http.NewRequest(http.MethodPut, url, bytes.NewReader(body))
	if err != nil {
		return err
	}
	req.Header.Set("Content-Type", "audio/wav")
	if tok != "" {
		req.Header.Set("Authorization", "Bearer "+tok)
	}
	return benchDo(hc, req, http.StatusAccepted)
}

// benchDo sends req, reads the whole reply and wants status.
func benchDo(hc *http.Client, req *http.Request, status int) error {
	resp, err := hc.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	if _, err := io.Copy(io.Discard, resp.Body); err != nil {
		return err
	}
	if resp.StatusCode != status {
		return fmt.Errorf("%s %s: status %d", req.Method, req.URL, resp.StatusCode)
	}
	return nil
}

// startBareFsync serves PUT with the least a durable upload can do: read
// the body, write it to a new file, fsync, close, 202.
func benchBareFsync(b *testing.B) string {
	dir := b.TempDir()
	var n atomic.Int64
	h := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, err := io.ReadAll(r.Body)
		if err != nil {
			http.Error(w, "read", http.StatusBadRequest)
			return
		}
		f, err := os.Create(filepath.Join(dir, fmt.Sprintf("%d", n.Add(1))))
		if err != nil {
			http.Error(w, "create", http.StatusInternalServerError)
			return
		}
		_, err = f.Write(body)
		if err == nil {
			err = f.Sync()
		}
		if cerr := f.Close(); err == nil {
			err = cerr
		}
		if err != nil {
			http.Error(w, "write", http.StatusInternalServerError)
			return
		}
		w.WriteHeader(http.StatusAccepted)
	})
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		b.Fatal(err)
	}
	srv := &http.Server{Handler: h, ReadHeaderTimeout: 10 * time.Second}
	go func() { _ = srv.Serve(ln) }()
	b.Cleanup(func() { _ = srv.Close() })
	return "http://" + ln.Addr().String()
}

// mintTokens mints one token per load client (one user each).
func benchTokens(b *testing.B, p *pipeline, prefix string) []string {
	toks := make([]string, benchClients)
	for c := range toks {
		tok, err := p.app.issuer.Mint(fmt.Sprintf("%s-%d", prefix, c), time.Hour)
		if err != nil {
			b.Fatal(err)
		}
		toks[c] = tok
	}
	return toks
}

// BenchmarkTableUpload: chunk upload through the real edge (auth,
// validation, durable blob write, chunk record, publish) with every worker
// off, against a bare net/http handler that writes and fsyncs the same
// bytes, in the same run: 16 clients, 1-second 32 KiB WAV chunks.
func BenchmarkTableUpload(b *testing.B) {
	wavs := make([][]byte, benchUploadsPerClient)
	for i := range wavs {
		wavs[i] = benchChunkWAV(i)
	}
	hc := benchHTTPClient()
	for range b.N {
		bare := benchBareFsync(b)
		floor, err := benchLoad(benchUploadsPerClient, func(c, i int) error {
			return benchPut(hc, fmt.Sprintf("%s/c%d/%d", bare, c, i), "", wavs[i])
		})
		if err != nil {
			b.Fatal(err)
		}

		cfg := testConfig(b)
		cfg.Workers = "none"
		p := startTestPipeline(b, cfg, overrides{})
		toks := benchTokens(b, p, "bench-upload")
		edge, err := benchLoad(benchUploadsPerClient, func(c, i int) error {
			return benchPut(hc, fmt.Sprintf("http://%s/v1/conversations/bench-%d/chunks/%d", p.addr, c, i), toks[c], wavs[i])
		})
		if err != nil {
			b.Fatal(err)
		}
		if err := p.stop(); err != nil {
			b.Fatal(err)
		}
		hc.CloseIdleConnections()

		b.ReportMetric(edge.perSecond(), "uploads/s")
		b.ReportMetric(benchMS(benchPercentile(edge.lat, 50)), "p50-ms")
		b.ReportMetric(benchMS(benchPercentile(edge.lat, 99)), "p99-ms")
		b.ReportMetric(benchMS(edge.cpuPerOp()), "cpu-ms/upload")
		b.ReportMetric(floor.perSecond(), "bare-uploads/s")
		b.ReportMetric(benchMS(benchPercentile(floor.lat, 99)), "bare-p99-ms")
		b.ReportMetric(benchMS(floor.cpuPerOp()), "bare-cpu-ms/upload")
		b.ReportMetric(float64(len(edge.lat)), "uploads")
	}
}

// instantEmbedder embeds in no time: a vector from the text's bytes.
type benchInstantEmbedder struct{}

func (benchInstantEmbedder) ID() string { return "instant-bench-1" }
func (benchInstantEmbedder) Dim() int   { return 8 }
func (benchInstantEmbedder) Embed(_ context.Context, texts []string, _ embed.Kind) ([][]float32, error) {
	out := make([][]float32, len(texts))
	for i, t := range texts {
		v := make([]float32, 8)
		for j := range len(t) {
			v[j%8] += float32(t[j])
		}
		v[0]++
		out[i] = v
	}
	return out, nil
}

// indexedWatch polls the chunks that are acknowledged but not yet indexed
// (point reads, in acknowledgement order) and records when each became
// indexed.
type benchIndexedWatch struct {
	store docs.Store
	// inOrder stops each poll at the first chunk not yet indexed: the
	// pipeline works roughly in arrival order, so a backlog of hundreds
	// costs a few reads per poll instead of hundreds.
	inOrder bool
	every   time.Duration
	mu      sync.Mutex
	pending map[docs.Key]time.Time // key → ack time
	order   []docs.Key
	lat     []time.Duration
	last    time.Time
}

func newBenchIndexedWatch(store docs.Store, inOrder bool, every time.Duration) *benchIndexedWatch {
	return &benchIndexedWatch{store: store, inOrder: inOrder, every: every, pending: map[docs.Key]time.Time{}}
}

func (w *benchIndexedWatch) acked(k docs.Key, at time.Time) {
	w.mu.Lock()
	w.pending[k] = at
	w.order = append(w.order, k)
	w.mu.Unlock()
}

func (w *benchIndexedWatch) poll(ctx context.Context) error {
	w.mu.Lock()
	keys := slices.Clone(w.order)
	w.mu.Unlock()
	for _, k := range keys {
		d, err := w.store.Get(ctx, k)
		if err != nil {
			return fmt.Errorf("docs.Get: %w", err)
		}
		c, err := records.ChunkFrom(d)
		if err != nil {
			return err
		}
		if c.Status == records.StatusFailed {
			return fmt.Errorf("chunk %s failed", k.ID)
		}
		if c.Status != records.StatusIndexed {
			if w.inOrder {
				break
			}
			continue
		}
		now := time.Now()
		w.mu.Lock()
		w.lat = append(w.lat, now.Sub(w.pending[k]))
		delete(w.pending, k)
		w.order = slices.DeleteFunc(w.order, func(o docs.Key) bool { return o == k })
		w.last = now
		w.mu.Unlock()
	}
	return nil
}

// wait polls until every acknowledged chunk is indexed (or timeout).
func (w *benchIndexedWatch) wait(ctx context.Context, timeout time.Duration) error {
	deadline := time.Now().Add(timeout)
	for {
		if err := w.poll(ctx); err != nil {
			return err
		}
		w.mu.Lock()
		left := len(w.pending)
		w.mu.Unlock()
		if left == 0 {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("%d chunks not indexed after %v", left, timeout)
		}
		time.Sleep(w.every)
	}
}

// BenchmarkTableSearchable: upload acknowledged → chunk indexed (its vector
// searchable), with every worker on and an instant recogniser and
// embedder. Latency is measured with 16 clients each sending one 1-second
// chunk per second (a real recording's pace); sustained throughput with
// the same clients sending their chunks back to back, from the first
// upload to the last chunk indexed.
func BenchmarkTableSearchable(b *testing.B) {
	hc := benchHTTPClient()
	ctx := context.Background()
	for range b.N {
		cfg := testConfig(b)
		p := startTestPipeline(b, cfg, overrides{STT: instantSTT{}, Embedder: benchInstantEmbedder{}})
		toks := benchTokens(b, p, "bench-search")
		users := make([]string, benchClients)
		for c := range users {
			users[c] = p.app.pseudo.User(fmt.Sprintf("bench-search-%d", c))
		}

		// Latency: paced, polled until indexed.
		paced := newBenchIndexedWatch(p.app.docs, false, time.Millisecond)
		stop := make(chan struct{})
		pollErr := make(chan error, 1)
		go func() {
			for {
				select {
				case <-stop:
					pollErr <- nil
					return
				case <-time.After(time.Millisecond):
				}
				if err := paced.poll(ctx); err != nil {
					pollErr <- err
					return
				}
			}
		}()
		start := time.Now()
		_, err := benchLoad(benchPacedSeconds, func(c, i int) error {
			// Spread the clients over the second, then one chunk a second.
			time.Sleep(time.Until(start.Add(time.Duration(i)*time.Second + time.Duration(c)*time.Second/benchClients)))
			cid := fmt.Sprintf("paced-%d", c)
			if err := benchPut(hc, fmt.Sprintf("http://%s/v1/conversations/%s/chunks/%d", p.addr, cid, i), toks[c], benchChunkWAV(i)); err != nil {
				return err
			}
			paced.acked(records.ChunkKey(users[c], cid, i), time.Now())
			return nil
		})
		close(stop)
		if perr := <-pollErr; err == nil {
			err = perr
		}
		if err == nil {
			err = paced.wait(ctx, time.Minute)
		}
		if err != nil {
			b.Fatal(err)
		}
		slices.Sort(paced.lat)

		// Throughput: back to back; the watch starts after the uploads so
		// its reads do not compete with them.
		burst := newBenchIndexedWatch(p.app.docs, true, 5*time.Millisecond)
		start = time.Now()
		up, err := benchLoad(benchBurstPerClient, func(c, i int) error {
			cid := fmt.Sprintf("burst-%d", c)
			if err := benchPut(hc, fmt.Sprintf("http://%s/v1/conversations/%s/chunks/%d", p.addr, cid, i), toks[c], benchChunkWAV(i)); err != nil {
				return err
			}
			burst.acked(records.ChunkKey(users[c], cid, i), time.Now())
			return nil
		})
		if err == nil {
			err = burst.wait(ctx, 5*time.Minute)
		}
		if err != nil {
			b.Fatal(err)
		}
		if err := p.stop(); err != nil {
			b.Fatal(err)
		}
		hc.CloseIdleConnections()
		sustained := float64(len(up.lat)) / burst.last.Sub(start).Seconds()

		b.ReportMetric(benchMS(benchPercentile(paced.lat, 50)), "searchable-p50-ms")
		b.ReportMetric(benchMS(benchPercentile(paced.lat, 99)), "searchable-p99-ms")
		b.ReportMetric(float64(len(paced.lat)), "paced-chunks")
		b.ReportMetric(sustained, "chunks/s")
		b.ReportMetric(up.perSecond(), "burst-uploads/s")
		b.ReportMetric(float64(len(up.lat)), "burst-chunks")
	}
}
