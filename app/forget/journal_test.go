package forget_test

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/lethe-dev/lethe/app/audit"
	"github.com/lethe-dev/lethe/app/forget"
	"github.com/lethe-dev/lethe/app/records"
	"github.com/lethe-dev/lethe/infra/blobs"
	"github.com/lethe-dev/lethe/infra/blobs/dirblobs"
	"github.com/lethe-dev/lethe/infra/docs"
)

// withJournal gives the env's saga a journal in its own directory (as
// the wiring keeps it outside the data dir).
func (e *env) withJournal() *forget.Journal {
	e.t.Helper()
	b, err := dirblobs.Open(filepath.Join(e.dir, "journal"))
	if err != nil {
		e.t.Fatal(err)
	}
	e.t.Cleanup(func() { b.Close() })
	j := &forget.Journal{Bucket: b}
	e.saga.Journal = j
	return j
}

func TestRequestJournalsTheErasure(t *testing.T) {
	e := newEnv(t)
	j := e.withJournal()
	ctx := t.Context()
	for range 2 { // asking twice is one entry
		if _, err := e.saga.Request(ctx, alice, audit.UserActor(alice)); err != nil {
			t.Fatal(err)
		}
	}
	got, err := j.Entries(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if len(got) != 1 || got[0].User != alice || got[0].Erasure != forget.ErasureID(alice) || got[0].RequestedAt.IsZero() {
		t.Fatalf("journal %+v, want one entry for alice", got)
	}
}

// TestRequestFailsBeforeTombstoneWithoutJournal: an erasure the journal
// could not record is not started, so the user can ask again (a tombstone
// would answer their retry with 410).
func TestRequestFailsBeforeTombstoneWithoutJournal(t *testing.T) {
	e := newEnv(t)
	j := e.withJournal()
	j.Bucket.Close()
	if _, err := e.saga.Request(t.Context(), alice, audit.UserActor(alice)); err == nil {
		t.Fatal("Request with a closed journal succeeded")
	}
	if _, err := e.docs.Get(t.Context(), records.TombstoneKey(alice)); !errors.Is(err, docs.ErrNotFound) {
		t.Fatalf("tombstone after a failed journal append: %v, want not found", err)
	}
}

// TestReapplyErasesJournaledUsersOnly: the stores hold alice and bob (as
// a restored backup would), the journal says alice was erased since:
// replaying it erases alice everywhere and leaves bob as he was; a second
// replay changes nothing.
func TestReapplyErasesJournaledUsersOnly(t *testing.T) {
	e := newEnv(t)
	e.populate(alice, 3)
	e.populate(bob, 2)
	bobBefore := e.count(bob)
	ctx := t.Context()
	j := e.withJournal()
	const ghost = "90570000000000000000000000000003" // erased, never in these stores
	for _, u := range []string{alice, ghost} {
		if err := j.Append(ctx, forget.JournalEntry{User: u, Erasure: forget.ErasureID(u)}); err != nil {
			t.Fatal(err)
		}
	}
	for round := range 2 {
		var seen []string
		n, err := e.saga.Reapply(ctx, j, audit.ActorOperator, func(en forget.JournalEntry, er forget.Erasure) {
			seen = append(seen, en.User+"="+er.State)
		})
		if err != nil || n != 2 {
			t.Fatalf("round %d: Reapply = %d, %v (%v)", round, n, err, seen)
		}
		for store, c := range e.count(alice) {
			if c != 0 {
				t.Errorf("round %d: alice still has %d in %s", round, c, store)
			}
		}
		if got := e.count(bob); fmt.Sprint(got) != fmt.Sprint(bobBefore) {
			t.Fatalf("round %d: bob changed: %v, was %v", round, got, bobBefore)
		}
		if has, _ := e.keys.HasKey(ctx, alice); has {
			t.Fatalf("round %d: alice's keyset is back", round)
		}
		for _, u := range []string{alice, ghost} {
			if _, err := e.docs.Get(ctx, records.TombstoneKey(u)); err != nil {
				t.Fatalf("round %d: tombstone of %s: %v", round, u, err)
			}
		}
	}
}

// TestJournalDamagedEntryStopsReplay: a skipped entry would be a user who
// comes back, so damage is an error.
func TestJournalDamagedEntryStopsReplay(t *testing.T) {
	e := newEnv(t)
	j := e.withJournal()
	ctx := t.Context()
	cases := map[string][]byte{
		"not json":     []byte("{"),
		"other user":   fmt.Appendf(nil, `{"user":%q,"erasure":"x"}`, bob),
		"invalid user": []byte(`{"user":"../x","erasure":"x"}`),
		"too large":    append([]byte(`{"user":"`+alice+`","erasure":"`), bytes.Repeat([]byte("x"), 5000)...),
	}
	for name, body := range cases {
		t.Run(name, func(t *testing.T) {
			key := "erasures/" + alice + ".json"
			if err := j.Bucket.Delete(ctx, key); err != nil && !errors.Is(err, blobs.ErrNotFound) {
				t.Fatal(err)
			}
			if _, err := j.Bucket.Write(ctx, key, bytes.NewReader(body), blobs.WriteOptions{}); err != nil {
				t.Fatal(err)
			}
			if _, err := j.Entries(ctx); err == nil || !strings.Contains(err.Error(), "damaged") {
				t.Fatalf("Entries = %v, want damaged", err)
			}
			if _, err := e.saga.Reapply(ctx, j, audit.ActorOperator, nil); err == nil {
				t.Fatal("Reapply over a damaged journal succeeded")
			}
		})
	}
}

// TestJournalHoldsNoRawUID: entries name the keyed pseudonym only.
func TestJournalHoldsNoRawUID(t *testing.T) {
	e := newEnv(t)
	j := e.withJournal()
	if err := j.Append(t.Context(), forget.JournalEntry{User: alice, Erasure: forget.ErasureID(alice)}); err != nil {
		t.Fatal(err)
	}
	if err := j.Append(t.Context(), forget.JournalEntry{User: "raw uid with spaces"}); err == nil {
		t.Fatal("Append took a value that is no pseudonym")
	}
	err := filepath.WalkDir(filepath.Join(e.dir, "journal"), func(p string, d os.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		if strings.Contains(p, "raw uid") {
			t.Errorf("journal file %s", p)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
}

// FuzzJournalEntry: whatever an entry's object holds, Entries returns an
// error or an entry naming the user its key names; it never panics.
func FuzzJournalEntry(f *testing.F) {
	f.Add([]byte(`{"user":"` + alice + `","erasure":"e1","requested_at":"2026-11-30T10:00:00Z"}`))
	f.Add([]byte(`{"user":"` + bob + `"}`))
	f.Add([]byte(`[]`))
	f.Fuzz(func(t *testing.T, body []byte) {
		b, err := dirblobs.Open(t.TempDir())
		if err != nil {
			t.Fatal(err)
		}
		defer b.Close()
		j := &forget.Journal{Bucket: b}
		if _, err := b.Write(t.Context(), "erasures/"+alice+".json", bytes.NewReader(body), blobs.WriteOptions{}); err != nil {
			t.Fatal(err)
		}
		got, err := j.Entries(t.Context())
		if err == nil && (len(got) != 1 || got[0].User != alice) {
			t.Fatalf("Entries = %+v for %q", got, body)
		}
	})
}
