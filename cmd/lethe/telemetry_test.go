package main

import (
	"bufio"
	"encoding/json"
	"net/http"
	"os"
	"strings"
	"testing"
	"time"

	"go.opentelemetry.io/otel/sdk/trace/tracetest"

	"github.com/lethe-dev/lethe/events"
)

// TestOneUploadIsOneTrace: an upload sent with a traceparent is one trace
// from the edge through the transcribe, embed and store workers, carried
// across Pub/Sub in the events' traceparent extension, and every log line
// of it names that trace in Cloud Logging's fields.
func TestOneUploadIsOneTrace(t *testing.T) {
	const traceID = "4bf92f3577b34da6a3ce929d0e0e4736"
	cfg := testConfig(t)
	r, err := cfg.runRoles()
	if err != nil {
		t.Fatal(err)
	}
	logs := &lockedBuffer{}
	spans := tracetest.NewSpanRecorder()
	p, err := startPipeline(t.Context(), cfg, newTestJSONLogger(logs), r, overrides{STT: instantSTT{}, SpanProcessor: spans})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = p.stop() })
	tok, err := p.app.issuer.Mint("trace-user", time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	wav, err := os.ReadFile("../../testdata/speech-hello.wav")
	if err != nil {
		t.Fatal(err)
	}
	req, err := http.NewRequest("PUT", "http://"+p.addr+"/v1/conversations/traced/chunks/0", strings.NewReader(string(wav)))
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Authorization", "Bearer "+tok)
	req.Header.Set("Content-Type", "audio/wav")
	req.Header.Set("traceparent", "00-"+traceID+"-00f067aa0ba902b7-01")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusAccepted {
		t.Fatalf("upload: %d", resp.StatusCode)
	}
	client{t, "http://" + p.addr, tok}.waitDone("traced", 1)

	want := map[string]bool{
		"handle " + events.TypeChunkReceived:       false,
		"handle " + events.TypeTranscriptCreated:   false,
		"handle " + events.TypeEmbeddingCreated:    false,
		"PUT /v1/conversations/{cid}/chunks/{seq}": false,
	}
	waitFor(t, "the spans of every stage", func() bool {
		for _, s := range spans.Ended() {
			if _, ok := want[s.Name()]; ok && s.SpanContext().TraceID().String() == traceID {
				want[s.Name()] = true
			}
		}
		for _, seen := range want {
			if !seen {
				return false
			}
		}
		return true
	})
	for _, s := range spans.Ended() {
		if id := s.SpanContext().TraceID().String(); strings.HasPrefix(s.Name(), "handle ") && id != traceID {
			t.Errorf("span %q in trace %s, want %s", s.Name(), id, traceID)
		}
	}

	// The request's and the handlers' log lines carry the trace.
	traced := map[string]bool{}
	sc := bufio.NewScanner(strings.NewReader(logs.String()))
	sc.Buffer(make([]byte, 1<<20), 1<<20)
	for sc.Scan() {
		var rec map[string]any
		if json.Unmarshal(sc.Bytes(), &rec) != nil {
			continue
		}
		tr, _ := rec["logging.googleapis.com/trace"].(string)
		if strings.HasSuffix(tr, "/traces/"+traceID) || tr == traceID {
			msg, _ := rec["message"].(string)
			typ, _ := rec["event_type"].(string)
			traced[msg+" "+typ] = true
		}
	}
	if !traced["request "] {
		t.Errorf("the request's log line does not carry the trace; traced lines: %v", traced)
	}
	if len(traced) < 2 {
		t.Errorf("only %v log lines carry the trace, want the handlers' too", traced)
	}
}
