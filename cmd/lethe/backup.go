package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	iofs "io/fs"
	"log/slog"
	"os"
	"path"
	"strings"
	"time"

	"github.com/tink-crypto/tink-go/v2/tink"

	"github.com/lethe-dev/lethe/app/audit"
	"github.com/lethe-dev/lethe/app/forget"
	"github.com/lethe-dev/lethe/infra/backup"
	"github.com/lethe-dev/lethe/infra/blobs/dirblobs"
	"github.com/lethe-dev/lethe/infra/blobs/gcsblobs"
	"github.com/lethe-dev/lethe/infra/vectors/flatvectors"
)

const (
	backupUsage   = "want: backup --out FILE [--key FILE] | backup keygen --out FILE"
	restoreUsage  = "want: restore --in FILE [--key FILE] [--force] [--new-journal]"
	erasuresUsage = "want: erasures reapply | erasures list"
)

// openJournal opens the erasure journal where LETHE_ERASURE_JOURNAL
// says: a Cloud Storage bucket, or a directory beside the data dir.
func openJournal(ctx context.Context, cfg Config) (*forget.Journal, error) {
	gs, dir, err := cfg.erasureJournal()
	if err != nil {
		return nil, err
	}
	if gs != "" {
		bucket, prefix, _ := strings.Cut(strings.TrimPrefix(gs, "gs://"), "/")
		if prefix = strings.Trim(prefix, "/"); prefix != "" {
			prefix += "/"
		}
		b, err := gcsblobs.Open(ctx, gcsblobs.Config{Bucket: bucket, Endpoint: cfg.GCSEndpoint})
		if err != nil {
			return nil, fmt.Errorf("gcsblobs.Open (LETHE_ERASURE_JOURNAL): %w", err)
		}
		return &forget.Journal{Bucket: b, Prefix: prefix}, nil
	}
	b, err := dirblobs.Open(dir)
	if err != nil {
		return nil, fmt.Errorf("dirblobs.Open (LETHE_ERASURE_JOURNAL): %w", err)
	}
	return &forget.Journal{Bucket: b}, nil
}

// refusePendingRestore keeps a restored data dir from serving before its
// erasure journal is replayed: until then it may hold erased users.
func refusePendingRestore(cfg Config) error {
	pending, err := backup.Pending(cfg.DataDir)
	if err != nil {
		return err
	}
	if pending {
		return fmt.Errorf("%s is a restore whose erasure journal is not replayed yet: run `lethe erasures reapply` first", cfg.DataDir)
	}
	return nil
}

// embeddedOnly: lethe backup covers the embedded stores; hosted ones have
// their own backups (Firestore PITR and scheduled backups, object
// versioning), after which `lethe erasures reapply` runs.
func embeddedOnly(cfg Config, cmd string) error {
	if cfg.Documents != "sqlite" || cfg.Blobs != "dir" || cfg.Vectors != "flat" {
		return usageError{fmt.Errorf("lethe %s covers embedded installs (LETHE_DOCUMENTS=sqlite, LETHE_BLOBS=dir, LETHE_VECTORS=flat); with Firestore use its point-in-time recovery or scheduled backups, then `lethe erasures reapply`", cmd)}
	}
	return nil
}

// backupSource is LETHE_DATA_DIR as a backup sees it.
func backupSource(cfg Config) backup.Source {
	return backup.Source{Root: cfg.DataDir, SQLite: []string{"docs.db"}, Skip: func(rel string) bool {
		base := path.Base(rel)
		return dirblobs.IsTempFile(base) || flatvectors.IsTempFile(base) || strings.HasPrefix(base, ".kek-")
	}}
}

func loadBackupKey(cfg Config, flagKey string) (tink.StreamingAEAD, error) {
	p := flagKey
	if p == "" {
		p = cfg.BackupKeyFile
	}
	if p == "" {
		return nil, usageError{errors.New("no backup key: set LETHE_BACKUP_KEY_FILE or pass --key FILE (lethe backup keygen --out FILE makes one)")}
	}
	k, err := backup.LoadKey(p)
	if err != nil {
		return nil, fmt.Errorf("backup key: %w", err)
	}
	return k, nil
}

// cmdBackup writes one encrypted archive of the data dir; it may run
// while lethe run serves (the documents are snapshotted consistently).
func cmdBackup(ctx context.Context, cfg Config, args []string, stdout, stderr io.Writer) error {
	if len(args) > 0 && args[0] == "keygen" {
		fs := newFlagSet("backup keygen", stderr)
		out := fs.String("out", "", "where to write the new backup key (must not exist)")
		if err := fs.Parse(args[1:]); err != nil || *out == "" || fs.NArg() > 0 {
			return usageError{errors.New(backupUsage)}
		}
		if err := backup.GenerateKey(*out); err != nil {
			return err
		}
		fmt.Fprintf(stdout, "backup key written to %s (mode 0600): keep a copy off this machine; without it no backup can be restored\n", *out)
		return nil
	}
	fs := newFlagSet("backup", stderr)
	out := fs.String("out", "", "the archive to write (must not exist)")
	keyFile := fs.String("key", "", "backup key (default LETHE_BACKUP_KEY_FILE)")
	if err := fs.Parse(args); err != nil || *out == "" || fs.NArg() > 0 {
		return usageError{errors.New(backupUsage)}
	}
	if err := embeddedOnly(cfg, "backup"); err != nil {
		return err
	}
	key, err := loadBackupKey(cfg, *keyFile)
	if err != nil {
		return err
	}
	partial := *out + ".partial"
	f, err := os.OpenFile(partial, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
	if err != nil {
		return fmt.Errorf("os.OpenFile: %w", err)
	}
	defer os.Remove(partial)
	m, err := backup.Create(ctx, f, key, backupSource(cfg), time.Now())
	if err == nil {
		err = f.Sync()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return fmt.Errorf("backup.Create: %w", err)
	}
	if _, err := os.Lstat(*out); err == nil {
		return fmt.Errorf("%s exists: not overwritten", *out)
	}
	if err := os.Rename(partial, *out); err != nil {
		return fmt.Errorf("os.Rename: %w", err)
	}
	fmt.Fprintf(stdout, "backup %s: %d files, %d bytes, taken %s\n", *out, len(m.Files), m.Bytes(), m.CreatedAt.Format(time.RFC3339))
	return nil
}

// cmdRestore restores an archive into LETHE_DATA_DIR, then replays the
// erasure journal, so no user erased after the backup comes back.
func cmdRestore(ctx context.Context, cfg Config, logger *slog.Logger, args []string, stdout, stderr io.Writer) error {
	fs := newFlagSet("restore", stderr)
	in := fs.String("in", "", "the archive to restore")
	keyFile := fs.String("key", "", "backup key (default LETHE_BACKUP_KEY_FILE)")
	force := fs.Bool("force", false, "replace a non-empty LETHE_DATA_DIR (stop every lethe using it first)")
	newJournal := fs.Bool("new-journal", false, "accept that LETHE_ERASURE_JOURNAL does not exist yet (no erasure since the backup can be replayed)")
	if err := fs.Parse(args); err != nil || *in == "" || fs.NArg() > 0 {
		return usageError{errors.New(restoreUsage)}
	}
	if err := embeddedOnly(cfg, "restore"); err != nil {
		return err
	}
	// Every install makes its journal directory when it first opens; a
	// missing one means a restore on another machine or path, where the
	// default journal is not the one that recorded the erasures.
	if _, dir, err := cfg.erasureJournal(); err != nil {
		return err
	} else if _, serr := os.Stat(dir); dir != "" && errors.Is(serr, iofs.ErrNotExist) && !*newJournal {
		return usageError{fmt.Errorf("the erasure journal %s does not exist: point LETHE_ERASURE_JOURNAL at the journal of the install the backup came from (or pass --new-journal if it is truly lost: users erased since the backup would come back)", dir)}
	}
	key, err := loadBackupKey(cfg, *keyFile)
	if err != nil {
		return err
	}
	f, err := os.Open(*in)
	if err != nil {
		return fmt.Errorf("os.Open: %w", err)
	}
	defer f.Close()
	m, err := backup.Restore(ctx, f, key, cfg.DataDir, *force)
	if err != nil {
		return fmt.Errorf("backup.Restore: %w", err)
	}
	fmt.Fprintf(stdout, "restored %d files (%d bytes) of the backup taken %s into %s\n", len(m.Files), m.Bytes(), m.CreatedAt.Format(time.RFC3339), cfg.DataDir)
	return reapplyErasures(ctx, cfg, logger, stdout)
}

// cmdErasures: `lethe erasures reapply` erases again every journaled user
// (after any restore: this one, Firestore PITR, an import); `lethe
// erasures list` prints the journal (pseudonyms only).
func cmdErasures(ctx context.Context, cfg Config, logger *slog.Logger, args []string, stdout io.Writer) error {
	if len(args) != 1 {
		return usageError{errors.New(erasuresUsage)}
	}
	switch args[0] {
	case "reapply":
		return reapplyErasures(ctx, cfg, logger, stdout)
	case "list":
		j, err := openJournal(ctx, cfg)
		if err != nil {
			return err
		}
		defer j.Bucket.Close()
		entries, err := j.Entries(ctx)
		if err != nil {
			return err
		}
		enc := json.NewEncoder(stdout)
		for _, e := range entries {
			if err := enc.Encode(e); err != nil {
				return err
			}
		}
		return nil
	}
	return usageError{errors.New(erasuresUsage)}
}

func reapplyErasures(ctx context.Context, cfg Config, logger *slog.Logger, stdout io.Writer) error {
	a, err := openApp(ctx, cfg, logger, overrides{})
	if err != nil {
		return err
	}
	defer a.close()
	n, err := a.erasures(a.bus, nil).Reapply(ctx, a.journal, audit.ActorOperator, func(en forget.JournalEntry, e forget.Erasure) {
		fmt.Fprintf(stdout, "erasure %s (requested %s): %s%s\n", e.ID, en.RequestedAt.Format(time.RFC3339), e.State, stepCounts(e, forget.StepVerify))
	})
	if err != nil {
		return fmt.Errorf("erasures reapply (after %d): %w", n, err)
	}
	if err := backup.ClearPending(cfg.DataDir); err != nil {
		return err
	}
	fmt.Fprintf(stdout, "erasure journal replayed: %d erased users checked; the install may serve\n", n)
	return nil
}
