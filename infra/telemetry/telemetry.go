// Package telemetry is lethe's OpenTelemetry: a span for each edge request
// and each event handler, W3C trace context carried across Pub/Sub in the
// CloudEvents "traceparent" extension (the CloudEvents distributed-tracing
// extension), so one upload is one trace through every worker, and metrics
// of handler latency and outcome, request latency and security events.
//
// Spans are always made, so every log line of a request or handler carries
// its trace id (infra/logging reads it from the context); they leave the
// process only when an exporter is configured. Exporters are off by default:
// traces go to an OTLP endpoint (Google's telemetry.googleapis.com with
// Application Default Credentials, or a collector) or to stdout; metrics to
// Cloud Monitoring. Nothing here is global: one *Telemetry is made in main
// and passed down; a nil *Telemetry makes spans that record nothing but
// still carries an incoming trace context through.
package telemetry

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strconv"
	"time"

	mexporter "github.com/GoogleCloudPlatform/opentelemetry-operations-go/exporter/metric"
	"github.com/cloudevents/sdk-go/v2/event"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/codes"
	"go.opentelemetry.io/otel/exporters/otlp/otlptrace"
	"go.opentelemetry.io/otel/exporters/otlp/otlptrace/otlptracegrpc"
	"go.opentelemetry.io/otel/exporters/stdout/stdouttrace"
	"go.opentelemetry.io/otel/metric"
	"go.opentelemetry.io/otel/propagation"
	sdkmetric "go.opentelemetry.io/otel/sdk/metric"
	"go.opentelemetry.io/otel/sdk/resource"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/trace"
	nooptrace "go.opentelemetry.io/otel/trace/noop"
	"golang.org/x/oauth2/google"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/oauth"

	"github.com/lethe-dev/lethe/events"
	"github.com/lethe-dev/lethe/infra/bus"
)

// Exporter names (configuration values).
const (
	ExporterNone   = "none"
	ExporterStdout = "stdout" // traces only: one JSON span per line
	ExporterOTLP   = "otlp"   // traces only: OTLP/gRPC to Config.OTLPEndpoint
	ExporterGCP    = "gcp"    // metrics only: Cloud Monitoring
)

// GoogleOTLPEndpoint is Google Cloud's OTLP endpoint (Cloud Trace); calls to
// it carry Application Default Credentials.
const GoogleOTLPEndpoint = "https://telemetry.googleapis.com:443"

// Config selects exporters. Nothing here reads the environment.
type Config struct {
	Service string // service.name, e.g. "lethe-edge"
	// ProjectID is the Google Cloud project of Cloud Monitoring metrics and
	// of Cloud Trace when traces go to GoogleOTLPEndpoint.
	ProjectID string
	Traces    string // ExporterNone (or ""), ExporterStdout or ExporterOTLP
	Metrics   string // ExporterNone (or "") or ExporterGCP
	// OTLPEndpoint is a URL: https://host:port (TLS) or http://host:port
	// (plaintext, a collector beside the service).
	OTLPEndpoint string
	// SampleRatio of new traces exported (0..1); a sampled parent's
	// decision is followed.
	SampleRatio float64
	// MetricInterval between metric exports (default 60 s, Cloud
	// Monitoring's finest useful period).
	MetricInterval time.Duration
	// Stdout receives stdout spans.
	Stdout io.Writer

	// For tests: extra span processors and metric readers, whatever the
	// exporters.
	SpanProcessors []sdktrace.SpanProcessor
	MetricReaders  []sdkmetric.Reader
}

// Validate checks the exporter names and the endpoint.
func (c Config) Validate() error {
	var errs []error
	switch c.Traces {
	case "", ExporterNone, ExporterStdout:
	case ExporterOTLP:
		if u, err := url.Parse(c.OTLPEndpoint); err != nil || (u.Scheme != "https" && u.Scheme != "http") || u.Host == "" {
			errs = append(errs, fmt.Errorf("OTLP endpoint %q: want https://host:port or http://host:port", c.OTLPEndpoint))
		}
	default:
		errs = append(errs, fmt.Errorf("traces exporter %q: want none, stdout or otlp", c.Traces))
	}
	switch c.Metrics {
	case "", ExporterNone:
	case ExporterGCP:
		if c.ProjectID == "" {
			errs = append(errs, errors.New("metrics exporter gcp needs a project id"))
		}
	default:
		errs = append(errs, fmt.Errorf("metrics exporter %q: want none or gcp", c.Metrics))
	}
	if c.SampleRatio < 0 || c.SampleRatio > 1 {
		errs = append(errs, fmt.Errorf("sample ratio %v: want 0..1", c.SampleRatio))
	}
	return errors.Join(errs...)
}

// Telemetry makes spans and records metrics. Its methods are safe for
// concurrent use; they work on a nil *Telemetry (no export).
type Telemetry struct {
	tracer   trace.Tracer
	prop     propagation.TextMapPropagator
	shutdown []func(context.Context) error

	handlerDuration metric.Float64Histogram
	requestDuration metric.Float64Histogram
	securityEvents  metric.Int64Counter
}

// New sets up the providers of cfg.
func New(ctx context.Context, cfg Config) (*Telemetry, error) {
	if err := cfg.Validate(); err != nil {
		return nil, fmt.Errorf("telemetry: %w", err)
	}
	res := resource.NewSchemaless(
		attribute.String("service.name", cfg.Service),
		attribute.String("gcp.project_id", cfg.ProjectID),
	)
	t := &Telemetry{prop: propagation.TraceContext{}}

	topts := []sdktrace.TracerProviderOption{
		sdktrace.WithResource(res),
		sdktrace.WithSampler(sdktrace.ParentBased(sdktrace.TraceIDRatioBased(cfg.SampleRatio))),
	}
	switch cfg.Traces {
	case ExporterStdout:
		out := cfg.Stdout
		if out == nil {
			out = io.Discard
		}
		exp, err := stdouttrace.New(stdouttrace.WithWriter(out))
		if err != nil {
			return nil, fmt.Errorf("stdouttrace.New: %w", err)
		}
		topts = append(topts, sdktrace.WithSyncer(exp))
	case ExporterOTLP:
		exp, err := otlpExporter(ctx, cfg)
		if err != nil {
			return nil, err
		}
		topts = append(topts, sdktrace.WithBatcher(exp))
	}
	for _, sp := range cfg.SpanProcessors {
		topts = append(topts, sdktrace.WithSpanProcessor(sp))
	}
	tp := sdktrace.NewTracerProvider(topts...)
	t.shutdown = append(t.shutdown, tp.Shutdown)
	t.tracer = tp.Tracer("github.com/lethe-dev/lethe")

	mopts := []sdkmetric.Option{sdkmetric.WithResource(res)}
	if cfg.Metrics == ExporterGCP {
		exp, err := mexporter.New(mexporter.WithProjectID(cfg.ProjectID))
		if err != nil {
			return nil, fmt.Errorf("metric exporter.New: %w", err)
		}
		interval := cfg.MetricInterval
		if interval <= 0 {
			interval = time.Minute
		}
		mopts = append(mopts, sdkmetric.WithReader(sdkmetric.NewPeriodicReader(exp, sdkmetric.WithInterval(interval))))
	}
	for _, r := range cfg.MetricReaders {
		mopts = append(mopts, sdkmetric.WithReader(r))
	}
	mp := sdkmetric.NewMeterProvider(mopts...)
	t.shutdown = append(t.shutdown, mp.Shutdown)
	if err := t.instruments(mp.Meter("github.com/lethe-dev/lethe")); err != nil {
		return nil, err
	}
	return t, nil
}

func otlpExporter(ctx context.Context, cfg Config) (*otlptrace.Exporter, error) {
	opts := []otlptracegrpc.Option{otlptracegrpc.WithEndpointURL(cfg.OTLPEndpoint)}
	if u, _ := url.Parse(cfg.OTLPEndpoint); u.Hostname() == "telemetry.googleapis.com" {
		creds, err := google.FindDefaultCredentials(ctx, "https://www.googleapis.com/auth/trace.append")
		if err != nil {
			return nil, fmt.Errorf("google.FindDefaultCredentials: %w", err)
		}
		opts = append(opts,
			otlptracegrpc.WithDialOption(grpc.WithPerRPCCredentials(oauth.TokenSource{TokenSource: creds.TokenSource})),
			otlptracegrpc.WithHeaders(map[string]string{"x-goog-user-project": cfg.ProjectID}))
	}
	exp, err := otlptracegrpc.New(ctx, opts...)
	if err != nil {
		return nil, fmt.Errorf("otlptracegrpc.New: %w", err)
	}
	return exp, nil
}

func (t *Telemetry) instruments(m metric.Meter) error {
	var err error
	// Buckets from 1 ms to about 2 minutes: a handler waits on a recogniser.
	bounds := metric.WithExplicitBucketBoundaries(.001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10, 30, 60, 120)
	if t.handlerDuration, err = m.Float64Histogram("lethe.handler.duration", metric.WithUnit("s"),
		metric.WithDescription("time a worker spent on one event, by event type and outcome"), bounds); err != nil {
		return fmt.Errorf("telemetry: %w", err)
	}
	if t.requestDuration, err = m.Float64Histogram("lethe.http.server.duration", metric.WithUnit("s"),
		metric.WithDescription("edge request latency, by route and status"), bounds); err != nil {
		return fmt.Errorf("telemetry: %w", err)
	}
	if t.securityEvents, err = m.Int64Counter("lethe.security.events",
		metric.WithDescription("security events (auth failures, forbidden admin calls, schema rejections, rate limits, signature failures), by kind")); err != nil {
		return fmt.Errorf("telemetry: %w", err)
	}
	return nil
}

// Shutdown flushes and stops the exporters.
func (t *Telemetry) Shutdown(ctx context.Context) error {
	if t == nil {
		return nil
	}
	var errs []error
	for _, f := range t.shutdown {
		errs = append(errs, f(ctx))
	}
	return errors.Join(errs...)
}

func (t *Telemetry) tr() trace.Tracer {
	if t == nil || t.tracer == nil {
		return nooptrace.NewTracerProvider().Tracer("")
	}
	return t.tracer
}

// extensionCarrier reads and writes trace context as CloudEvents
// extensions ("traceparent", "tracestate").
type extensionCarrier struct{ e *event.Event }

func (c extensionCarrier) Get(key string) string {
	v, ok := c.e.Extensions()[key]
	if !ok {
		return ""
	}
	s, _ := v.(string)
	return s
}

func (c extensionCarrier) Set(key, value string) { c.e.SetExtension(key, value) }

func (c extensionCarrier) Keys() []string { return []string{"traceparent", "tracestate"} }

// Publisher wraps next so every event it publishes carries the trace
// context of ctx, under a producer span.
func (t *Telemetry) Publisher(next events.Publisher) events.Publisher {
	return publisher{t: t, next: next}
}

type publisher struct {
	t    *Telemetry
	next events.Publisher
}

func (p publisher) Publish(ctx context.Context, topic string, e event.Event) error {
	ctx, span := p.t.tr().Start(ctx, "publish "+topic, trace.WithSpanKind(trace.SpanKindProducer),
		trace.WithAttributes(attribute.String("messaging.destination.name", topic), attribute.String("cloudevents.event_type", e.Type())))
	defer span.End()
	e = e.Clone()
	propagation.TraceContext{}.Inject(ctx, extensionCarrier{&e})
	err := p.next.Publish(ctx, topic, e)
	if err != nil {
		span.SetStatus(codes.Error, "publish failed")
	}
	return err
}

// Middleware makes a consumer span per handled event, the child of the
// trace context the event carries, and records the handler's latency and
// outcome. Place it outermost, so the span covers every attempt and its
// context reaches the logs of the handler.
func (t *Telemetry) Middleware(next bus.Handler) bus.Handler {
	return func(ctx context.Context, e event.Event) error {
		start := time.Now()
		ctx = propagation.TraceContext{}.Extract(ctx, extensionCarrier{&e})
		ctx, span := t.tr().Start(ctx, "handle "+e.Type(), trace.WithSpanKind(trace.SpanKindConsumer),
			trace.WithAttributes(attribute.String("cloudevents.event_type", e.Type()), attribute.String("cloudevents.event_id", e.ID())))
		defer span.End()
		err := next(ctx, e)
		outcome := bus.Classify(err).String()
		span.SetAttributes(attribute.String("lethe.outcome", outcome))
		if err != nil {
			// The error's text may name ids, never content (handlers' rule).
			span.SetStatus(codes.Error, outcome)
		}
		if t != nil {
			t.handlerDuration.Record(ctx, time.Since(start).Seconds(), metric.WithAttributes(
				attribute.String("cloudevents.event_type", e.Type()), attribute.String("lethe.outcome", outcome)))
		}
		return err
	}
}

// StartRequest starts the server span of an edge request, the child of the
// request's W3C traceparent header when it has one. end takes the matched
// route pattern (never the path: it holds ids) and the status.
func (t *Telemetry) StartRequest(r *http.Request) (ctx context.Context, end func(route string, status int)) {
	start := time.Now()
	ctx = propagation.TraceContext{}.Extract(r.Context(), propagation.HeaderCarrier(r.Header))
	ctx, span := t.tr().Start(ctx, "HTTP "+r.Method, trace.WithSpanKind(trace.SpanKindServer),
		trace.WithAttributes(attribute.String("http.request.method", r.Method)))
	return ctx, func(route string, status int) {
		if route != "" {
			span.SetName(route)
		}
		span.SetAttributes(attribute.String("http.route", route), attribute.Int("http.response.status_code", status))
		if status >= 500 {
			span.SetStatus(codes.Error, strconv.Itoa(status))
		}
		span.End()
		if t != nil {
			t.requestDuration.Record(ctx, time.Since(start).Seconds(), metric.WithAttributes(
				attribute.String("http.route", route), attribute.Int("http.response.status_code", status)))
		}
	}
}

// SecurityEvent counts one security event of kind (auth_failure,
// forbidden_admin, schema_rejection, rate_limited, signature_failure) with
// its reason class. Neither may hold a token, a secret or content.
func (t *Telemetry) SecurityEvent(ctx context.Context, kind, reason string) {
	if t == nil {
		return
	}
	t.securityEvents.Add(ctx, 1, metric.WithAttributes(attribute.String("kind", kind), attribute.String("reason", reason)))
}
