package main

import (
	"errors"
	"fmt"
	"net"
	"strings"
	"time"

	"github.com/kelseyhightower/envconfig"
)

// Config is read once, in main, from the environment, and passed down.
// Variable names are the envconfig tags; `lethe help` prints them.
type Config struct {
	Env     string `envconfig:"LETHE_ENV" default:"development" desc:"development or production"`
	Addr    string `envconfig:"LETHE_ADDR" default:"127.0.0.1:8080" desc:"HTTP listen address"`
	Port    string `envconfig:"PORT" desc:"Cloud Run's port; when set, the server listens on :PORT"`
	DataDir string `envconfig:"LETHE_DATA_DIR" default:"./.lethe" desc:"embedded mode: where documents, blobs, vectors and local keys live"`

	ProjectID          string `envconfig:"LETHE_PROJECT" default:"lethe-local" desc:"Google Cloud project id"`
	PubSubEmulatorHost string `envconfig:"PUBSUB_EMULATOR_HOST" desc:"use the Pub/Sub emulator at host:port"`
	// Bus selects the Pub/Sub backend: embedded (in-process pstest), or gcp
	// (real Pub/Sub, or the emulator when PUBSUB_EMULATOR_HOST is set).
	Bus string `envconfig:"LETHE_BUS" default:"embedded" desc:"embedded or gcp"`

	LogLevel        string        `envconfig:"LETHE_LOG_LEVEL" default:"info" desc:"debug, info, warn, error"`
	ShutdownTimeout time.Duration `envconfig:"LETHE_SHUTDOWN_TIMEOUT" default:"20s" desc:"bound on draining in-flight work at SIGTERM"`
	HandlerTimeout  time.Duration `envconfig:"LETHE_HANDLER_TIMEOUT" default:"2m" desc:"per-event handler timeout"`

	// Reconciler re-drives items stuck in a non-final state.
	ReconcileEvery time.Duration `envconfig:"LETHE_RECONCILE_EVERY" default:"30s" desc:"how often the reconciler looks for stuck items"`
	ReconcileAfter time.Duration `envconfig:"LETHE_RECONCILE_AFTER" default:"2m" desc:"how long an item may sit in a non-final state before it is re-driven"`

	// Workers lists what `lethe run` starts besides the edge ("none" for
	// the edge alone): a way to hold work back, e.g. to inspect a backlog.
	Workers string `envconfig:"LETHE_WORKERS" default:"transcribe,embed,store,reconcile" desc:"workers lethe run starts: any of transcribe, embed, store, reconcile, or none"`

	MaxInFlight int `envconfig:"LETHE_MAX_IN_FLIGHT" default:"4" desc:"events each worker handles at once"`

	MaxChunkBytes int64 `envconfig:"LETHE_MAX_CHUNK_BYTES" default:"16777216" desc:"largest accepted audio chunk body"`

	STT         string `envconfig:"LETHE_STT" default:"pocketsphinx" desc:"speech-to-text: pocketsphinx"`
	STTKeywords string `envconfig:"LETHE_STT_KEYWORDS" desc:"optional comma-separated phrases to constrain PocketSphinx to"`
	Embedder    string `envconfig:"LETHE_EMBEDDER" default:"hashing" desc:"embeddings: hashing (lexical, not semantic)"`
}

const (
	envDevelopment = "development"
	envProduction  = "production"
)

func loadConfig() (Config, error) {
	var c Config
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
	if c.MaxChunkBytes <= 0 || c.MaxChunkBytes > 32<<20 {
		errs = append(errs, fmt.Errorf("LETHE_MAX_CHUNK_BYTES=%d: want 1..33554432 (Cloud Run caps HTTP/1 bodies at 32 MiB)", c.MaxChunkBytes))
	}
	if c.MaxInFlight < 1 || c.MaxInFlight > 1000 {
		errs = append(errs, fmt.Errorf("LETHE_MAX_IN_FLIGHT=%d: want 1..1000", c.MaxInFlight))
	}
	for name, d := range map[string]time.Duration{
		"LETHE_SHUTDOWN_TIMEOUT": c.ShutdownTimeout, "LETHE_HANDLER_TIMEOUT": c.HandlerTimeout,
		"LETHE_RECONCILE_EVERY": c.ReconcileEvery, "LETHE_RECONCILE_AFTER": c.ReconcileAfter,
	} {
		if d <= 0 {
			errs = append(errs, fmt.Errorf("%s=%s: must be positive", name, d))
		}
	}
	if _, err := c.runRoles(); err != nil {
		errs = append(errs, err)
	}
	switch c.STT {
	case "pocketsphinx":
	default:
		errs = append(errs, fmt.Errorf("LETHE_STT=%q: want pocketsphinx", c.STT))
	}
	switch c.Embedder {
	case "hashing":
	default:
		errs = append(errs, fmt.Errorf("LETHE_EMBEDDER=%q: want hashing", c.Embedder))
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
	// Until the production adapters exist, every store is embedded: local
	// key file, local token issuer, SQLite, a directory.
	errs = append(errs, errors.New("LETHE_DATA_DIR: embedded stores (local KEK, local token issuer, SQLite, directory blobs, flat vectors) are refused when LETHE_ENV=production"))
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
		case workerTranscribe, workerEmbed, workerStore:
			r.workers = append(r.workers, w)
		case workerReconcile:
			r.reconcile = true
		default:
			return r, fmt.Errorf("LETHE_WORKERS: unknown worker %q (want transcribe, embed, store, reconcile or none)", w)
		}
	}
	return r, nil
}
