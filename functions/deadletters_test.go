package functions_test

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/lethe-dev/lethe/events"
	"github.com/lethe-dev/lethe/functions"
)

// fakeDeadLetters holds dead letters by topic; those whose id is in invalid
// fail re-validation and stay.
type fakeDeadLetters struct {
	mu      sync.Mutex
	held    map[string][]functions.DeadLetter
	invalid map[string]bool
	fail    error
	limits  []int // the max of every List call
}

func (f *fakeDeadLetters) List(ctx context.Context, topic string, max int) ([]functions.DeadLetter, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.limits = append(f.limits, max)
	if f.fail != nil {
		return nil, f.fail
	}
	h := f.held[topic]
	return slices.Clone(h[:min(max, len(h))]), nil
}

func (f *fakeDeadLetters) Replay(ctx context.Context, topic string, req functions.ReplayRequest, progress func(functions.ReplayStep)) (functions.ReplayResult, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	var res functions.ReplayResult
	if f.fail != nil {
		return res, f.fail
	}
	if req.ID != "" && !slices.ContainsFunc(f.held[topic], func(d functions.DeadLetter) bool { return d.ID == req.ID }) {
		return res, fmt.Errorf("fake: %s: %w", req.ID, functions.ErrDeadLetterNotFound)
	}
	var kept []functions.DeadLetter
	for _, dl := range f.held[topic] {
		if !req.All && dl.ID != req.ID {
			kept = append(kept, dl)
			continue
		}
		step := functions.ReplayStep{DeadLetter: dl, Replayed: !f.invalid[dl.ID]}
		if f.invalid[dl.ID] {
			step.Error = "validate: schema"
			kept = append(kept, dl)
			res.Skipped++
		} else {
			res.Replayed++
		}
		res.Steps = append(res.Steps, step)
	}
	f.held[topic] = kept
	return res, nil
}

func newDeadLetterEdge(t *testing.T) (*edge, *fakeDeadLetters) {
	t.Helper()
	at := time.Date(2026, 12, 1, 1, 2, 3, 0, time.UTC)
	f := &fakeDeadLetters{
		held: map[string][]functions.DeadLetter{events.TopicAudio: {
			{ID: "101", EventType: events.TypeChunkReceived, EventID: "e1", Subject: "users/abc/conversations/c", Reason: "permanent: bad chunk", Time: at, Subscription: "transcribe", MessageID: "7"},
			{ID: "102", EventType: events.TypeChunkReceived, EventID: "e2", Reason: "permanent: bus: validate: schema", Time: at, Subscription: "transcribe", MessageID: "8"},
			{ID: "103", EventType: events.TypeChunkReceived, EventID: "e3", Reason: "delivery attempts exhausted", Time: at},
		}},
		invalid: map[string]bool{"102": true},
	}
	return newEdgeWith(t, edgeOptions{maxChunk: 1 << 20, deadLetters: f}), f
}

func TestDeadLetterRoutesRefuseBadRequests(t *testing.T) {
	e, f := newDeadLetterEdge(t)
	user, admin := e.token("mallory"), e.adminToken("root")
	for _, tc := range []struct {
		name, method, path, token, body string
		status                          int
		code                            string
	}{
		{"user lists", "GET", "/v1/admin/dlq/audio", user, "", 403, "forbidden"},
		{"user replays", "POST", "/v1/admin/dlq/audio/replay", user, `{"all":true}`, 403, "forbidden"},
		{"no token", "GET", "/v1/admin/dlq/audio", "", "", 401, "unauthenticated"},
		{"unknown topic", "GET", "/v1/admin/dlq/nosuch", admin, "", 400, "invalid_topic"},
		{"dead-letter topic itself", "GET", "/v1/admin/dlq/audio-dead-letter", admin, "", 400, "invalid_topic"},
		{"unknown topic replay", "POST", "/v1/admin/dlq/nosuch/replay", admin, `{"all":true}`, 400, "invalid_topic"},
		{"limit 0", "GET", "/v1/admin/dlq/audio?limit=0", admin, "", 400, "invalid_limit"},
		{"limit too big", "GET", "/v1/admin/dlq/audio?limit=1001", admin, "", 400, "invalid_limit"},
		{"empty object", "POST", "/v1/admin/dlq/audio/replay", admin, `{}`, 400, "invalid_body"},
		{"both", "POST", "/v1/admin/dlq/audio/replay", admin, `{"id":"101","all":true}`, 400, "invalid_body"},
		{"unknown field", "POST", "/v1/admin/dlq/audio/replay", admin, `{"ids":["101"]}`, 400, "invalid_body"},
		{"trailing data", "POST", "/v1/admin/dlq/audio/replay", admin, `{"all":true} {}`, 400, "bad_json"},
		{"null", "POST", "/v1/admin/dlq/audio/replay", admin, `null`, 400, "invalid_body"},
		{"all false", "POST", "/v1/admin/dlq/audio/replay", admin, `{"all":false}`, 400, "invalid_body"},
		{"too large", "POST", "/v1/admin/dlq/audio/replay", admin, `{"id":"` + strings.Repeat("1", 5000) + `"}`, 413, "too_large"},
		{"not held", "POST", "/v1/admin/dlq/audio/replay", admin, `{"id":"999"}`, 404, "not_found"},
		{"GET replay", "GET", "/v1/admin/dlq/audio/replay", admin, "", 404, "not_found"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r := e.do(tc.method, tc.path, tc.token, "application/json", []byte(tc.body))
			if r.status != tc.status || (tc.code != "" && errCode(r) != tc.code) {
				t.Fatalf("%s %s: %d %v, want %d %s", tc.method, tc.path, r.status, r.body, tc.status, tc.code)
			}
		})
	}
	if got := len(f.held[events.TopicAudio]); got != 3 {
		t.Fatalf("refused requests replayed something: %d held, want 3", got)
	}
}

func TestDeadLettersListedAndReplayedByAdmins(t *testing.T) {
	e, f := newDeadLetterEdge(t)
	admin := e.adminToken("root")

	r := e.do("GET", "/v1/admin/dlq/audio?limit=2", admin, "", nil)
	if r.status != http.StatusOK || r.body["topic"] != "audio" {
		t.Fatalf("list: %d %v", r.status, r.body)
	}
	dls := r.body["dead_letters"].([]any)
	if len(dls) != 2 || f.limits[len(f.limits)-1] != 2 {
		t.Fatalf("list with limit 2: %v (limits asked %v)", dls, f.limits)
	}
	first := dls[0].(map[string]any)
	for k, want := range map[string]any{"id": "101", "event_type": events.TypeChunkReceived, "event_id": "e1",
		"subject": "users/abc/conversations/c", "reason": "permanent: bad chunk", "time": "2026-12-01T01:02:03Z",
		"subscription": "transcribe", "message_id": "7"} {
		if first[k] != want {
			t.Errorf("dead letter %s = %v, want %v", k, first[k], want)
		}
	}
	if r := e.do("GET", "/v1/admin/dlq/lifecycle", admin, "", nil); r.status != http.StatusOK || len(r.body["dead_letters"].([]any)) != 0 {
		t.Fatalf("empty topic: %d %v, want an empty list", r.status, r.body)
	}

	r = e.do("POST", "/v1/admin/dlq/audio/replay", admin, "application/json", []byte(`{"id":"101"}`))
	if r.status != http.StatusOK || r.body["replayed"] != 1.0 || r.body["skipped"] != 0.0 {
		t.Fatalf("replay 101: %d %v", r.status, r.body)
	}
	r = e.do("POST", "/v1/admin/dlq/audio/replay", admin, "application/json", []byte(`{"all":true}`))
	if r.status != http.StatusOK || r.body["replayed"] != 1.0 || r.body["skipped"] != 1.0 {
		t.Fatalf("replay all: %d %v", r.status, r.body)
	}
	steps := r.body["steps"].([]any)
	if len(steps) != 2 || steps[0].(map[string]any)["replayed"] != false || steps[0].(map[string]any)["error"] != "validate: schema" ||
		steps[1].(map[string]any)["id"] != "103" || steps[1].(map[string]any)["replayed"] != true {
		t.Fatalf("replay all steps: %v, want 102 left with its reason, 103 replayed", steps)
	}
	if held := f.held[events.TopicAudio]; len(held) != 1 || held[0].ID != "102" {
		t.Fatalf("held after replays: %v, want 102 only", held)
	}

	// Every admin call is on the trail, by route.
	r = e.do("GET", "/v1/admin/audit?limit=100", admin, "", nil)
	refs := map[string]int{}
	for _, en := range r.body["entries"].([]any) {
		ref, _ := en.(map[string]any)["ref"].(string)
		refs[ref]++
	}
	if refs["GET:/v1/admin/dlq/{topic}"] != 2 || refs["POST:/v1/admin/dlq/{topic}/replay"] != 2 {
		t.Fatalf("audit refs %v, want 2 lists and 2 replays", refs)
	}
}

func TestDeadLetterRoutesFailClosed(t *testing.T) {
	e, f := newDeadLetterEdge(t)
	admin := e.adminToken("root")
	f.fail = errors.New("pubsub: projects/p/subscriptions/audio-dead-letter-hold: internal detail")
	for _, req := range []struct{ method, path, body string }{
		{"GET", "/v1/admin/dlq/audio", ""},
		{"POST", "/v1/admin/dlq/audio/replay", `{"all":true}`},
	} {
		r := e.do(req.method, req.path, admin, "application/json", []byte(req.body))
		if r.status != http.StatusServiceUnavailable || errCode(r) != "unavailable" || strings.Contains(fmt.Sprint(r.body), "internal detail") {
			t.Errorf("%s %s with a failing bus: %d %v, want 503 without internals", req.method, req.path, r.status, r.body)
		}
	}
	plain := newEdge(t, 1<<20)
	if r := plain.do("GET", "/v1/admin/dlq/audio", plain.adminToken("root"), "", nil); r.status != http.StatusNotImplemented {
		t.Errorf("without DeadLetters: %d %v, want 501", r.status, r.body)
	}
}
