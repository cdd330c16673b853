// Command benchtable is `make bench`: it runs the measured scenarios once
// (the Benchmark* functions that report the table's figures, with
// -benchtime 1x) and the idle RSS of a real `lethe run`, prints one table —
// figure, value, floor measured in the same run, ratio, target, met — and
// writes it as JSON.
//
//	go run ./cmd/benchtable -out bench/results.json
package main

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"maps"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"runtime"
	"strconv"
	"strings"
	"syscall"
	"text/tabwriter"
	"time"
)

// benchRuns are the go test runs whose benchmarks the table reads: one
// pattern per run, since a benchmark without sub-benchmarks reports nothing
// under a two-level pattern.
var benchRuns = []struct{ pkg, pattern string }{
	{"./cmd/lethe", "^(BenchmarkTableUpload|BenchmarkTableSearchable|BenchmarkTableStreams|BenchmarkTableTwilioWebhook)$"},
	// The other_users=1 case is left out: seeding a second user of that
	// size takes minutes and the target is about one.
	{"./app/forget", "^BenchmarkEraseUser$/^other_users=0$"},
	{"./workers/retention", "^BenchmarkSweep$"},
}

// Row is one line of the table.
type Row struct {
	Figure string   `json:"figure"`
	Value  float64  `json:"value"`
	Unit   string   `json:"unit"`
	Floor  *float64 `json:"floor,omitempty"`
	// FloorWhat says what the floor is.
	FloorWhat string   `json:"floor_what,omitempty"`
	Ratio     *float64 `json:"ratio,omitempty"`
	Target    string   `json:"target,omitempty"`
	Met       *bool    `json:"met,omitempty"`
}

// Results is bench/results.json.
type Results struct {
	Date      time.Time `json:"date"`
	Commit    string    `json:"commit,omitempty"`
	GoVersion string    `json:"go_version"`
	CPUs      int       `json:"cpus"`
	// LoadAvg is /proc/loadavg before and after the run: other work on
	// the machine lowers every figure (floors too; ratios less).
	LoadAvgBefore string `json:"loadavg_before"`
	LoadAvgAfter  string `json:"loadavg_after"`
	Rows          []Row  `json:"rows"`
	// Metrics are every benchmark metric as reported, by benchmark name.
	Metrics map[string]map[string]float64 `json:"metrics"`
}

func main() {
	out := flag.String("out", "bench/results.json", "where to write the results")
	bare := flag.Bool("bare-server", false, "internal: serve a bare net/http handler on $LETHE_ADDR (the idle RSS floor)")
	idle := flag.Duration("idle", 3*time.Second, "how long `lethe run` idles before its RSS is read")
	flag.Parse()
	if *bare {
		serveBare()
		return
	}
	if err := run(context.Background(), *out, *idle); err != nil {
		fmt.Fprintln(os.Stderr, "benchtable:", err)
		os.Exit(1)
	}
}

// serveBare is the smallest HTTP server: the floor for idle RSS.
func serveBare() {
	http.HandleFunc("/healthz", func(w http.ResponseWriter, r *http.Request) { w.WriteHeader(http.StatusOK) })
	srv := &http.Server{Addr: os.Getenv("LETHE_ADDR"), ReadHeaderTimeout: 10 * time.Second}
	if err := srv.ListenAndServe(); err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
}

func run(ctx context.Context, out string, idle time.Duration) error {
	res := Results{Date: time.Now().UTC(), GoVersion: runtime.Version(), CPUs: runtime.NumCPU(), LoadAvgBefore: loadavg()}
	if c, err := exec.CommandContext(ctx, "git", "rev-parse", "--short", "HEAD").Output(); err == nil {
		res.Commit = strings.TrimSpace(string(c))
	}

	// Idle RSS first, while nothing else of ours runs.
	tmp, err := os.MkdirTemp("", "benchtable-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(tmp)
	bin := filepath.Join(tmp, "lethe")
	fmt.Fprintln(os.Stderr, "building lethe and measuring idle RSS…")
	if err := runCmd(ctx, "go", "build", "-o", bin, "./cmd/lethe"); err != nil {
		return err
	}
	rss, err := idleRSS(ctx, bin, []string{"run"}, filepath.Join(tmp, "data"), idle)
	if err != nil {
		return fmt.Errorf("idle RSS of lethe run: %w", err)
	}
	self, err := os.Executable()
	if err != nil {
		return err
	}
	bareRSS, err := idleRSS(ctx, self, []string{"-bare-server"}, filepath.Join(tmp, "bare"), idle)
	if err != nil {
		return fmt.Errorf("idle RSS of a bare server: %w", err)
	}

	metrics := map[string]map[string]float64{}
	for _, r := range benchRuns {
		fmt.Fprintf(os.Stderr, "go test -bench %s %s\n", r.pattern, r.pkg)
		got, err := goBench(ctx, r.pkg, r.pattern)
		if err != nil {
			return err
		}
		maps.Copy(metrics, got)
	}
	res.Metrics = metrics
	res.LoadAvgAfter = loadavg()
	res.Rows, err = rows(metrics, rss, bareRSS)
	if err != nil {
		return err
	}

	printTable(os.Stdout, res)
	raw, err := json.MarshalIndent(res, "", "  ")
	if err != nil {
		return err
	}
	if err := os.MkdirAll(filepath.Dir(out), 0o755); err != nil {
		return err
	}
	return os.WriteFile(out, append(raw, '\n'), 0o644)
}

// goBench runs pkg's benchmarks matching pattern once and returns their
// metrics.
func goBench(ctx context.Context, pkg, pattern string) (map[string]map[string]float64, error) {
	cmd := exec.CommandContext(ctx, "go", "test", "-run", "^$", "-bench", pattern, "-benchtime", "1x", "-timeout", "10m", "-json", pkg)
	cmd.Stderr = os.Stderr
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		return nil, err
	}
	if err := cmd.Start(); err != nil {
		return nil, err
	}
	metrics, perr := parseBench(stdout)
	if err := cmd.Wait(); err != nil {
		return nil, fmt.Errorf("go test -bench %s %s: %w", pattern, pkg, err)
	}
	return metrics, perr
}

func runCmd(ctx context.Context, name string, args ...string) error {
	cmd := exec.CommandContext(ctx, name, args...)
	cmd.Stdout, cmd.Stderr = os.Stderr, os.Stderr
	if err := cmd.Run(); err != nil {
		return fmt.Errorf("%s %s: %w", name, strings.Join(args, " "), err)
	}
	return nil
}

// idleRSS starts bin with args on a free port and its own data dir, waits
// until /healthz answers, lets it idle, and reads its VmRSS in bytes.
func idleRSS(ctx context.Context, bin string, args []string, dataDir string, idle time.Duration) (float64, error) {
	addr, err := freeAddr()
	if err != nil {
		return 0, err
	}
	cmd := exec.CommandContext(ctx, bin, args...)
	cmd.Env = append(os.Environ(), "LETHE_ADDR="+addr, "LETHE_DATA_DIR="+dataDir, "LETHE_LOG_LEVEL=warn")
	cmd.Stdout, cmd.Stderr = io.Discard, os.Stderr
	if err := cmd.Start(); err != nil {
		return 0, err
	}
	defer func() {
		_ = cmd.Process.Signal(syscall.SIGTERM)
		done := make(chan struct{})
		go func() { _ = cmd.Wait(); close(done) }()
		select {
		case <-done:
		case <-time.After(30 * time.Second):
			_ = cmd.Process.Kill()
			<-done
		}
	}()
	deadline := time.Now().Add(time.Minute)
	for {
		resp, err := http.Get("http://" + addr + "/healthz")
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				break
			}
		}
		if time.Now().After(deadline) {
			return 0, fmt.Errorf("not healthy after a minute: %v", err)
		}
		time.Sleep(50 * time.Millisecond)
	}
	time.Sleep(idle)
	status, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", cmd.Process.Pid))
	if err != nil {
		return 0, err
	}
	return vmRSS(status)
}

// vmRSS reads the VmRSS line of /proc/<pid>/status, in bytes.
func vmRSS(status []byte) (float64, error) {
	sc := bufio.NewScanner(bytes.NewReader(status))
	for sc.Scan() {
		f := strings.Fields(sc.Text())
		if len(f) == 3 && f[0] == "VmRSS:" && f[2] == "kB" {
			kb, err := strconv.ParseFloat(f[1], 64)
			if err != nil {
				return 0, fmt.Errorf("VmRSS %q: %w", f[1], err)
			}
			return kb * 1024, nil
		}
	}
	return 0, errors.New("no VmRSS in /proc/<pid>/status")
}

func freeAddr() (string, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return "", err
	}
	defer ln.Close()
	return ln.Addr().String(), nil
}

func loadavg() string {
	raw, err := os.ReadFile("/proc/loadavg")
	if err != nil {
		return ""
	}
	f := strings.Fields(string(raw))
	if len(f) < 3 {
		return ""
	}
	return strings.Join(f[:3], " ")
}

// benchLine is a benchmark result line: name-procs, iterations, then
// value-unit pairs.
var benchLine = regexp.MustCompile(`^(Benchmark\S+?)(?:-\d+)?\s+(\d+)\s+(.+)$`)

// parseBench reads `go test -json` output and returns each benchmark's
// metrics (the last result line of each name wins).
func parseBench(r io.Reader) (map[string]map[string]float64, error) {
	// Output events may split a line; join each package's output first.
	var text = map[string]*strings.Builder{}
	var order []string
	var failed []string
	dec := json.NewDecoder(r)
	for {
		var ev struct {
			Action  string
			Package string
			Output  string
		}
		if err := dec.Decode(&ev); err == io.EOF {
			break
		} else if err != nil {
			return nil, fmt.Errorf("go test -json: %w", err)
		}
		if ev.Action == "fail" && ev.Package != "" {
			failed = append(failed, ev.Package)
		}
		if ev.Action != "output" {
			continue
		}
		sb, ok := text[ev.Package]
		if !ok {
			sb = &strings.Builder{}
			text[ev.Package] = sb
			order = append(order, ev.Package)
		}
		sb.WriteString(ev.Output)
		fmt.Fprint(os.Stderr, ev.Output)
	}
	if len(failed) > 0 {
		return nil, fmt.Errorf("benchmarks failed in %s", strings.Join(failed, ", "))
	}
	out := map[string]map[string]float64{}
	for _, pkg := range order {
		for line := range strings.SplitSeq(text[pkg].String(), "\n") {
			m := benchLine.FindStringSubmatch(strings.TrimSpace(line))
			if m == nil {
				continue
			}
			f := strings.Fields(m[3])
			if len(f)%2 != 0 {
				continue
			}
			got := map[string]float64{}
			for i := 0; i < len(f); i += 2 {
				v, err := strconv.ParseFloat(f[i], 64)
				if err != nil {
					got = nil
					break
				}
				got[f[i+1]] = v
			}
			if got != nil {
				out[m[1]] = got
			}
		}
	}
	return out, nil
}

func ptr[T any](v T) *T { return &v }

// rows builds the table from the metrics; a missing figure is an error (a
// renamed benchmark or metric must not silently drop a row).
func rows(m map[string]map[string]float64, rss, bareRSS float64) ([]Row, error) {
	var missing []string
	get := func(bench, unit string) float64 {
		v, ok := m[bench][unit]
		if !ok {
			missing = append(missing, bench+" "+unit)
		}
		return v
	}
	atLeast := func(v, t float64) *bool { return ptr(v >= t) }
	below := func(v, t float64) *bool { return ptr(v < t) }

	up, bare := get("BenchmarkTableUpload", "uploads/s"), get("BenchmarkTableUpload", "bare-uploads/s")
	p99, bareP99 := get("BenchmarkTableUpload", "p99-ms"), get("BenchmarkTableUpload", "bare-p99-ms")
	cpu, bareCPU := get("BenchmarkTableUpload", "cpu-ms/upload"), get("BenchmarkTableUpload", "bare-cpu-ms/upload")
	sp50, sp99 := get("BenchmarkTableSearchable", "searchable-p50-ms"), get("BenchmarkTableSearchable", "searchable-p99-ms")
	cps := get("BenchmarkTableSearchable", "chunks/s")
	erase0 := get("BenchmarkEraseUser/other_users=0", "ms/erasure")
	sweep := get("BenchmarkSweep/transcripts+vectors", "items/s")
	sweepAudio := get("BenchmarkSweep/with-audio", "items/s")
	streams, perStream := get("BenchmarkTableStreams", "streams-held"), get("BenchmarkTableStreams", "MiB/stream")
	hook, bareHook := get("BenchmarkTableTwilioWebhook", "webhooks/s"), get("BenchmarkTableTwilioWebhook", "bare-webhooks/s")
	hookP99, bareHookP99 := get("BenchmarkTableTwilioWebhook", "p99-ms"), get("BenchmarkTableTwilioWebhook", "bare-p99-ms")
	if len(missing) > 0 {
		return nil, fmt.Errorf("missing from the benchmark output: %s", strings.Join(missing, "; "))
	}
	ratio := func(a, b float64) *float64 {
		if b == 0 {
			return nil
		}
		return ptr(a / b)
	}
	const mb = 1 << 20
	return []Row{
		{Figure: "chunk upload, 16 clients, 32 KiB WAV (workers off)", Value: up, Unit: "uploads/s",
			Floor: ptr(bare), FloorWhat: "bare net/http + write + fsync", Ratio: ratio(up, bare), Target: "≥ 0.5× floor", Met: atLeast(up, bare/2)},
		{Figure: "chunk upload p99", Value: p99, Unit: "ms", Floor: ptr(bareP99), FloorWhat: "bare net/http + write + fsync", Ratio: ratio(p99, bareP99)},
		{Figure: "process CPU per upload (incl. load clients)", Value: cpu, Unit: "ms", Floor: ptr(bareCPU), FloorWhat: "bare net/http + write + fsync", Ratio: ratio(cpu, bareCPU)},
		{Figure: "upload ack → searchable p50 (16 clients, 1 chunk/s each)", Value: sp50, Unit: "ms"},
		{Figure: "upload ack → searchable p99", Value: sp99, Unit: "ms", Target: "< 250 ms", Met: below(sp99, 250)},
		{Figure: "sustained upload → indexed (all workers, instant STT+embedder)", Value: cps, Unit: "chunks/s",
			Floor: ptr(up), FloorWhat: "the edge alone (workers off), above", Ratio: ratio(cps, up), Target: "≥ 1,000 chunks/s", Met: atLeast(cps, 1000)},
		{Figure: "idle RSS of lethe run", Value: rss / mb, Unit: "MB", Floor: ptr(bareRSS / mb), FloorWhat: "bare net/http server", Ratio: ratio(rss, bareRSS), Target: "< 80 MB", Met: below(rss/mb, 80)},
		{Figure: "erase one user (10k conversations, 100k vectors, 10k blobs)", Value: erase0 / 1000, Unit: "s", Target: "< 30 s", Met: below(erase0/1000, 30)},
		{Figure: "retention sweep (transcripts + vectors)", Value: sweep, Unit: "items/s", Target: "≥ 10,000/s", Met: atLeast(sweep, 10000)},
		{Figure: "retention sweep (with audio)", Value: sweepAudio, Unit: "items/s"},
		{Figure: "real-time PCM16 streams held, every ack < 1 s (lethe run, workers off, 100 ms frames, 10 s chunks)", Value: streams, Unit: "streams",
			Target: "≥ 500", Met: atLeast(streams, 500)},
		{Figure: "RSS per open stream (at that count)", Value: perStream, Unit: "MiB", Target: "< 1 MiB", Met: below(perStream, 1)},
		{Figure: "Twilio SMS webhook, 16 clients (verify + validate + seal + publish)", Value: hook, Unit: "req/s",
			Floor: ptr(bareHook), FloorWhat: "bare net/http reading the same body", Ratio: ratio(hook, bareHook), Target: "≥ 1/3 floor", Met: atLeast(hook, bareHook/3)},
		{Figure: "Twilio SMS webhook p99", Value: hookP99, Unit: "ms",
			Floor: ptr(bareHookP99), FloorWhat: "bare net/http reading the same body", Ratio: ratio(hookP99, bareHookP99), Target: "≤ 3× floor", Met: ptr(hookP99 <= 3*bareHookP99)},
	}, nil
}

func printTable(w io.Writer, res Results) {
	fmt.Fprintf(w, "lethe bench — %s, commit %s, %s, %d CPUs, load average %s → %s\n\n",
		res.Date.Format(time.RFC3339), res.Commit, res.GoVersion, res.CPUs, res.LoadAvgBefore, res.LoadAvgAfter)
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "figure\tvalue\tfloor (same run)\tratio\ttarget\tmet")
	for _, r := range res.Rows {
		floor, ratio, met := "—", "—", "—"
		if r.Floor != nil {
			floor = fmt.Sprintf("%s %s (%s)", num(*r.Floor), r.Unit, r.FloorWhat)
		}
		if r.Ratio != nil {
			ratio = fmt.Sprintf("%.2f×", *r.Ratio)
		}
		if r.Met != nil {
			met = map[bool]string{true: "yes", false: "NO"}[*r.Met]
		}
		target := r.Target
		if target == "" {
			target = "—"
		}
		fmt.Fprintf(tw, "%s\t%s %s\t%s\t%s\t%s\t%s\n", r.Figure, num(r.Value), r.Unit, floor, ratio, target, met)
	}
	_ = tw.Flush()
}

func num(v float64) string {
	switch {
	case v >= 100:
		return strconv.FormatFloat(v, 'f', 0, 64)
	case v >= 10:
		return strconv.FormatFloat(v, 'f', 1, 64)
	default:
		return strconv.FormatFloat(v, 'f', 2, 64)
	}
}
