package main

import (
	"encoding/json"
	"errors"
	"io"
	"time"

	"github.com/lethe-dev/lethe/app/processing"
)

const processingUsage = "want: processing-records [--format markdown|json]"

// processingSettings is the part of the configuration the record of
// processing activities depends on (never a key or token).
func processingSettings(cfg Config) processing.Settings {
	journal := cfg.ErasureJournal
	if gs, dir, err := cfg.erasureJournal(); err == nil {
		journal = gs + dir
	}
	return processing.Settings{
		Env: cfg.Env, Documents: cfg.Documents, Blobs: cfg.Blobs, Vectors: cfg.Vectors, STT: cfg.STT,
		Embedder: cfg.Embedder, KEK: cfg.KEK, RateLimit: cfg.RateLimit, Auth: cfg.Auth, Bus: cfg.Bus,
		DataDir: cfg.DataDir, GCSBucket: cfg.GCSBucket, ProjectID: cfg.ProjectID,
		OpenAIBaseURL: cfg.OpenAIBaseURL, OpenAISTTModel: cfg.OpenAISTTModel, OpenAIEmbedding: cfg.OpenAIEmbedModel,
		ErasureJournal: journal, Retention: cfg.retention(),
		ExportURLTTL: cfg.ExportURLTTL, UploadURLTTL: cfg.UploadURLTTL,
		// Every limit is per minute (Config.limits).
		RateWindow: time.Minute,
	}
}

// cmdProcessingRecords prints the record of processing activities of the
// configuration it runs with.
func cmdProcessingRecords(cfg Config, args []string, stdout, stderr io.Writer) error {
	fs := newFlagSet("processing-records", stderr)
	format := fs.String("format", "markdown", "markdown or json")
	if err := fs.Parse(args); err != nil || fs.NArg() > 0 {
		return usageError{errors.New(processingUsage)}
	}
	r := processing.Build(processingSettings(cfg))
	switch *format {
	case "markdown":
		return r.Markdown(stdout)
	case "json":
		enc := json.NewEncoder(stdout)
		enc.SetIndent("", "  ")
		return enc.Encode(r)
	}
	return usageError{errors.New(processingUsage)}
}
