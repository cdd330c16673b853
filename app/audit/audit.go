// Package audit is the append-only trail of lifecycle actions (erasure
// steps, retention sweeps, exports, deletes, admin calls), kept in the
// documents store so a regulator can be shown who did what and when.
// Entries hold keyed actors and subjects, actions, times and counts:
// never content, never a raw uid.
package audit

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"regexp"
	"time"

	"github.com/lethe-dev/lethe/events"
	"github.com/lethe-dev/lethe/infra/docs"
)

// Collection is the global collection of entries. It is not under a user,
// so an erasure (which deletes everything under the user) keeps the proof
// that it happened.
const Collection = "audit"

// Indexed fields.
const (
	fieldOrder   = "order"   // the entry id: time-ordered, unique
	fieldSubject = "subject" // the user the action was about ("" for none)
	fieldAction  = "action"
)

// Actions.
const (
	ActionErasureRequested    = "erasure.requested"
	ActionErasureStep         = "erasure.step"
	ActionErasureDone         = "erasure.done"
	ActionRetentionSweep      = "retention.sweep"
	ActionRetentionSet        = "retention.set"
	ActionExportRequested     = "export.requested"
	ActionExportReady         = "export.ready"
	ActionExportDownloaded    = "export.downloaded"
	ActionConversationDeleted = "conversation.deleted"
	ActionNoteDeleted         = "note.deleted"
	ActionAdminCall           = "admin.call"
	ActionSessionsRevoked     = "sessions.revoked"
)

// Actors other than users (users act as "user:<keyed hash>").
const (
	ActorSystem    = "system"
	ActorScheduler = "system:scheduler"
	ActorOperator  = "operator:cli"
)

// UserActor names a user acting on their own data; AdminActor an admin.
// Both take the keyed hash of the uid, never the uid.
func UserActor(user string) string  { return "user:" + user }
func AdminActor(user string) string { return "admin:" + user }

// Entry is one audit record.
type Entry struct {
	ID      string    `json:"id"`
	At      time.Time `json:"at"`
	Actor   string    `json:"actor"`
	Action  string    `json:"action"`
	Subject string    `json:"subject,omitempty"`
	// Ref names what the action was about without content: a request id,
	// a step, a route pattern.
	Ref    string         `json:"ref,omitempty"`
	Counts map[string]int `json:"counts,omitempty"`
}

var (
	refRE   = regexp.MustCompile(`^[A-Za-z0-9_.:/{}#-]{0,200}$`)
	tokenRE = regexp.MustCompile(`^[A-Za-z0-9_.:-]{1,200}$`)
)

// ErrInvalid: an entry or cursor the trail refuses.
var ErrInvalid = errors.New("audit: invalid")

// Log appends and lists entries.
type Log struct {
	Docs docs.Store
	Now  func() time.Time
}

// Append writes e with a fresh time-ordered id (and At, when zero). It
// refuses free text: actor, action, subject and ref are plain tokens.
func (l *Log) Append(ctx context.Context, e Entry) (Entry, error) {
	if !tokenRE.MatchString(e.Actor) || !tokenRE.MatchString(e.Action) ||
		(e.Subject != "" && !tokenRE.MatchString(e.Subject)) || !refRE.MatchString(e.Ref) {
		return e, fmt.Errorf("%w: entry fields must be plain tokens", ErrInvalid)
	}
	if e.At.IsZero() {
		e.At = l.now()
	}
	e.At = e.At.UTC()
	// Nanoseconds then randomness: ids sort by time and never collide.
	e.ID = fmt.Sprintf("%019d-%s", e.At.UnixNano(), events.NewID()[:8])
	data, err := json.Marshal(e)
	if err != nil {
		return e, fmt.Errorf("json.Marshal audit entry: %w", err)
	}
	err = l.Docs.Create(ctx, docs.Doc{
		Key:    docs.Key{Collection: Collection, ID: e.ID},
		Data:   data,
		Fields: map[string]any{fieldOrder: e.ID, fieldSubject: e.Subject, fieldAction: e.Action},
	})
	if err != nil {
		return e, fmt.Errorf("docs.Create audit: %w", err)
	}
	return e, nil
}

// Filter selects entries; the zero value lists everything, oldest first.
type Filter struct {
	// Subject, when set, keeps the entries about that user.
	Subject string
	// After is a cursor: the ID of the last entry already seen.
	After string
	// Limit bounds the page (default 100, at most 1000).
	Limit int
}

// MaxPage is the largest page List returns.
const MaxPage = 1000

// List returns one page of entries oldest first, and the cursor of the
// next page ("" at the end).
func (l *Log) List(ctx context.Context, f Filter) ([]Entry, string, error) {
	if f.Limit <= 0 {
		f.Limit = 100
	}
	if f.Limit > MaxPage {
		f.Limit = MaxPage
	}
	if f.After != "" && !tokenRE.MatchString(f.After) {
		return nil, "", fmt.Errorf("%w: cursor", ErrInvalid)
	}
	q := docs.Query{Collection: Collection, OrderBy: fieldOrder, Limit: f.Limit + 1}
	if f.Subject != "" {
		q.Filters = append(q.Filters, docs.Filter{Field: fieldSubject, Op: docs.Eq, Value: f.Subject})
	}
	if f.After != "" {
		q.Filters = append(q.Filters, docs.Filter{Field: fieldOrder, Op: docs.Gt, Value: f.After})
	}
	found, err := l.Docs.Query(ctx, q)
	if err != nil {
		return nil, "", fmt.Errorf("docs.Query audit: %w", err)
	}
	next := ""
	if len(found) > f.Limit {
		found = found[:f.Limit]
		next = found[len(found)-1].Key.ID
	}
	out := make([]Entry, 0, len(found))
	for _, d := range found {
		var e Entry
		if err := json.Unmarshal(d.Data, &e); err != nil {
			return nil, "", fmt.Errorf("json.Unmarshal audit %s: %w", d.Key.ID, err)
		}
		out = append(out, e)
	}
	return out, next, nil
}

func (l *Log) now() time.Time {
	if l.Now == nil {
		return time.Now()
	}
	return l.Now()
}
