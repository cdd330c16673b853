package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"maps"
	"slices"
	"strings"
	"time"

	"github.com/lethe-dev/lethe/app/audit"
	"github.com/lethe-dev/lethe/events"
	"github.com/lethe-dev/lethe/workers/retention"
)

// sweeper is the retention worker over the app's stores.
func (a *app) sweeper(now func() time.Time) *retention.Worker {
	return &retention.Worker{Docs: a.docs, Blobs: a.blobs, Vectors: a.vectors, Events: a.events, Logger: a.log, Now: now}
}

// requestSweeps publishes a retention sweep request on the lifecycle topic
// at start and then every `every`, as Cloud Scheduler does in production:
// the sweep runs in the lifecycle worker, with its retries and dead
// letters, one delivery at a time, never beside a second timer's sweep in
// this process.
func requestSweeps(ctx context.Context, pub publisher, reg *events.Registry, logger *slog.Logger, now func() time.Time, every time.Duration) {
	t := time.NewTicker(every)
	defer t.Stop()
	for {
		ev, err := reg.New(events.TypeRetentionSweep, "retention/sweep", events.RetentionSweepRequested{RequestedAt: now().UTC()})
		if err == nil {
			err = pub.Publish(ctx, events.TopicLifecycle, ev)
		}
		if err != nil && ctx.Err() == nil {
			logger.ErrorContext(ctx, "could not request a retention sweep", "error", err.Error())
		}
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}

const retentionUsage = "want: retention sweep [--dry-run] [--page N]"

// cmdRetention is `lethe retention sweep [--dry-run]`: one sweep now, in
// this process, with a progress line per page and the counts at the end.
func cmdRetention(ctx context.Context, cfg Config, logger *slog.Logger, args []string, stdout, stderr io.Writer) error {
	if len(args) < 1 || args[0] != "sweep" {
		return usageError{errors.New(retentionUsage)}
	}
	fs := newFlagSet("retention sweep", stderr)
	dry := fs.Bool("dry-run", false, "count what would be deleted; delete nothing")
	page := fs.Int("page", retention.DefaultPageSize, "expiry entries per page (1..10000)")
	if err := fs.Parse(args[1:]); err != nil {
		return usageError{err}
	}
	if fs.NArg() > 0 || *page < 1 || *page > 10000 {
		return usageError{errors.New(retentionUsage)}
	}
	a, err := openApp(ctx, cfg, logger, overrides{})
	if err != nil {
		return err
	}
	defer a.close()
	mode := "sweep"
	if *dry {
		mode = "dry run (nothing is deleted)"
	}
	start := time.Now()
	fmt.Fprintf(stdout, "retention %s: items expired by %s\n", mode, start.UTC().Format(time.RFC3339))
	rep, err := a.sweeper(time.Now).Sweep(ctx, retention.Options{
		DryRun: *dry, PageSize: *page, Actor: audit.ActorOperator,
		Progress: func(p retention.Progress) {
			fmt.Fprintf(stdout, "  page %d: %d entries (%s)\n", p.Pages, p.Entries, time.Since(start).Round(time.Millisecond))
		},
	})
	printCounts(stdout, rep, *dry)
	if err != nil {
		fmt.Fprintln(stdout, "retention sweep stopped early; run it again to resume (what is deleted stays deleted)")
		return err
	}
	fmt.Fprintf(stdout, "retention %s done: %d entries in %s\n", mode, rep.Entries, time.Since(start).Round(time.Millisecond))
	return nil
}

// printCounts prints the report's counts as a table, by name.
func printCounts(w io.Writer, rep retention.Report, dry bool) {
	verb := "deleted"
	if dry {
		verb = "would delete"
	}
	if len(rep.Counts) == 0 {
		fmt.Fprintln(w, "nothing is due")
		return
	}
	width := 0
	for k := range rep.Counts {
		width = max(width, len(k))
	}
	fmt.Fprintf(w, "%-*s  %s\n", width, "class.store", verb)
	fmt.Fprintf(w, "%s  %s\n", strings.Repeat("-", width), strings.Repeat("-", len(verb)))
	for _, k := range slices.Sorted(maps.Keys(rep.Counts)) {
		fmt.Fprintf(w, "%-*s  %d\n", width, k, rep.Counts[k])
	}
}
