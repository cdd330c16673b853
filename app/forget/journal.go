package forget

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"strings"
	"time"

	"github.com/lethe-dev/lethe/infra/blobs"
)

// Journal is the erasure journal: one create-only object per erased user,
// kept in a bucket OUTSIDE what backups hold and restores bring back (a
// directory beside the data dir, or a Cloud Storage bucket of its own with
// a retention policy). A restore, or a Firestore point-in-time recovery,
// brings back the wrapped keysets of users erased since; replaying the
// journal erases them again before the restored install serves.
//
// An entry holds the user's keyed pseudonym and the erasure id, never a
// raw uid or any content. Nothing here deletes or overwrites an entry.
type Journal struct {
	Bucket blobs.Bucket
	// Prefix is prepended to every key ("" or ending in "/").
	Prefix string
}

// JournalEntry is one erasure as the journal keeps it.
type JournalEntry struct {
	User        string    `json:"user"` // keyed pseudonym
	Erasure     string    `json:"erasure"`
	RequestedAt time.Time `json:"requested_at"`
}

// maxJournalEntry bounds what Entries reads of one object.
const maxJournalEntry = 4 << 10

const journalDir = "erasures/"

func (j *Journal) key(user string) string { return j.Prefix + journalDir + user + ".json" }

// Append records that user's erasure was requested. Recording the same
// user again is not an error: the first entry stands.
func (j *Journal) Append(ctx context.Context, e JournalEntry) error {
	if !blobs.ValidSegment(e.User) {
		return fmt.Errorf("forget.Journal: invalid user")
	}
	data, err := json.Marshal(e)
	if err != nil {
		return fmt.Errorf("json.Marshal journal entry: %w", err)
	}
	_, err = j.Bucket.Write(ctx, j.key(e.User), bytes.NewReader(data), blobs.WriteOptions{ContentType: "application/json", CreateOnly: true})
	if err != nil && !errors.Is(err, blobs.ErrPrecondition) {
		return fmt.Errorf("blobs.Write erasure journal: %w", err)
	}
	return nil
}

// Entries lists every journaled erasure, oldest key first.
func (j *Journal) Entries(ctx context.Context) ([]JournalEntry, error) {
	var out []JournalEntry
	cursor := ""
	for {
		page, next, err := j.Bucket.ListPage(ctx, j.Prefix+journalDir, cursor, blobs.MaxPage)
		if err != nil {
			return nil, fmt.Errorf("blobs.ListPage erasure journal: %w", err)
		}
		for _, a := range page {
			if !strings.HasSuffix(a.Key, ".json") {
				continue
			}
			e, err := j.read(ctx, a.Key)
			if err != nil {
				return nil, err
			}
			out = append(out, e)
		}
		if next == "" {
			return out, nil
		}
		cursor = next
	}
}

func (j *Journal) read(ctx context.Context, key string) (JournalEntry, error) {
	r, _, err := j.Bucket.Read(ctx, key)
	if err != nil {
		return JournalEntry{}, fmt.Errorf("blobs.Read erasure journal: %w", err)
	}
	defer r.Close()
	data, err := io.ReadAll(io.LimitReader(r, maxJournalEntry+1))
	if err != nil {
		return JournalEntry{}, fmt.Errorf("read erasure journal %s: %w", key, err)
	}
	var e JournalEntry
	if err := json.Unmarshal(data, &e); err != nil || len(data) > maxJournalEntry || !blobs.ValidSegment(e.User) || key != j.key(e.User) {
		// A damaged entry must stop a replay loudly, not be skipped: a
		// skipped entry is a user who would come back.
		return JournalEntry{}, fmt.Errorf("erasure journal %s: damaged entry", key)
	}
	return e, nil
}

// Reapply runs the erasure of every journaled user against the saga's
// stores: after a restore or a point-in-time recovery, the stores may hold
// users erased since. Users whose erasure the stores already record as
// done are passed over by Run; users the stores never held still get
// their tombstone, so their old tokens answer 410 and no key is made for
// them again. progress, when set, hears each user.
func (s *Saga) Reapply(ctx context.Context, j *Journal, actor string, progress func(JournalEntry, Erasure)) (int, error) {
	entries, err := j.Entries(ctx)
	if err != nil {
		return 0, err
	}
	done := 0
	for _, en := range entries {
		e, err := s.Request(ctx, en.User, actor)
		if err != nil {
			return done, fmt.Errorf("forget.Request: %w", err)
		}
		for round := 0; e.State != StateDone && e.State != StateFailed; round++ {
			if e, err = s.Run(ctx, e.ID); err != nil && !errors.Is(err, errIncomplete) {
				return done, fmt.Errorf("erasure %s: %w", e.ID, err)
			}
			if round > MaxVerifyRounds {
				return done, fmt.Errorf("erasure %s: not finished after %d rounds", e.ID, round)
			}
		}
		if e.State != StateDone {
			return done, fmt.Errorf("erasure %s ended %s: %s", e.ID, e.State, e.Error)
		}
		if progress != nil {
			progress(en, e)
		}
		done++
	}
	return done, nil
}
