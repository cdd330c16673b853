package phones

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	"github.com/lethe-dev/lethe/infra/docs"
)

// Call is the record of one Twilio call from a verified number, written
// by the voice webhook: the recording callback carries no caller, so the
// call's SID is how a recording finds its user. It holds no number.
type Call struct {
	SID       string    `json:"sid"`
	Owner     string    `json:"owner"` // keyed hash of the uid
	Status    string    `json:"status"`
	DurationS int       `json:"duration_s,omitempty"`
	StartedAt time.Time `json:"started_at"`
	UpdatedAt time.Time `json:"updated_at"`
}

// CallKey is the document key of a call.
func CallKey(sid string) docs.Key { return docs.Key{Collection: CallsCollection, ID: sid} }

func (c Call) doc() (docs.Doc, error) {
	data, err := json.Marshal(c)
	if err != nil {
		return docs.Doc{}, fmt.Errorf("json.Marshal call: %w", err)
	}
	return docs.Doc{Key: CallKey(c.SID), Data: data, Fields: map[string]any{fieldOwner: c.Owner}}, nil
}

// Calls reads and writes call records.
type Calls struct {
	Docs docs.Store
	Now  func() time.Time
}

func (c *Calls) now() time.Time {
	if c.Now == nil {
		return time.Now().UTC()
	}
	return c.Now().UTC()
}

// ErrOtherOwner: the call is recorded for another user.
var ErrOtherOwner = errors.New("phones: call belongs to another user")

// Start records call sid as owner's (idempotent for the same owner).
func (c *Calls) Start(ctx context.Context, sid, owner, status string) error {
	now := c.now()
	return c.Docs.Update(ctx, CallKey(sid), func(cur *docs.Doc) (*docs.Doc, error) {
		if cur != nil {
			var old Call
			if err := json.Unmarshal(cur.Data, &old); err != nil {
				return nil, fmt.Errorf("json.Unmarshal call: %w", err)
			}
			if old.Owner != owner {
				return nil, ErrOtherOwner
			}
			return cur, nil
		}
		d, err := Call{SID: sid, Owner: owner, Status: status, StartedAt: now, UpdatedAt: now}.doc()
		return &d, err
	})
}

// Get returns call sid; ok is false when no record exists.
func (c *Calls) Get(ctx context.Context, sid string) (Call, bool, error) {
	d, err := c.Docs.Get(ctx, CallKey(sid))
	if errors.Is(err, docs.ErrNotFound) {
		return Call{}, false, nil
	}
	if err != nil {
		return Call{}, false, fmt.Errorf("docs.Get call: %w", err)
	}
	var out Call
	if err := json.Unmarshal(d.Data, &out); err != nil {
		return Call{}, false, fmt.Errorf("json.Unmarshal call: %w", err)
	}
	return out, true, nil
}

// ListByOwner returns the calls recorded for owner.
func (c *Calls) ListByOwner(ctx context.Context, owner string) ([]Call, error) {
	ds, err := c.Docs.Query(ctx, docs.Query{Collection: CallsCollection, Filters: []docs.Filter{{Field: fieldOwner, Op: docs.Eq, Value: owner}}})
	if err != nil {
		return nil, fmt.Errorf("docs.Query calls: %w", err)
	}
	out := make([]Call, 0, len(ds))
	for _, d := range ds {
		var call Call
		if err := json.Unmarshal(d.Data, &call); err != nil {
			return nil, fmt.Errorf("json.Unmarshal call: %w", err)
		}
		out = append(out, call)
	}
	return out, nil
}

// finalStatus: after one of these a call's status no longer changes.
func finalStatus(s string) bool {
	switch s {
	case "completed", "busy", "failed", "no-answer", "canceled":
		return true
	}
	return false
}

// SetStatus records a status callback. Callbacks can arrive out of order
// and be replayed: a final status is never replaced. ok is false when the
// call has no record (not from a verified number).
func (c *Calls) SetStatus(ctx context.Context, sid, owner, status string, durationS int) (bool, error) {
	found := false
	err := c.Docs.Update(ctx, CallKey(sid), func(cur *docs.Doc) (*docs.Doc, error) {
		found = false
		if cur == nil {
			return nil, nil
		}
		var call Call
		if err := json.Unmarshal(cur.Data, &call); err != nil {
			return nil, fmt.Errorf("json.Unmarshal call: %w", err)
		}
		if call.Owner != owner {
			return nil, ErrOtherOwner
		}
		found = true
		if finalStatus(call.Status) || call.Status == status {
			return cur, nil
		}
		call.Status, call.UpdatedAt = status, c.now()
		if durationS > 0 {
			call.DurationS = durationS
		}
		d, err := call.doc()
		return &d, err
	})
	return found, err
}

// Index covers what this package keeps outside the user's documents (the
// ownership of numbers and call records) for erasure and export: the
// erasure saga counts and deletes it beside the other stores.
type Index struct{ Docs docs.Store }

func (ix Index) keys(ctx context.Context, user string) ([]docs.Key, error) {
	var out []docs.Key
	for _, coll := range []string{OwnersCollection, CallsCollection} {
		ds, err := ix.Docs.Query(ctx, docs.Query{Collection: coll, Filters: []docs.Filter{{Field: fieldOwner, Op: docs.Eq, Value: user}}})
		if err != nil {
			return nil, fmt.Errorf("docs.Query %s: %w", coll, err)
		}
		for _, d := range ds {
			out = append(out, d.Key)
		}
	}
	return out, nil
}

// Held counts the user's number ownerships and call records.
func (ix Index) Held(ctx context.Context, user string) (int, error) {
	ks, err := ix.keys(ctx, user)
	return len(ks), err
}

// Forget deletes them and returns how many it deleted.
func (ix Index) Forget(ctx context.Context, user string) (int, error) {
	ks, err := ix.keys(ctx, user)
	if err != nil || len(ks) == 0 {
		return 0, err
	}
	n, err := ix.Docs.DeleteMany(ctx, ks)
	if err != nil {
		return n, fmt.Errorf("docs.DeleteMany twilio index: %w", err)
	}
	return n, nil
}
