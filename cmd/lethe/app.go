package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"time"

	sdkmetric "go.opentelemetry.io/otel/sdk/metric"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"google.golang.org/api/option"

	"github.com/lethe-dev/lethe/app/audit"
	"github.com/lethe-dev/lethe/app/forget"
	"github.com/lethe-dev/lethe/app/phones"
	"github.com/lethe-dev/lethe/events"
	"github.com/lethe-dev/lethe/functions"
	"github.com/lethe-dev/lethe/infra/auth"
	"github.com/lethe-dev/lethe/infra/auth/localissuer"
	"github.com/lethe-dev/lethe/infra/blobs"
	"github.com/lethe-dev/lethe/infra/blobs/gcsblobs"
	"github.com/lethe-dev/lethe/infra/bus"
	"github.com/lethe-dev/lethe/infra/docs"
	"github.com/lethe-dev/lethe/infra/embed"
	"github.com/lethe-dev/lethe/infra/keys"
	"github.com/lethe-dev/lethe/infra/keys/pseudonym"
	"github.com/lethe-dev/lethe/infra/keys/secrets"
	"github.com/lethe-dev/lethe/infra/logging"
	"github.com/lethe-dev/lethe/infra/ratelimit"
	"github.com/lethe-dev/lethe/infra/stt"
	"github.com/lethe-dev/lethe/infra/telemetry"
	"github.com/lethe-dev/lethe/infra/vectors"
)

// app holds the opened adapters of one process.
type app struct {
	cfg    Config
	log    *slog.Logger
	events *events.Registry
	bus    *bus.Bus
	docs   docs.Store
	blobs  blobs.Bucket
	// gcs is the Cloud Storage bucket (LETHE_BLOBS=gcs) and uploadSigner
	// signs its upload URLs; both nil with local blobs.
	gcs          *gcsblobs.Bucket
	uploadSigner functions.UploadSigner
	vectors      vectors.Index
	keys         *keys.Keyring
	pseudo       *pseudonym.Pseudonymizer
	logUsers     *logging.UserHasher
	// exportURLKey signs export download URLs (the same on every instance).
	exportURLKey []byte
	embedder     embed.Embedder
	stt          stt.Transcriber
	issuer       *localissuer.Issuer
	verifier     auth.Verifier
	limiter      *ratelimit.Fallback
	leases       ratelimit.Leases // open streams
	audit        *audit.Log
	// sessions revokes an erased user's Firebase sessions; nil with local
	// tokens.
	sessions functions.SessionRevoker
	// tel makes the spans of requests and handlers and records metrics.
	tel *telemetry.Telemetry
	// journal records erasures outside what a restore brings back.
	journal *forget.Journal
	closers []func() error
}

// overrides replace adapters in tests and benchmarks (an instant
// recogniser, say); production wiring never sets them.
type overrides struct {
	STT      stt.Transcriber
	Embedder embed.Embedder
	// Now is the clock of every component.
	Now func() time.Time
	// WrapPublisher wraps what every stage publishes through (fault
	// injection: duplicate delivery, outages).
	WrapPublisher func(publisher) publisher
	// Docs is a documents store shared by several apps in one test (as
	// Firestore is shared by instances); the app does not close it.
	Docs docs.Store
	// KMSOptions point the Cloud KMS client at a fake.
	KMSOptions []option.ClientOption
	// WrapDocs wraps the documents store every component uses (fault
	// injection: an unreachable backend); the app still closes the
	// store it opened.
	WrapDocs func(docs.Store) docs.Store
	// WrapHandler wraps each worker's handler inside the middleware chain,
	// so it sees every attempt (counting attempts in tests).
	WrapHandler func(subscription string, h bus.Handler) bus.Handler
	// SpanProcessor and MetricReader see every span and metric, whatever
	// the exporters (tests of tracing).
	SpanProcessor sdktrace.SpanProcessor
	MetricReader  sdkmetric.Reader
}

// publisher is events.Publisher, named short for the wiring.
type publisher = events.Publisher

// dataPaths is the layout of LETHE_DATA_DIR.
type dataPaths struct{ root string }

func (p dataPaths) docs() string      { return filepath.Join(p.root, "docs.db") }
func (p dataPaths) blobs() string     { return filepath.Join(p.root, "blobs") }
func (p dataPaths) vectors() string   { return filepath.Join(p.root, "vectors") }
func (p dataPaths) kek() string       { return filepath.Join(p.root, "keys", "kek.json") }
func (p dataPaths) uidSecret() string { return filepath.Join(p.root, "keys", "uid-hmac.key") }
func (p dataPaths) logSecret() string { return filepath.Join(p.root, "keys", "log-hmac.key") }
func (p dataPaths) issuer() string    { return filepath.Join(p.root, "auth", "issuer.pem") }

func openApp(ctx context.Context, cfg Config, logger *slog.Logger, ov overrides) (_ *app, err error) {
	a := &app{cfg: cfg, log: logger}
	defer func() {
		if err != nil {
			a.close()
		}
	}()
	paths := dataPaths{cfg.DataDir}
	if err := os.MkdirAll(cfg.DataDir, 0o700); err != nil {
		return nil, fmt.Errorf("LETHE_DATA_DIR: %w", err)
	}
	if a.events, err = events.NewRegistry(); err != nil {
		return nil, fmt.Errorf("events.NewRegistry: %w", err)
	}
	tcfg := cfg.telemetry()
	if ov.SpanProcessor != nil {
		tcfg.SpanProcessors = append(tcfg.SpanProcessors, ov.SpanProcessor)
	}
	if ov.MetricReader != nil {
		tcfg.MetricReaders = append(tcfg.MetricReaders, ov.MetricReader)
	}
	if a.tel, err = telemetry.New(ctx, tcfg); err != nil {
		return nil, err
	}
	a.closers = append(a.closers, func() error {
		sctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
		defer cancel()
		return a.tel.Shutdown(sctx)
	})

	if err := refuseLegacySecrets(cfg, paths); err != nil {
		return nil, err
	}

	// The local issuer always exists (lethe token, the dev console); it is
	// trusted only with LETHE_AUTH=local.
	if a.issuer, err = localissuer.Open(paths.issuer()); err != nil {
		return nil, fmt.Errorf("localissuer.Open: %w", err)
	}
	if a.verifier, err = a.openVerifier(ctx, cfg); err != nil {
		return nil, err
	}
	if a.docs = ov.Docs; !a.docs.Valid() {
		if a.docs, err = openDocs(ctx, cfg, paths); err != nil {
			return nil, err
		}
		a.closers = append(a.closers, a.docs.Close)
	}
	if ov.WrapDocs != nil {
		a.docs = ov.WrapDocs(a.docs)
	}
	if a.blobs, a.gcs, err = openBlobs(ctx, cfg, paths); err != nil {
		return nil, err
	}
	a.closers = append(a.closers, a.blobs.Close)
	if a.journal, err = openJournal(ctx, cfg); err != nil {
		return nil, err
	}
	a.closers = append(a.closers, a.journal.Bucket.Close)
	if a.gcs != nil {
		if a.uploadSigner, err = openUploadSigner(cfg, a.gcs); err != nil {
			return nil, err
		}
	}
	var vc io.Closer
	if a.vectors, vc, err = openVectors(cfg, paths); err != nil {
		return nil, err
	}
	a.closers = append(a.closers, vc.Close)
	kek, err := openKEK(ctx, cfg, paths, ov.KMSOptions...)
	if err != nil {
		return nil, err
	}
	if c, ok := kek.(io.Closer); ok {
		a.closers = append(a.closers, c.Close)
	}
	if err := a.openIdentity(ctx, kek); err != nil {
		return nil, err
	}
	a.keys = keys.NewKeyring(kek, keys.NewDocsKeysetStore(a.docs), keys.Options{})
	a.audit = &audit.Log{Docs: a.docs, Now: ov.Now}
	if cfg.Auth == "firebase" {
		if a.sessions, err = openSessionRevoker(ctx, cfg); err != nil {
			return nil, err
		}
	}
	var lc io.Closer
	if a.limiter, lc, err = openLimiter(ctx, cfg); err != nil {
		return nil, err
	}
	if lc != nil {
		a.closers = append(a.closers, lc.Close)
	}
	a.leases = streamLeases(lc)
	if a.embedder = ov.Embedder; a.embedder == nil {
		if a.embedder, err = openEmbedder(cfg); err != nil {
			return nil, err
		}
	}
	if a.stt = ov.STT; a.stt == nil {
		if a.stt, err = openSTT(cfg, logger); err != nil {
			return nil, fmt.Errorf("speech-to-text: %w", err)
		}
	}

	b, err := bus.Open(ctx, bus.Config{
		ProjectID:    cfg.ProjectID,
		Embedded:     cfg.Bus == "embedded",
		EmulatorHost: cfg.PubSubEmulatorHost,
		Logger:       logger,
		Validate:     a.events.Validate,
		// Each in-flight message is a handler running; transcription is
		// CPU-bound, so keep it near the core count.
		MaxOutstanding: cfg.MaxInFlight,
		PingTopic:      events.TopicAudio,
		PublishDelay:   cfg.PublishDelay,
	})
	if err != nil {
		return nil, fmt.Errorf("bus.Open: %w", err)
	}
	a.bus = b
	if err := b.EnsureTopology(ctx, withPush(cfg, topology())); err != nil {
		return nil, fmt.Errorf("bus.EnsureTopology: %w", err)
	}
	return a, nil
}

// secretVersion is the version of each identity secret in use. A rotation
// adds version 2 beside 1 (pseudonyms and log hashes name their version in
// their first digit) and a migration of stored users; never rewrite v1.
const secretVersion = 1

// openIdentity loads (or, on the very first start, creates) the secrets
// that turn a uid into its stored user and its log hash, and the export
// URL key. They live in the documents store wrapped by the KEK, so every
// instance and every restart derive the same values: per-process keys
// would scatter one user's data and hide it from erasure.
func (a *app) openIdentity(ctx context.Context, kek keys.KEK) error {
	store := secrets.New(a.docs, kek)
	uid, err := store.Get(ctx, secrets.UIDHMAC, secretVersion)
	if err != nil {
		return fmt.Errorf("secrets.Get %s: %w", secrets.UIDHMAC, err)
	}
	logKey, err := store.Get(ctx, secrets.LogHMAC, secretVersion)
	if err != nil {
		return fmt.Errorf("secrets.Get %s: %w", secrets.LogHMAC, err)
	}
	if a.exportURLKey, err = store.Get(ctx, secrets.ExportURL, secretVersion); err != nil {
		return fmt.Errorf("secrets.Get %s: %w", secrets.ExportURL, err)
	}
	a.pseudo = pseudonym.New(secretVersion, uid)
	a.logUsers = logging.NewUserHasher(secretVersion, logKey)
	return nil
}

// refuseLegacySecrets stops a production start that finds the local key
// files of earlier versions: their presence means an instance once keyed
// users by its own disk. Development ignores them (data made under them is
// not migrated: those pseudonyms are not derived again).
func refuseLegacySecrets(cfg Config, paths dataPaths) error {
	if cfg.Env != envProduction {
		return nil
	}
	// uidSecret and logSecret are the per-process key files of earlier
	// versions: each instance made its own, so one uid had a different
	// pseudonym per instance.
	for _, p := range []string{paths.uidSecret(), paths.logSecret()} {
		if _, err := os.Lstat(p); err == nil {
			return fmt.Errorf("%s: a local identity key file; refused when LETHE_ENV=production (identity secrets live in the documents store, wrapped by the KEK): remove it", p)
		} else if !errors.Is(err, fs.ErrNotExist) {
			return fmt.Errorf("os.Lstat: %w", err)
		}
	}
	return nil
}

// close releases everything, the bus first so publishers flush while the
// stores are still open.
func (a *app) close() {
	if a.bus != nil {
		if err := a.bus.Close(); err != nil {
			a.log.Error("bus.Close", "error", err.Error())
		}
	}
	for i := len(a.closers) - 1; i >= 0; i-- {
		if err := a.closers[i](); err != nil {
			a.log.Error("close", "error", err.Error())
		}
	}
}

// ready answers /readyz: the bus and the document store respond.
func (a *app) ready(ctx context.Context) error {
	if err := a.bus.Ping(ctx); err != nil {
		return fmt.Errorf("bus: %w", err)
	}
	if _, err := a.docs.Get(ctx, docs.Key{Collection: "health", ID: "ping"}); err != nil && !errors.Is(err, docs.ErrNotFound) {
		return fmt.Errorf("docs: %w", err)
	}
	return nil
}

func splitList(s string) []string {
	var out []string
	for _, p := range strings.Split(s, ",") {
		if p = strings.TrimSpace(p); p != "" {
			out = append(out, p)
		}
	}
	return out
}

// erasures is the erasure saga over the app's stores; pub announces
// erasures on the lifecycle topic.
func (a *app) erasures(pub publisher, now func() time.Time) *forget.Saga {
	return &forget.Saga{
		Docs: a.docs, Blobs: a.blobs, Vectors: a.vectors, Keys: a.keys,
		Rates: a.limiter, RateKeys: functions.RateLimitKeys,
		Audit: a.audit, Bus: pub, Events: a.events, Logger: a.log, Now: now,
		// Number ownerships and call records: global documents.
		Twilio:  phones.Index{Docs: a.docs},
		Journal: a.journal,
	}
}

// conversations erases single conversations over the app's stores.
func (a *app) conversations(now func() time.Time) *forget.Conversations {
	return &forget.Conversations{Docs: a.docs, Blobs: a.blobs, Vectors: a.vectors, Audit: a.audit, Now: now}
}
