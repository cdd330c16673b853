// Package reconcile re-drives work stuck in a non-final state. The stores are
// the truth and events only notifications: a lost message (an in-memory bus
// restarted, a publish that failed after the write) delays work, never loses
// it.
package reconcile

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"time"

	"github.com/lethe-dev/lethe/app/forget"
	"github.com/lethe-dev/lethe/app/records"
	"github.com/lethe-dev/lethe/events"
	"github.com/lethe-dev/lethe/infra/docs"
)

// Worker finds stuck chunks and publishes their chunk event again; the
// transcribe worker picks up from whatever state the chunk is in.
type Worker struct {
	Docs   docs.Store
	Bus    events.Publisher
	Events *events.Registry
	Logger *slog.Logger
	Now    func() time.Time
	// MaxRedrives bounds re-drives of one chunk; past it the chunk is
	// marked failed (final) instead of being retried forever.
	MaxRedrives int
	// Batch bounds one pass (per state).
	Batch int
	// Erasures, when set, are re-driven too: an erasure left pending or
	// running (its announcement lost, its process killed mid-saga) is
	// announced again and resumes from its last completed step.
	Erasures Erasures
}

// Erasures finds and re-announces unfinished erasures (forget.Saga).
type Erasures interface {
	Unfinished(ctx context.Context, before time.Time, limit int) ([]forget.Erasure, error)
	Announce(ctx context.Context, e forget.Erasure) error
}

// Stats of one pass.
type Stats struct {
	Redriven int
	Failed   int
	Erasures int // unfinished erasures announced again
}

// RunOnce re-drives chunks that have sat in a non-final state for longer
// than olderThan. olderThan 0 re-drives every non-final chunk: right at the
// start of a process whose bus is in memory, where nothing can be in flight.
func (w *Worker) RunOnce(ctx context.Context, olderThan time.Duration) (Stats, error) {
	var st Stats
	cutoff := w.Now().Add(-olderThan).UnixMilli()
	if w.Erasures != nil {
		stuck, err := w.Erasures.Unfinished(ctx, w.Now().Add(-olderThan), w.Batch)
		if err != nil {
			return st, fmt.Errorf("forget.Unfinished: %w", err)
		}
		for _, e := range stuck {
			if err := w.Erasures.Announce(ctx, e); err != nil {
				return st, fmt.Errorf("forget.Announce: %w", err)
			}
			st.Erasures++
		}
	}
	for _, status := range []string{records.StatusReceived, records.StatusTranscribed} {
		found, err := w.Docs.Query(ctx, docs.Query{
			AllUsers:   true,
			Collection: records.Chunks,
			Filters: []docs.Filter{
				{Field: records.FieldStatus, Op: docs.Eq, Value: status},
				{Field: records.FieldUpdatedAt, Op: docs.Lte, Value: cutoff},
			},
			OrderBy: records.FieldUpdatedAt,
			Limit:   w.Batch,
		})
		if err != nil {
			return st, fmt.Errorf("docs.Query stuck chunks: %w", err)
		}
		for _, d := range found {
			failed, err := w.redrive(ctx, d)
			if errors.Is(err, errSkipped) {
				continue
			}
			if err != nil {
				return st, err
			}
			if failed {
				st.Failed++
			} else {
				st.Redriven++
			}
		}
	}
	return st, nil
}

func (w *Worker) redrive(ctx context.Context, d docs.Doc) (failed bool, err error) {
	user := d.Key.User
	if gone, err := records.Tombstoned(ctx, w.Docs, user); err != nil {
		return false, err
	} else if gone {
		return false, errSkipped
	}
	var c records.Chunk
	err = w.Docs.Update(ctx, d.Key, func(cur *docs.Doc) (*docs.Doc, error) {
		if cur == nil {
			return nil, errGone
		}
		var err error
		if c, err = records.ChunkFrom(*cur); err != nil {
			return nil, err
		}
		if c.Status != records.StatusReceived && c.Status != records.StatusTranscribed {
			return nil, errGone // moved on since the query
		}
		c.Redriven++
		failed = c.Redriven > w.MaxRedrives
		if failed {
			c.Status, c.FailReason = records.StatusFailed, fmt.Sprintf("gave up after %d re-drives", w.MaxRedrives)
		}
		c.UpdatedAt = w.Now().UTC()
		nd, err := c.Doc(user)
		return &nd, err
	})
	if errors.Is(err, errGone) {
		return false, errSkipped
	}
	if err != nil {
		return false, fmt.Errorf("docs.Update chunk: %w", err)
	}
	if failed {
		w.Logger.WarnContext(ctx, "chunk failed after re-drives", "chunk", records.ChunkID(c.ConversationID, c.Seq), "user", user)
		return true, nil
	}
	if gone, err := records.Tombstoned(ctx, w.Docs, user); err != nil || gone {
		return false, err
	}
	ev, err := records.ChunkReceivedEvent(w.Events, user, c)
	if err != nil {
		return false, fmt.Errorf("records.ChunkReceivedEvent: %w", err)
	}
	if err := w.Bus.Publish(ctx, events.TopicAudio, ev); err != nil {
		return false, fmt.Errorf("bus.Publish chunk: %w", err)
	}
	return false, nil
}

var errGone = errors.New("chunk no longer stuck")

var errSkipped = errors.New("skipped")

// Run calls RunOnce every interval until ctx ends; the first pass uses
// first as its bound (0 in embedded mode, see RunOnce).
func (w *Worker) Run(ctx context.Context, first, olderThan, every time.Duration) error {
	bound := first
	t := time.NewTicker(every)
	defer t.Stop()
	for {
		st, err := w.RunOnce(ctx, bound)
		if err != nil && ctx.Err() == nil {
			w.Logger.ErrorContext(ctx, "reconcile pass failed", "error", err.Error())
		} else if st.Redriven+st.Failed+st.Erasures > 0 {
			w.Logger.InfoContext(ctx, "reconciled", "redriven", st.Redriven, "failed", st.Failed, "erasures", st.Erasures)
		}
		bound = olderThan
		select {
		case <-ctx.Done():
			return nil
		case <-t.C:
		}
	}
}
