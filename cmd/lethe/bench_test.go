package main

import (
	"context"
	"fmt"
	"net/http"
	"testing"
	"time"

	"github.com/lethe-dev/lethe/app/records"
	"github.com/lethe-dev/lethe/infra/docs"
)

// BenchmarkPipelineInstantSTT measures the whole pipeline per chunk — edge,
// bus, transcribe, embed, store, with sealing at every step — with an
// instant recogniser, so the number is ours and not PocketSphinx's.
func BenchmarkPipelineInstantSTT(b *testing.B) {
	cfg := testConfig(b)
	cfg.Workers = "transcribe,embed,store"
	p := startTestPipeline(b, cfg, overrides{STT: instantSTT{}})
	tok, err := p.app.issuer.Mint("bench-user", time.Hour)
	if err != nil {
		b.Fatal(err)
	}
	c := client{b, "http://" + p.addr, tok}
	wav := benchWAV()
	user := p.app.pseudo.User("bench-user")
	b.ResetTimer()
	for i := range b.N {
		if code := c.do("PUT", fmt.Sprintf("/v1/conversations/bench/chunks/%d", i), "audio/wav", wav, nil); code != http.StatusAccepted {
			b.Fatalf("upload %d: %d", i, code)
		}
	}
	// Done when every chunk is indexed.
	for {
		found, err := p.app.docs.Query(context.Background(), docs.Query{User: user, Collection: records.Chunks,
			Filters: []docs.Filter{{Field: records.FieldStatus, Op: docs.Eq, Value: records.StatusIndexed}}})
		if err != nil {
			b.Fatal(err)
		}
		if len(found) == b.N {
			break
		}
		time.Sleep(5 * time.Millisecond)
	}
	b.StopTimer()
	b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "chunks/s")
}

// BenchmarkStartup: `lethe run` from nothing to serving, and back.
func BenchmarkStartup(b *testing.B) {
	dir := b.TempDir()
	for range b.N {
		cfg := testConfig(b)
		cfg.DataDir = dir
		p := startTestPipeline(b, cfg, overrides{STT: instantSTT{}})
		resp, err := http.Get("http://" + p.addr + "/healthz")
		if err != nil {
			b.Fatal(err)
		}
		resp.Body.Close()
		if err := p.stop(); err != nil {
			b.Fatal(err)
		}
	}
}

func benchWAV() []byte {
	body, err := readTestdata("speech-hello.wav")
	if err != nil {
		panic(err)
	}
	return body
}
