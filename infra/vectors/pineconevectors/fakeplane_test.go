package pineconevectors

import (
	"cmp"
	"context"
	"encoding/base64"
	"encoding/binary"
	"encoding/json"
	"fmt"
	"hash/fnv"
	"maps"
	"math"
	"slices"
	"strings"
	"sync"
	"unicode/utf8"

	"github.com/lethe-dev/lethe/infra/vectors"
	"google.golang.org/protobuf/encoding/protowire"
)

// FakeDataPlane is an in-memory DataPlane that behaves like a serverless
// Pinecone cosine index as documented: it refuses requests over the
// limits in dataplane.go (so an adapter that batches wrongly fails), the
// empty and default namespaces, zero and non-finite vectors, null or
// nested metadata, unknown filter operators and foreign pagination
// tokens; it answers NotFound for deletes in and descriptions of absent
// namespaces; a namespace ceases to exist with its last record. It is
// exact (ties broken by id) and immediately consistent unless
// SetConsistency makes it behave as Pinecone does: eventually consistent
// and approximate. Safe for concurrent use.
type FakeDataPlane struct {
	dim int

	mu sync.RWMutex
	// spaces is the latest state: writes apply to it at once and are
	// validated against it (dimensions, absent namespaces). visible is
	// what reads see: the same map when consistent; otherwise each write
	// reaches it once lag more reads have been served.
	spaces  map[string]*fakeSpace
	visible map[string]*fakeSpace
	lag     uint64
	reads   uint64
	pending []pendingWrite
	approx  bool
	log     []FakeRequest
}

type pendingWrite struct {
	due   uint64
	apply func(map[string]*fakeSpace)
}

// Approximation of SetConsistency(_, true): scores are off by up to
// approxScoreError, and in namespaces larger than approxMissFrom records
// about one candidate in approxMissOneIn is missed, as by an ANN index.
const (
	approxScoreError = 1e-3
	approxMissFrom   = 100
	approxMissOneIn  = 50
)

// SetConsistency makes writes (upserts and deletes) visible to queries,
// lists and counts only after lag further reads, and, with approximate,
// queries rank approximately (see approxScoreError). Call before use.
func (f *FakeDataPlane) SetConsistency(lag int, approximate bool) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.lag, f.approx = uint64(max(lag, 0)), approximate
	if f.lag > 0 {
		f.visible = cloneSpaces(f.spaces)
	}
}

func cloneSpaces(m map[string]*fakeSpace) map[string]*fakeSpace {
	out := make(map[string]*fakeSpace, len(m))
	for ns, s := range m {
		out[ns] = &fakeSpace{dim: s.dim, recs: maps.Clone(s.recs)}
	}
	return out
}

// write applies a mutation to the latest state now and to the visible
// one now or, when eventually consistent, after lag reads. Records are
// never mutated in place, so both states may share them.
func (f *FakeDataPlane) write(apply func(map[string]*fakeSpace)) {
	apply(f.spaces)
	if f.lag > 0 {
		f.pending = append(f.pending, pendingWrite{due: f.reads + f.lag, apply: apply})
	}
}

// read serves one read: writes that are due become visible.
func (f *FakeDataPlane) read() map[string]*fakeSpace {
	if f.lag == 0 {
		return f.spaces
	}
	f.reads++
	n := 0
	for _, p := range f.pending {
		if p.due > f.reads {
			break
		}
		p.apply(f.visible)
		n++
	}
	f.pending = f.pending[n:]
	return f.visible
}

// approximate returns the score an ANN index might report for id, and
// whether it misses id altogether: fixed for one (id, query), so a query
// repeated answers the same.
func approximate(id string, query []float32, score float64, size int) (float64, bool) {
	h := fnv.New64a()
	h.Write([]byte(id))
	for _, x := range query {
		binary.Write(h, binary.LittleEndian, x)
	}
	v := h.Sum64()
	miss := size > approxMissFrom && v%approxMissOneIn == 0
	frac := float64(v>>11)/float64(1<<53)*2 - 1 // [-1, 1)
	return score + frac*approxScoreError, miss
}

// FakeRequest records one call, accepted or refused, for tests.
type FakeRequest struct {
	Op        string // "upsert", "query", "list", "delete", "deleteNamespace", "count"
	Namespace string
	Items     int // vectors upserted, ids deleted, ids listed, matches returned
	Bytes     int // upsert request size: the larger of its JSON and protobuf forms
	Refused   bool
}

type fakeSpace struct {
	dim  int
	recs map[string]*fakeRecord
}

type fakeRecord struct {
	values []float32
	norm   float64
	meta   map[string]any
}

var _ DataPlane = (*FakeDataPlane)(nil)

// NewFakeDataPlane returns an empty fake index. dim > 0 is the index's
// dimension, as in Pinecone. dim == 0 lets each namespace take the
// dimension of its first upsert: Pinecone has no such mode, but the port's
// conformance suite uses several dimensions in one index.
func NewFakeDataPlane(dim int) *FakeDataPlane {
	f := &FakeDataPlane{dim: dim, spaces: map[string]*fakeSpace{}}
	f.visible = f.spaces
	return f
}

// Requests returns a copy of the calls made so far.
func (f *FakeDataPlane) Requests() []FakeRequest {
	f.mu.RLock()
	defer f.mu.RUnlock()
	return slices.Clone(f.log)
}

// ResetRequests clears the request log.
func (f *FakeDataPlane) ResetRequests() {
	f.mu.Lock()
	f.log = nil
	f.mu.Unlock()
}

func (f *FakeDataPlane) record(r FakeRequest, err error) error {
	r.Refused = err != nil
	f.log = append(f.log, r)
	return err
}

func invalid(format string, a ...any) error {
	return fmt.Errorf("fake pinecone: %w: %s", vectors.ErrInvalid, fmt.Sprintf(format, a...))
}

func overLimit(format string, a ...any) error {
	return fmt.Errorf("fake pinecone: %w: %w: %s", vectors.ErrInvalid, ErrLimit, fmt.Sprintf(format, a...))
}

func notFound(ns string) error {
	return fmt.Errorf("fake pinecone: %w: %s", ErrNotFound, ns)
}

// checkNamespace: we never use Pinecone's default namespace, so the fake
// refuses it outright instead of mapping "" to "__default__".
func checkNamespace(ns string) error {
	if ns == "" || ns == vectors.DefaultNamespace {
		return invalid("empty or default namespace")
	}
	if !utf8.ValidString(ns) || len(ns) > 512 {
		return invalid("namespace name")
	}
	return nil
}

// dimFor is the dimension a vector in ns must have (0: any).
func (f *FakeDataPlane) dimFor(ns string) int {
	if f.dim > 0 {
		return f.dim
	}
	if s := f.spaces[ns]; s != nil {
		return s.dim
	}
	return 0
}

func fakeCheckVector(v []float32, want int) (float64, error) {
	if len(v) == 0 || len(v) > MaxDimension {
		return 0, invalid("vector length %d", len(v))
	}
	if want > 0 && len(v) != want {
		return 0, fmt.Errorf("fake pinecone: %w: vector dimension %d does not match the dimension of the index %d", vectors.ErrDimension, len(v), want)
	}
	var ss float64
	for _, x := range v {
		if math.IsNaN(float64(x)) || math.IsInf(float64(x), 0) {
			return 0, invalid("non-finite vector value")
		}
		ss += float64(x) * float64(x)
	}
	if ss == 0 {
		return 0, invalid("dense vectors must contain at least one non-zero value")
	}
	return math.Sqrt(ss), nil
}

// storeMetadata validates metadata as Pinecone does (string, number, bool,
// list of strings; no null, no nested objects; ≤ 40 KB) and returns a
// private copy with every number as float64.
func storeMetadata(md map[string]any) (map[string]any, error) {
	if len(md) == 0 {
		return nil, nil
	}
	out := make(map[string]any, len(md))
	for k, v := range md {
		if k == "" || strings.HasPrefix(k, "$") {
			return nil, invalid("metadata key")
		}
		switch x := v.(type) {
		case string, bool:
			out[k] = x
		case []string:
			out[k] = slices.Clone(x)
		case []any:
			l := make([]string, len(x))
			for i, e := range x {
				s, ok := e.(string)
				if !ok {
					return nil, invalid("metadata list of %T", e)
				}
				l[i] = s
			}
			out[k] = l
		default:
			n, ok := toNumber(v)
			if !ok {
				return nil, invalid("metadata value of type %T", v)
			}
			if math.IsNaN(n) || math.IsInf(n, 0) {
				return nil, invalid("non-finite metadata number")
			}
			out[k] = n
		}
	}
	size, err := metadataSize(out)
	if err != nil {
		return nil, invalid("metadata encoding")
	}
	if size > MaxMetadataBytes {
		return nil, overLimit("metadata size %d exceeds %d", size, MaxMetadataBytes)
	}
	return out, nil
}

func copyMetadata(md map[string]any) map[string]any {
	if md == nil {
		return nil
	}
	out := maps.Clone(md)
	for k, v := range out {
		if l, ok := v.([]string); ok {
			out[k] = slices.Clone(l)
		}
	}
	return out
}

// upsertRequestSize measures the request in both encodings, independently
// of the adapter's per-record estimate: the JSON body as the REST API
// carries it and the protobuf UpsertRequest as gRPC carries it.
func upsertRequestSize(ns string, vecs []Vector) (int, error) {
	body := struct {
		Vectors   []wireVector `json:"vectors"`
		Namespace string       `json:"namespace"`
	}{Namespace: ns}
	// UpsertRequest: vectors = 1 (repeated message), namespace = 2.
	pb := protowire.SizeTag(2) + protowire.SizeBytes(len(ns))
	for _, v := range vecs {
		body.Vectors = append(body.Vectors, wireVector(v))
		_, p, err := vectorSizes(v)
		if err != nil {
			return 0, err
		}
		pb += protowire.SizeTag(1) + protowire.SizeBytes(p)
	}
	j, err := json.Marshal(body)
	if err != nil {
		return 0, err
	}
	return max(len(j), pb), nil
}

// Upsert implements DataPlane.
func (f *FakeDataPlane) Upsert(ctx context.Context, ns string, vecs []Vector) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	req := FakeRequest{Op: "upsert", Namespace: ns, Items: len(vecs)}
	if err := checkNamespace(ns); err != nil {
		return f.record(req, err)
	}
	if len(vecs) == 0 {
		return f.record(req, invalid("no vectors"))
	}
	if len(vecs) > MaxUpsertRecords {
		return f.record(req, overLimit("%d vectors in one upsert, limit %d", len(vecs), MaxUpsertRecords))
	}
	size, err := upsertRequestSize(ns, vecs)
	if err != nil {
		return f.record(req, invalid("request encoding: %v", err))
	}
	req.Bytes = size
	if size > MaxUpsertBytes {
		return f.record(req, overLimit("upsert request of %d bytes, limit %d", size, MaxUpsertBytes))
	}
	want := f.dimFor(ns)
	if want == 0 {
		want = len(vecs[0].Values)
	}
	staged := make(map[string]*fakeRecord, len(vecs))
	order := make([]string, 0, len(vecs))
	for _, v := range vecs {
		if v.ID == "" || len(v.ID) > MaxIDBytes || !utf8.ValidString(v.ID) {
			return f.record(req, invalid("record id"))
		}
		norm, err := fakeCheckVector(v.Values, want)
		if err != nil {
			return f.record(req, err)
		}
		md, err := storeMetadata(v.Metadata)
		if err != nil {
			return f.record(req, err)
		}
		if _, dup := staged[v.ID]; !dup {
			order = append(order, v.ID)
		}
		staged[v.ID] = &fakeRecord{values: slices.Clone(v.Values), norm: norm, meta: md}
	}
	f.write(func(spaces map[string]*fakeSpace) {
		s := spaces[ns]
		if s == nil {
			s = &fakeSpace{dim: want, recs: map[string]*fakeRecord{}}
			spaces[ns] = s
		}
		for _, id := range order {
			s.recs[id] = staged[id]
		}
	})
	return f.record(req, nil)
}

// Query implements DataPlane. An absent namespace has no matches.
func (f *FakeDataPlane) Query(ctx context.Context, ns string, values []float32, topK int, filter map[string]any) ([]ScoredVector, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	f.mu.Lock() // exclusive: the request log is appended
	defer f.mu.Unlock()
	req := FakeRequest{Op: "query", Namespace: ns}
	if err := checkNamespace(ns); err != nil {
		return nil, f.record(req, err)
	}
	if topK < 1 || topK > MaxTopK {
		return nil, f.record(req, overLimit("top_k %d, limit %d", topK, MaxTopK))
	}
	qnorm, err := fakeCheckVector(values, f.dimFor(ns))
	if err != nil {
		return nil, f.record(req, err)
	}
	pred, err := compileFakeFilter(filter)
	if err != nil {
		return nil, f.record(req, err)
	}
	s := f.read()[ns]
	if s == nil {
		return nil, f.record(req, nil)
	}
	type hit struct {
		id    string
		score float64
		rec   *fakeRecord
	}
	var hits []hit
	for id, r := range s.recs {
		if !pred(r.meta) {
			continue
		}
		var dot float64
		for i, x := range r.values {
			dot += float64(x) * float64(values[i])
		}
		score := dot / (r.norm * qnorm)
		if f.approx {
			var miss bool
			if score, miss = approximate(id, values, score, len(s.recs)); miss {
				continue
			}
		}
		hits = append(hits, hit{id, score, r})
	}
	slices.SortFunc(hits, func(a, b hit) int {
		if c := cmp.Compare(b.score, a.score); c != 0 {
			return c
		}
		return strings.Compare(a.id, b.id)
	})
	hits = hits[:min(len(hits), topK)]
	out := make([]ScoredVector, len(hits))
	size := 0
	for i, h := range hits {
		out[i] = ScoredVector{ID: h.id, Score: float32(h.score), Metadata: copyMetadata(h.rec.meta)}
		m, _ := metadataSize(h.rec.meta)
		size += len(h.id) + m + 32
	}
	if size > MaxResultBytes {
		return nil, f.record(req, overLimit("result of %d bytes, limit %d", size, MaxResultBytes))
	}
	req.Items = len(out)
	return out, f.record(req, nil)
}

// listToken is the pagination token's content. Like Pinecone's, it is
// base64 JSON naming the last id returned and the prefix it belongs to.
type listToken struct {
	SkipPast string `json:"skip_past"`
	Prefix   string `json:"prefix"`
}

func decodeListToken(tok, prefix string) (string, error) {
	raw, err := base64.StdEncoding.DecodeString(tok)
	if err != nil {
		return "", invalid("pagination token")
	}
	var t listToken
	dec := json.NewDecoder(strings.NewReader(string(raw)))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&t); err != nil || t.SkipPast == "" {
		return "", invalid("pagination token")
	}
	if t.Prefix != prefix {
		return "", invalid("pagination token is for another prefix")
	}
	return t.SkipPast, nil
}

// List implements DataPlane: ids in lexicographic order, limit per page
// (default and maximum MaxListLimit), a token while more remain.
func (f *FakeDataPlane) List(ctx context.Context, ns, prefix string, limit int, token string) ([]string, string, error) {
	if err := ctx.Err(); err != nil {
		return nil, "", err
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	req := FakeRequest{Op: "list", Namespace: ns}
	if err := checkNamespace(ns); err != nil {
		return nil, "", f.record(req, err)
	}
	if limit == 0 {
		limit = MaxListLimit
	}
	if limit < 0 || limit > MaxListLimit {
		return nil, "", f.record(req, overLimit("list limit %d, maximum %d", limit, MaxListLimit))
	}
	after := ""
	if token != "" {
		var err error
		if after, err = decodeListToken(token, prefix); err != nil {
			return nil, "", f.record(req, err)
		}
	}
	s := f.read()[ns]
	if s == nil {
		return nil, "", f.record(req, nil)
	}
	var all []string
	for id := range s.recs {
		if strings.HasPrefix(id, prefix) && id > after {
			all = append(all, id)
		}
	}
	slices.Sort(all)
	page := all[:min(len(all), limit)]
	next := ""
	if len(all) > len(page) {
		b, _ := json.Marshal(listToken{SkipPast: page[len(page)-1], Prefix: prefix})
		next = base64.StdEncoding.EncodeToString(b)
	}
	req.Items = len(page)
	return slices.Clone(page), next, f.record(req, nil)
}

// DeleteIDs implements DataPlane.
func (f *FakeDataPlane) DeleteIDs(ctx context.Context, ns string, ids []string) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	req := FakeRequest{Op: "delete", Namespace: ns, Items: len(ids)}
	if err := checkNamespace(ns); err != nil {
		return f.record(req, err)
	}
	if len(ids) == 0 {
		return f.record(req, invalid("no ids"))
	}
	if len(ids) > MaxDeleteIDs {
		return f.record(req, overLimit("%d ids in one delete, limit %d", len(ids), MaxDeleteIDs))
	}
	if f.spaces[ns] == nil {
		return f.record(req, notFound(ns))
	}
	ids = slices.Clone(ids)
	f.write(func(spaces map[string]*fakeSpace) {
		s := spaces[ns]
		if s == nil {
			return
		}
		for _, id := range ids {
			delete(s.recs, id)
		}
		if len(s.recs) == 0 {
			delete(spaces, ns)
		}
	})
	return f.record(req, nil)
}

// DeleteNamespace implements DataPlane.
func (f *FakeDataPlane) DeleteNamespace(ctx context.Context, ns string) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	req := FakeRequest{Op: "deleteNamespace", Namespace: ns}
	if err := checkNamespace(ns); err != nil {
		return f.record(req, err)
	}
	s := f.spaces[ns]
	if s == nil {
		return f.record(req, notFound(ns))
	}
	req.Items = len(s.recs)
	f.write(func(spaces map[string]*fakeSpace) { delete(spaces, ns) })
	return f.record(req, nil)
}

// NamespaceCount implements DataPlane (Pinecone's DescribeNamespace).
func (f *FakeDataPlane) NamespaceCount(ctx context.Context, ns string) (int, error) {
	if err := ctx.Err(); err != nil {
		return 0, err
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	req := FakeRequest{Op: "count", Namespace: ns}
	if err := checkNamespace(ns); err != nil {
		return 0, f.record(req, err)
	}
	s := f.read()[ns]
	if s == nil {
		return 0, f.record(req, notFound(ns))
	}
	req.Items = len(s.recs)
	return len(s.recs), f.record(req, nil)
}

// toNumber accepts the numeric types a filter or metadata map may carry
// (JSON and structpb give float64; Go callers may pass ints).
func toNumber(v any) (float64, bool) {
	switch x := v.(type) {
	case float64:
		return x, true
	case float32:
		return float64(x), true
	case int:
		return float64(x), true
	case int64:
		return float64(x), true
	case int32:
		return float64(x), true
	}
	return 0, false
}

type predicate func(md map[string]any) bool

// compileFakeFilter parses Pinecone's filter language: a map whose keys
// are "$and"/"$or" (a non-empty list of filters) or field names, each
// field mapped to a scalar (implicit $eq) or to operators $eq, $ne (string,
// number, bool), $gt, $gte, $lt, $lte (number), $in, $nin (non-empty list
// of strings or numbers), $exists (bool). All entries must hold. As in
// Pinecone, $ne and $nin match records without the field.
func compileFakeFilter(filter map[string]any) (predicate, error) {
	return compileFilterDepth(filter, 0)
}

const maxFilterDepth = 10

func compileFilterDepth(filter map[string]any, depth int) (predicate, error) {
	if depth > maxFilterDepth {
		return nil, invalid("filter nested too deeply")
	}
	var preds []predicate
	for _, k := range slices.Sorted(maps.Keys(filter)) {
		v := filter[k]
		switch {
		case k == "$and" || k == "$or":
			list, ok := v.([]any)
			if !ok || len(list) == 0 {
				return nil, invalid("%s needs a non-empty list", k)
			}
			var subs []predicate
			for _, e := range list {
				m, ok := e.(map[string]any)
				if !ok {
					return nil, invalid("%s element is not a filter", k)
				}
				p, err := compileFilterDepth(m, depth+1)
				if err != nil {
					return nil, err
				}
				subs = append(subs, p)
			}
			or := k == "$or"
			preds = append(preds, func(md map[string]any) bool {
				for _, p := range subs {
					if p(md) == or {
						return or
					}
				}
				return !or
			})
		case k == "" || strings.HasPrefix(k, "$"):
			return nil, invalid("filter key %q", k)
		default:
			p, err := compileField(k, v)
			if err != nil {
				return nil, err
			}
			preds = append(preds, p)
		}
	}
	return func(md map[string]any) bool {
		for _, p := range preds {
			if !p(md) {
				return false
			}
		}
		return true
	}, nil
}

func compileField(field string, v any) (predicate, error) {
	ops, ok := v.(map[string]any)
	if !ok {
		ops = map[string]any{"$eq": v}
	}
	if len(ops) == 0 {
		return nil, invalid("empty condition on a field")
	}
	var preds []predicate
	for _, op := range slices.Sorted(maps.Keys(ops)) {
		p, err := compileOp(field, op, ops[op])
		if err != nil {
			return nil, err
		}
		preds = append(preds, p)
	}
	return func(md map[string]any) bool {
		for _, p := range preds {
			if !p(md) {
				return false
			}
		}
		return true
	}, nil
}

// scalar normalises a filter operand: string, bool or float64.
func scalar(v any) (any, bool) {
	switch x := v.(type) {
	case string, bool:
		return x, true
	}
	if n, ok := toNumber(v); ok && !math.IsNaN(n) && !math.IsInf(n, 0) {
		return n, true
	}
	return nil, false
}

// matchesAny reports whether the stored value equals want, or for a list
// field, whether any element does.
func matchesAny(stored, want any) bool {
	if l, ok := stored.([]string); ok {
		s, isStr := want.(string)
		return isStr && slices.Contains(l, s)
	}
	return stored == want
}

func compileOp(field, op string, arg any) (predicate, error) {
	switch op {
	case "$eq", "$ne":
		want, ok := scalar(arg)
		if !ok {
			return nil, invalid("%s needs a string, number or boolean", op)
		}
		eq := op == "$eq"
		return func(md map[string]any) bool {
			v, has := md[field]
			return (has && matchesAny(v, want)) == eq
		}, nil
	case "$gt", "$gte", "$lt", "$lte":
		bound, ok := toNumber(arg)
		if !ok || math.IsNaN(bound) || math.IsInf(bound, 0) {
			return nil, invalid("%s needs a number", op)
		}
		return func(md map[string]any) bool {
			x, ok := md[field].(float64)
			if !ok {
				return false
			}
			switch op {
			case "$gt":
				return x > bound
			case "$gte":
				return x >= bound
			case "$lt":
				return x < bound
			}
			return x <= bound
		}, nil
	case "$in", "$nin":
		list, ok := arg.([]any)
		if !ok || len(list) == 0 || len(list) > 10_000 {
			return nil, invalid("%s needs a non-empty list", op)
		}
		wants := make([]any, len(list))
		for i, e := range list {
			s, ok := scalar(e)
			if _, isBool := s.(bool); !ok || isBool {
				return nil, invalid("%s list holds strings or numbers", op)
			}
			wants[i] = s
		}
		in := op == "$in"
		return func(md map[string]any) bool {
			v, has := md[field]
			found := false
			for _, w := range wants {
				found = found || (has && matchesAny(v, w))
			}
			return found == in
		}, nil
	case "$exists":
		b, ok := arg.(bool)
		if !ok {
			return nil, invalid("$exists needs a boolean")
		}
		return func(md map[string]any) bool {
			_, has := md[field]
			return has == b
		}, nil
	}
	return nil, invalid("unknown filter operator %q", op)
}

// metadataSize is the JSON size of a record's metadata, which is what the
// 40 KB limit is checked against here.
func metadataSize(md map[string]any) (int, error) {
	if len(md) == 0 {
		return 0, nil
	}
	b, err := json.Marshal(md)
	return len(b), err
}
