package main

import (
	"errors"
	"fmt"
	"net"
	"net/url"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"time"

	"github.com/kelseyhightower/envconfig"

	"github.com/lethe-dev/lethe/app/records"
	"github.com/lethe-dev/lethe/functions"
	"github.com/lethe-dev/lethe/infra/ratelimit"
	"github.com/lethe-dev/lethe/infra/telemetry"
)

// Config is read once, in main, from the environment, and passed down.
// Variable names are the envconfig tags; `lethe help` prints them.
type Config struct {
	// command and commandArgs are what the process was started to do (not
	// configuration): some production refusals apply only to the roles
	// they protect. Empty: every refusal applies.
	command     string
	commandArgs []string

	Env     string `envconfig:"LETHE_ENV" default:"development" desc:"development or production"`
	Addr    string `envconfig:"LETHE_ADDR" default:"127.0.0.1:8080" desc:"HTTP listen address"`
	Port    string `envconfig:"PORT" desc:"Cloud Run's port; when set, the server listens on :PORT"`
	DataDir string `envconfig:"LETHE_DATA_DIR" default:"./.lethe" desc:"embedded mode: where documents, blobs, vectors and local keys live"`

	ProjectID          string `envconfig:"LETHE_PROJECT" default:"lethe-local" desc:"Google Cloud project id"`
	PubSubEmulatorHost string `envconfig:"PUBSUB_EMULATOR_HOST" desc:"use the Pub/Sub emulator at host:port"`
	// Bus selects the Pub/Sub backend: embedded (in-process pstest), or gcp
	// (real Pub/Sub, or the emulator when PUBSUB_EMULATOR_HOST is set).
	Bus string `envconfig:"LETHE_BUS" default:"embedded" desc:"embedded or gcp"`

	// Delivery: workers pull from their subscriptions, or receive Pub/Sub
	// push at POST /push/{subscription} (Cloud Run).
	Delivery           string `envconfig:"LETHE_DELIVERY" default:"pull" desc:"pull, or push (workers served at POST /push/{subscription})"`
	PushAudience       string `envconfig:"LETHE_PUSH_AUDIENCE" desc:"audience of push OIDC tokens"`
	PushServiceAccount string `envconfig:"LETHE_PUSH_SERVICE_ACCOUNT" desc:"the service account push tokens must name; set to verify push OIDC tokens"`

	Console  bool   `envconfig:"LETHE_CONSOLE" default:"true" desc:"serve the dev console at / (development only; production never serves it)"`
	LogLevel string `envconfig:"LETHE_LOG_LEVEL" default:"info" desc:"debug, info, warn, error"`
	// Telemetry: spans are always made (trace ids in every log line);
	// exporters are off unless set.
	Service          string        `envconfig:"K_SERVICE" default:"lethe" desc:"service name in traces and metrics (Cloud Run sets K_SERVICE)"`
	TracesExporter   string        `envconfig:"LETHE_TRACES_EXPORTER" default:"none" desc:"none, stdout (JSON spans on stdout) or otlp (to LETHE_OTLP_ENDPOINT)"`
	OTLPEndpoint     string        `envconfig:"LETHE_OTLP_ENDPOINT" default:"https://telemetry.googleapis.com:443" desc:"OTLP/gRPC endpoint of traces: Google's (Cloud Trace, with Application Default Credentials) or http://host:port of a collector"`
	TraceSampleRatio float64       `envconfig:"LETHE_TRACE_SAMPLE_RATIO" default:"1" desc:"share of new traces exported, 0..1 (a caller's sampled traceparent is followed)"`
	MetricsExporter  string        `envconfig:"LETHE_METRICS_EXPORTER" default:"none" desc:"none or gcp (Cloud Monitoring, project LETHE_PROJECT)"`
	ShutdownTimeout  time.Duration `envconfig:"LETHE_SHUTDOWN_TIMEOUT" default:"20s" desc:"bound on draining in-flight work at SIGTERM"`
	HandlerTimeout   time.Duration `envconfig:"LETHE_HANDLER_TIMEOUT" default:"2m" desc:"per-event handler timeout"`

	// Reconciler re-drives items stuck in a non-final state.
	ReconcileEvery time.Duration `envconfig:"LETHE_RECONCILE_EVERY" default:"30s" desc:"how often the reconciler looks for stuck items"`
	ReconcileAfter time.Duration `envconfig:"LETHE_RECONCILE_AFTER" default:"2m" desc:"how long an item may sit in a non-final state before it is re-driven"`

	// Workers lists what `lethe run` starts besides the edge ("none" for
	// the edge alone): a way to hold work back, e.g. to inspect a backlog.
	Workers string `envconfig:"LETHE_WORKERS" default:"transcribe,embed,store,uploads,lifecycle,twilio,reconcile" desc:"workers lethe run starts: any of transcribe, embed, store, uploads (only with LETHE_BLOBS=gcs), lifecycle (retention, erasure, export), twilio (only with INF_TWILIO_AUTH_TOKEN and INF_TWILIO_ACCOUNT_SID), reconcile, or none"`

	RateUserPerMin     int `envconfig:"LETHE_RATE_USER_PER_MIN" default:"600" desc:"requests per minute per user (0: off)"`
	RateSearchPerMin   int `envconfig:"LETHE_RATE_SEARCH_PER_MIN" default:"60" desc:"searches per minute per user (0: off)"`
	RateAuthFailPerMin int `envconfig:"LETHE_RATE_AUTHFAIL_PER_MIN" default:"30" desc:"rejected tokens per minute per client address before 429 (0: off)"`

	// The public edge: client addresses behind proxies, browsers, security
	// signals.
	TrustedProxyHops   int           `envconfig:"LETHE_TRUSTED_PROXY_HOPS" default:"0" desc:"trusted proxies that append to X-Forwarded-For in front of the edge: 0 the socket peer is the client, 1 Cloud Run (run.app URL), 2 a Google Cloud load balancer in front of Cloud Run"`
	CORSOrigins        []string      `envconfig:"LETHE_CORS_ORIGINS" desc:"comma-separated exact origins (https://app.example.com) browsers may call the API from; empty: none"`
	PublicURL          string        `envconfig:"LETHE_PUBLIC_URL" desc:"the edge's public base URL (https://...); https turns on Strict-Transport-Security"`
	SecurityAlertBurst int           `envconfig:"LETHE_SECURITY_ALERT_THRESHOLD" default:"20" desc:"security events from one address or against one user within LETHE_SECURITY_ALERT_WINDOW that log one ALERT (-1: off)"`
	SecurityAlertEvery time.Duration `envconfig:"LETHE_SECURITY_ALERT_WINDOW" default:"1m" desc:"the window of LETHE_SECURITY_ALERT_THRESHOLD"`

	MaxInFlight int `envconfig:"LETHE_MAX_IN_FLIGHT" default:"4" desc:"events each worker handles at once"`

	MaxChunkBytes int64 `envconfig:"LETHE_MAX_CHUNK_BYTES" default:"16777216" desc:"largest accepted audio chunk body"`
	// Signed uploads (LETHE_BLOBS=gcs): recordings too large for one
	// request go straight to the bucket; the whole upload is held in
	// memory while it is checked and sealed, hence the bound.
	MaxUploadBytes int64         `envconfig:"LETHE_MAX_UPLOAD_BYTES" default:"67108864" desc:"largest recording accepted through a signed upload URL (64 MiB: ~35 min of 16 kHz WAV)"`
	UploadURLTTL   time.Duration `envconfig:"LETHE_UPLOAD_URL_TTL" default:"15m" desc:"lifetime of a signed upload URL"`
	// Exports: the archive is held in memory while it is built and
	// sealed, hence the bound; its download URL is the edge's own.
	ExportMaxBytes int64         `envconfig:"LETHE_EXPORT_MAX_BYTES" default:"1073741824" desc:"largest export archive; a larger export fails with error too_large (1 GiB)"`
	ExportURLTTL   time.Duration `envconfig:"LETHE_EXPORT_URL_TTL" default:"15m" desc:"lifetime of an export download URL"`
	GCSSignerEmail string        `envconfig:"LETHE_GCS_SIGNER_EMAIL" desc:"service account that signs upload URLs with LETHE_GCS_SIGNER_KEY_FILE (unset: the client's own credentials, IAM signBlob on Cloud Run)"`
	GCSSignerKey   string        `envconfig:"LETHE_GCS_SIGNER_KEY_FILE" desc:"PEM private key, or a service-account JSON key, that signs upload URLs"`

	// Adapters: each port's backend. Embedded defaults need nothing but
	// LETHE_DATA_DIR.
	Documents string `envconfig:"LETHE_DOCUMENTS" default:"sqlite" desc:"documents: sqlite or firestore"`
	Blobs     string `envconfig:"LETHE_BLOBS" default:"dir" desc:"blobs: dir or gcs"`
	Vectors   string `envconfig:"LETHE_VECTORS" default:"flat" desc:"vectors: flat or pinecone"`
	STT       string `envconfig:"LETHE_STT" default:"pocketsphinx" desc:"speech-to-text: pocketsphinx, deepgram or openai"`
	Embedder  string `envconfig:"LETHE_EMBEDDER" default:"hashing" desc:"embeddings: hashing (lexical, not semantic), pinecone or openai"`
	KEK       string `envconfig:"LETHE_KEK" default:"file" desc:"key-encryption key: file (a local key file) or gcpkms://projects/P/locations/L/keyRings/R/cryptoKeys/K"`
	RateLimit string `envconfig:"LETHE_RATELIMIT" default:"memory" desc:"rate limits: memory or redis://host:port/db"`
	Auth      string `envconfig:"LETHE_AUTH" default:"local" desc:"tokens: local (an issuer in LETHE_DATA_DIR; lethe token mints) or firebase"`
	// AllowEmbedded lets production use embedded adapters on purpose (a
	// single-instance install); without it production refuses them.
	AllowEmbedded bool `envconfig:"LETHE_ALLOW_EMBEDDED" default:"false" desc:"production: allow embedded adapters (single instance only)"`

	FirestoreEmulatorHost string `envconfig:"FIRESTORE_EMULATOR_HOST" desc:"use the Firestore emulator at host:port"`
	FirestoreDatabase     string `envconfig:"LETHE_FIRESTORE_DATABASE" default:"(default)" desc:"Firestore database id"`
	GCSBucket             string `envconfig:"LETHE_GCS_BUCKET" desc:"Cloud Storage bucket (LETHE_BLOBS=gcs)"`
	GCSEndpoint           string `envconfig:"LETHE_GCS_ENDPOINT" desc:"Cloud Storage endpoint override (a fake-gcs-server, say)"`
	PineconeAPIKey        string `envconfig:"PINECONE_API_KEY" desc:"Pinecone API key (vectors and embeddings)"`
	PineconeIndexHost     string `envconfig:"LETHE_PINECONE_INDEX_HOST" desc:"Pinecone index host (lethe pinecone ensure-index prints it)"`
	EmbedDim              int    `envconfig:"LETHE_EMBED_DIM" default:"1024" desc:"dimension of hosted embeddings"`
	DeepgramAPIKey        string `envconfig:"DEEPGRAM_API_KEY" desc:"Deepgram API key (LETHE_STT=deepgram)"`
	OpenAIBaseURL         string `envconfig:"LETHE_OPENAI_BASE_URL" default:"https://api.openai.com/v1" desc:"OpenAI-compatible server (whisper.cpp, speaches, OpenAI), including /v1"`
	OpenAIAPIKey          string `envconfig:"OPENAI_API_KEY" desc:"key for the OpenAI-compatible server, if it needs one"`
	OpenAISTTModel        string `envconfig:"LETHE_OPENAI_STT_MODEL" default:"whisper-1" desc:"transcription model (LETHE_STT=openai)"`
	OpenAIEmbedModel      string `envconfig:"LETHE_OPENAI_EMBED_MODEL" default:"text-embedding-3-small" desc:"embedding model (LETHE_EMBEDDER=openai)"`
	FirebaseProject       string `envconfig:"LETHE_FIREBASE_PROJECT" desc:"Firebase project whose ID tokens are accepted (LETHE_AUTH=firebase; default LETHE_PROJECT)"`
	FirebaseAuthEmulator  string `envconfig:"FIREBASE_AUTH_EMULATOR_HOST" desc:"refused in production: the Firebase SDK skips signature checks when it is set"`

	// FirestoreTimeout bounds each Firestore call: its client retries an
	// unreachable server until the context ends.
	FirestoreTimeout time.Duration `envconfig:"LETHE_FIRESTORE_TIMEOUT" default:"10s" desc:"bound on each Firestore call: past it an unreachable Firestore fails the request (503) or the event (retried)"`

	// A hosted recogniser sits behind a circuit breaker: this many
	// consecutive unavailable answers open it for the cooldown.
	STTBreakerThreshold int           `envconfig:"LETHE_STT_BREAKER_THRESHOLD" default:"5" desc:"consecutive provider failures that open the speech-to-text circuit"`
	STTBreakerCooldown  time.Duration `envconfig:"LETHE_STT_BREAKER_COOLDOWN" default:"30s" desc:"how long an open speech-to-text circuit fails fast before a probe"`

	// StorageEmulatorHost is read only to be refused in production: the
	// Cloud Storage client honours it without lethe's say, sending every
	// blob, unauthenticated, to that host.
	StorageEmulatorHost string `envconfig:"STORAGE_EMULATOR_HOST" desc:"refused in production: the Cloud Storage client sends blobs to it without credentials"`

	STTKeywords string `envconfig:"LETHE_STT_KEYWORDS" desc:"optional comma-separated phrases to constrain PocketSphinx to"`

	// Retention: the policy of users who set none (PUT /v1/me/retention
	// sets one's own), and how often lethe run sweeps.
	RetentionAudioDays      int           `envconfig:"LETHE_RETENTION_AUDIO_DAYS" default:"30" desc:"days raw audio is kept (0: deleted at the first sweep after it is transcribed)"`
	RetentionTranscriptDays int           `envconfig:"LETHE_RETENTION_TRANSCRIPT_DAYS" default:"365" desc:"days transcripts are kept"`
	RetentionVectorDays     int           `envconfig:"LETHE_RETENTION_VECTOR_DAYS" default:"365" desc:"days search vectors are kept (never longer than their transcript)"`
	RetentionExportDays     int           `envconfig:"LETHE_RETENTION_EXPORT_DAYS" default:"7" desc:"days export archives are kept"`
	RetentionSweepEvery     time.Duration `envconfig:"LETHE_RETENTION_SWEEP_EVERY" default:"1h" desc:"lethe run: how often a retention sweep is requested on the lifecycle topic (0: never; in production Cloud Scheduler requests them)"`

	// Streaming ingest (GET /v1/listen): see streams.go.
	StreamChunkSeconds  int           `envconfig:"LETHE_STREAM_CHUNK_SECONDS" default:"10" desc:"seconds of streamed audio per chunk (each chunk is transcribed and acked on its own)"`
	StreamMaxFrameBytes int64         `envconfig:"LETHE_STREAM_MAX_FRAME_BYTES" default:"65536" desc:"largest WebSocket message of a stream (larger: close 1009)"`
	StreamIdleTimeout   time.Duration `envconfig:"LETHE_STREAM_IDLE_TIMEOUT" default:"30s" desc:"a stream that sends nothing this long is closed (4408)"`
	StreamMaxDuration   time.Duration `envconfig:"LETHE_STREAM_MAX_DURATION" default:"4h" desc:"a stream open this long is closed (4413; the client reconnects and resumes)"`
	StreamMaxPerUser    int           `envconfig:"LETHE_STREAM_MAX_PER_USER" default:"2" desc:"open streams per user across every instance (more: close 4429)"`
	// Twilio: the seed's variable names (INF_*) are kept.
	TwilioAuthToken          string        `envconfig:"INF_TWILIO_AUTH_TOKEN" desc:"Twilio auth token: verifies webhook signatures and calls Twilio's API (required in production)"`
	TwilioAuthTokenSecondary string        `envconfig:"INF_TWILIO_AUTH_TOKEN_SECONDARY" desc:"during a token rotation, the other Twilio auth token; signatures made with either verify"`
	TwilioSkipSigVerify      bool          `envconfig:"INF_TWILIO_SKIP_SIG_VERIFY" default:"false" desc:"development only: accept Twilio webhooks without checking X-Twilio-Signature (refused in production)"`
	TwilioAccountSID         string        `envconfig:"INF_TWILIO_ACCOUNT_SID" desc:"Twilio account SID (AC...): the only account whose webhooks are taken; with the token, calls Twilio's API"`
	TwilioAPIURL             string        `envconfig:"LETHE_TWILIO_API_URL" default:"https://api.twilio.com" desc:"Twilio's REST API (recordings are fetched by SID from this host only)"`
	TwilioFrom               string        `envconfig:"LETHE_TWILIO_FROM" desc:"the number (+E.164) or Messaging Service SID (MG...) phone verification codes are sent from"`
	TwilioDeleteRecordings   bool          `envconfig:"LETHE_TWILIO_DELETE_RECORDINGS" default:"true" desc:"delete Twilio's copy of a recording once it is sealed here"`
	PublishDelay             time.Duration `envconfig:"LETHE_PUBLISH_DELAY" default:"1ms" desc:"how long a publisher waits to batch messages (Pub/Sub's DelayThreshold): every acknowledgement that waits for a publish (uploads, Twilio webhooks) waits this long at least"`
	PushEndpoint             string        `envconfig:"LETHE_PUSH_ENDPOINT" desc:"with LETHE_DELIVERY=push: the base URL Pub/Sub pushes to; lethe creates push subscriptions to its /push/{subscription} (emulator, development; Terraform in production)"`
	// Backups: the erasure journal lives outside everything a backup or
	// a point-in-time recovery restores, so a restore can erase again
	// the users erased since.
	ErasureJournal string `envconfig:"LETHE_ERASURE_JOURNAL" desc:"where erasures are journaled, outside what backups restore: a directory (default: LETHE_DATA_DIR with .erasures appended, beside it) or gs://BUCKET[/PREFIX] (required in production with Firestore)"`
	BackupKeyFile  string `envconfig:"LETHE_BACKUP_KEY_FILE" desc:"the backup key (lethe backup keygen makes one; keep it off this machine): lethe backup and lethe restore read it"`
}

const (
	envDevelopment = "development"
	envProduction  = "production"
)

// cloudRunMaxBody is Cloud Run's cap on an HTTP/1 request body: the most
// LETHE_MAX_CHUNK_BYTES may be (README.md says so; TestREADMELimits).
const cloudRunMaxBody = 32 << 20

func loadConfig(command string, args []string) (Config, error) {
	c := Config{command: command, commandArgs: args}
	if err := envconfig.Process("", &c); err != nil {
		return c, fmt.Errorf("config: %w", err)
	}
	return c, c.validate()
}

// validate checks values envconfig cannot, naming the variable at fault.
func (c Config) validate() error {
	var errs []error
	switch c.Env {
	case envDevelopment, envProduction:
	default:
		errs = append(errs, fmt.Errorf("LETHE_ENV=%q: want development or production", c.Env))
	}
	if c.Port == "" {
		if _, _, err := net.SplitHostPort(c.Addr); err != nil {
			errs = append(errs, fmt.Errorf("LETHE_ADDR=%q: %v", c.Addr, err))
		}
	}
	switch c.Bus {
	case "embedded", "gcp":
	default:
		errs = append(errs, fmt.Errorf("LETHE_BUS=%q: want embedded or gcp", c.Bus))
	}
	switch strings.ToLower(c.LogLevel) {
	case "debug", "info", "warn", "error":
	default:
		errs = append(errs, fmt.Errorf("LETHE_LOG_LEVEL=%q: want debug, info, warn or error", c.LogLevel))
	}
	if c.DataDir == "" {
		errs = append(errs, errors.New("LETHE_DATA_DIR: must not be empty"))
	}
	if err := c.telemetry().Validate(); err != nil {
		errs = append(errs, fmt.Errorf("LETHE_TRACES_EXPORTER/LETHE_METRICS_EXPORTER/LETHE_OTLP_ENDPOINT/LETHE_TRACE_SAMPLE_RATIO: %w", err))
	}
	if c.MaxChunkBytes <= 0 || c.MaxChunkBytes > cloudRunMaxBody {
		errs = append(errs, fmt.Errorf("LETHE_MAX_CHUNK_BYTES=%d: want 1..%d (Cloud Run caps HTTP/1 bodies at 32 MiB)", c.MaxChunkBytes, cloudRunMaxBody))
	}
	for name, v := range map[string]int{"LETHE_RATE_USER_PER_MIN": c.RateUserPerMin, "LETHE_RATE_SEARCH_PER_MIN": c.RateSearchPerMin, "LETHE_RATE_AUTHFAIL_PER_MIN": c.RateAuthFailPerMin} {
		if v < 0 || v > 1_000_000 {
			errs = append(errs, fmt.Errorf("%s=%d: want 0..1000000", name, v))
		}
	}
	if c.TrustedProxyHops < 0 || c.TrustedProxyHops > functions.MaxTrustedProxyHops {
		errs = append(errs, fmt.Errorf("LETHE_TRUSTED_PROXY_HOPS=%d: want 0..%d", c.TrustedProxyHops, functions.MaxTrustedProxyHops))
	}
	if err := functions.ValidateOrigins(c.CORSOrigins); err != nil {
		errs = append(errs, fmt.Errorf("LETHE_CORS_ORIGINS: %w", err))
	}
	if u, err := url.Parse(c.PublicURL); c.PublicURL != "" && (err != nil || (u.Scheme != "https" && u.Scheme != "http") || u.Host == "") {
		errs = append(errs, fmt.Errorf("LETHE_PUBLIC_URL=%q: want https://host[/path]", c.PublicURL))
	}
	if c.SecurityAlertBurst < -1 || c.SecurityAlertBurst == 0 || c.SecurityAlertBurst > 1_000_000 {
		errs = append(errs, fmt.Errorf("LETHE_SECURITY_ALERT_THRESHOLD=%d: want 1..1000000, or -1 for off", c.SecurityAlertBurst))
	}
	if c.SecurityAlertEvery < time.Second || c.SecurityAlertEvery > 24*time.Hour {
		errs = append(errs, fmt.Errorf("LETHE_SECURITY_ALERT_WINDOW=%s: want 1s..24h", c.SecurityAlertEvery))
	}
	if c.MaxUploadBytes <= 0 || c.MaxUploadBytes > 5<<30 {
		errs = append(errs, fmt.Errorf("LETHE_MAX_UPLOAD_BYTES=%d: want 1..5368709120", c.MaxUploadBytes))
	}
	if c.UploadURLTTL < time.Second || c.UploadURLTTL > 7*24*time.Hour {
		errs = append(errs, fmt.Errorf("LETHE_UPLOAD_URL_TTL=%s: want 1s..168h (V4 signing's limit)", c.UploadURLTTL))
	}
	if c.ExportMaxBytes < 1<<20 || c.ExportMaxBytes > 4<<30 {
		errs = append(errs, fmt.Errorf("LETHE_EXPORT_MAX_BYTES=%d: want 1048576..4294967296", c.ExportMaxBytes))
	}
	if c.ExportURLTTL < time.Second || c.ExportURLTTL > 24*time.Hour {
		errs = append(errs, fmt.Errorf("LETHE_EXPORT_URL_TTL=%s: want 1s..24h", c.ExportURLTTL))
	}
	if c.STTBreakerThreshold < 1 || c.STTBreakerThreshold > 1000 {
		errs = append(errs, fmt.Errorf("LETHE_STT_BREAKER_THRESHOLD=%d: want 1..1000", c.STTBreakerThreshold))
	}
	if c.STTBreakerCooldown < time.Second || c.STTBreakerCooldown > time.Hour {
		errs = append(errs, fmt.Errorf("LETHE_STT_BREAKER_COOLDOWN=%s: want 1s..1h", c.STTBreakerCooldown))
	}
	if c.MaxInFlight < 1 || c.MaxInFlight > 1000 {
		errs = append(errs, fmt.Errorf("LETHE_MAX_IN_FLIGHT=%d: want 1..1000", c.MaxInFlight))
	}
	for name, d := range map[string]time.Duration{
		"LETHE_SHUTDOWN_TIMEOUT": c.ShutdownTimeout, "LETHE_HANDLER_TIMEOUT": c.HandlerTimeout,
		"LETHE_RECONCILE_EVERY": c.ReconcileEvery, "LETHE_RECONCILE_AFTER": c.ReconcileAfter,
		"LETHE_FIRESTORE_TIMEOUT": c.FirestoreTimeout,
	} {
		if d <= 0 {
			errs = append(errs, fmt.Errorf("%s=%s: must be positive", name, d))
		}
	}
	if _, err := c.runRoles(); err != nil {
		errs = append(errs, err)
	}
	for name, v := range map[string]int{
		"LETHE_RETENTION_AUDIO_DAYS": c.RetentionAudioDays, "LETHE_RETENTION_TRANSCRIPT_DAYS": c.RetentionTranscriptDays,
		"LETHE_RETENTION_VECTOR_DAYS": c.RetentionVectorDays, "LETHE_RETENTION_EXPORT_DAYS": c.RetentionExportDays,
	} {
		if v < 0 || v > records.MaxRetentionDays {
			errs = append(errs, fmt.Errorf("%s=%d: want 0..%d", name, v, records.MaxRetentionDays))
		}
	}
	if c.RetentionSweepEvery < 0 || (c.RetentionSweepEvery > 0 && c.RetentionSweepEvery < time.Second) {
		errs = append(errs, fmt.Errorf("LETHE_RETENTION_SWEEP_EVERY=%s: want 0 (off) or at least 1s", c.RetentionSweepEvery))
	}
	for _, ch := range []struct {
		name, value string
		allowed     []string
	}{
		{"LETHE_DOCUMENTS", c.Documents, []string{"sqlite", "firestore"}},
		{"LETHE_BLOBS", c.Blobs, []string{"dir", "gcs"}},
		{"LETHE_VECTORS", c.Vectors, []string{"flat", "pinecone"}},
		{"LETHE_STT", c.STT, []string{"pocketsphinx", "deepgram", "openai"}},
		{"LETHE_EMBEDDER", c.Embedder, []string{"hashing", "pinecone", "openai"}},
		{"LETHE_AUTH", c.Auth, []string{"local", "firebase"}},
		{"LETHE_DELIVERY", c.Delivery, []string{"pull", "push"}},
	} {
		if !slices.Contains(ch.allowed, ch.value) {
			errs = append(errs, fmt.Errorf("%s=%q: want one of %s", ch.name, ch.value, strings.Join(ch.allowed, ", ")))
		}
	}
	if c.KEK != "file" && !strings.HasPrefix(c.KEK, "gcpkms://") && !strings.HasPrefix(c.KEK, "gcp-kms://") {
		errs = append(errs, errors.New("LETHE_KEK: want file or gcpkms://projects/P/locations/L/keyRings/R/cryptoKeys/K"))
	}
	if c.RateLimit != "memory" && !strings.HasPrefix(c.RateLimit, "redis://") && !strings.HasPrefix(c.RateLimit, "rediss://") {
		errs = append(errs, errors.New("LETHE_RATELIMIT: want memory or redis://host:port/db"))
	}
	need := func(cond bool, name, why string) {
		if cond {
			errs = append(errs, fmt.Errorf("%s is required %s", name, why))
		}
	}
	need(c.PushServiceAccount != "" && c.PushAudience == "", "LETHE_PUSH_AUDIENCE", "with LETHE_PUSH_SERVICE_ACCOUNT")
	need(c.Blobs == "gcs" && c.GCSBucket == "", "LETHE_GCS_BUCKET", "with LETHE_BLOBS=gcs")
	need(c.Vectors == "pinecone" && c.PineconeIndexHost == "", "LETHE_PINECONE_INDEX_HOST", "with LETHE_VECTORS=pinecone")
	need((c.Vectors == "pinecone" || c.Embedder == "pinecone") && c.PineconeAPIKey == "", "PINECONE_API_KEY", "with Pinecone vectors or embeddings")
	need(c.STT == "deepgram" && c.DeepgramAPIKey == "", "DEEPGRAM_API_KEY", "with LETHE_STT=deepgram")
	if c.EmbedDim < 1 || c.EmbedDim > 20000 {
		errs = append(errs, fmt.Errorf("LETHE_EMBED_DIM=%d: want 1..20000", c.EmbedDim))
	}
	errs = append(errs, c.validateStreams()...)
	errs = append(errs, c.validateTwilio()...)
	if _, _, err := c.erasureJournal(); err != nil {
		errs = append(errs, err)
	}
	if err := errors.Join(errs...); err != nil {
		return err
	}
	return c.guardProduction()
}

// guardProduction refuses, in production, every setting that is only safe
// on a developer's machine. Later adapters add their dangerous settings here.
func (c Config) guardProduction() error {
	if c.Env != envProduction {
		return nil
	}
	var errs []error
	if c.Bus == "embedded" {
		errs = append(errs, errors.New("LETHE_BUS=embedded: an in-process bus loses messages on restart; refused when LETHE_ENV=production"))
	}
	if c.PubSubEmulatorHost != "" {
		errs = append(errs, errors.New("PUBSUB_EMULATOR_HOST is set: refused when LETHE_ENV=production"))
	}
	if c.FirebaseAuthEmulator != "" {
		errs = append(errs, errors.New("FIREBASE_AUTH_EMULATOR_HOST is set: it disables token signature checks; refused when LETHE_ENV=production"))
	}
	if c.FirestoreEmulatorHost != "" || c.GCSEndpoint != "" {
		errs = append(errs, errors.New("FIRESTORE_EMULATOR_HOST or LETHE_GCS_ENDPOINT is set: emulators are refused when LETHE_ENV=production"))
	}
	if c.StorageEmulatorHost != "" {
		errs = append(errs, errors.New("STORAGE_EMULATOR_HOST is set: the Cloud Storage client would send blobs to it; refused when LETHE_ENV=production"))
	}
	if c.Delivery == "push" && c.PushServiceAccount == "" {
		errs = append(errs, errors.New("LETHE_DELIVERY=push without LETHE_PUSH_SERVICE_ACCOUNT: anyone could push events; refused when LETHE_ENV=production"))
	}
	errs = append(errs, c.guardTwilio()...)
	if c.Auth == "local" {
		errs = append(errs, errors.New("LETHE_AUTH=local: anyone with the data dir can mint tokens; refused when LETHE_ENV=production"))
	}
	if strings.HasPrefix(c.PublicURL, "http://") {
		errs = append(errs, errors.New("LETHE_PUBLIC_URL is http://: tokens would cross the network in clear; refused when LETHE_ENV=production"))
	}
	if gs, _, _ := c.erasureJournal(); gs == "" && c.Documents == "firestore" {
		errs = append(errs, errors.New("LETHE_ERASURE_JOURNAL is a local directory with LETHE_DOCUMENTS=firestore: an instance's disk does not outlive it, and a restore would bring erased users back; refused when LETHE_ENV=production (use gs://BUCKET)"))
	}
	if c.KEK == "file" {
		errs = append(errs, errors.New("LETHE_KEK=file: a key-encryption key on local disk; refused when LETHE_ENV=production (use gcpkms://...)"))
	}
	// Stores that cannot be shared between instances: allowed only on
	// purpose, for a single-instance install.
	if !c.AllowEmbedded {
		for _, e := range []struct {
			name     string
			embedded bool
		}{
			{"LETHE_DOCUMENTS=sqlite", c.Documents == "sqlite"}, {"LETHE_BLOBS=dir", c.Blobs == "dir"},
			{"LETHE_VECTORS=flat", c.Vectors == "flat"}, {"LETHE_RATELIMIT=memory", c.RateLimit == "memory"},
		} {
			if e.embedded {
				errs = append(errs, fmt.Errorf("%s: cannot be shared between instances; refused when LETHE_ENV=production unless LETHE_ALLOW_EMBEDDED=true", e.name))
			}
		}
	}
	return errors.Join(errs...)
}

// listenAddr honours PORT as Cloud Run sets it.
func (c Config) listenAddr() string {
	if c.Port != "" {
		return ":" + c.Port
	}
	return c.Addr
}

// runRoles is what `lethe run` starts, from LETHE_WORKERS.
func (c Config) runRoles() (roles, error) {
	r := roles{edge: true}
	if strings.TrimSpace(c.Workers) == "none" {
		return r, nil
	}
	for _, w := range splitList(c.Workers) {
		switch w {
		case workerTranscribe, workerEmbed, workerStore, workerLifecycle:
			r.workers = append(r.workers, w)
			// One process, no Cloud Scheduler: lethe run requests sweeps.
			r.sweepTimer = r.sweepTimer || w == workerLifecycle
		case workerUploads:
			// Signed uploads exist only on Cloud Storage; with local blobs
			// nothing ever reaches the uploads topic.
			if c.Blobs == "gcs" {
				r.workers = append(r.workers, w)
			}
		case workerTwilio:
			// Without Twilio's API nothing can be fetched or verified.
			if c.twilioAPI() {
				r.workers = append(r.workers, w)
			}
		case workerReconcile:
			r.reconcile = true
		default:
			return r, fmt.Errorf("LETHE_WORKERS: unknown worker %q (want transcribe, embed, store, uploads, lifecycle, twilio, reconcile or none)", w)
		}
	}
	return r, nil
}

// retention is the policy of users who set none.
func (c Config) retention() records.Retention {
	return records.Retention{AudioDays: c.RetentionAudioDays, TranscriptDays: c.RetentionTranscriptDays,
		VectorDays: c.RetentionVectorDays, ExportDays: c.RetentionExportDays}
}

// limits are the edge's rate limits; bursts allow a client to catch up
// after a gap (a wearable flushing its buffer).
func (c Config) limits() functions.Limits {
	perMin := func(n, burstDiv int) ratelimit.Limit {
		if n <= 0 {
			return ratelimit.Limit{}
		}
		return ratelimit.PerMinute(n, max(1, n/burstDiv))
	}
	return functions.Limits{
		PerUser:    perMin(c.RateUserPerMin, 5),
		Search:     perMin(c.RateSearchPerMin, 4),
		FailedAuth: perMin(c.RateAuthFailPerMin, 3),
		// Phone codes: a few registrations and guesses per user; the
		// registry bounds codes per number and guesses per code too.
		PhoneCodes: ratelimit.PerMinute(10, 5),
	}
}

// telemetry is the exporters' configuration.
func (c Config) telemetry() telemetry.Config {
	return telemetry.Config{
		Service: c.Service, ProjectID: c.ProjectID,
		Traces: c.TracesExporter, Metrics: c.MetricsExporter,
		OTLPEndpoint: c.OTLPEndpoint, SampleRatio: c.TraceSampleRatio,
		Stdout: os.Stdout,
	}
}

// erasureJournal is where the erasure journal lives: a Cloud Storage
// bucket and prefix, or a local directory, never inside LETHE_DATA_DIR
// (a restore replaces that).
func (c Config) erasureJournal() (bucket, dir string, err error) {
	j := c.ErasureJournal
	if rest, ok := strings.CutPrefix(j, "gs://"); ok {
		bucket, prefix, _ := strings.Cut(rest, "/")
		if bucket == "" || strings.Contains(prefix, "..") {
			return "", "", fmt.Errorf("LETHE_ERASURE_JOURNAL=%q: want gs://BUCKET[/PREFIX]", j)
		}
		return j, "", nil
	}
	if j == "" {
		j = filepath.Clean(c.DataDir) + ".erasures"
	}
	absJ, err1 := filepath.Abs(j)
	absD, err2 := filepath.Abs(c.DataDir)
	if err := errors.Join(err1, err2); err != nil {
		return "", "", fmt.Errorf("LETHE_ERASURE_JOURNAL: %w", err)
	}
	if rel, err := filepath.Rel(absD, absJ); err == nil && filepath.IsLocal(rel) || absJ == absD {
		return "", "", fmt.Errorf("LETHE_ERASURE_JOURNAL=%q is inside LETHE_DATA_DIR: a restore would replace it", c.ErasureJournal)
	}
	return "", absJ, nil
}
