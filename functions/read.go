package functions

import (
	"errors"
	"fmt"
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

const maxListLimit = 100

func (s *Server) listConversations(w http.ResponseWriter, r *http.Request) {
	limit, ok := intParam(r, "limit", 50, 1, maxListLimit)
	if !ok {
		writeError(w, http.StatusBadRequest, "invalid_limit", "limit must be an integer from 1 to 100")
		return
	}
	found, err := s.d.Docs.Query(r.Context(), docs.Query{
		User: callerFrom(r.Context()).user, Collection: records.Conversations,
		OrderBy: records.FieldUpdatedAt, Desc: true, Limit: limit,
	})
	if err != nil {
		s.unavailable(w, r, "docs.Query conversations", err)
		return
	}
	out := struct {
		Conversations []conversationSummary `json:"conversations"`
	}{Conversations: []conversationSummary{}}
	for _, d := range found {
		c, err := records.ConversationFrom(d)
		if err != nil {
			s.unavailable(w, r, "records.ConversationFrom", err)
			return
		}
		out.Conversations = append(out.Conversations, conversationSummary{c.ID, c.CreatedAt, c.UpdatedAt})
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
	// Status is "processing" while any chunk is not final, else "done".
	Status     string        `json:"status"`
	Chunks     []chunkView   `json:"chunks"`
	Segments   []segmentView `json:"segments"`
	Transcript string        `json:"transcript"`
}

func (s *Server) getConversation(w http.ResponseWriter, r *http.Request) {
	ctx := r.Context()
	user := callerFrom(ctx).user
	cid := r.PathValue("cid")
	if !records.ValidConversationID(cid) {
		writeError(w, http.StatusBadRequest, "invalid_conversation_id", "conversation id must match [A-Za-z0-9_-]{1,64}")
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
	byConv := []docs.Filter{{Field: records.FieldConversation, Op: docs.Eq, Value: cid}}
	chunks, err := s.d.Docs.Query(ctx, docs.Query{User: user, Collection: records.Chunks, Filters: byConv, OrderBy: records.FieldSeq})
	if err != nil {
		s.unavailable(w, r, "docs.Query chunks", err)
		return
	}
	for _, cd := range chunks {
		c, err := records.ChunkFrom(cd)
		if err != nil {
			s.unavailable(w, r, "records.ChunkFrom", err)
			return
		}
		if c.Status != records.StatusIndexed && c.Status != records.StatusFailed {
			view.Status = "processing"
		}
		view.Chunks = append(view.Chunks, chunkView{c.Seq, c.Status})
	}
	segs, err := s.d.Docs.Query(ctx, docs.Query{User: user, Collection: records.Segments, Filters: byConv, OrderBy: records.FieldSeq})
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
)

// search ranks the caller's conversations by their best-matching segment.
// Only the caller's namespace is queried.
func (s *Server) search(w http.ResponseWriter, r *http.Request) {
	ctx := r.Context()
	user := callerFrom(ctx).user
	q := strings.TrimSpace(r.URL.Query().Get("q"))
	if q == "" || !utf8.ValidString(q) || utf8.RuneCountInString(q) > maxQueryChars {
		writeError(w, http.StatusBadRequest, "invalid_query", "q must be 1 to 512 characters of text")
		return
	}
	k, ok := intParam(r, "k", defaultSearchLimit, 1, maxSearchResults)
	if !ok {
		writeError(w, http.StatusBadRequest, "invalid_k", "k must be an integer from 1 to 50")
		return
	}
	out := struct {
		Embedder string      `json:"embedder"`
		Results  []searchHit `json:"results"`
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
	matches, err := s.d.Vectors.Query(ctx, user, vecs[0], k*candidatesPerHit, nil)
	if err != nil {
		s.unavailable(w, r, "vectors.Query", err)
		return
	}
	hits := map[string]*searchHit{}
	var order []*searchHit
	for _, m := range matches {
		cid, seqStr, ok := strings.Cut(m.ID, "#")
		seq, err := strconv.Atoi(seqStr)
		if !ok || err != nil || m.Score <= 0 {
			continue
		}
		h := hits[cid]
		if h == nil {
			if len(order) == k {
				continue
			}
			h = &searchHit{ConversationID: cid, Score: m.Score, Snippets: []string{}}
			hits[cid] = h
			order = append(order, h)
		}
		if len(h.Snippets) >= snippetsPerHit {
			continue
		}
		text, found, err := s.segmentText(r, user, cid, seq)
		if err != nil {
			s.unavailable(w, r, "segment text", err)
			return
		}
		if found {
			h.Snippets = append(h.Snippets, text)
		}
	}
	sort.SliceStable(order, func(i, j int) bool { return order[i].Score > order[j].Score })
	for _, h := range order {
		out.Results = append(out.Results, *h)
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
