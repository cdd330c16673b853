// Package retention is the worker that forgets on schedule: it reads the
// expiry index (records.Expiries, ordered by expires_at, never a scan of
// the data), deletes each expired item in its store, then the index entry.
// A crash between the two leaves the entry, and the next sweep finds the
// item already gone: sweeps are idempotent and resume where one stopped.
package retention

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/cloudevents/sdk-go/v2/event"

	"github.com/lethe-dev/lethe/app/audit"
	"github.com/lethe-dev/lethe/app/records"
	"github.com/lethe-dev/lethe/events"
	"github.com/lethe-dev/lethe/infra/blobs"
	"github.com/lethe-dev/lethe/infra/docs"
	"github.com/lethe-dev/lethe/infra/vectors"
)

// Count names: "<class>.<store>" for what was deleted, and the sweep's own.
const (
	CountAudioBlobs       = "audio.blobs"        // sealed audio objects
	CountAudioRecords     = "audio.records"      // chunk records marked audio-deleted
	CountTranscriptDocs   = "transcript.docs"    // segment documents
	CountVectorVectors    = "vector.vectors"     // vector ids deleted
	CountExportBlobs      = "export.blobs"       // archive objects
	CountExportDocs       = "export.docs"        // export records
	CountExpiryDocs       = "expiries.docs"      // index entries done with
	CountSkippedErased    = "skipped.tombstoned" // entries of erased users (the erasure deletes them)
	CountSkippedMalformed = "skipped.malformed"  // entries that do not decode or name nothing
)

// DefaultPageSize is how many index entries one page reads and deletes. A
// page's fixed costs (a query, two commits with their WAL checkpoints on
// SQLite, one vector call per user) dominate small pages: 500 sweeps at a
// half the rate of 4000 on the embedded adapters.
const DefaultPageSize = 5000

// blobConcurrency bounds concurrent blob deletes (one request each on
// Cloud Storage; a file and a directory sync each on disk).
const blobConcurrency = 16

// vectorConcurrency bounds concurrent per-user vector deletes (a request
// each on Pinecone; a file rewrite and fsync each on the flat index).
const vectorConcurrency = 8

// Worker sweeps expired items. It imports no adapter: the stores are ports.
type Worker struct {
	Docs    docs.Store
	Blobs   blobs.Bucket
	Vectors vectors.Index
	Events  *events.Registry
	Logger  *slog.Logger // nil discards
	Now     func() time.Time
	// PageSize is the default page (DefaultPageSize when 0).
	PageSize int
}

// Progress is reported after each page.
type Progress struct {
	Pages   int
	Entries int // index entries seen so far
	Counts  map[string]int
}

// Options of one sweep.
type Options struct {
	// Now is the sweep's time: entries with expires_at <= Now are due
	// (zero: the worker's clock).
	Now time.Time
	// User restricts the sweep to one user ("" sweeps everyone).
	User string
	// DryRun counts what would go and deletes nothing.
	DryRun bool
	// PageSize overrides the worker's page.
	PageSize int
	// Actor is the audit actor (audit.ActorSystem when empty).
	Actor string
	// Progress, when set, is called after each page.
	Progress func(Progress)
}

// Report is what a sweep did (or, dry, would do).
type Report struct {
	Now     time.Time
	DryRun  bool
	Pages   int
	Entries int
	Counts  map[string]int
}

// Handle runs a sweep requested on the lifecycle topic (Cloud Scheduler in
// production, the timer in `lethe run`). A failed sweep is retried: it
// resumes, since what it deleted is no longer due.
func (w *Worker) Handle(ctx context.Context, e event.Event) error {
	var in events.RetentionSweepRequested
	if err := w.Events.Decode(e, &in); err != nil {
		return err
	}
	if in.User != "" && !docs.ValidUser(in.User) {
		return events.Permanentf("retention: user %q is not a valid user hash", in.User)
	}
	rep, err := w.Sweep(ctx, Options{User: in.User, Actor: audit.ActorScheduler})
	if err != nil {
		return fmt.Errorf("retention.Sweep: %w", err)
	}
	w.logger().InfoContext(ctx, "retention sweep done", "entries", rep.Entries, "pages", rep.Pages)
	return nil
}

// Sweep deletes every item whose expiry is due, page by page, and appends
// one audit entry with the counts (also when it stops on an error, with
// what it did so far: that much is gone).
func (w *Worker) Sweep(ctx context.Context, o Options) (Report, error) {
	if o.Now.IsZero() {
		o.Now = w.now()
	}
	if o.PageSize <= 0 {
		o.PageSize = w.PageSize
	}
	if o.PageSize <= 0 {
		o.PageSize = DefaultPageSize
	}
	if o.Actor == "" {
		o.Actor = audit.ActorSystem
	}
	s := &sweep{w: w, o: o, erased: map[string]bool{},
		rep: Report{Now: o.Now.UTC(), DryRun: o.DryRun, Counts: map[string]int{}}}
	err := s.run(ctx)
	if o.DryRun {
		return s.rep, err
	}
	ref := "sweep"
	if err != nil {
		ref = "sweep:incomplete"
	}
	// Written even when the context is done: what was deleted is gone.
	actx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 10*time.Second)
	defer cancel()
	if _, aerr := (&audit.Log{Docs: w.Docs, Now: w.Now}).Append(actx, audit.Entry{
		Actor: o.Actor, Action: audit.ActionRetentionSweep, Subject: o.User, Ref: ref, Counts: maps.Clone(s.rep.Counts),
	}); aerr != nil {
		err = errors.Join(err, fmt.Errorf("audit.Append: %w", aerr))
	}
	return s.rep, err
}

// sweep is the state of one run.
type sweep struct {
	w      *Worker
	o      Options
	rep    Report
	erased map[string]bool // user → tombstoned, asked once per sweep
	// The cursor: entries are read in (expires_at, key) order; after a
	// page, the next starts at the last expires_at and skips the entries
	// already seen at that time (those a dry run or a skip left behind).
	at     int64
	seenAt map[docs.Key]bool
}

func (s *sweep) run(ctx context.Context) error {
	s.at = -1 << 63
	for {
		q := docs.Query{
			Collection: records.Expiries,
			Filters: []docs.Filter{
				{Field: records.FieldExpiresAt, Op: docs.Lte, Value: s.o.Now.UnixMilli()},
				{Field: records.FieldExpiresAt, Op: docs.Gte, Value: s.at},
			},
			OrderBy: records.FieldExpiresAt,
			Limit:   s.o.PageSize + len(s.seenAt),
		}
		if s.o.User != "" {
			q.User = s.o.User
		} else {
			q.AllUsers = true
		}
		found, err := s.w.Docs.Query(ctx, q)
		if err != nil {
			return fmt.Errorf("docs.Query expiries: %w", err)
		}
		page := make([]docs.Doc, 0, len(found))
		for _, d := range found {
			if !s.seenAt[d.Key] {
				page = append(page, d)
			}
		}
		if len(page) == 0 {
			return nil
		}
		deleted, err := s.page(ctx, page)
		if err != nil {
			return err
		}
		s.advance(page, deleted)
		s.rep.Pages++
		s.rep.Entries += len(page)
		if s.o.Progress != nil {
			s.o.Progress(Progress{Pages: s.rep.Pages, Entries: s.rep.Entries, Counts: maps.Clone(s.rep.Counts)})
		}
		if len(found) < q.Limit {
			return nil
		}
	}
}

// add counts n (zero counts stay out of the report and the audit entry).
func (s *sweep) add(name string, n int) {
	if n != 0 {
		s.rep.Counts[name] += n
	}
}

// advance moves the cursor past page. Only entries still in the index
// (skipped, or all of a dry run) need skipping: deleted ones are not found
// again, and remembering them would grow the next query's limit with every
// page of a burst of entries due at one millisecond.
func (s *sweep) advance(page []docs.Doc, deleted []docs.Key) {
	last, _ := page[len(page)-1].Fields[records.FieldExpiresAt].(int64)
	if last != s.at {
		s.at, s.seenAt = last, map[docs.Key]bool{}
	}
	gone := make(map[docs.Key]bool, len(deleted))
	for _, k := range deleted {
		gone[k] = true
	}
	for _, d := range page {
		if v, _ := d.Fields[records.FieldExpiresAt].(int64); v == last && !gone[d.Key] {
			s.seenAt[d.Key] = true
		}
	}
}

// item is one due entry.
type item struct {
	key  docs.Key // the index entry
	user string
	e    records.Expiry
	cid  string // audio, transcript, vector: the chunk's conversation
	seq  int
}

// page deletes the items of one page, then their index entries, and
// returns the entries it deleted. An error leaves the entries of the page:
// the next sweep does them again.
func (s *sweep) page(ctx context.Context, page []docs.Doc) ([]docs.Key, error) {
	var items []item
	for _, d := range page {
		it, ok := s.decode(d)
		if !ok {
			s.add(CountSkippedMalformed, 1)
			continue
		}
		gone, err := s.tombstoned(ctx, it.user)
		if err != nil {
			return nil, err
		}
		if gone {
			s.add(CountSkippedErased, 1)
			continue
		}
		s.add(it.e.Class+".expired", 1)
		items = append(items, it)
	}
	byClass := map[string][]item{}
	for _, it := range items {
		byClass[it.e.Class] = append(byClass[it.e.Class], it)
	}
	// The stores are independent: vectors and segments are deleted while
	// the audio goes (a page's time is mostly waiting on fsyncs and
	// round trips). Export records only after their archives.
	var segs []docs.Key
	for _, it := range byClass[records.ClassTranscript] {
		segs = append(segs, records.SegmentKey(it.user, it.cid, it.seq))
	}
	var vecCounts, segCounts, audioCounts map[string]int
	steps := []func(context.Context) error{
		func(ctx context.Context) (err error) {
			audioCounts, err = s.audio(ctx, byClass[records.ClassAudio])
			return err
		},
		func(ctx context.Context) (err error) {
			vecCounts, err = s.vectors(ctx, byClass[records.ClassVector])
			return err
		},
		func(ctx context.Context) error {
			n, err := s.deleteDocs(ctx, segs)
			segCounts = map[string]int{CountTranscriptDocs: n}
			return err
		},
	}
	err := forEach(ctx, steps, 3, func(ctx context.Context, step func(context.Context) error) error { return step(ctx) })
	for _, m := range []map[string]int{audioCounts, vecCounts, segCounts} {
		for k, v := range m {
			s.add(k, v)
		}
	}
	if err != nil {
		return nil, err
	}
	if err := s.exportBlobs(ctx, byClass[records.ClassExport]); err != nil {
		return nil, err
	}
	var exps []docs.Key
	for _, it := range byClass[records.ClassExport] {
		exps = append(exps, docs.Key{User: it.user, Collection: records.Exports, ID: it.e.Ref})
	}
	n, err := s.deleteDocs(ctx, exps)
	s.add(CountExportDocs, n)
	if err != nil {
		return nil, err
	}
	// The index entries only once their items are gone.
	entries := make([]docs.Key, 0, len(items))
	for _, it := range items {
		entries = append(entries, it.key)
	}
	if s.o.DryRun {
		s.add(CountExpiryDocs, len(entries))
		return nil, nil
	}
	c, err := s.w.Docs.DeleteMany(ctx, entries)
	if err != nil {
		return nil, fmt.Errorf("docs.DeleteMany expiries: %w", err)
	}
	s.add(CountExpiryDocs, c)
	return entries, nil
}

// decode reads an index entry; ok is false for one that names nothing
// this sweep can delete (kept, counted, never guessed at).
func (s *sweep) decode(d docs.Doc) (item, bool) {
	e, err := records.ExpiryFrom(d)
	if err != nil || e.Ref == "" || d.Key.User == "" {
		return item{}, false
	}
	it := item{key: d.Key, user: d.Key.User, e: e}
	switch e.Class {
	case records.ClassAudio, records.ClassTranscript, records.ClassVector:
		cid, seq, ok := parseChunkID(e.Ref)
		if !ok {
			return item{}, false
		}
		it.cid, it.seq = cid, seq
	case records.ClassExport:
	default:
		return item{}, false
	}
	return it, d.Key == records.ExpiryKey(it.user, e.Class, e.Ref)
}

// parseChunkID inverts records.ChunkID.
func parseChunkID(ref string) (string, int, bool) {
	i := strings.LastIndexByte(ref, ':')
	if i < 0 {
		return "", 0, false
	}
	seq, err := strconv.Atoi(ref[i+1:])
	if err != nil || seq < 0 || seq > records.MaxSeq || !records.ValidConversationID(ref[:i]) || records.ChunkID(ref[:i], seq) != ref {
		return "", 0, false
	}
	return ref[:i], seq, true
}

func (s *sweep) tombstoned(ctx context.Context, user string) (bool, error) {
	if gone, ok := s.erased[user]; ok {
		return gone, nil
	}
	gone, err := records.Tombstoned(ctx, s.w.Docs, user)
	if err != nil {
		return false, fmt.Errorf("records.Tombstoned: %w", err)
	}
	s.erased[user] = gone
	return gone, nil
}

// audio deletes each chunk's sealed audio, then marks the chunk record
// (BlobKey cleared, audio_deleted_at set) so reads and re-drives know it is
// gone on purpose. With no record (an intake that stopped before writing
// it), every object of that seq goes. It returns its counts.
func (s *sweep) audio(ctx context.Context, its []item) (map[string]int, error) {
	counts := map[string]int{}
	if len(its) == 0 {
		return counts, nil
	}
	type job struct {
		it      item
		keys    []string
		marked  bool // the record exists and names audio
		deleted int
	}
	jobs := make([]*job, len(its))
	for i, it := range its {
		j := &job{it: it}
		jobs[i] = j
		d, err := s.w.Docs.Get(ctx, records.ChunkKey(it.user, it.cid, it.seq))
		switch {
		case err == nil:
			c, err := records.ChunkFrom(d)
			if err != nil {
				return counts, fmt.Errorf("records.ChunkFrom: %w", err)
			}
			if c.BlobKey != "" {
				j.keys, j.marked = []string{c.BlobKey}, true
			}
		case errors.Is(err, docs.ErrNotFound):
			listed, err := s.w.Blobs.List(ctx, fmt.Sprintf("%s%s/%07d-", records.AudioPrefix(it.user), it.cid, it.seq))
			if err != nil {
				return counts, fmt.Errorf("blobs.List audio: %w", err)
			}
			for _, a := range listed {
				j.keys = append(j.keys, a.Key)
			}
		default:
			return counts, fmt.Errorf("docs.Get chunk: %w", err)
		}
	}
	if s.o.DryRun {
		for _, j := range jobs {
			counts[CountAudioBlobs] += len(j.keys)
			if j.marked {
				counts[CountAudioRecords]++
			}
		}
		return counts, nil
	}
	err := forEach(ctx, jobs, blobConcurrency, func(ctx context.Context, j *job) error {
		for _, k := range j.keys {
			switch err := s.w.Blobs.Delete(ctx, k); {
			case err == nil:
				j.deleted++
			case !errors.Is(err, blobs.ErrNotFound):
				return fmt.Errorf("blobs.Delete audio: %w", err)
			}
		}
		return nil
	})
	for _, j := range jobs {
		counts[CountAudioBlobs] += j.deleted
	}
	if err != nil {
		return counts, err
	}
	for _, j := range jobs {
		if !j.marked {
			continue
		}
		ok, err := s.markAudioDeleted(ctx, j.it)
		if err != nil {
			return counts, err
		}
		if ok {
			counts[CountAudioRecords]++
		}
	}
	return counts, nil
}

// markAudioDeleted clears the chunk's BlobKey; ok is false if there was
// nothing to mark (gone, or marked by an earlier sweep).
func (s *sweep) markAudioDeleted(ctx context.Context, it item) (ok bool, err error) {
	now := s.w.now().UTC()
	err = s.w.Docs.Update(ctx, records.ChunkKey(it.user, it.cid, it.seq), func(cur *docs.Doc) (*docs.Doc, error) {
		ok = false
		if cur == nil {
			return nil, nil
		}
		c, err := records.ChunkFrom(*cur)
		if err != nil {
			return nil, err
		}
		if c.BlobKey == "" {
			return cur, nil
		}
		c.BlobKey, c.AudioDeletedAt, c.UpdatedAt = "", now, now
		d, err := c.Doc(it.user)
		ok = err == nil
		return &d, err
	})
	if err != nil {
		return false, fmt.Errorf("docs.Update chunk: %w", err)
	}
	return ok, nil
}

// vectors deletes the page's vectors with one call per user (namespace),
// a few users at once.
func (s *sweep) vectors(ctx context.Context, its []item) (map[string]int, error) {
	byUser := map[string][]string{}
	for _, it := range its {
		byUser[it.user] = append(byUser[it.user], records.VectorID(it.cid, it.seq))
	}
	users := slices.Sorted(maps.Keys(byUser))
	var mu sync.Mutex
	n := 0
	err := forEach(ctx, users, vectorConcurrency, func(ctx context.Context, user string) error {
		ids := byUser[user]
		if !s.o.DryRun {
			if err := s.w.Vectors.Delete(ctx, user, ids); err != nil {
				return fmt.Errorf("vectors.Delete: %w", err)
			}
		}
		mu.Lock()
		n += len(ids)
		mu.Unlock()
		return nil
	})
	return map[string]int{CountVectorVectors: n}, err
}

// exportPrefix is where an export's objects live (the archive is
// "<prefix>.zip.sealed"); only keys continuing with "." or "/" are the
// export's own, so export "ab" never takes "abc".
func exportPrefix(user, id string) string { return "users/" + user + "/exports/" + id }

func (s *sweep) exportBlobs(ctx context.Context, its []item) error {
	for _, it := range its {
		p := exportPrefix(it.user, it.e.Ref)
		listed, err := s.w.Blobs.List(ctx, p)
		if err != nil {
			return fmt.Errorf("blobs.List export: %w", err)
		}
		for _, a := range listed {
			rest := strings.TrimPrefix(a.Key, p)
			if rest == "" || (rest[0] != '.' && rest[0] != '/') {
				continue
			}
			if s.o.DryRun {
				s.add(CountExportBlobs, 1)
				continue
			}
			switch err := s.w.Blobs.Delete(ctx, a.Key); {
			case err == nil:
				s.add(CountExportBlobs, 1)
			case !errors.Is(err, blobs.ErrNotFound):
				return fmt.Errorf("blobs.Delete export: %w", err)
			}
		}
	}
	return nil
}

// deleteDocs deletes keys in one write and counts those that existed; a
// dry run counts those that exist.
func (s *sweep) deleteDocs(ctx context.Context, keys []docs.Key) (int, error) {
	if len(keys) == 0 {
		return 0, nil
	}
	if !s.o.DryRun {
		n, err := s.w.Docs.DeleteMany(ctx, keys)
		if err != nil {
			return n, fmt.Errorf("docs.DeleteMany: %w", err)
		}
		return n, nil
	}
	n := 0
	for _, k := range keys {
		_, err := s.w.Docs.Get(ctx, k)
		switch {
		case err == nil:
			n++
		case !errors.Is(err, docs.ErrNotFound):
			return n, fmt.Errorf("docs.Get %s: %w", k.Collection, err)
		}
	}
	return n, nil
}

// forEach runs fn on every job, at most limit at once, and returns the
// first error (the others still finish).
func forEach[T any](ctx context.Context, jobs []T, limit int, fn func(context.Context, T) error) error {
	sem := make(chan struct{}, limit)
	var wg sync.WaitGroup
	var mu sync.Mutex
	var first error
	for _, j := range jobs {
		sem <- struct{}{}
		wg.Go(func() {
			defer func() { <-sem }()
			if err := fn(ctx, j); err != nil {
				mu.Lock()
				if first == nil {
					first = err
				}
				mu.Unlock()
			}
		})
	}
	wg.Wait()
	return first
}

func (w *Worker) now() time.Time {
	if w.Now == nil {
		return time.Now()
	}
	return w.Now()
}

func (w *Worker) logger() *slog.Logger {
	if w.Logger == nil {
		return slog.New(slog.DiscardHandler)
	}
	return w.Logger
}
