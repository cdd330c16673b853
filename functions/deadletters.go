package functions

import (
	"context"
	"errors"
	"net/http"
	"slices"
	"time"

	"github.com/lethe-dev/lethe/events"
)

// DeadLetters lists and replays the dead letters of a topic (the bus's
// holding subscriptions). Implementations never return message data.
type DeadLetters interface {
	// List returns up to max dead letters of topic without consuming them.
	List(ctx context.Context, topic string, max int) ([]DeadLetter, error)
	// Replay re-validates and republishes the dead letters req selects,
	// leaving those that fail validation, and calls progress (when set)
	// once per dead letter looked at. A req.ID that is not held is
	// ErrDeadLetterNotFound.
	Replay(ctx context.Context, topic string, req ReplayRequest, progress func(ReplayStep)) (ReplayResult, error)
}

// ErrDeadLetterNotFound: the dead letter a replay names is not held.
var ErrDeadLetterNotFound = errors.New("dead letter not found")

// DeadLetter describes one held dead letter, never its data.
type DeadLetter struct {
	ID           string    `json:"id"` // what a replay names
	EventType    string    `json:"event_type,omitempty"`
	EventID      string    `json:"event_id,omitempty"`
	Subject      string    `json:"subject,omitempty"` // users/<uid-hash>/...
	Reason       string    `json:"reason"`
	Time         time.Time `json:"time"`
	Subscription string    `json:"subscription,omitempty"` // where it failed
	MessageID    string    `json:"message_id,omitempty"`   // on the original topic
}

// ReplayRequest selects what a replay republishes: one ID, or All.
type ReplayRequest struct {
	ID  string `json:"id,omitempty"`
	All bool   `json:"all,omitempty"`
}

// ReplayStep is one dead letter a replay looked at: replayed, or left with
// the reason.
type ReplayStep struct {
	DeadLetter
	Replayed bool   `json:"replayed"`
	Error    string `json:"error,omitempty"`
}

// ReplayResult sums up a replay.
type ReplayResult struct {
	Replayed int          `json:"replayed"`
	Skipped  int          `json:"skipped"` // left in the dead-letter topic: they still fail validation
	Steps    []ReplayStep `json:"steps"`
}

// maxReplayBody bounds a replay request body.
const maxReplayBody = 4 << 10

// routeDeadLetters registers the admin dead-letter API.
func (s *Server) routeDeadLetters() {
	s.mux.Handle("GET /v1/admin/dlq/{topic}", s.admin(s.adminListDeadLetters))
	s.mux.Handle("POST /v1/admin/dlq/{topic}/replay", s.admin(s.adminReplayDeadLetters))
}

// deadLetterTopic reads {topic}, answering 501 or 400 itself when it
// returns false.
func (s *Server) deadLetterTopic(w http.ResponseWriter, r *http.Request) (string, bool) {
	if s.d.DeadLetters == nil {
		writeError(w, http.StatusNotImplemented, "not_configured", "dead-letter tooling is not configured")
		return "", false
	}
	topic := r.PathValue("topic")
	if !slices.Contains(events.AllTopics(), topic) {
		writeError(w, http.StatusBadRequest, "invalid_topic", "topic must be one of the pipeline's topics")
		return "", false
	}
	return topic, true
}

// adminListDeadLetters: GET /v1/admin/dlq/{topic}?limit=N (1..1000,
// default 100).
func (s *Server) adminListDeadLetters(w http.ResponseWriter, r *http.Request) {
	topic, ok := s.deadLetterTopic(w, r)
	if !ok {
		return
	}
	limit, ok := intParam(r, "limit", 100, 1, 1000)
	if !ok {
		writeError(w, http.StatusBadRequest, "invalid_limit", "limit must be an integer from 1 to 1000")
		return
	}
	s.auditAdmin(r, "")
	dls, err := s.d.DeadLetters.List(r.Context(), topic, limit)
	if err != nil {
		s.unavailable(w, r, "DeadLetters.List", err)
		return
	}
	if dls == nil {
		dls = []DeadLetter{}
	}
	writeJSON(w, http.StatusOK, map[string]any{"topic": topic, "dead_letters": dls})
}

// adminReplayDeadLetters: POST /v1/admin/dlq/{topic}/replay with
// {"id": "..."} or {"all": true}.
func (s *Server) adminReplayDeadLetters(w http.ResponseWriter, r *http.Request) {
	topic, ok := s.deadLetterTopic(w, r)
	if !ok {
		return
	}
	req, ok := s.readReplayRequest(w, r)
	if !ok {
		return
	}
	s.auditAdmin(r, "")
	res, err := s.d.DeadLetters.Replay(r.Context(), topic, req, nil)
	switch {
	case errors.Is(err, ErrDeadLetterNotFound):
		writeError(w, http.StatusNotFound, "not_found", "no such dead letter")
		return
	case err != nil:
		s.unavailable(w, r, "DeadLetters.Replay", err)
		return
	}
	if res.Steps == nil {
		res.Steps = []ReplayStep{}
	}
	s.d.Logger.InfoContext(r.Context(), "dead letters replayed", "topic", topic, "replayed", res.Replayed, "skipped", res.Skipped)
	writeJSON(w, http.StatusOK, res)
}

// replayBody is the POST /v1/admin/dlq/{topic}/replay body: an id or all,
// exactly one.
var replayBody = newBodySchema("dlq_replay", "https://lethe.dev/schemas/api/dlq-replay.json", `{
  "$schema": "https://json-schema.org/draft/2020-12/schema",
  "$id": "https://lethe.dev/schemas/api/dlq-replay.json",
  "type": "object",
  "additionalProperties": false,
  "properties": {
    "id":  {"type": "string", "minLength": 1, "maxLength": 256},
    "all": {"const": true}
  },
  "oneOf": [{"required": ["id"]}, {"required": ["all"]}]
}`, maxReplayBody, `the body must be {"id": "..."} or {"all": true}`)

// readReplayRequest reads and checks the body; when it returns false it
// has answered the error.
func (s *Server) readReplayRequest(w http.ResponseWriter, r *http.Request) (ReplayRequest, bool) {
	var req ReplayRequest
	return req, s.readJSON(w, r, replayBody, &req)
}

// parseReplayRequest parses one JSON object {"id": ...} or {"all": true}:
// unknown fields, trailing data, both or neither are refused.
func parseReplayRequest(body []byte) (ReplayRequest, error) {
	var req ReplayRequest
	if err := replayBody.decode(body, &req); err != nil {
		return ReplayRequest{}, err
	}
	return req, nil
}
