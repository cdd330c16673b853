package main

import (
	"strings"
	"testing"
)

// TestParseBench: result lines are found in go test -json output even when
// an Output event splits them or logs sit between name and result; the
// -procs suffix is dropped; a failed package is an error.
func TestParseBench(t *testing.T) {
	tests := []struct {
		name    string
		in      string
		want    map[string]map[string]float64
		wantErr bool
	}{
		{"one line", `{"Action":"output","Package":"p","Output":"BenchmarkA-2   \t       1\t 100 ns/op\t  2.5 uploads/s\n"}`,
			map[string]map[string]float64{"BenchmarkA": {"ns/op": 100, "uploads/s": 2.5}}, false},
		{"split line and sub-benchmark",
			`{"Action":"output","Package":"p","Output":"BenchmarkE/other_users=0\n"}
{"Action":"output","Package":"p","Output":"BenchmarkE/other_users=0-2 \t"}
{"Action":"output","Package":"p","Output":"       1\t 7 ns/op\t 14988 ms/erasure\n"}
{"Action":"output","Package":"p","Output":"    bench_test.go:1: log line 3 ms/x\n"}`,
			map[string]map[string]float64{"BenchmarkE/other_users=0": {"ns/op": 7, "ms/erasure": 14988}}, false},
		{"failed package", `{"Action":"output","Package":"p","Output":"--- FAIL: BenchmarkA\n"}
{"Action":"fail","Package":"p"}`, nil, true},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			got, err := parseBench(strings.NewReader(tc.in))
			if (err != nil) != tc.wantErr {
				t.Fatalf("err = %v, want error %v", err, tc.wantErr)
			}
			if tc.wantErr {
				return
			}
			if len(got) != len(tc.want) {
				t.Fatalf("got %v, want %v", got, tc.want)
			}
			for b, ms := range tc.want {
				for u, v := range ms {
					if got[b][u] != v {
						t.Errorf("%s %s = %v, want %v (all: %v)", b, u, got[b][u], v, got)
					}
				}
			}
		})
	}
}

func TestVMRSS(t *testing.T) {
	got, err := vmRSS([]byte("Name:\tlethe\nVmPeak:\t  999 kB\nVmRSS:\t   59144 kB\n"))
	if err != nil || got != 59144*1024 {
		t.Fatalf("vmRSS = %v, %v", got, err)
	}
	if _, err := vmRSS([]byte("Name:\tlethe\n")); err == nil {
		t.Fatal("no VmRSS line: want an error")
	}
}

// TestRowsRequireEveryFigure: a renamed benchmark or metric is an error,
// not a silently missing row; a met target and a missed one read so.
func TestRowsRequireEveryFigure(t *testing.T) {
	m := map[string]map[string]float64{
		"BenchmarkTableUpload": {"uploads/s": 300, "bare-uploads/s": 2000, "p99-ms": 130, "bare-p99-ms": 20,
			"cpu-ms/upload": 3.5, "bare-cpu-ms/upload": 0.5},
		"BenchmarkTableSearchable":           {"searchable-p50-ms": 40, "searchable-p99-ms": 120, "chunks/s": 56},
		"BenchmarkEraseUser/other_users=0":   {"ms/erasure": 15000},
		"BenchmarkEraseUser/other_users=1":   {"ms/erasure": 16000},
		"BenchmarkSweep/transcripts+vectors": {"items/s": 20000},
		"BenchmarkSweep/with-audio":          {"items/s": 3000},
		"BenchmarkTableStreams":              {"streams-held": 250, "MiB/stream": 0.8},
		"BenchmarkTableTwilioWebhook":        {"webhooks/s": 1000, "bare-webhooks/s": 6000, "p99-ms": 40, "bare-p99-ms": 20},
	}
	rs, err := rows(m, 50<<20, 8<<20)
	if err != nil {
		t.Fatal(err)
	}
	met := map[string]bool{}
	for _, r := range rs {
		if r.Met != nil {
			met[r.Figure] = *r.Met
		}
	}
	if met[rs[0].Figure] || !met["upload ack → searchable p99"] || !met["idle RSS of lethe run"] ||
		!met["RSS per open stream (at that count)"] {
		t.Errorf("met = %v", met)
	}
	hook := "Twilio SMS webhook, 16 clients (verify + validate + seal + publish)"
	if met[hook] || !met["Twilio SMS webhook p99"] {
		t.Errorf("webhook rows: met = %v", met)
	}
	if *rs[0].Ratio != 0.15 {
		t.Errorf("upload ratio = %v, want 0.15", *rs[0].Ratio)
	}
	delete(m, "BenchmarkSweep/with-audio")
	if _, err := rows(m, 1, 1); err == nil {
		t.Fatal("a missing figure: want an error")
	}
}
