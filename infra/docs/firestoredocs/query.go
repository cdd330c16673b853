package firestoredocs

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"

	"cloud.google.com/go/firestore"
	"cloud.google.com/go/firestore/apiv1/firestorepb"
	"google.golang.org/api/iterator"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/lethe-dev/lethe/infra/docs"
)

// deletePage is how many documents DeleteUser lists and deletes at a time:
// Firestore's own batch size, and small enough to hold in memory.
const deletePage = 500

// plan is a docs.Query as Firestore runs it.
type plan struct {
	fq firestore.Query
	// sort: Firestore cannot serve the order (see buildQuery), so every
	// match is read, then sorted and limited here. forceSort sets it in
	// tests, which compare both ways.
	sort  bool
	q     docs.Query
	after *docs.Position
	limit int
}

// buildQuery turns q into a Firestore query. Firestore's semantics are the
// port's: a document lacking a filtered or ordered field is not returned, a
// filter matches only values of its own type (integers and strings never
// compare), integers order before strings, strings by their UTF-8 bytes.
// Ties are broken by the document name in the direction of the order: by
// id within one collection and, for collection groups, by user then id
// (users/{user}/{coll}/{id}); global documents ({coll}/{id}) sort before
// the users' when coll < "users" and after them otherwise.
//
// Two orders cannot be asked of Firestore directly: by key descending
// with no OrderBy (the emulator refuses descending key scans), and any
// order when a range filter is on a field other than OrderBy (Firestore
// then orders by that field before the key). Those queries read every match
// and sort in memory, with the same order; they are fine for a user's
// collection but should not be used for sweeps over all users.
//
// q was validated by docs.Store (filter values normalised); after, when
// not nil, keeps the documents strictly after it in the order.
func (s *Driver) buildQuery(q docs.Query, after *docs.Position, forceSort bool) (plan, error) {
	var p plan
	var fq firestore.Query
	if q.AllUsers {
		fq = s.c.CollectionGroup(q.Collection).Query
	} else {
		fq = s.coll(q.User, q.Collection).Query
	}
	otherRange := false // a range filter on a field other than OrderBy
	for _, f := range q.Filters {
		if f.Op != docs.Eq {
			otherRange = otherRange || f.Field != q.OrderBy
		}
		// docs.Op values are Firestore's operator strings.
		fq = fq.WherePath(firestore.FieldPath{fFields, f.Field}, string(f.Op), f.Value)
	}
	dir := firestore.Asc
	if q.Desc {
		dir = firestore.Desc
	}
	p = plan{q: q, after: after, limit: q.Limit, sort: forceSort || otherRange || (q.OrderBy == "" && q.Desc)}
	if q.OrderBy != "" {
		// Also when sorting here: the server then drops documents
		// lacking the field.
		fq = fq.OrderByPath(firestore.FieldPath{fFields, q.OrderBy}, dir)
	}
	if !p.sort {
		// Explicit, so ties follow the key in the query's direction (the
		// implicit tie-break is ascending).
		fq = fq.OrderBy(firestore.DocumentID, dir)
		if after != nil {
			ref := s.ref(docs.Key{User: after.User, Collection: q.Collection, ID: after.ID})
			if q.OrderBy != "" {
				fq = fq.StartAfter(after.Value, ref)
			} else {
				fq = fq.StartAfter(ref)
			}
		}
		if q.Limit > 0 {
			fq = fq.Limit(q.Limit)
		}
	}
	p.fq = fq
	return p, nil
}

// Query returns the documents of q.Collection matching every filter.
func (s *Driver) Query(ctx context.Context, q docs.Query, after *docs.Position) ([]docs.Doc, error) {
	p, err := s.buildQuery(q, after, false)
	if err != nil {
		return nil, err
	}
	ctx, cancel := s.bound(ctx)
	defer cancel()
	return s.run(ctx, p)
}

// run runs p: in Firestore, then, when p.sort, here.
func (s *Driver) run(ctx context.Context, p plan) ([]docs.Doc, error) {
	q := p.q
	it := p.fq.Documents(ctx)
	defer it.Stop()
	var out []docs.Doc
	for {
		snap, err := it.Next()
		if errors.Is(err, iterator.Done) {
			break
		}
		if err != nil {
			return nil, wrap("firestore.Query.Documents", err)
		}
		key, ok := keyFromRef(snap.Ref)
		if !ok {
			// Only a collection group can reach outside the layout: some
			// other writer's collection of the same name.
			return nil, fmt.Errorf("firestoredocs: %s: a document outside users/{user}/%[1]s and %[1]s", q.Collection)
		}
		d, err := decode(key, snap)
		if err != nil {
			return nil, err
		}
		out = append(out, d)
	}
	if p.sort {
		slices.SortFunc(out, func(a, b docs.Doc) int {
			return compareDocs(q, a.Fields[q.OrderBy], a.Key, b.Fields[q.OrderBy], b.Key)
		})
		if p.after != nil {
			k := docs.Key{User: p.after.User, Collection: q.Collection, ID: p.after.ID}
			i := 0
			for i < len(out) && compareDocs(q, out[i].Fields[q.OrderBy], out[i].Key, p.after.Value, k) <= 0 {
				i++
			}
			out = out[i:]
		}
		if p.limit > 0 && len(out) > p.limit {
			out = out[:p.limit]
		}
	}
	return out, nil
}

// compareDocs orders two documents (their OrderBy value and key) as q
// asks Firestore to.
func compareDocs(q docs.Query, av any, ak docs.Key, bv any, bk docs.Key) int {
	c := 0
	if q.OrderBy != "" {
		c = compareValues(av, bv)
	}
	if c == 0 {
		c = slices.Compare(namePath(ak), namePath(bk))
	}
	if q.Desc {
		c = -c
	}
	return c
}

// compareValues orders indexed values as Firestore does: integers before
// strings, integers by value, strings by their bytes.
func compareValues(a, b any) int {
	switch x := a.(type) {
	case int64:
		if y, ok := b.(int64); ok {
			return cmp.Compare(x, y)
		}
		return -1
	case string:
		if y, ok := b.(string); ok {
			return strings.Compare(x, y)
		}
		return 1
	}
	return 0
}

// namePath is the document name of key as segments, which Firestore
// compares one by one.
func namePath(k docs.Key) []string {
	if k.User == "" {
		return []string{k.Collection, k.ID}
	}
	return []string{docs.UsersCollection, k.User, k.Collection, k.ID}
}

// userCollections lists the collections under users/{user}.
func (s *Driver) userCollections(ctx context.Context, user string) ([]*firestore.CollectionRef, error) {
	ctx, cancel := s.bound(ctx)
	defer cancel()
	colls, err := s.userDoc(user).Collections(ctx).GetAll()
	if err != nil {
		return nil, wrap("firestore.DocumentRef.Collections", err)
	}
	return colls, nil
}

// DeleteUser deletes every document under users/{user} with a BulkWriter,
// a page of names at a time, and returns how many it deleted. Each delete
// requires the document to exist, so one removed meanwhile by someone else
// is not counted. A page is listed again from the start until none is
// left, so documents written during the sweep go too.
func (s *Driver) DeleteUser(ctx context.Context, user string) (int, error) {
	colls, err := s.userCollections(ctx, user)
	if err != nil {
		return 0, err
	}
	n := 0
	for _, coll := range colls {
		for {
			pctx, cancel := s.bound(ctx)
			page, err := coll.Query.Select().OrderBy(firestore.DocumentID, firestore.Asc).
				Limit(deletePage).Documents(pctx).GetAll()
			cancel()
			if err != nil {
				return n, wrap("firestore.Query.Documents", err)
			}
			if len(page) == 0 {
				break
			}
			// One BulkWriter per page: it refuses a second write to a path
			// for its whole life, and a document recreated meanwhile is
			// listed again.
			refs := make([]*firestore.DocumentRef, 0, len(page))
			for _, snap := range page {
				refs = append(refs, snap.Ref)
			}
			d, err := s.bulkDelete(ctx, refs)
			n += d
			if err != nil {
				return n, err
			}
		}
	}
	// Never written by this adapter, but a stray parent would keep the
	// user's id listed in the console.
	dctx, cancel := s.bound(ctx)
	defer cancel()
	if _, err := s.userDoc(user).Delete(dctx); err != nil {
		return n, wrap("firestore.DocumentRef.Delete", err)
	}
	return n, nil
}

// DeleteMany deletes keys with a BulkWriter, at most docs.MaxBatch writes
// per writer, and counts those that existed (each delete requires the
// document to exist; NotFound means gone already, which is not an error).
// Duplicate keys are deleted once: a BulkWriter refuses a second write to a
// path.
func (s *Driver) DeleteMany(ctx context.Context, keys []docs.Key) (int, error) {
	seen := make(map[docs.Key]bool, len(keys))
	uniq := make([]docs.Key, 0, len(keys))
	for _, k := range keys {
		if !seen[k] {
			seen[k] = true
			uniq = append(uniq, k)
		}
	}
	n := 0
	for batch := range slices.Chunk(uniq, docs.MaxBatch) {
		refs := make([]*firestore.DocumentRef, 0, len(batch))
		for _, k := range batch {
			refs = append(refs, s.ref(k))
		}
		d, err := s.bulkDelete(ctx, refs)
		n += d
		if err != nil {
			return n, err
		}
	}
	return n, nil
}

// bulkDelete deletes refs with one BulkWriter and counts those that
// existed (each delete requires the document to exist; NotFound means gone
// already, which is idempotent and not counted).
func (s *Driver) bulkDelete(ctx context.Context, refs []*firestore.DocumentRef) (int, error) {
	ctx, cancel := s.bound(ctx)
	defer cancel()
	bw := s.c.BulkWriter(ctx)
	jobs := make([]*firestore.BulkWriterJob, 0, len(refs))
	for _, ref := range refs {
		job, err := bw.Delete(ref, firestore.Exists)
		if err != nil {
			bw.End()
			return 0, fmt.Errorf("firestore.BulkWriter.Delete: %w", err)
		}
		jobs = append(jobs, job)
	}
	bw.End() // sends what is queued and waits
	n := 0
	for _, job := range jobs {
		_, err := job.Results()
		switch status.Code(err) {
		case codes.OK:
			n++
		case codes.NotFound, codes.FailedPrecondition:
		default:
			return n, wrap("firestore.BulkWriter.Delete", err)
		}
	}
	return n, nil
}

// CountUser counts the documents under users/{user} with one count
// aggregation per collection (the server counts; nothing is read).
func (s *Driver) CountUser(ctx context.Context, user string) (int, error) {
	colls, err := s.userCollections(ctx, user)
	if err != nil {
		return 0, err
	}
	n := 0
	for _, coll := range colls {
		cctx, cancel := s.bound(ctx)
		res, err := coll.NewAggregationQuery().WithCount("n").Get(cctx)
		cancel()
		if err != nil {
			return 0, wrap("firestore.AggregationQuery.Get", err)
		}
		v, ok := res["n"].(*firestorepb.Value)
		if !ok {
			return 0, fmt.Errorf("firestoredocs: count result is %T", res["n"])
		}
		n += int(v.GetIntegerValue())
	}
	return n, nil
}
