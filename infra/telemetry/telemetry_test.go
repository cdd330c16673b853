package telemetry_test

import (
	"context"
	"errors"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/cloudevents/sdk-go/v2/event"
	"go.opentelemetry.io/otel/attribute"
	sdkmetric "go.opentelemetry.io/otel/sdk/metric"
	"go.opentelemetry.io/otel/sdk/metric/metricdata"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/sdk/trace/tracetest"
	"go.opentelemetry.io/otel/trace"

	"github.com/lethe-dev/lethe/events"
	"github.com/lethe-dev/lethe/infra/telemetry"
	"github.com/lethe-dev/lethe/internal/testbus"
)

const incoming = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"

func newTel(t *testing.T) (*telemetry.Telemetry, *tracetest.SpanRecorder, *sdkmetric.ManualReader) {
	t.Helper()
	spans := tracetest.NewSpanRecorder()
	reader := sdkmetric.NewManualReader()
	tel, err := telemetry.New(t.Context(), telemetry.Config{
		Service: t.Name(), SampleRatio: 1,
		SpanProcessors: []sdktrace.SpanProcessor{spans}, MetricReaders: []sdkmetric.Reader{reader},
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = tel.Shutdown(context.Background()) })
	return tel, spans, reader
}

func newEvent(t *testing.T) event.Event {
	t.Helper()
	e := event.New()
	e.SetID(t.Name())
	e.SetType("dev.lethe.test.v1")
	e.SetSource("//lethe/test")
	return e
}

// TestOneTraceAcrossPubSub: a request's trace reaches the handler of the
// event it published, through the event's traceparent extension.
func TestOneTraceAcrossPubSub(t *testing.T) {
	tel, spans, _ := newTel(t)
	req := httptest.NewRequest("PUT", "/v1/conversations/c1/chunks/0", nil)
	req.Header.Set("traceparent", incoming)
	ctx, end := tel.StartRequest(req)
	rec := &testbus.Recorder{}
	if err := tel.Publisher(rec).Publish(ctx, "audio", newEvent(t)); err != nil {
		t.Fatal(err)
	}
	end("PUT /v1/conversations/{cid}/chunks/{seq}", 202)

	got := rec.All()
	if len(got) != 1 {
		t.Fatalf("%d events published", len(got))
	}
	tp, _ := got[0].Event.Extensions()["traceparent"].(string)
	if !strings.HasPrefix(tp, "00-4bf92f3577b34da6a3ce929d0e0e4736-") {
		t.Fatalf("published traceparent %q, want the request's trace", tp)
	}
	var inHandler trace.SpanContext
	h := tel.Middleware(func(ctx context.Context, e event.Event) error {
		inHandler = trace.SpanContextFromContext(ctx)
		return nil
	})
	if err := h(context.Background(), got[0].Event); err != nil {
		t.Fatal(err)
	}
	if inHandler.TraceID().String() != "4bf92f3577b34da6a3ce929d0e0e4736" {
		t.Fatalf("handler's trace %s, want the request's", inHandler.TraceID())
	}
	ended := spans.Ended()
	kinds := map[trace.SpanKind]bool{}
	for _, s := range ended {
		kinds[s.SpanKind()] = true
		if s.SpanContext().TraceID().String() != "4bf92f3577b34da6a3ce929d0e0e4736" {
			t.Errorf("span %q in trace %s", s.Name(), s.SpanContext().TraceID())
		}
	}
	if !kinds[trace.SpanKindServer] || !kinds[trace.SpanKindProducer] || !kinds[trace.SpanKindConsumer] {
		t.Fatalf("span kinds %v, want server, producer and consumer", kinds)
	}
	for _, s := range ended {
		if s.SpanKind() == trace.SpanKindServer && s.Name() != "PUT /v1/conversations/{cid}/chunks/{seq}" {
			t.Errorf("server span named %q, want the route pattern", s.Name())
		}
	}
}

// TestMetrics: handler outcomes and latencies, request latencies and
// security events are recorded with their attributes.
func TestMetrics(t *testing.T) {
	tel, _, reader := newTel(t)
	ok := tel.Middleware(func(context.Context, event.Event) error { return nil })
	poison := tel.Middleware(func(context.Context, event.Event) error { return events.Permanent(errors.New("bad")) })
	_ = ok(t.Context(), newEvent(t))
	_ = poison(t.Context(), newEvent(t))
	_, end := tel.StartRequest(httptest.NewRequest("GET", "/healthz", nil))
	end("GET /healthz", 200)
	tel.SecurityEvent(t.Context(), "auth_failure", "expired")
	tel.SecurityEvent(t.Context(), "auth_failure", "expired")

	var rm metricdata.ResourceMetrics
	if err := reader.Collect(t.Context(), &rm); err != nil {
		t.Fatal(err)
	}
	found := map[string]metricdata.Aggregation{}
	for _, sm := range rm.ScopeMetrics {
		for _, m := range sm.Metrics {
			found[m.Name] = m.Data
		}
	}
	hd, okH := found["lethe.handler.duration"].(metricdata.Histogram[float64])
	if !okH {
		t.Fatalf("no handler histogram in %v", found)
	}
	outcomes := map[string]uint64{}
	for _, dp := range hd.DataPoints {
		v, _ := dp.Attributes.Value(attribute.Key("lethe.outcome"))
		outcomes[v.AsString()] += dp.Count
	}
	if outcomes["ack"] != 1 || outcomes["dead-letter"] != 1 {
		t.Errorf("handler outcomes %v, want one ack and one dead letter", outcomes)
	}
	if rd, ok := found["lethe.http.server.duration"].(metricdata.Histogram[float64]); !ok || len(rd.DataPoints) != 1 || rd.DataPoints[0].Count != 1 {
		t.Errorf("request histogram %v", found["lethe.http.server.duration"])
	}
	sec, okS := found["lethe.security.events"].(metricdata.Sum[int64])
	if !okS || len(sec.DataPoints) != 1 || sec.DataPoints[0].Value != 2 {
		t.Fatalf("security events %v, want 2 auth_failure", found["lethe.security.events"])
	}
}

// TestNilTelemetryFollowsIncomingTrace: without telemetry, logs still carry
// the caller's trace and the event's.
func TestNilTelemetryFollowsIncomingTrace(t *testing.T) {
	var tel *telemetry.Telemetry
	req := httptest.NewRequest("GET", "/", nil)
	req.Header.Set("traceparent", incoming)
	ctx, end := tel.StartRequest(req)
	defer end("", 200)
	if sc := trace.SpanContextFromContext(ctx); sc.TraceID().String() != "4bf92f3577b34da6a3ce929d0e0e4736" {
		t.Fatalf("trace %s, want the caller's", sc.TraceID())
	}
	e := newEvent(t)
	e.SetExtension("traceparent", incoming)
	var got trace.SpanContext
	err := tel.Middleware(func(ctx context.Context, _ event.Event) error {
		got = trace.SpanContextFromContext(ctx)
		return nil
	})(t.Context(), e)
	if err != nil || got.TraceID().String() != "4bf92f3577b34da6a3ce929d0e0e4736" {
		t.Fatalf("handler trace %s (%v), want the event's", got.TraceID(), err)
	}
	tel.SecurityEvent(t.Context(), "auth_failure", "x") // no panic
	if err := tel.Shutdown(t.Context()); err != nil {
		t.Fatal(err)
	}
}

func TestConfigValidate(t *testing.T) {
	for _, tc := range []struct {
		name string
		cfg  telemetry.Config
		ok   bool
	}{
		{"defaults", telemetry.Config{}, true},
		{"stdout", telemetry.Config{Traces: "stdout", SampleRatio: 1}, true},
		{"otlp google", telemetry.Config{Traces: "otlp", OTLPEndpoint: telemetry.GoogleOTLPEndpoint}, true},
		{"otlp collector", telemetry.Config{Traces: "otlp", OTLPEndpoint: "http://127.0.0.1:4317"}, true},
		{"otlp no scheme", telemetry.Config{Traces: "otlp", OTLPEndpoint: "127.0.0.1:4317"}, false},
		{"unknown traces", telemetry.Config{Traces: "jaeger"}, false},
		{"gcp metrics without project", telemetry.Config{Metrics: "gcp"}, false},
		{"gcp metrics", telemetry.Config{Metrics: "gcp", ProjectID: "p"}, true},
		{"unknown metrics", telemetry.Config{Metrics: "prometheus"}, false},
		{"ratio above 1", telemetry.Config{SampleRatio: 1.5}, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if err := tc.cfg.Validate(); (err == nil) != tc.ok {
				t.Fatalf("Validate = %v, want ok %v", err, tc.ok)
			}
		})
	}
}

// FuzzEventTraceContext: whatever trace context an event carries (it
// comes from outside), the handler runs, and a trace it adopts is the one
// the event names.
func FuzzEventTraceContext(f *testing.F) {
	f.Add(incoming, "")
	f.Add("00-00000000000000000000000000000000-00f067aa0ba902b7-01", "a=b")
	f.Add("ff-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01", "")
	f.Add("garbage", strings.Repeat("k=v,", 100))
	var tel *telemetry.Telemetry
	f.Fuzz(func(t *testing.T, tp, ts string) {
		e := event.New()
		e.SetID("x")
		e.SetType("dev.lethe.test.v1")
		e.SetSource("//lethe/test")
		e.SetExtension("traceparent", tp)
		e.SetExtension("tracestate", ts)
		ran := false
		err := tel.Middleware(func(ctx context.Context, _ event.Event) error {
			ran = true
			if sc := trace.SpanContextFromContext(ctx); sc.IsValid() && !strings.Contains(strings.ToLower(tp), sc.TraceID().String()) {
				t.Fatalf("adopted trace %s from traceparent %q", sc.TraceID(), tp)
			}
			return nil
		})(context.Background(), e)
		if err != nil || !ran {
			t.Fatalf("handler ran %v, err %v", ran, err)
		}
	})
}
