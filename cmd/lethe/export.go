package main

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"strings"
	"time"

	"github.com/lethe-dev/lethe/app/audit"
	"github.com/lethe-dev/lethe/app/records"
	"github.com/lethe-dev/lethe/workers/export"
)

// newExporter is the export worker over the app's stores. A handler never
// outlives LETHE_HANDLER_TIMEOUT, so a lease a minute longer lets a
// redelivery rebuild soon after a crash without racing a live build.
func newExporter(cfg Config, a *app, now func() time.Time) *export.Worker {
	return &export.Worker{
		Docs: a.docs, Blobs: a.blobs, Keys: a.keys, Events: a.events,
		Defaults: cfg.retention(),
		MaxBytes: cfg.ExportMaxBytes, Lease: cfg.HandlerTimeout + time.Minute, Now: now,
	}
}

// cmdUsersExport is `lethe users export UID [--out FILE]`: the export the
// API builds, run here in this process, written decrypted to FILE (0600).
func cmdUsersExport(ctx context.Context, cfg Config, logger *slog.Logger, args []string, stdout, stderr io.Writer) error {
	fs := newFlagSet("users export", stderr)
	out := fs.String("out", "", "write the ZIP here (default lethe-export-<id>.zip)")
	// The UID may come before or after the flags.
	var uid string
	if len(args) > 0 && !strings.HasPrefix(args[0], "-") {
		uid, args = args[0], args[1:]
	}
	if err := fs.Parse(args); err != nil {
		return usageError{err}
	}
	if uid == "" && fs.NArg() == 1 {
		uid = fs.Arg(0)
	} else if fs.NArg() != 0 {
		return usageError{errors.New("want: users export UID [--out FILE]")}
	}
	if uid == "" || len(uid) > 128 {
		return usageError{errors.New("want: users export UID [--out FILE] (a uid of 1 to 128 characters)")}
	}
	a, err := openApp(ctx, cfg, logger, overrides{})
	if err != nil {
		return err
	}
	defer a.close()
	user := a.pseudo.User(uid)
	if gone, err := records.Tombstoned(ctx, a.docs, user); err != nil {
		return err
	} else if gone {
		return errors.New("this user has been erased: there is nothing to export")
	}
	log := &audit.Log{Docs: a.docs}
	x, created, err := records.RequestExport(ctx, a.docs, user, audit.ActorOperator, time.Now())
	if err != nil {
		return err
	}
	if created {
		if _, err := log.Append(ctx, audit.Entry{Actor: audit.ActorOperator, Action: audit.ActionExportRequested, Subject: user, Ref: "exports/" + x.ID}); err != nil {
			return err
		}
	}
	fmt.Fprintf(stdout, "export %s: building\n", x.ID)
	w := newExporter(cfg, a, time.Now)
	w.Lease = time.Hour // no handler timeout bounds this process
	w.Progress = func(step string, n int) {
		if step == "sealed" || step == "done" {
			fmt.Fprintf(stdout, "  %s (%d bytes)\n", step, n)
			return
		}
		fmt.Fprintf(stdout, "  %s: %d\n", step, n)
	}
	x, err = w.Build(ctx, user, x.ID)
	switch {
	case errors.Is(err, export.ErrInProgress):
		return fmt.Errorf("export %s is being built by a worker; run this again in a few minutes", x.ID)
	case errors.Is(err, export.ErrTooLarge):
		return fmt.Errorf("export %s failed: the archive is larger than LETHE_EXPORT_MAX_BYTES=%d", x.ID, cfg.ExportMaxBytes)
	case err != nil:
		return err
	case x.State != records.ExportDone:
		return fmt.Errorf("export %s %s: %s", x.ID, x.State, x.Error)
	}
	rc, _, err := a.blobs.Read(ctx, x.BlobKey)
	if err != nil {
		return fmt.Errorf("blobs.Read export: %w", err)
	}
	sealed, err := io.ReadAll(rc)
	rc.Close()
	if err != nil {
		return fmt.Errorf("blobs.Read export: %w", err)
	}
	zip, err := a.keys.Open(ctx, user, sealed, records.ExportAD(user, x.BlobKey))
	if err != nil {
		return fmt.Errorf("keys.Open export: %w", err)
	}
	if sum := sha256.Sum256(zip); hex.EncodeToString(sum[:]) != x.ArchiveSHA256 {
		return errors.New("the stored archive does not match its record")
	}
	path := *out
	if path == "" {
		path = "lethe-export-" + x.ID + ".zip"
	}
	if err := writePrivate(path, zip); err != nil {
		return err
	}
	if _, err := log.Append(ctx, audit.Entry{Actor: audit.ActorOperator, Action: audit.ActionExportDownloaded, Subject: user, Ref: "exports/" + x.ID}); err != nil {
		return err
	}
	fmt.Fprintf(stdout, "wrote %s (%d bytes, %d files, sha256 %s)\n", path, len(zip), x.Files+1, x.ArchiveSHA256)
	return nil
}

// writePrivate writes b to path readable by its owner only, replacing what
// was there.
func writePrivate(path string, b []byte) error {
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_TRUNC, 0o600)
	if err != nil {
		return fmt.Errorf("--out: %w", err)
	}
	if err := f.Chmod(0o600); err != nil {
		f.Close()
		return fmt.Errorf("--out: %w", err)
	}
	if _, err := io.Copy(f, bytes.NewReader(b)); err != nil {
		f.Close()
		return fmt.Errorf("--out: %w", err)
	}
	if err := f.Sync(); err != nil {
		f.Close()
		return fmt.Errorf("--out: %w", err)
	}
	return f.Close()
}
