// Command lethe is the one binary of the pipeline: the HTTP edge, the
// workers, and admin commands. It only wires: configuration is read here,
// once, and passed down.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/signal"
	"strings"
	"syscall"

	"github.com/lethe-dev/lethe/infra/logging"
)

// version is set at build time with -ldflags "-X main.version=...".
var version = "dev"

const usage = `lethe — privacy-first pipeline for voice memories

Usage:
  lethe run                 edge, every worker and the reconciler in one process
                            (embedded defaults: no cloud account, no Docker)
  lethe edge                the HTTP edge only
  lethe worker NAME         one worker: transcribe, embed, store, uploads,
                            lifecycle, reconcile
  lethe token --uid UID [--admin]
                            print a token of the local issuer (embedded mode)
  lethe users erase UID     erase a user everywhere (the erasure saga), with progress
  lethe users export UID    build a user's export archive, with progress
  lethe users revoke UID    end a user's sessions (Firebase refresh tokens)
  lethe audit tail [-n N] [--subject HASH] [--follow]
                            print the newest audit entries (JSON lines)
  lethe retention sweep [--dry-run]
                            delete what retention says is due now, with progress
                            and counts (--dry-run: count only, delete nothing)
  lethe dlq list TOPIC [-n N]
                            print a topic's dead letters (JSON lines, never data)
  lethe dlq replay TOPIC --id ID|--all
                            re-validate and republish dead letters, with progress
                            (both need a shared bus: LETHE_BUS=gcp)
  lethe backup --out FILE [--key FILE]
                            one encrypted archive of an embedded install's data
                            dir (documents, blobs, vectors, keys); safe while
                            lethe run serves
  lethe backup keygen --out FILE
                            make a backup key (keep it off this machine)
  lethe restore --in FILE [--key FILE] [--force] [--new-journal]
                            restore an archive into LETHE_DATA_DIR (empty unless
                            --force), then replay the erasure journal
  lethe erasures reapply    erase again every user in the erasure journal (after
                            any restore: lethe restore, Firestore PITR, an import)
  lethe erasures list       print the erasure journal (pseudonyms only)
  lethe keys rewrap [--to gcpkms://...|new-file]
                            rotate the KEK: wrap every user's keys and the
                            identity secrets again (Cloud KMS: under the primary
                            version, or --to another key; a key file: --to
                            new-file, with lethe stopped)
  lethe processing-records [--format markdown|json]
                            the record of processing activities of this
                            configuration: personal data, stores, providers,
                            purposes, retention
  lethe pinecone ensure-index
                            create the Pinecone index if absent; print its host
  lethe version             print the version
  lethe help                this text, and the configuration variables

The embedded embedder is lexical (feature hashing), not semantic: search
finds the words that were said, not their meaning.
`

func main() {
	os.Exit(realMain(os.Args[1:], os.Stdout, os.Stderr))
}

func realMain(args []string, stdout, stderr io.Writer) int {
	if len(args) == 0 {
		fmt.Fprint(stderr, usage)
		return 2
	}
	cmd, rest := args[0], args[1:]
	switch cmd {
	case "help", "-h", "--help":
		fmt.Fprint(stdout, usage)
		fmt.Fprintln(stdout, "\nConfiguration (environment):")
		printConfigHelp(stdout)
		return 0
	case "version", "--version":
		fmt.Fprintln(stdout, "lethe", version)
		return 0
	}

	cfg, err := loadConfig(cmd, rest)
	if err != nil {
		fmt.Fprintf(stderr, "lethe: %v\n", err)
		return 2
	}
	logger := logging.New(stderr, logging.Options{Level: parseLevel(cfg.LogLevel), ProjectID: cfg.ProjectID})

	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	defer stop()

	switch cmd {
	case "run":
		err = cmdRun(ctx, cfg, logger, rest, stdout)
	case "edge":
		err = cmdEdge(ctx, cfg, logger, rest)
	case "worker":
		err = cmdWorker(ctx, cfg, logger, rest)
	case "token":
		err = cmdToken(ctx, cfg, rest, stdout, stderr)
	case "pinecone":
		err = cmdPinecone(ctx, cfg, rest, stdout, stderr)
	case "users":
		err = cmdUsers(ctx, cfg, logger, rest, stdout, stderr)
	case "audit":
		err = cmdAudit(ctx, cfg, logger, rest, stdout, stderr)
	case "retention":
		err = cmdRetention(ctx, cfg, logger, rest, stdout, stderr)
	case "dlq":
		err = cmdDLQ(ctx, cfg, logger, rest, stdout, stderr)
	case "backup":
		err = cmdBackup(ctx, cfg, rest, stdout, stderr)
	case "restore":
		err = cmdRestore(ctx, cfg, logger, rest, stdout, stderr)
	case "erasures":
		err = cmdErasures(ctx, cfg, logger, rest, stdout)
	case "keys":
		err = cmdKeys(ctx, cfg, rest, stdout, stderr)
	case "processing-records":
		err = cmdProcessingRecords(cfg, rest, stdout, stderr)
	default:
		fmt.Fprintf(stderr, "lethe: unknown command %q\n\n%s", cmd, usage)
		return 2
	}
	if err != nil {
		var ue usageError
		if errors.As(err, &ue) {
			fmt.Fprintf(stderr, "lethe %s: %v\n", cmd, err)
			return 2
		}
		logger.Error("lethe stopped", "command", cmd, "error", err.Error())
		return 1
	}
	return 0
}

type usageError struct{ error }

func parseLevel(s string) slog.Level {
	switch strings.ToLower(s) {
	case "debug":
		return slog.LevelDebug
	case "warn":
		return slog.LevelWarn
	case "error":
		return slog.LevelError
	}
	return slog.LevelInfo
}

func printConfigHelp(w io.Writer) {
	var c Config
	_ = printUsage(w, &c)
}

func newFlagSet(name string, stderr io.Writer) *flag.FlagSet {
	fs := flag.NewFlagSet("lethe "+name, flag.ContinueOnError)
	fs.SetOutput(stderr)
	return fs
}
