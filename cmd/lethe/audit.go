package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"time"

	"github.com/lethe-dev/lethe/app/audit"
)

// cmdAudit: `lethe audit tail [-n N] [--subject HASH] [--follow]` prints
// the newest audit entries as JSON lines (and, following, new ones as they
// are appended). Entries hold keyed ids and counts only.
func cmdAudit(ctx context.Context, cfg Config, logger *slog.Logger, args []string, stdout, stderr io.Writer) error {
	if len(args) < 1 || args[0] != "tail" {
		return usageError{errors.New("want: audit tail [-n N] [--subject HASH] [--follow]")}
	}
	fs := newFlagSet("audit tail", stderr)
	n := fs.Int("n", 20, "how many of the newest entries to print first")
	subject := fs.String("subject", "", "only entries about this user (keyed hash)")
	follow := fs.Bool("follow", false, "keep printing new entries")
	every := fs.Duration("every", 2*time.Second, "with --follow: how often to look")
	if err := fs.Parse(args[1:]); err != nil {
		return usageError{err}
	}
	if *n < 0 || *n > 100_000 || *every <= 0 {
		return usageError{errors.New("-n wants 0..100000 and --every a positive duration")}
	}
	a, err := openApp(ctx, cfg, logger, overrides{})
	if err != nil {
		return err
	}
	defer a.close()
	enc := json.NewEncoder(stdout)
	// The trail pages oldest first: walk it keeping the last n.
	var last []audit.Entry
	cursor := ""
	for {
		page, next, err := a.audit.List(ctx, audit.Filter{Subject: *subject, After: cursor, Limit: audit.MaxPage})
		if err != nil {
			return fmt.Errorf("audit.List: %w", err)
		}
		for _, e := range page {
			last = append(last, e)
			cursor = e.ID
		}
		if len(last) > *n {
			last = last[len(last)-*n:]
		}
		if next == "" {
			break
		}
	}
	for _, e := range last {
		if err := enc.Encode(e); err != nil {
			return err
		}
	}
	for *follow {
		select {
		case <-ctx.Done():
			return nil
		case <-time.After(*every):
		}
		page, _, err := a.audit.List(ctx, audit.Filter{Subject: *subject, After: cursor, Limit: audit.MaxPage})
		if err != nil {
			return fmt.Errorf("audit.List: %w", err)
		}
		for _, e := range page {
			cursor = e.ID
			if err := enc.Encode(e); err != nil {
				return err
			}
		}
	}
	return nil
}
