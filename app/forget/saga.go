// Package forget carries out erasure: of a whole user, as a resumable saga
// (tombstone → inventory → crypto-shred → delete everywhere → verify →
// receipt), and of one conversation. It is the application's use case, like
// ingest: the edge starts erasures, the lifecycle worker and the operator
// CLI run them, and both go through here, so there is one set of rules.
package forget

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"time"

	"github.com/cloudevents/sdk-go/v2/event"

	"github.com/lethe-dev/lethe/app/audit"
	"github.com/lethe-dev/lethe/app/records"
	"github.com/lethe-dev/lethe/events"
	"github.com/lethe-dev/lethe/infra/blobs"
	"github.com/lethe-dev/lethe/infra/docs"
	"github.com/lethe-dev/lethe/infra/vectors"
)

// Erasure states, as GET /v1/me/erasure/{id} reports them.
const (
	StatePending = "pending"
	StateRunning = "running"
	StateDone    = "done"
	StateFailed  = "failed"
)

// Steps of the saga, in order; an erasure records the last one completed.
const (
	StepTombstone = "tombstone"
	StepInventory = "inventory"
	StepShred     = "shred"
	StepDelete    = "delete"
	StepVerify    = "verify"
	StepReceipt   = "receipt"
)

var steps = []string{StepTombstone, StepInventory, StepShred, StepDelete, StepVerify, StepReceipt}

// Stores named in receipts.
const (
	StoreDocuments = "documents"
	StoreBlobs     = "blobs"
	StoreVectors   = "vectors"
	StoreKeys      = "keys"
	StoreRateLimit = "ratelimit"
	// StoreTwilio is what Twilio intake keeps outside the user's
	// documents: the ownership of verified numbers and call records.
	StoreTwilio = "twilio"
)

// MaxVerifyRounds bounds delete → verify rounds: a store that still shows
// data after that many (an eventually consistent index that never
// converges, a write racing the tombstone) fails the erasure loudly.
const MaxVerifyRounds = 5

// ErrNotFound: no erasure with that id (or not the caller's).
var ErrNotFound = errors.New("forget: no such erasure")

// errIncomplete: verification found data left; the saga goes round again.
var errIncomplete = errors.New("forget: data left after delete; retrying")

// StoreCount is one store's line in a receipt.
type StoreCount struct {
	// Found is what the inventory counted before anything was deleted.
	Found int `json:"found"`
	// Deleted is what the delete step removed (Found less what is left).
	Deleted int `json:"deleted"`
	// Remaining is what the verifier found afterwards, listing the store
	// again: 0 when the erasure is done.
	Remaining int `json:"remaining"`
}

// Receipt is the proof of one erasure: no content, no raw uid.
type Receipt struct {
	ID         string                `json:"id"`
	StartedAt  time.Time             `json:"started_at,omitzero"`
	FinishedAt time.Time             `json:"finished_at,omitzero"`
	Stores     map[string]StoreCount `json:"stores"`
}

// Erasure is the saga's durable state (global collection records.Erasures).
type Erasure struct {
	ID          string    `json:"id"`
	User        string    `json:"user"` // keyed hash of the uid
	Actor       string    `json:"actor"`
	State       string    `json:"state"`
	Step        string    `json:"step,omitempty"` // last step completed
	Rounds      int       `json:"rounds,omitempty"`
	Error       string    `json:"error,omitempty"`
	RequestedAt time.Time `json:"requested_at"`
	UpdatedAt   time.Time `json:"updated_at"`
	Receipt     Receipt   `json:"receipt"`
}

// Indexed fields of an erasure document.
const (
	fieldState = "state"
	fieldUser  = "user"
)

// ErasureKey is where erasure id lives.
func ErasureKey(id string) docs.Key { return docs.Key{Collection: records.Erasures, ID: id} }

// ErasureID is the one erasure id of a user: asking twice is one erasure.
func ErasureID(user string) string { return events.DeriveID("erasure", user) }

// Doc encodes e.
func (e Erasure) Doc() (docs.Doc, error) {
	data, err := json.Marshal(e)
	if err != nil {
		return docs.Doc{}, fmt.Errorf("json.Marshal erasure: %w", err)
	}
	return docs.Doc{Key: ErasureKey(e.ID), Data: data, Fields: map[string]any{
		fieldState: e.State, fieldUser: e.User, records.FieldUpdatedAt: e.UpdatedAt.UnixMilli(),
	}}, nil
}

func erasureFrom(d docs.Doc) (Erasure, error) {
	var e Erasure
	if err := json.Unmarshal(d.Data, &e); err != nil {
		return e, fmt.Errorf("json.Unmarshal erasure %s: %w", d.Key.ID, err)
	}
	return e, nil
}

// Shredder deletes a user's data key (keys.Keyring).
type Shredder interface {
	Shred(ctx context.Context, user string) error
}

// KeyChecker reports whether a user still has a data key.
type KeyChecker interface {
	HasKey(ctx context.Context, user string) (bool, error)
}

// RateState forgets a user's rate-limit entries and counts those left.
type RateState interface {
	Forget(ctx context.Context, keys ...string) (int, error)
	Held(ctx context.Context, keys ...string) (int, error)
}

// UserIndex is state kept for a user outside their own documents.
type UserIndex interface {
	Held(ctx context.Context, user string) (int, error)
	Forget(ctx context.Context, user string) (int, error)
}

// Saga runs user erasures.
type Saga struct {
	Docs    docs.Store
	Blobs   blobs.Bucket
	Vectors vectors.Index
	Keys    interface {
		Shredder
		KeyChecker
	}
	// Rates and RateKeys cover the user's rate-limit entries: RateKeys
	// names them for a user (the edge's keys); nil Rates skips the store.
	Rates    RateState
	RateKeys func(user string) []string
	Audit    *audit.Log
	Bus      events.Publisher
	Events   *events.Registry
	Logger   *slog.Logger
	Now      func() time.Time
	// Progress, when set, hears each step as it completes (the CLI).
	Progress func(e Erasure, step string)

	// Twilio covers the user's number ownerships and call records (global
	// documents keyed by number hash and call SID); nil skips it.
	Twilio UserIndex
	// Journal records each requested erasure outside what backups
	// restore (see Journal); nil only in tests of the saga alone.
	Journal *Journal
}

// Request starts the erasure of user: it writes the tombstone at once (so
// from here on every request with the user's token answers 410 and every
// late event is dropped), records the erasure as pending and announces it
// on the lifecycle topic. Asking again returns the same erasure. A failed
// announcement is not an error: the reconciler re-drives pending erasures.
func (s *Saga) Request(ctx context.Context, user, actor string) (Erasure, error) {
	if !docs.ValidSegment(user) {
		return Erasure{}, fmt.Errorf("%w: user", docs.ErrInvalid)
	}
	now := s.now()
	e := Erasure{ID: ErasureID(user), User: user, Actor: actor, State: StatePending, RequestedAt: now, UpdatedAt: now}
	e.Receipt = Receipt{ID: e.ID, Stores: map[string]StoreCount{}}
	// The journal first: an erasure the user was told about must survive
	// a restore of a backup taken before it. If this fails nothing has
	// happened yet and the user can ask again (after the tombstone their
	// token would answer 410).
	if s.Journal != nil {
		if err := s.Journal.Append(ctx, JournalEntry{User: user, Erasure: e.ID, RequestedAt: now}); err != nil {
			return Erasure{}, err
		}
	}
	if err := s.tombstone(ctx, user, now); err != nil {
		return Erasure{}, err
	}
	d, err := e.Doc()
	if err != nil {
		return Erasure{}, err
	}
	switch err := s.Docs.Create(ctx, d); {
	case errors.Is(err, docs.ErrAlreadyExists):
		return s.Status(ctx, e.ID)
	case err != nil:
		return Erasure{}, fmt.Errorf("docs.Create erasure: %w", err)
	}
	s.audit(ctx, audit.Entry{Actor: actor, Action: audit.ActionErasureRequested, Subject: user, Ref: e.ID})
	if err := s.Announce(ctx, e); err != nil && s.Logger != nil {
		s.Logger.WarnContext(ctx, "erasure recorded but not announced; the reconciler will re-drive it", "erasure", e.ID, "error", err.Error())
	}
	return e, nil
}

// Announce publishes the erasure's event (the reconciler calls it again
// for erasures left pending or running).
func (s *Saga) Announce(ctx context.Context, e Erasure) error {
	ev, err := s.Events.NewWithID(events.DeriveID(e.ID, "announce", e.UpdatedAt.String()), events.TypeUserErasureRequested,
		events.Subject(e.User, "erasures", e.ID),
		events.UserErasureRequested{User: e.User, RequestID: e.ID, RequestedAt: e.RequestedAt})
	if err != nil {
		return fmt.Errorf("events.New erasure: %w", err)
	}
	if err := s.Bus.Publish(ctx, events.TopicLifecycle, ev); err != nil {
		return fmt.Errorf("bus.Publish erasure: %w", err)
	}
	return nil
}

// Status reads an erasure.
func (s *Saga) Status(ctx context.Context, id string) (Erasure, error) {
	if !docs.ValidSegment(id) {
		return Erasure{}, ErrNotFound
	}
	d, err := s.Docs.Get(ctx, ErasureKey(id))
	if errors.Is(err, docs.ErrNotFound) {
		return Erasure{}, ErrNotFound
	}
	if err != nil {
		return Erasure{}, fmt.Errorf("docs.Get erasure: %w", err)
	}
	return erasureFrom(d)
}

// Unfinished lists erasures still pending or running whose last update is
// older than before (the reconciler's query).
func (s *Saga) Unfinished(ctx context.Context, before time.Time, limit int) ([]Erasure, error) {
	var out []Erasure
	for _, st := range []string{StatePending, StateRunning} {
		found, err := s.Docs.Query(ctx, docs.Query{Collection: records.Erasures,
			Filters: []docs.Filter{{Field: fieldState, Op: docs.Eq, Value: st}, {Field: records.FieldUpdatedAt, Op: docs.Lte, Value: before.UnixMilli()}},
			OrderBy: records.FieldUpdatedAt, Limit: limit})
		if err != nil {
			return nil, fmt.Errorf("docs.Query erasures: %w", err)
		}
		for _, d := range found {
			e, err := erasureFrom(d)
			if err != nil {
				return nil, err
			}
			out = append(out, e)
		}
	}
	return out, nil
}

// Handle is the lifecycle worker's handler of user.erasure.requested.
func (s *Saga) Handle(ctx context.Context, ev event.Event) error {
	var in events.UserErasureRequested
	if err := s.Events.Decode(ev, &in); err != nil {
		return err
	}
	e, err := s.Status(ctx, in.RequestID)
	if errors.Is(err, ErrNotFound) {
		// Forged or stray: an erasure always exists before its event.
		return events.Permanentf("forget: no erasure %s recorded", in.RequestID)
	}
	if err != nil {
		return err
	}
	if e.User != in.User {
		return events.Permanentf("forget: event names another user than erasure %s", in.RequestID)
	}
	_, err = s.Run(ctx, in.RequestID)
	return err
}

// Run carries the erasure from its last completed step to the end. Every
// step is idempotent, so a crash anywhere is resumed by running again. It
// returns errIncomplete (retryable) while verification still finds data.
func (s *Saga) Run(ctx context.Context, id string) (Erasure, error) {
	e, err := s.Status(ctx, id)
	if err != nil {
		return e, err
	}
	if e.State == StateDone || e.State == StateFailed {
		return e, nil
	}
	if e.State == StatePending {
		e.State = StateRunning
		e.Receipt.StartedAt = s.now()
		if e, err = s.save(ctx, e); err != nil {
			return e, err
		}
	}
	for i := stepIndex(e.Step) + 1; i < len(steps); i++ {
		step := steps[i]
		counts, err := s.runStep(ctx, &e, step)
		if errors.Is(err, errIncomplete) {
			e.Rounds++
			e.Step = StepShred // go round: delete, then verify again
			if e.Rounds >= MaxVerifyRounds {
				e.State, e.Error = StateFailed, fmt.Sprintf("data left after %d delete rounds", e.Rounds)
				e.Receipt.FinishedAt = s.now()
			}
			var serr error
			if e, serr = s.save(ctx, e); serr != nil {
				return e, serr
			}
			s.audit(ctx, audit.Entry{Actor: audit.ActorSystem, Action: audit.ActionErasureStep, Subject: e.User, Ref: e.ID + "/" + step + "/incomplete", Counts: remaining(e)})
			if e.State == StateFailed {
				return e, nil
			}
			return e, err
		}
		if err != nil {
			return e, fmt.Errorf("erasure step %s: %w", step, err)
		}
		e.Step = step
		if step == StepReceipt {
			e.State = StateDone
		}
		if e, err = s.save(ctx, e); err != nil {
			return e, err
		}
		s.audit(ctx, audit.Entry{Actor: audit.ActorSystem, Action: audit.ActionErasureStep, Subject: e.User, Ref: e.ID + "/" + step, Counts: counts})
		if s.Progress != nil {
			s.Progress(e, step)
		}
	}
	s.audit(ctx, audit.Entry{Actor: audit.ActorSystem, Action: audit.ActionErasureDone, Subject: e.User, Ref: e.ID, Counts: remaining(e)})
	return e, nil
}

func stepIndex(step string) int {
	for i, s := range steps {
		if s == step {
			return i
		}
	}
	return -1
}

func remaining(e Erasure) map[string]int {
	out := map[string]int{}
	for store, c := range e.Receipt.Stores {
		out[store+".remaining"] = c.Remaining
	}
	return out
}

// runStep does one step and returns its counts for the audit entry.
func (s *Saga) runStep(ctx context.Context, e *Erasure, step string) (map[string]int, error) {
	user := e.User
	switch step {
	case StepTombstone:
		return nil, s.tombstone(ctx, user, e.RequestedAt)
	case StepInventory:
		inv, err := s.inventory(ctx, user)
		if err != nil {
			return nil, err
		}
		out := map[string]int{}
		for store, n := range inv {
			e.Receipt.Stores[store] = StoreCount{Found: n}
			out[store+".found"] = n
		}
		return out, nil
	case StepShred:
		if err := s.Keys.Shred(ctx, user); err != nil {
			return nil, fmt.Errorf("keys.Shred: %w", err)
		}
		return nil, nil
	case StepDelete:
		return s.deleteAll(ctx, user)
	case StepVerify:
		left, err := s.inventory(ctx, user)
		if err != nil {
			return nil, err
		}
		out := map[string]int{}
		incomplete := false
		for store, n := range left {
			c := e.Receipt.Stores[store]
			c.Remaining = n
			c.Deleted = max(0, c.Found-n)
			e.Receipt.Stores[store] = c
			out[store+".remaining"] = n
			incomplete = incomplete || n > 0
		}
		if incomplete {
			return out, errIncomplete
		}
		return out, nil
	case StepReceipt:
		e.Receipt.FinishedAt = s.now()
		e.Error = ""
		return remaining(*e), nil
	}
	return nil, fmt.Errorf("forget: unknown step %q", step)
}

func (s *Saga) tombstone(ctx context.Context, user string, at time.Time) error {
	data, err := json.Marshal(map[string]any{"at": at.UTC()})
	if err != nil {
		return err
	}
	err = s.Docs.Create(ctx, docs.Doc{Key: records.TombstoneKey(user), Data: data})
	if err != nil && !errors.Is(err, docs.ErrAlreadyExists) {
		return fmt.Errorf("docs.Create tombstone: %w", err)
	}
	return nil
}

// BlobPrefixes are where a user's objects live: sealed audio and export
// archives under users/, signed uploads still in flight under uploads/.
func BlobPrefixes(user string) []string {
	return []string{"users/" + user + "/", "uploads/" + user + "/"}
}

// inventory counts what the user has in every store; the verifier runs it
// again after the delete and expects zero everywhere.
func (s *Saga) inventory(ctx context.Context, user string) (map[string]int, error) {
	out := map[string]int{}
	n, err := s.Docs.CountUser(ctx, user)
	if err != nil {
		return nil, fmt.Errorf("docs.CountUser: %w", err)
	}
	claims, err := records.StreamClaimsOf(ctx, s.Docs, user)
	if err != nil {
		return nil, err
	}
	out[StoreDocuments] = n + len(claims)
	nb := 0
	for _, p := range BlobPrefixes(user) {
		objs, err := s.Blobs.List(ctx, p)
		if err != nil {
			return nil, fmt.Errorf("blobs.List: %w", err)
		}
		nb += len(objs)
	}
	out[StoreBlobs] = nb
	if out[StoreVectors], err = s.Vectors.Count(ctx, user); err != nil {
		return nil, fmt.Errorf("vectors.Count: %w", err)
	}
	has, err := s.Keys.HasKey(ctx, user)
	if err != nil {
		return nil, fmt.Errorf("keys.HasKey: %w", err)
	}
	out[StoreKeys] = 0
	if has {
		out[StoreKeys] = 1
	}
	if s.Rates != nil && s.RateKeys != nil {
		if out[StoreRateLimit], err = s.Rates.Held(ctx, s.RateKeys(user)...); err != nil {
			return nil, fmt.Errorf("ratelimit.Held: %w", err)
		}
	}
	if s.Twilio != nil {
		if out[StoreTwilio], err = s.Twilio.Held(ctx, user); err != nil {
			return nil, fmt.Errorf("twilio index Held: %w", err)
		}
	}
	return out, nil
}

// deleteAll removes the user from every store. The documents go last: the
// tombstone (global) stays, and so does the erasure record.
func (s *Saga) deleteAll(ctx context.Context, user string) (map[string]int, error) {
	out := map[string]int{}
	for _, p := range BlobPrefixes(user) {
		n, err := s.Blobs.DeletePrefix(ctx, p)
		out[StoreBlobs+".deleted"] += n
		if err != nil {
			return out, fmt.Errorf("blobs.DeletePrefix: %w", err)
		}
	}
	if err := s.Vectors.DeleteNamespace(ctx, user); err != nil {
		return out, fmt.Errorf("vectors.DeleteNamespace: %w", err)
	}
	if s.Rates != nil && s.RateKeys != nil {
		n, err := s.Rates.Forget(ctx, s.RateKeys(user)...)
		out[StoreRateLimit+".deleted"] = n
		if err != nil {
			return out, fmt.Errorf("ratelimit.Forget: %w", err)
		}
	}
	// Stream claims are global (keyed by a hash of the conversation id)
	// but name the user as owner.
	claims, err := records.StreamClaimsOf(ctx, s.Docs, user)
	if err != nil {
		return out, err
	}
	nc, err := s.Docs.DeleteMany(ctx, claims)
	if err != nil {
		return out, fmt.Errorf("docs.DeleteMany stream claims: %w", err)
	}
	if s.Twilio != nil {
		n, err := s.Twilio.Forget(ctx, user)
		out[StoreTwilio+".deleted"] = n
		if err != nil {
			return out, fmt.Errorf("twilio index Forget: %w", err)
		}
	}
	n, err := s.Docs.DeleteUser(ctx, user)
	out[StoreDocuments+".deleted"] = n + nc
	if err != nil {
		return out, fmt.Errorf("docs.DeleteUser: %w", err)
	}
	return out, nil
}

func (s *Saga) save(ctx context.Context, e Erasure) (Erasure, error) {
	e.UpdatedAt = s.now()
	d, err := e.Doc()
	if err != nil {
		return e, err
	}
	if err := s.Docs.Put(ctx, d); err != nil {
		return e, fmt.Errorf("docs.Put erasure: %w", err)
	}
	return e, nil
}

// audit appends an entry; the trail must not stop an erasure, so a failure
// is logged (the erasure record itself holds the receipt).
func (s *Saga) audit(ctx context.Context, en audit.Entry) {
	if s.Audit == nil {
		return
	}
	if _, err := s.Audit.Append(ctx, en); err != nil && s.Logger != nil {
		s.Logger.ErrorContext(ctx, "audit append failed", "action", en.Action, "error", err.Error())
	}
}

func (s *Saga) now() time.Time {
	if s.Now == nil {
		return time.Now().UTC()
	}
	return s.Now().UTC()
}
