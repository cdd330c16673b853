package functions

import (
	"errors"
	"fmt"
	"math"
	"net/http"
	"sort"
	"strconv"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/lethe-dev/lethe/app/records"
	"github.com/lethe-dev/lethe/infra/docs"
	"github.com/lethe-dev/lethe/infra/embed"
	"github.com/lethe-dev/lethe/infra/keys"
)

type conversationSummary struct {
	ID        string    `json:"id"`
	CreatedAt time.Time `json:"created_at"`
	UpdatedAt time.Time `json:"updated_at"`
}

const (
	maxListLimit = 100
	// maxConversationPage bounds the chunks (and their segments) one
	// GET /v1/conversations/{cid} answers.
	maxConversationPage = 100
)

// listConversations pages the caller's conversations, most recently
// updated first: ?limit= (1..100, default 50) and ?cursor= (a next_cursor).
func (s *Server) listConversations(w http.ResponseWriter, r *http.Request) {
	ctx := r.Context()
	user := callerFrom(ctx).user
	limit, pos, ok := s.pageParams(w, r, cursorConversations, 50, maxListLimit)
	if !ok {
		return
	}
	found, next, err := s.d.Docs.QueryPage(ctx, docs.Query{
		User: user, Collection: records.Conversations,
		OrderBy: records.FieldUpdatedAt, Desc: true, Limit: limit,
	}, pos)
	if errors.Is(err, docs.ErrInvalid) && pos != "" {
		// A sealed position the store no longer takes (a format change).
		writeError(w, http.StatusBadRequest, "invalid_cursor", "cursor must be a next_cursor this API returned for this list")
		return
	}
	if err != nil {
		s.unavailable(w, r, "docs.QueryPage conversations", err)
		return
	}
	out := struct {
		Conversations []conversationSummary `json:"conversations"`
		NextCursor    string                `json:"next_cursor"`
	}{Conversations: []conversationSummary{}}
	for _, d := range found {
		c, err := records.ConversationFrom(d)
		if err != nil {
			s.unavailable(w, r, "records.ConversationFrom", err)
			return
		}
		out.Conversations = append(out.Conversations, conversationSummary{c.ID, c.CreatedAt, c.UpdatedAt})
	}
	if out.NextCursor, err = s.sealCursor(ctx, user, cursorConversations, next); err != nil {
		s.keyError(w, r, "seal cursor", err)
		return
	}
	writeJSON(w, http.StatusOK, out)
}

type chunkView struct {
	Seq    int    `json:"seq"`
	Status string `json:"status"`
}

type segmentView struct {
	Seq        int    `json:"seq"`
	Text       string `json:"text"`
	Model      string `json:"model"`
	DurationMS int64  `json:"duration_ms"`
}

type conversationView struct {
	conversationSummary
	// Status is "processing" while any chunk of the conversation is not
	// final, else "done".
	Status string `json:"status"`
	// Chunks and Segments are one page, by seq; Transcript joins the
	// page's segments. NextCursor ("" on the last page) fetches the next.
	Chunks     []chunkView   `json:"chunks"`
	Segments   []segmentView `json:"segments"`
	Transcript string        `json:"transcript"`
	NextCursor string        `json:"next_cursor"`
}

// getConversation answers one page of a conversation: ?limit= chunks
// (1..100, default 100) from ?cursor=, with the segments of those chunks.
func (s *Server) getConversation(w http.ResponseWriter, r *http.Request) {
	ctx := r.Context()
	user := callerFrom(ctx).user
	cid := r.PathValue("cid")
	if !records.ValidConversationID(cid) {
		writeError(w, http.StatusBadRequest, "invalid_conversation_id", "conversation id must match [A-Za-z0-9_-]{1,64}")
		return
	}
	limit, pos, ok := s.pageParams(w, r, conversationCursorList(cid), maxConversationPage, maxConversationPage)
	if !ok {
		return
	}
	d, err := s.d.Docs.Get(ctx, records.ConversationKey(user, cid))
	if errors.Is(err, docs.ErrNotFound) {
		// Another user's conversation looks exactly like a missing one.
		writeError(w, http.StatusNotFound, "not_found", "no such conversation")
		return
	}
	if err != nil {
		s.unavailable(w, r, "docs.Get conversation", err)
		return
	}
	conv, err := records.ConversationFrom(d)
	if err != nil {
		s.unavailable(w, r, "records.ConversationFrom", err)
		return
	}
	view := conversationView{
		conversationSummary: conversationSummary{conv.ID, conv.CreatedAt, conv.UpdatedAt},
		Status:              "done", Chunks: []chunkView{}, Segments: []segmentView{},
	}
	byConv := docs.Filter{Field: records.FieldConversation, Op: docs.Eq, Value: cid}
	// Status without reading every chunk: is there one still in flight?
	for _, st := range []string{records.StatusReceived, records.StatusTranscribed} {
		busy, err := s.d.Docs.Query(ctx, docs.Query{User: user, Collection: records.Chunks, Limit: 1,
			Filters: []docs.Filter{byConv, {Field: records.FieldStatus, Op: docs.Eq, Value: st}}})
		if err != nil {
			s.unavailable(w, r, "docs.Query chunks by status", err)
			return
		}
		if len(busy) > 0 {
			view.Status = "processing"
		}
	}
	chunks, next, err := s.d.Docs.QueryPage(ctx, docs.Query{User: user, Collection: records.Chunks,
		Filters: []docs.Filter{byConv}, OrderBy: records.FieldSeq, Limit: limit}, pos)
	if errors.Is(err, docs.ErrInvalid) && pos != "" {
		writeError(w, http.StatusBadRequest, "invalid_cursor", "cursor must be a next_cursor this API returned for this list")
		return
	}
	if err != nil {
		s.unavailable(w, r, "docs.QueryPage chunks", err)
		return
	}
	for _, cd := range chunks {
		c, err := records.ChunkFrom(cd)
		if err != nil {
			s.unavailable(w, r, "records.ChunkFrom", err)
			return
		}
		view.Chunks = append(view.Chunks, chunkView{c.Seq, c.Status})
	}
	if len(view.Chunks) > 0 {
		// The segments of this page's chunks: a seq range, bounded.
		first, last := view.Chunks[0].Seq, view.Chunks[len(view.Chunks)-1].Seq
		if pos == "" {
			first = 0
		}
		if next == "" {
			last = math.MaxInt32
		}
		segs, err := s.d.Docs.Query(ctx, docs.Query{User: user, Collection: records.Segments, OrderBy: records.FieldSeq, Limit: limit,
			Filters: []docs.Filter{byConv, {Field: records.FieldSeq, Op: docs.Gte, Value: int64(first)}, {Field: records.FieldSeq, Op: docs.Lte, Value: int64(last)}}})
		if err != nil {
			s.unavailable(w, r, "docs.Query segments", err)
			return
		}
		var texts []string
		for _, sd := range segs {
			seg, err := records.SegmentFrom(sd)
			if err != nil {
				s.unavailable(w, r, "records.SegmentFrom", err)
				return
			}
			text, err := s.d.Keys.Open(ctx, user, seg.SealedText, keys.AD(user, records.Segments, sd.Key.ID, "text"))
			if err != nil {
				s.unavailable(w, r, "keys.Open segment", err)
				return
			}
			view.Segments = append(view.Segments, segmentView{seg.Seq, string(text), seg.Model, seg.DurationMS})
			if len(text) > 0 {
				texts = append(texts, string(text))
			}
		}
		view.Transcript = strings.Join(texts, " ")
	}
	if view.NextCursor, err = s.sealCursor(ctx, user, conversationCursorList(cid), next); err != nil {
		s.keyError(w, r, "seal cursor", err)
		return
	}
	writeJSON(w, http.StatusOK, view)
}

type searchHit struct {
	ConversationID string   `json:"conversation_id"`
	Score          float32  `json:"score"`
	Snippets       []string `json:"snippets"`
}

const (
	maxQueryChars      = 512
	snippetsPerHit     = 3
	candidatesPerHit   = 4
	maxSearchResults   = 50
	defaultSearchLimit = 10
	// maxSearchDepth bounds how far cursors page into one ranking.
	maxSearchDepth = 200
	maxSearchBody  = 8 << 10
)

// searchBody is POST /v1/search: the query travels in the body so that it
// never reaches load-balancer or request logs.
var searchBody = newBodySchema("search", "https://lethe.dev/schemas/api/search.json", fmt.Sprintf(`{
  "$schema": "https://json-schema.org/draft/2020-12/schema",
  "$id": "https://lethe.dev/schemas/api/search.json",
  "type": "object",
  "additionalProperties": false,
  "required": ["q"],
  "properties": {
    "q":      {"type": "string", "minLength": 1, "maxLength": %d},
    "k":      {"type": "integer", "minimum": 1, "maximum": %d},
    "cursor": {"type": "string", "maxLength": %d}
  }
}`, maxQueryChars, maxSearchResults, maxCursorChars), maxSearchBody, `the body must be one JSON object {"q": "...", "k": N, "cursor": "..."}`)

type searchRequest struct {
	Q      string `json:"q"`
	K      *int   `json:"k"`
	Cursor string `json:"cursor"`
}

// searchByURL answers the old GET /v1/search?q=: a query in a URL lands in
// request logs, so it is refused without being read.
func (s *Server) searchByURL(w http.ResponseWriter, r *http.Request) {
	w.Header().Set("Allow", http.MethodPost)
	writeError(w, http.StatusMethodNotAllowed, "method_not_allowed",
		`search is POST /v1/search with a JSON body {"q": "...", "k": N}: queries do not belong in URLs`)
}

// search ranks the caller's conversations by their best-matching segment.
// Only the caller's namespace is queried. A next_cursor pages further
// into the same ranking, up to maxSearchDepth conversations.
func (s *Server) search(w http.ResponseWriter, r *http.Request) {
	ctx := r.Context()
	user := callerFrom(ctx).user
	var req searchRequest
	if !s.readJSON(w, r, searchBody, &req) {
		return
	}
	q := strings.TrimSpace(req.Q)
	if q == "" || !utf8.ValidString(q) {
		writeError(w, http.StatusBadRequest, "invalid_query", "q must be 1 to 512 characters of text")
		return
	}
	k := defaultSearchLimit
	if req.K != nil {
		k = *req.K
	}
	offset := 0
	if req.Cursor != "" {
		pos, ok := s.cursorPosition(w, r, cursorSearch, req.Cursor)
		if !ok {
			return
		}
		n, err := strconv.Atoi(pos)
		if err != nil || n <= 0 || n >= maxSearchDepth {
			writeError(w, http.StatusBadRequest, "invalid_cursor", "cursor must be a next_cursor this API returned for this list")
			return
		}
		offset = n
	}
	k = min(k, maxSearchDepth-offset)
	out := struct {
		Embedder   string      `json:"embedder"`
		Results    []searchHit `json:"results"`
		NextCursor string      `json:"next_cursor"`
	}{Embedder: s.d.Embedder.ID(), Results: []searchHit{}}
	vs, ok, err := records.ReadVectorSpace(ctx, s.d.Docs, user)
	if err != nil {
		s.unavailable(w, r, "records.ReadVectorSpace", err)
		return
	}
	if !ok {
		writeJSON(w, http.StatusOK, out)
		return
	}
	if vs.Embedder != s.d.Embedder.ID() || vs.Dim != s.d.Embedder.Dim() {
		writeError(w, http.StatusConflict, "embedder_mismatch", "memories were indexed by another embedder; re-index before searching")
		return
	}
	vecs, err := s.d.Embedder.Embed(ctx, []string{q}, embed.Query)
	if err == nil && (len(vecs) != 1 || len(vecs[0]) != vs.Dim) {
		// A misbehaving embedder is a dependency failure, not a panic.
		err = fmt.Errorf("got %d vectors, want 1 of %d dims", len(vecs), vs.Dim)
	}
	if err != nil {
		s.unavailable(w, r, "embedder.Embed", err)
		return
	}
	// One more conversation than the page says whether another follows.
	want := offset + k + 1
	matches, err := s.d.Vectors.Query(ctx, user, vecs[0], want*candidatesPerHit, nil)
	if err != nil {
		s.unavailable(w, r, "vectors.Query", err)
		return
	}
	type ranked struct {
		hit  *searchHit
		seqs []int
	}
	byConv := map[string]*ranked{}
	var order []*ranked
	for _, m := range matches {
		cid, seqStr, ok := strings.Cut(m.ID, "#")
		seq, err := strconv.Atoi(seqStr)
		if !ok || err != nil || m.Score <= 0 {
			continue
		}
		h := byConv[cid]
		if h == nil {
			if len(order) == want {
				continue
			}
			h = &ranked{hit: &searchHit{ConversationID: cid, Score: m.Score, Snippets: []string{}}}
			byConv[cid] = h
			order = append(order, h)
		}
		if len(h.seqs) < snippetsPerHit {
			h.seqs = append(h.seqs, seq)
		}
	}
	sort.SliceStable(order, func(i, j int) bool { return order[i].hit.Score > order[j].hit.Score })
	more := len(order) > offset+k && offset+k < maxSearchDepth
	page := order[min(offset, len(order)):min(offset+k, len(order))]
	for _, h := range page {
		// Only the page's snippets are opened.
		for _, seq := range h.seqs {
			text, found, err := s.segmentText(r, user, h.hit.ConversationID, seq)
			if err != nil {
				s.unavailable(w, r, "segment text", err)
				return
			}
			if found {
				h.hit.Snippets = append(h.hit.Snippets, text)
			}
		}
		out.Results = append(out.Results, *h.hit)
	}
	if more {
		if out.NextCursor, err = s.sealCursor(ctx, user, cursorSearch, strconv.Itoa(offset+k)); err != nil {
			s.keyError(w, r, "seal cursor", err)
			return
		}
	}
	writeJSON(w, http.StatusOK, out)
}

func (s *Server) segmentText(r *http.Request, user, cid string, seq int) (string, bool, error) {
	d, err := s.d.Docs.Get(r.Context(), records.SegmentKey(user, cid, seq))
	if errors.Is(err, docs.ErrNotFound) {
		return "", false, nil
	}
	if err != nil {
		return "", false, err
	}
	seg, err := records.SegmentFrom(d)
	if err != nil {
		return "", false, err
	}
	text, err := s.d.Keys.Open(r.Context(), user, seg.SealedText, keys.AD(user, records.Segments, d.Key.ID, "text"))
	if err != nil {
		return "", false, err
	}
	return string(text), true, nil
}

// intParam reads an optional integer query parameter within [lo, hi].
func intParam(r *http.Request, name string, def, lo, hi int) (int, bool) {
	v := r.URL.Query().Get(name)
	if v == "" {
		return def, true
	}
	n, err := strconv.Atoi(v)
	if err != nil || n < lo || n > hi {
		return 0, false
	}
	return n, true
}
