// Package twilio is the worker of the twilio topic: a completed call
// recording is fetched from Twilio by its SID, sealed as the user's audio
// and sent down the same transcribe → embed → store path as an upload (then
// Twilio's copy is deleted); an SMS becomes a sealed text memory, embedded
// and searchable without speech-to-text; a call status updates the call's
// record. Every effect is keyed on the signed SIDs, so a replayed webhook
// has exactly one.
package twilio

import (
	"context"
	"encoding/base64"
	"errors"
	"fmt"
	"log/slog"

	"github.com/cloudevents/sdk-go/v2/event"

	"github.com/lethe-dev/lethe/app/audit"
	"github.com/lethe-dev/lethe/app/ingest"
	"github.com/lethe-dev/lethe/app/phones"
	"github.com/lethe-dev/lethe/app/records"
	"github.com/lethe-dev/lethe/events"
	"github.com/lethe-dev/lethe/infra/docs"
	"github.com/lethe-dev/lethe/infra/keys"
)

// Recording is downloaded audio.
type Recording struct {
	Audio       []byte
	ContentType string
}

// Media is Twilio's recordings API on the configured host.
type Media interface {
	// FetchRecording returns ErrNotReady (wrapped) while Twilio has not
	// finished the media.
	FetchRecording(ctx context.Context, sid string) (Recording, error)
	DeleteRecording(ctx context.Context, sid string) error
}

// ErrNotReady is what Media returns before a recording is served: the
// event is retried.
var ErrNotReady = errors.New("twilio: recording not ready")

// ErrRejected is what Media returns when Twilio refuses the request for
// good (bad credentials, no such recording after it was announced).
var ErrRejected = errors.New("twilio: request rejected")

// Owners finds the verified owner of a number by its keyed hash.
type Owners interface {
	Owner(ctx context.Context, hash string) (string, bool, error)
}

// Calls reads and updates call records.
type Calls interface {
	Get(ctx context.Context, sid string) (phones.Call, bool, error)
	SetStatus(ctx context.Context, sid, owner, status string, durationS int) (bool, error)
}

// Worker holds the ports the handler needs.
type Worker struct {
	Intake *ingest.Intake
	Docs   docs.Store
	Keys   keys.Sealer
	Media  Media
	Owners Owners
	Calls  Calls
	Audit  *audit.Log
	Events *events.Registry
	Logger *slog.Logger
	// KeepTwilioCopy leaves recordings at Twilio after they are sealed
	// here (LETHE_TWILIO_DELETE_RECORDINGS=false); by default they are
	// deleted, so the only copy is the user's sealed one.
	KeepTwilioCopy bool
}

// Handle routes by event type.
func (w *Worker) Handle(ctx context.Context, e event.Event) error {
	switch e.Type() {
	case events.TypeTwilioRecordingDone:
		return w.recording(ctx, e)
	case events.TypeTwilioSMSReceived:
		return w.sms(ctx, e)
	case events.TypeTwilioCallStatus:
		return w.callStatus(ctx, e)
	}
	return events.Permanentf("twilio: unexpected event type %q", e.Type())
}

// Conversation ids: one conversation per recording and per message,
// derived from the signed SID, so a replay lands on the same record.
func recordingConversation(sid string) string {
	return "call-" + events.DeriveID("twilio-recording", sid)[:24]
}
func smsConversation(sid string) string { return "sms-" + events.DeriveID("twilio-sms", sid)[:24] }

// drop acknowledges an event that belongs to nobody it may, with an
// audit entry naming the kind of event only.
func (w *Worker) drop(ctx context.Context, user, ref string) error {
	if w.Audit != nil {
		if _, err := w.Audit.Append(ctx, audit.Entry{Actor: audit.ActorSystem, Action: "twilio.dropped", Subject: user, Ref: ref}); err != nil {
			return fmt.Errorf("audit.Append: %w", err)
		}
	}
	return fmt.Errorf("twilio: %s: %w", ref, events.ErrDropped)
}

// erased drops the event of an erased user (nil for anyone else).
func (w *Worker) erased(ctx context.Context, user string) error {
	if user == "" {
		return nil
	}
	gone, err := records.Tombstoned(ctx, w.Docs, user)
	if err != nil {
		return err
	}
	if gone {
		return fmt.Errorf("twilio: user tombstoned: %w", events.ErrDropped)
	}
	return nil
}

func (w *Worker) recording(ctx context.Context, e event.Event) error {
	var in events.TwilioRecordingCompleted
	if err := w.Events.Decode(e, &in); err != nil {
		return err
	}
	if err := w.erased(ctx, in.User); err != nil {
		return err
	}
	// The call's record says whose recording this is; an event naming
	// another user is forged or stale.
	call, ok, err := w.Calls.Get(ctx, in.CallSID)
	if err != nil {
		return fmt.Errorf("calls.Get: %w", err)
	}
	if !ok || call.Owner != in.User {
		return w.drop(ctx, in.User, "recording/call-not-owned")
	}
	cid := recordingConversation(in.RecordingSID)
	// Already accepted (a replay, or a redelivery after the delete): the
	// audio may be gone at Twilio, so never fetch again.
	if _, err := w.Docs.Get(ctx, records.ChunkKey(in.User, cid, 0)); err == nil {
		return w.deleteCopy(ctx, in.RecordingSID)
	} else if !errors.Is(err, docs.ErrNotFound) {
		return fmt.Errorf("docs.Get chunk: %w", err)
	}
	rec, err := w.Media.FetchRecording(ctx, in.RecordingSID)
	switch {
	case errors.Is(err, ErrNotReady):
		return fmt.Errorf("twilio: recording %s: %w", in.RecordingSID, err) // retried with backoff
	case errors.Is(err, ErrRejected):
		return events.Permanent(fmt.Errorf("twilio: fetch recording: %w", err))
	case err != nil:
		return fmt.Errorf("twilio: fetch recording: %w", err)
	}
	_, err = w.Intake.Accept(ctx, ingest.Chunk{User: in.User, ConversationID: cid, Seq: 0,
		ContentType: rec.ContentType, Audio: rec.Audio, Origin: ingest.OriginTwilio})
	switch {
	case errors.Is(err, ingest.ErrTombstoned):
		return fmt.Errorf("twilio: user tombstoned: %w", events.ErrDropped)
	case ingest.CallerFault(err):
		return events.Permanent(fmt.Errorf("twilio: recording %s: %w", in.RecordingSID, err))
	case err != nil:
		return fmt.Errorf("ingest.Accept: %w", err)
	}
	return w.deleteCopy(ctx, in.RecordingSID)
}

func (w *Worker) deleteCopy(ctx context.Context, sid string) error {
	if w.KeepTwilioCopy {
		return nil
	}
	if err := w.Media.DeleteRecording(ctx, sid); err != nil {
		// The sealed copy is durable; retrying only repeats the delete.
		return fmt.Errorf("twilio: delete recording: %w", err)
	}
	return nil
}

func (w *Worker) sms(ctx context.Context, e event.Event) error {
	var in events.TwilioSMSReceived
	if err := w.Events.Decode(e, &in); err != nil {
		return err
	}
	if err := w.erased(ctx, in.User); err != nil {
		return err
	}
	// The number may have been removed or taken over since the webhook.
	owner, ok, err := w.Owners.Owner(ctx, in.FromHash)
	if err != nil {
		return fmt.Errorf("phones.Owner: %w", err)
	}
	if !ok || owner != in.User {
		return w.drop(ctx, in.User, "sms/number-not-owned")
	}
	sealed, err := base64.StdEncoding.DecodeString(in.SealedBody)
	if err != nil {
		return events.Permanentf("twilio: sealed_body: %v", err)
	}
	body, err := w.Keys.Open(ctx, in.User, sealed, keys.AD(in.User, "events/"+events.TypeTwilioSMSReceived, e.ID(), "sealed_body"))
	if err != nil {
		return records.KeyFailure("keys.Open sms", err)
	}
	_, err = w.Intake.AcceptText(ctx, ingest.Text{User: in.User, ConversationID: smsConversation(in.MessageSID),
		Text: body, Origin: ingest.OriginTwilio, Model: "twilio-sms"})
	switch {
	case errors.Is(err, keys.ErrTombstoned):
		return fmt.Errorf("twilio: user tombstoned: %w", events.ErrDropped)
	case errors.Is(err, ingest.ErrInvalidText), errors.Is(err, ingest.ErrConflict), errors.Is(err, ingest.ErrInvalid):
		return events.Permanent(fmt.Errorf("twilio: sms %s: %w", in.MessageSID, err))
	case err != nil:
		return fmt.Errorf("ingest.AcceptText: %w", err)
	}
	return nil
}

func (w *Worker) callStatus(ctx context.Context, e event.Event) error {
	var in events.TwilioCallStatus
	if err := w.Events.Decode(e, &in); err != nil {
		return err
	}
	if in.User == "" {
		return w.drop(ctx, "", "status/unattributed-call")
	}
	if err := w.erased(ctx, in.User); err != nil {
		return err
	}
	found, err := w.Calls.SetStatus(ctx, in.CallSID, in.User, in.CallStatus, in.DurationS)
	if errors.Is(err, phones.ErrOtherOwner) {
		return w.drop(ctx, in.User, "status/call-not-owned")
	}
	if err != nil {
		return fmt.Errorf("calls.SetStatus: %w", err)
	}
	if !found {
		return w.drop(ctx, in.User, "status/unknown-call")
	}
	return nil
}
