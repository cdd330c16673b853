package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"slices"
	"strings"
	"time"

	"github.com/cloudevents/sdk-go/v2/event"

	"github.com/lethe-dev/lethe/events"
	"github.com/lethe-dev/lethe/functions"
	"github.com/lethe-dev/lethe/infra/bus"
	"github.com/lethe-dev/lethe/workers/upload"
)

// deadLetterAdmin is functions.DeadLetters on the bus: what `lethe dlq`
// and the admin routes /v1/admin/dlq/{topic} both use.
type deadLetterAdmin struct {
	bus      *bus.Bus
	validate func(event.Event) error
	decoders map[string]bus.Decoder // by topic; absent means bus.FromMessage
}

// newDeadLetterAdmin re-validates replays with the events registry, and the
// uploads topic's Cloud Storage notifications with the upload decoder.
func newDeadLetterAdmin(a *app, now func() time.Time) *deadLetterAdmin {
	d := &deadLetterAdmin{bus: a.bus, validate: a.events.Validate, decoders: map[string]bus.Decoder{}}
	if a.gcs != nil {
		d.decoders[events.TopicUploads] = upload.Decoder(a.events, a.gcs.Name(), now)
	}
	return d
}

func (d *deadLetterAdmin) List(ctx context.Context, topic string, max int) ([]functions.DeadLetter, error) {
	dls, err := d.bus.ListDeadLetters(ctx, topic, max)
	if err != nil {
		return nil, err
	}
	out := make([]functions.DeadLetter, len(dls))
	for i, dl := range dls {
		out[i] = functions.DeadLetter(dl)
	}
	return out, nil
}

func (d *deadLetterAdmin) Replay(ctx context.Context, topic string, req functions.ReplayRequest, progress func(functions.ReplayStep)) (functions.ReplayResult, error) {
	var res functions.ReplayResult
	step := func(s bus.ReplayStep) {
		fs := functions.ReplayStep{DeadLetter: functions.DeadLetter(s.DeadLetter), Replayed: s.Err == nil}
		if s.Err != nil {
			fs.Error = s.Err.Error()
		}
		res.Steps = append(res.Steps, fs)
		if progress != nil {
			progress(fs)
		}
	}
	f := bus.ReplayFilter{ID: req.ID, All: req.All, Decode: d.decoders[topic]}
	var err error
	res.Replayed, res.Skipped, err = d.bus.ReplayDeadLetters(ctx, topic, f, d.validate, step)
	if errors.Is(err, bus.ErrDeadLetterNotFound) {
		err = fmt.Errorf("%w: %w", functions.ErrDeadLetterNotFound, err)
	}
	return res, err
}

// cmdDLQ: `lethe dlq list TOPIC [-n N]` prints a topic's dead letters as
// JSON lines (never their data); `lethe dlq replay TOPIC --id ID|--all`
// re-validates and republishes them, a line per dead letter.
func cmdDLQ(ctx context.Context, cfg Config, logger *slog.Logger, args []string, stdout, stderr io.Writer) error {
	run, err := parseDLQ(args, stderr)
	if err != nil {
		return err
	}
	if err := needSharedBus(cfg, "dlq"); err != nil {
		return err
	}
	a, err := openApp(ctx, cfg, logger, overrides{})
	if err != nil {
		return err
	}
	defer a.close()
	return run(ctx, newDeadLetterAdmin(a, time.Now), stdout)
}

const dlqUsage = "want: dlq list TOPIC [-n N] | dlq replay TOPIC --id ID|--all (TOPIC: "

// parseDLQ checks the arguments before anything is opened and returns the
// command to run.
func parseDLQ(args []string, stderr io.Writer) (func(context.Context, functions.DeadLetters, io.Writer) error, error) {
	usage := usageError{errors.New(dlqUsage + strings.Join(events.AllTopics(), ", ") + ")")}
	if len(args) < 2 || (args[0] != "list" && args[0] != "replay") {
		return nil, usage
	}
	topic := args[1]
	if !slices.Contains(events.AllTopics(), topic) {
		return nil, usageError{fmt.Errorf("unknown topic %q; %w", topic, usage.error)}
	}
	fs := newFlagSet("dlq "+args[0], stderr)
	switch args[0] {
	case "list":
		n := fs.Int("n", bus.DefaultDeadLetterList, "how many dead letters to print at most")
		if err := fs.Parse(args[2:]); err != nil || fs.NArg() != 0 || *n < 1 || *n > 10_000 {
			return nil, usage
		}
		return func(ctx context.Context, d functions.DeadLetters, stdout io.Writer) error {
			return dlqList(ctx, d, topic, *n, stdout)
		}, nil
	default:
		id := fs.String("id", "", "replay the dead letter with this id (from dlq list)")
		all := fs.Bool("all", false, "replay every dead letter of the topic")
		if err := fs.Parse(args[2:]); err != nil || fs.NArg() != 0 || *all == (*id != "") {
			return nil, usage
		}
		return func(ctx context.Context, d functions.DeadLetters, stdout io.Writer) error {
			return dlqReplay(ctx, d, topic, functions.ReplayRequest{ID: *id, All: *all}, stdout)
		}, nil
	}
}

func dlqList(ctx context.Context, d functions.DeadLetters, topic string, n int, stdout io.Writer) error {
	dls, err := d.List(ctx, topic, n)
	if err != nil {
		return fmt.Errorf("dlq list %s: %w", topic, err)
	}
	enc := json.NewEncoder(stdout)
	for _, dl := range dls {
		if err := enc.Encode(dl); err != nil {
			return err
		}
	}
	return nil
}

func dlqReplay(ctx context.Context, d functions.DeadLetters, topic string, req functions.ReplayRequest, stdout io.Writer) error {
	progress := func(s functions.ReplayStep) {
		if s.Replayed {
			fmt.Fprintf(stdout, "replayed %s %s %s\n", s.ID, s.EventType, s.EventID)
			return
		}
		fmt.Fprintf(stdout, "skipped  %s %s %s: %s\n", s.ID, s.EventType, s.EventID, s.Error)
	}
	res, err := d.Replay(ctx, topic, req, progress)
	if err != nil {
		return fmt.Errorf("dlq replay %s: %w", topic, err)
	}
	fmt.Fprintf(stdout, "%d replayed to %s, %d left in its dead letters (they still fail validation)\n", res.Replayed, topic, res.Skipped)
	return nil
}
