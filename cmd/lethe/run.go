package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"strings"
	"sync"
	"time"

	"github.com/lethe-dev/lethe/app/ingest"
	"github.com/lethe-dev/lethe/events"
	"github.com/lethe-dev/lethe/functions"
	"github.com/lethe-dev/lethe/functions/console"
	"github.com/lethe-dev/lethe/functions/push"
	"github.com/lethe-dev/lethe/infra/bus"
	"github.com/lethe-dev/lethe/infra/bus/middleware"
	"github.com/lethe-dev/lethe/infra/security"
	"github.com/lethe-dev/lethe/workers/embed"
	"github.com/lethe-dev/lethe/workers/reconcile"
	"github.com/lethe-dev/lethe/workers/store"
	"github.com/lethe-dev/lethe/workers/transcribe"
	"github.com/lethe-dev/lethe/workers/upload"
)

// Worker names, which are also their subscription names.
const (
	workerTranscribe = "transcribe"
	workerEmbed      = "embed"
	workerStore      = "store"
	workerReconcile  = "reconcile"
	// workerUploads takes the upload bucket's notifications (signed-URL
	// uploads) into the pipeline.
	workerUploads = "uploads"
	// workerLifecycle takes the lifecycle topic: retention sweeps, user
	// erasures and exports, routed by event type.
	workerLifecycle = "lifecycle"
)

// topology is every topic and subscription; embedded mode creates it at
// start, Terraform in production.
func topology() []bus.TopicSpec {
	sub := func(name string) []bus.SubscriptionSpec {
		return []bus.SubscriptionSpec{{Name: name, AckDeadline: 60 * time.Second, MaxDeliveryAttempts: 10}}
	}
	return []bus.TopicSpec{
		{Name: events.TopicAudio, Subscriptions: sub(workerTranscribe)},
		// The bucket publishes here (a notification config on uploads/);
		// the messages are Cloud Storage's, not CloudEvents.
		{Name: events.TopicUploads, Subscriptions: sub(workerUploads)},
		{Name: events.TopicTranscripts, Subscriptions: sub(workerEmbed)},
		{Name: events.TopicEmbeddings, Subscriptions: sub(workerStore)},
		{Name: events.TopicTwilio, Subscriptions: sub(workerTwilio)},
		{Name: events.TopicLifecycle, Subscriptions: sub(workerLifecycle)},
	}
}

// pipeline is a started process: edge and/or workers.
type pipeline struct {
	app  *app
	addr string // the edge's listening address, when it runs
	stop func() error
}

type roles struct {
	edge      bool
	workers   []string
	reconcile bool
	// sweepTimer: request a retention sweep every
	// LETHE_RETENTION_SWEEP_EVERY (lethe run with the lifecycle worker).
	sweepTimer bool
}

// startPipeline opens the adapters and starts the roles asked for. stop
// drains: the HTTP server stops accepting and finishes requests, receivers
// finish in-flight handlers, publishers flush — all within
// cfg.ShutdownTimeout.
func startPipeline(ctx context.Context, cfg Config, logger *slog.Logger, r roles, ov overrides) (*pipeline, error) {
	if err := refusePendingRestore(cfg); err != nil {
		return nil, err
	}
	a, err := openApp(ctx, cfg, logger, ov)
	if err != nil {
		return nil, err
	}
	now := time.Now
	if ov.Now != nil {
		now = ov.Now
	}
	p := &pipeline{app: a}
	var pub publisher = a.bus
	if ov.WrapPublisher != nil {
		pub = ov.WrapPublisher(pub)
	}
	// Every event leaves with the trace context of what published it.
	pub = a.tel.Publisher(pub)
	workCtx, cancelWork := context.WithCancel(context.WithoutCancel(ctx))
	var wg sync.WaitGroup
	var metrics middleware.Metrics
	chain := func(h bus.Handler) bus.Handler {
		return bus.Chain(h,
			a.tel.Middleware,
			middleware.Logging(logger),
			metrics.Middleware,
			middleware.Recoverer(logger),
			middleware.Timeout(cfg.HandlerTimeout),
			middleware.Retry(middleware.RetryConfig{MaxRetries: 2, InitialInterval: 200 * time.Millisecond, MaxInterval: 2 * time.Second, Multiplier: 2, Jitter: 0.5}),
		)
	}
	handlers := map[string]bus.Handler{
		workerTranscribe: (&transcribe.Worker{Docs: a.docs, Blobs: a.blobs, Keys: a.keys, STT: a.stt, Bus: pub, Events: a.events, Now: now, Retention: cfg.retention(),
			// Sealed audio is the largest accepted recording plus the AEAD's overhead.
			MaxSealedAudio: max(transcribe.DefaultMaxSealedAudio, cfg.MaxUploadBytes+1<<20, cfg.MaxChunkBytes+1<<20)}).Handle,
		workerEmbed: (&embed.Worker{Docs: a.docs, Keys: a.keys, Embedder: a.embedder, Bus: pub, Events: a.events}).Handle,
		workerStore: (&store.Worker{Docs: a.docs, Keys: a.keys, Vectors: a.vectors, Events: a.events, Now: now, Retention: cfg.retention()}).Handle,
	}
	// lifecycle routes the lifecycle topic's events by type; each feature
	// (retention, erasure, export) registers the handler of its type.
	lifecycle := map[string]bus.Handler{}
	handlers[workerLifecycle] = bus.ByType(lifecycle)
	saga := a.erasures(pub, now)
	lifecycle[events.TypeUserErasureRequested] = saga.Handle
	lifecycle[events.TypeUserExportRequested] = newExporter(cfg, a, now).Handle
	lifecycle[events.TypeRetentionSweep] = a.sweeper(now).Handle
	intake := &ingest.Intake{Docs: a.docs, Blobs: a.blobs, Keys: a.keys, Bus: pub, Events: a.events, Logger: logger, Now: now, Retention: cfg.retention()}
	tw, err := a.twilio(cfg, intake)
	if err != nil {
		cancelWork()
		a.close()
		return nil, err
	}
	if tw.worker != nil {
		handlers[workerTwilio] = tw.worker.Handle
	}
	decoders := map[string]bus.Decoder{}
	if a.gcs != nil {
		handlers[workerUploads] = (&upload.Worker{
			Intake: intake, Uploads: a.blobs, Bucket: a.gcs.Name(), Events: a.events,
			MaxBytes: cfg.MaxUploadBytes, Logger: logger,
		}).Handle
		decoders[workerUploads] = upload.Decoder(a.events, a.gcs.Name(), now)
	}
	subTopic := map[string]string{}
	for _, t := range topology() {
		for _, sub := range t.Subscriptions {
			subTopic[sub.Name] = t.Name
		}
	}
	pushHandlers := map[string]bus.Handler{}
	for _, name := range r.workers {
		h, ok := handlers[name]
		if !ok {
			cancelWork()
			a.close()
			return nil, usageError{fmt.Errorf("unknown worker %q", name)}
		}
		if ov.WrapHandler != nil {
			h = ov.WrapHandler(name, h)
		}
		if cfg.Delivery == "push" {
			pushHandlers[name] = chain(h)
			continue
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			decode := decoders[name]
			if decode == nil {
				decode = bus.FromMessage
			}
			if err := a.bus.ReceiveWith(workCtx, name, decode, chain(h)); err != nil && workCtx.Err() == nil {
				logger.Error("receiver stopped", "subscription", name, "error", err.Error())
			}
		}()
	}
	var pushReceiver http.Handler
	if len(pushHandlers) > 0 {
		if pushReceiver, err = newPushReceiver(ctx, cfg, a, logger, pushHandlers, decoders, subTopic); err != nil {
			cancelWork()
			a.close()
			return nil, err
		}
	}
	if r.sweepTimer && cfg.RetentionSweepEvery > 0 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			requestSweeps(workCtx, pub, a.events, logger, now, cfg.RetentionSweepEvery)
		}()
	}
	if r.reconcile {
		rec := &reconcile.Worker{Docs: a.docs, Bus: pub, Events: a.events, Logger: logger, Now: now, MaxRedrives: 10, Batch: 500, Erasures: saga}
		// An in-memory bus starts empty: everything non-final is orphaned.
		first := cfg.ReconcileAfter
		if cfg.Bus == "embedded" {
			first = 0
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			_ = rec.Run(workCtx, first, cfg.ReconcileAfter, cfg.ReconcileEvery)
		}()
	}

	var drain func() error
	var srv *http.Server
	srvDone := make(chan error, 1)
	if r.edge || pushReceiver != nil {
		ln, err := net.Listen("tcp", cfg.listenAddr())
		if err != nil {
			cancelWork()
			wg.Wait()
			a.close()
			return nil, fmt.Errorf("net.Listen %s (LETHE_ADDR/PORT): %w", cfg.listenAddr(), err)
		}
		p.addr = ln.Addr().String()
		edge := functions.New(functions.Deps{
			Verifier: a.verifier, Pseudonyms: a.pseudo, Docs: a.docs, Blobs: a.blobs, Keys: a.keys,
			Vectors: a.vectors, Embedder: a.embedder, Bus: pub, Events: a.events,
			Logger: logger, LogUsers: a.logUsers, MaxChunkBytes: cfg.MaxChunkBytes,
			Limiter: a.limiter, Limits: cfg.limits(),
			Uploads: a.uploadSigner, MaxUploadBytes: cfg.MaxUploadBytes, UploadURLTTL: cfg.UploadURLTTL,
			Ready: a.ready, JWKS: servedJWKS(cfg, a.issuer), Now: now,
			Erasures: saga, Conversations: a.conversations(now), Audit: a.audit, Sessions: a.sessions,
			// Export downloads: the edge's own signed URLs.
			ExportURLKey: a.exportURLKey, ExportURLTTL: cfg.ExportURLTTL,
			Retention:   cfg.retention(),
			DeadLetters: newDeadLetterAdmin(a, now),
			Telemetry:   a.tel,
			Console:     devConsole(cfg),
			// Hardening: client address, admin second factor, browsers, signals.
			TrustedProxyHops:  cfg.TrustedProxyHops,
			AdminSecondFactor: cfg.Auth == "firebase",
			Browser:           functions.BrowserPolicy{AllowedOrigins: cfg.CORSOrigins, HSTS: strings.HasPrefix(cfg.PublicURL, "https://")},
			Security: security.New(security.Options{Logger: logger, Users: a.logUsers, Now: now,
				Threshold: cfg.SecurityAlertBurst, Window: cfg.SecurityAlertEvery, Count: a.tel.SecurityEvent}),
			Leases: a.leases, Streams: cfg.streamLimits(),
			Twilio: tw.webhooks, Phones: tw.phones,
		})
		mux := http.NewServeMux()
		if pushReceiver != nil {
			mux.Handle("/push/", pushReceiver)
		}
		if r.edge {
			mux.Handle("/", edge)
		} else {
			// A push-only worker answers health checks and nothing else.
			mux.Handle("/healthz", edge)
			mux.Handle("/readyz", edge)
		}
		srv = &http.Server{
			Handler:           mux,
			ReadHeaderTimeout: 10 * time.Second,
			ReadTimeout:       2 * time.Minute,
			WriteTimeout:      2 * time.Minute,
			IdleTimeout:       2 * time.Minute,
			MaxHeaderBytes:    64 << 10,
			ErrorLog:          slog.NewLogLogger(logger.Handler(), slog.LevelWarn),
		}
		go func() { srvDone <- srv.Serve(ln) }()
	}

	var stopOnce sync.Once
	var stopErr error
	p.stop = func() error {
		stopOnce.Do(func() { stopErr = drain() })
		return stopErr
	}
	drain = func() error {
		sctx, cancel := context.WithTimeout(context.Background(), cfg.ShutdownTimeout)
		defer cancel()
		var errs []error
		if srv != nil {
			if err := srv.Shutdown(sctx); err != nil {
				errs = append(errs, fmt.Errorf("http.Server.Shutdown: %w", err))
			}
			if err := <-srvDone; err != nil && !errors.Is(err, http.ErrServerClosed) {
				errs = append(errs, fmt.Errorf("http.Server.Serve: %w", err))
			}
		}
		cancelWork()
		drained := make(chan struct{})
		go func() { wg.Wait(); close(drained) }()
		select {
		case <-drained:
		case <-sctx.Done():
			errs = append(errs, errors.New("shutdown: handlers still running at LETHE_SHUTDOWN_TIMEOUT"))
		}
		a.close()
		return errors.Join(errs...)
	}
	return p, nil
}

func cmdRun(ctx context.Context, cfg Config, logger *slog.Logger, args []string, stdout io.Writer) error {
	if len(args) > 0 {
		return usageError{fmt.Errorf("unexpected arguments %q", args)}
	}
	start := time.Now()
	r, err := cfg.runRoles()
	if err != nil {
		return err
	}
	p, err := startPipeline(ctx, cfg, logger, r, overrides{})
	if err != nil {
		return err
	}
	logger.Info("lethe running", "addr", p.addr, "startup_ms", time.Since(start).Milliseconds(), "env", cfg.Env)
	printWelcome(stdout, p)
	<-ctx.Done()
	logger.Info("shutting down")
	return p.stop()
}

func printWelcome(w io.Writer, p *pipeline) {
	base := "http://" + p.addr
	fmt.Fprintf(w, "lethe: listening on %s\n", base)
	if tok, err := p.app.issuer.Mint("demo", time.Hour); err == nil {
		fmt.Fprintf(w, "\nA token for uid \"demo\" (1 hour; make more with: bin/lethe token --uid NAME):\n\n  export TOKEN=%s\n\n", tok)
	}
	fmt.Fprintf(w, "Try:\n  curl -X PUT -H \"Authorization: Bearer $TOKEN\" -H 'Content-Type: audio/wav' --data-binary @testdata/speech-hello.wav %s/v1/conversations/demo/chunks/0\n", base)
	fmt.Fprintf(w, "  curl -H \"Authorization: Bearer $TOKEN\" %s/v1/conversations/demo\n", base)
	fmt.Fprintf(w, "  curl -H \"Authorization: Bearer $TOKEN\" -d '{\"q\":\"memory\"}' %s/v1/search\n\n", base)
	if devConsole(p.app.cfg) != nil {
		fmt.Fprintf(w, "Or open the dev console at %s/ and paste the token.\n\n", base)
	}
}

func cmdEdge(ctx context.Context, cfg Config, logger *slog.Logger, args []string) error {
	if len(args) > 0 {
		return usageError{fmt.Errorf("unexpected arguments %q", args)}
	}
	if err := needSharedBus(cfg, "edge"); err != nil {
		return err
	}
	p, err := startPipeline(ctx, cfg, logger, roles{edge: true}, overrides{})
	if err != nil {
		return err
	}
	logger.Info("lethe edge running", "addr", p.addr)
	<-ctx.Done()
	return p.stop()
}

func cmdWorker(ctx context.Context, cfg Config, logger *slog.Logger, args []string) error {
	if len(args) != 1 {
		return usageError{errors.New("want one worker name: transcribe, embed, store, uploads, lifecycle, twilio or reconcile")}
	}
	if args[0] == workerTwilio && !cfg.twilioAPI() {
		return usageError{errors.New("the twilio worker fetches recordings from Twilio: it needs INF_TWILIO_AUTH_TOKEN and INF_TWILIO_ACCOUNT_SID")}
	}
	if args[0] == workerUploads && cfg.Blobs != "gcs" {
		return usageError{errors.New("the uploads worker takes Cloud Storage notifications: it needs LETHE_BLOBS=gcs")}
	}
	if err := needSharedBus(cfg, "worker"); err != nil {
		return err
	}
	r := roles{}
	if args[0] == workerReconcile {
		r.reconcile = true
	} else {
		r.workers = []string{args[0]}
	}
	p, err := startPipeline(ctx, cfg, logger, r, overrides{})
	if err != nil {
		return err
	}
	logger.Info("lethe worker running", "worker", args[0])
	<-ctx.Done()
	return p.stop()
}

// needSharedBus: separate processes only make sense on a bus they share.
func needSharedBus(cfg Config, cmd string) error {
	if cfg.Bus == "embedded" {
		return usageError{fmt.Errorf("the embedded bus lives inside one process; use `lethe run`, or set LETHE_BUS=gcp (with PUBSUB_EMULATOR_HOST for the emulator) to run `lethe %s` on its own", cmd)}
	}
	return nil
}

// newPushReceiver serves the workers' handlers at POST /push/{subscription};
// poison is copied to the subscription topic's dead-letter topic.
func newPushReceiver(ctx context.Context, cfg Config, a *app, logger *slog.Logger, handlers map[string]bus.Handler, decoders map[string]bus.Decoder, subTopic map[string]string) (http.Handler, error) {
	var verifier push.Verifier
	if cfg.PushServiceAccount != "" {
		v, err := push.NewOIDCVerifier(ctx, push.OIDCConfig{Audiences: []string{cfg.PushAudience}, ServiceAccountEmail: cfg.PushServiceAccount})
		if err != nil {
			return nil, fmt.Errorf("push.NewOIDCVerifier: %w", err)
		}
		verifier = v
	}
	pushDecoders := map[string]bus.Decoder{}
	for sub, d := range decoders {
		if handlers[sub] != nil {
			pushDecoders[sub] = d
		}
	}
	rc, err := push.NewReceiver(push.Config{
		Handlers: handlers,
		Decoders: pushDecoders,
		Validate: a.events.Validate,
		DeadLetter: func(ctx context.Context, sub string, data []byte, attrs map[string]string, reason error) error {
			d, _ := push.DeliveryFromContext(ctx)
			return a.bus.DeadLetter(ctx, subTopic[sub], sub, d.MessageID, data, attrs, reason)
		},
		Verifier: verifier,
		Logger:   logger,
	})
	if err != nil {
		return nil, fmt.Errorf("push.NewReceiver: %w", err)
	}
	return rc, nil
}

// devConsole is the console lethe run serves at "/" in development; never
// in production, where the edge is an API only.
func devConsole(cfg Config) http.Handler {
	if cfg.Env != "development" || !cfg.Console {
		return nil
	}
	return console.Handler()
}
