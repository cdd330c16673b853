package retention_test

import (
	"bytes"
	"context"
	"errors"
	"maps"
	"testing"
	"time"

	"github.com/cloudevents/sdk-go/v2/event"

	"github.com/lethe-dev/lethe/app/audit"
	"github.com/lethe-dev/lethe/app/records"
	"github.com/lethe-dev/lethe/events"
	"github.com/lethe-dev/lethe/infra/blobs"
	"github.com/lethe-dev/lethe/infra/docs"
	"github.com/lethe-dev/lethe/workers/internal/workertest"
	"github.com/lethe-dev/lethe/workers/retention"
)

const day = 24 * time.Hour

// TestSweepAtExpiry: with an injected clock, each class goes at the first
// sweep at or after its expiry, and not one millisecond before.
func TestSweepAtExpiry(t *testing.T) {
	e := newEnv(t)
	u := workertest.UserID(t, "alice")
	e.chunk(t, u, "conv", 0)
	ref := records.ChunkID("conv", 0)
	e.expire(t, u, records.ClassAudio, ref, e.t0.Add(1*day))
	e.expire(t, u, records.ClassTranscript, ref, e.t0.Add(10*day))
	e.expire(t, u, records.ClassVector, ref, e.t0.Add(10*day))
	all := state{blob: true, blobKeyInRecord: true, segment: true, vector: true, record: true, expiries: 3}
	noAudio := state{segment: true, vector: true, record: true, expiries: 2}
	steps := []struct {
		name   string
		at     time.Time
		want   state
		counts map[string]int
	}{
		{"before anything is due", e.t0, all, map[string]int{}},
		{"a millisecond before the audio", e.t0.Add(day - time.Millisecond), all, map[string]int{}},
		{"audio due", e.t0.Add(day), noAudio, map[string]int{
			"audio.expired": 1, retention.CountAudioBlobs: 1, retention.CountAudioRecords: 1, retention.CountExpiryDocs: 1}},
		{"again: nothing left that is due", e.t0.Add(2 * day), noAudio, map[string]int{}},
		{"a millisecond before the transcript", e.t0.Add(10*day - time.Millisecond), noAudio, map[string]int{}},
		{"transcript and vector due", e.t0.Add(10 * day), state{record: true}, map[string]int{
			"transcript.expired": 1, "vector.expired": 1, retention.CountTranscriptDocs: 1,
			retention.CountVectorVectors: 1, retention.CountExpiryDocs: 2}},
	}
	for _, st := range steps {
		rep, err := e.w.Sweep(t.Context(), retention.Options{Now: st.at})
		if err != nil {
			t.Fatalf("%s: Sweep: %v", st.name, err)
		}
		if !maps.Equal(rep.Counts, st.counts) {
			t.Errorf("%s: counts %v, want %v", st.name, rep.Counts, st.counts)
		}
		if got := e.state(t, u, "conv", 0); got != st.want {
			t.Errorf("%s: state %+v, want %+v", st.name, got, st.want)
		}
	}
	// One audit entry per sweep, with the counts and no content.
	entries := e.audits(t)
	if len(entries) != len(steps) {
		t.Fatalf("%d audit entries, want %d", len(entries), len(steps))
	}
	withTranscripts := 0
	for _, a := range entries {
		if a.Actor != audit.ActorSystem || a.Ref != "sweep" {
			t.Errorf("audit entry %+v", a)
		}
		withTranscripts += a.Counts[retention.CountTranscriptDocs]
	}
	if withTranscripts != 1 {
		t.Errorf("audit entries count %d transcripts, want 1", withTranscripts)
	}
}

// TestSweepAudioZeroDays: audio kept 0 days is scheduled at transcription
// time; the sweep after it takes the audio and leaves the transcript.
func TestSweepAudioZeroDays(t *testing.T) {
	e := newEnv(t)
	u := workertest.UserID(t, "alice")
	e.chunk(t, u, "conv", 3)
	ref := records.ChunkID("conv", 3)
	e.expire(t, u, records.ClassAudio, ref, e.t0) // what the transcriber schedules with audio_days 0
	e.expire(t, u, records.ClassTranscript, ref, e.t0.Add(365*day))
	if _, err := e.w.Sweep(t.Context(), retention.Options{}); err != nil {
		t.Fatal(err)
	}
	want := state{segment: true, vector: true, record: true, expiries: 1}
	if got := e.state(t, u, "conv", 3); got != want {
		t.Errorf("state %+v, want %+v", got, want)
	}
}

// TestSweepDryRun: a dry run deletes nothing, writes no audit entry, and
// counts what the real sweep then deletes.
func TestSweepDryRun(t *testing.T) {
	e := newEnv(t)
	users := []string{workertest.UserID(t, "a"), workertest.UserID(t, "b")}
	for _, u := range users {
		for seq := range 5 {
			e.chunk(t, u, "conv", seq)
			ref := records.ChunkID("conv", seq)
			for _, class := range []string{records.ClassAudio, records.ClassTranscript, records.ClassVector} {
				e.expire(t, u, class, ref, e.t0.Add(-time.Duration(seq)*time.Hour))
			}
		}
	}
	var pages []retention.Progress
	dry, err := e.w.Sweep(t.Context(), retention.Options{DryRun: true, PageSize: 4,
		Progress: func(p retention.Progress) { pages = append(pages, p) }})
	if err != nil {
		t.Fatal(err)
	}
	for _, u := range users {
		for seq := range 5 {
			want := state{blob: true, blobKeyInRecord: true, segment: true, vector: true, record: true, expiries: 3}
			if got := e.state(t, u, "conv", seq); got != want {
				t.Fatalf("after the dry run, %s/%d: %+v", u[:6], seq, got)
			}
		}
	}
	if n := len(e.audits(t)); n != 0 {
		t.Errorf("dry run wrote %d audit entries", n)
	}
	if dry.Entries != 30 || len(pages) != 8 || pages[len(pages)-1].Entries != 30 {
		t.Errorf("dry run: %d entries, %d progress reports (%+v)", dry.Entries, len(pages), pages)
	}
	real, err := e.w.Sweep(t.Context(), retention.Options{PageSize: 4})
	if err != nil {
		t.Fatal(err)
	}
	if !maps.Equal(dry.Counts, real.Counts) {
		t.Errorf("dry counts %v, real counts %v", dry.Counts, real.Counts)
	}
	if real.Counts[retention.CountAudioBlobs] != 10 || real.Counts[retention.CountTranscriptDocs] != 10 ||
		real.Counts[retention.CountVectorVectors] != 10 || real.Counts[retention.CountExpiryDocs] != 30 {
		t.Errorf("real counts %v", real.Counts)
	}
	for _, u := range users {
		if n, _ := e.vecs.Count(t.Context(), u); n != 0 {
			t.Errorf("%d vectors left", n)
		}
	}
}

// TestSweepResumes: a blob store failing midway stops the sweep with an
// error and an "incomplete" audit entry; the next sweep finishes, and
// between them every item is deleted exactly once.
func TestSweepResumes(t *testing.T) {
	e := newEnv(t)
	u := workertest.UserID(t, "alice")
	for seq := range 6 {
		e.chunk(t, u, "conv", seq)
		e.expire(t, u, records.ClassAudio, records.ChunkID("conv", seq), e.t0.Add(-time.Duration(6-seq)*time.Minute))
		e.expire(t, u, records.ClassTranscript, records.ChunkID("conv", seq), e.t0.Add(-time.Duration(6-seq)*time.Minute))
	}
	e.faulty.failOnce(4) // in the second page of 4 entries (2 chunks each)
	first, err := e.w.Sweep(t.Context(), retention.Options{PageSize: 4})
	if !errors.Is(err, errInjected) {
		t.Fatalf("Sweep = %v, want the injected failure", err)
	}
	if first.Pages != 1 {
		t.Errorf("first sweep finished %d pages, want 1", first.Pages)
	}
	second, err := e.w.Sweep(t.Context(), retention.Options{PageSize: 4})
	if err != nil {
		t.Fatal(err)
	}
	total := map[string]int{}
	for _, rep := range []retention.Report{first, second} {
		for k, v := range rep.Counts {
			total[k] += v
		}
	}
	if total[retention.CountAudioBlobs] != 6 || total[retention.CountTranscriptDocs] != 6 || total[retention.CountAudioRecords] != 6 {
		t.Errorf("deleted over both sweeps: %v", total)
	}
	for seq := range 6 {
		if got := e.state(t, u, "conv", seq); got != (state{record: true, vector: true}) {
			t.Errorf("chunk %d after the second sweep: %+v", seq, got)
		}
	}
	entries := e.audits(t)
	refs := map[string]int{}
	for _, a := range entries {
		refs[a.Ref]++
	}
	if len(entries) != 2 || refs["sweep:incomplete"] != 1 || refs["sweep"] != 1 {
		t.Errorf("audit entries %+v", entries)
	}
}

// TestSweepUsers: a sweep of one user never touches another's data, and a
// tombstoned user's entries are left to the erasure.
func TestSweepUsers(t *testing.T) {
	e := newEnv(t)
	a, b, gone := workertest.UserID(t, "a"), workertest.UserID(t, "b"), workertest.UserID(t, "gone")
	for _, u := range []string{a, b, gone} {
		e.chunk(t, u, "conv", 0)
		for _, class := range []string{records.ClassAudio, records.ClassTranscript, records.ClassVector} {
			e.expire(t, u, class, records.ChunkID("conv", 0), e.t0.Add(-day))
		}
	}
	e.Tombstone(t, gone)
	all := state{blob: true, blobKeyInRecord: true, segment: true, vector: true, record: true, expiries: 3}
	rep, err := e.w.Sweep(t.Context(), retention.Options{User: a})
	if err != nil {
		t.Fatal(err)
	}
	if got := e.state(t, a, "conv", 0); got != (state{record: true}) {
		t.Errorf("a after its sweep: %+v", got)
	}
	for _, u := range []string{b, gone} {
		if got := e.state(t, u, "conv", 0); got != all {
			t.Errorf("another user after a's sweep: %+v", got)
		}
	}
	if rep.Entries != 3 {
		t.Errorf("a's sweep saw %d entries, want 3", rep.Entries)
	}
	rep, err = e.w.Sweep(t.Context(), retention.Options{})
	if err != nil {
		t.Fatal(err)
	}
	if got := e.state(t, b, "conv", 0); got != (state{record: true}) {
		t.Errorf("b after the global sweep: %+v", got)
	}
	if got := e.state(t, gone, "conv", 0); got != all {
		t.Errorf("tombstoned user after the global sweep: %+v", got)
	}
	if rep.Counts[retention.CountSkippedErased] != 3 {
		t.Errorf("counts %v, want 3 skipped", rep.Counts)
	}
}

// TestSweepPaging: many entries due at the same millisecond, pages
// smaller than the tie, entries that stay (malformed): each is seen once
// and the sweep ends.
func TestSweepPaging(t *testing.T) {
	e := newEnv(t)
	u := workertest.UserID(t, "alice")
	const n = 23
	for seq := range n {
		e.chunk(t, u, "conv", seq)
		e.expire(t, u, records.ClassTranscript, records.ChunkID("conv", seq), e.t0.Add(-time.Hour))
	}
	// Malformed: a class no sweep knows, a ref that is no chunk id.
	e.expire(t, u, "mystery", "x", e.t0.Add(-time.Hour))
	e.expire(t, u, records.ClassVector, "not-a-chunk", e.t0.Add(-time.Hour))
	for _, dry := range []bool{true, false} {
		prev := 0
		rep, err := e.w.Sweep(t.Context(), retention.Options{PageSize: 3, DryRun: dry, Progress: func(p retention.Progress) {
			if p.Entries-prev > 3 {
				t.Errorf("dry=%v: page %d holds %d entries, more than the page size", dry, p.Pages, p.Entries-prev)
			}
			prev = p.Entries
		}})
		if err != nil {
			t.Fatal(err)
		}
		if rep.Entries != n+2 || rep.Counts[retention.CountTranscriptDocs] != n || rep.Counts[retention.CountSkippedMalformed] != 2 {
			t.Errorf("dry=%v: %d entries, counts %v", dry, rep.Entries, rep.Counts)
		}
	}
	for _, id := range []string{"mystery:x", "vector:not-a-chunk"} {
		if _, err := e.Docs.Get(t.Context(), docs.Key{User: u, Collection: records.Expiries, ID: id}); err != nil {
			t.Errorf("malformed entry %s: %v (kept, never guessed at)", id, err)
		}
	}
}

// TestSweepExport: an export's archive and record go; another export
// whose id extends this one's stays.
func TestSweepExport(t *testing.T) {
	e := newEnv(t)
	u := workertest.UserID(t, "alice")
	ctx := t.Context()
	for _, id := range []string{"exp1", "exp12"} {
		key := "users/" + u + "/exports/" + id + ".zip.sealed"
		if _, err := e.blobs.Write(ctx, key, bytes.NewReader([]byte("zip")), blobs.WriteOptions{}); err != nil {
			t.Fatal(err)
		}
		if err := e.Docs.Put(ctx, docs.Doc{Key: docs.Key{User: u, Collection: records.Exports, ID: id}, Data: []byte(`{}`)}); err != nil {
			t.Fatal(err)
		}
	}
	e.expire(t, u, records.ClassExport, "exp1", e.t0.Add(-time.Minute))
	e.expire(t, u, records.ClassExport, "exp12", e.t0.Add(time.Minute))
	rep, err := e.w.Sweep(ctx, retention.Options{})
	if err != nil {
		t.Fatal(err)
	}
	if rep.Counts[retention.CountExportBlobs] != 1 || rep.Counts[retention.CountExportDocs] != 1 {
		t.Errorf("counts %v", rep.Counts)
	}
	left, err := e.blobs.List(ctx, "users/"+u+"/exports/")
	if err != nil || len(left) != 1 || left[0].Key != "users/"+u+"/exports/exp12.zip.sealed" {
		t.Errorf("export blobs left: %+v, %v", left, err)
	}
	if _, err := e.Docs.Get(ctx, docs.Key{User: u, Collection: records.Exports, ID: "exp1"}); !errors.Is(err, docs.ErrNotFound) {
		t.Errorf("expired export record: %v", err)
	}
	if _, err := e.Docs.Get(ctx, docs.Key{User: u, Collection: records.Exports, ID: "exp12"}); err != nil {
		t.Errorf("live export record: %v", err)
	}
}

// TestSweepAudioWithoutRecord: an intake that stopped after the blob and
// its expiry but before the chunk record: the sweep still finds the blob.
func TestSweepAudioWithoutRecord(t *testing.T) {
	e := newEnv(t)
	u := workertest.UserID(t, "alice")
	e.chunk(t, u, "conv", 7)
	if err := e.Docs.Delete(t.Context(), records.ChunkKey(u, "conv", 7)); err != nil {
		t.Fatal(err)
	}
	e.expire(t, u, records.ClassAudio, records.ChunkID("conv", 7), e.t0)
	rep, err := e.w.Sweep(t.Context(), retention.Options{})
	if err != nil {
		t.Fatal(err)
	}
	if got := e.state(t, u, "conv", 7); got.blob || got.expiries != 0 || rep.Counts[retention.CountAudioBlobs] != 1 {
		t.Errorf("state %+v, counts %v", got, rep.Counts)
	}
}

// TestHandle: the lifecycle event runs a sweep as the scheduler; events
// that can never succeed are permanent.
func TestHandle(t *testing.T) {
	e := newEnv(t)
	u := workertest.UserID(t, "alice")
	e.chunk(t, u, "conv", 0)
	e.expire(t, u, records.ClassTranscript, records.ChunkID("conv", 0), e.t0)
	good, err := e.Events.New(events.TypeRetentionSweep, "retention/sweep", events.RetentionSweepRequested{RequestedAt: e.t0})
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name string
		ev   func() event.Event
		want workertest.Outcome
	}{
		{"valid", func() event.Event { return good }, workertest.Acked},
		{"unknown field", func() event.Event {
			return workertest.WithData(t, good, func(m map[string]any) { m["everything"] = true })
		}, workertest.Permanent},
		{"bad user", func() event.Event {
			return workertest.WithData(t, good, func(m map[string]any) { m["user"] = "../../etc" })
		}, workertest.Permanent},
		{"no time", func() event.Event {
			return workertest.WithData(t, good, func(m map[string]any) { delete(m, "requested_at") })
		}, workertest.Permanent},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			ev := tc.ev()
			got := workertest.Classify(e.w.Handle(t.Context(), ev))
			if got != tc.want {
				t.Errorf("outcome %s, want %s", got, tc.want)
			}
		})
	}
	if got := e.state(t, u, "conv", 0); got.segment {
		t.Error("the valid event did not sweep")
	}
	entries := e.audits(t)
	if len(entries) != 1 || entries[0].Actor != audit.ActorScheduler {
		t.Errorf("audit entries %+v", entries)
	}
}

// TestSweepStoreDown: a documents store that fails is a retryable error.
func TestSweepStoreDown(t *testing.T) {
	e := newEnv(t)
	u := workertest.UserID(t, "alice")
	e.chunk(t, u, "conv", 0)
	e.expire(t, u, records.ClassTranscript, records.ChunkID("conv", 0), e.t0)
	ctx, cancel := context.WithCancel(t.Context())
	cancel()
	if _, err := e.w.Sweep(ctx, retention.Options{}); err == nil {
		t.Fatal("Sweep with a canceled context succeeded")
	}
	if got := e.state(t, u, "conv", 0); !got.segment || got.expiries != 1 {
		t.Errorf("state %+v after a failed sweep", got)
	}
	if _, err := e.w.Sweep(t.Context(), retention.Options{}); err != nil {
		t.Fatal(err)
	}
	if got := e.state(t, u, "conv", 0); got.segment || got.expiries != 0 {
		t.Errorf("state %+v after the retry", got)
	}
}
