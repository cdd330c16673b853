package push

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"maps"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/cloudevents/sdk-go/v2/event"

	"github.com/lethe-dev/lethe/events"
	"github.com/lethe-dev/lethe/infra/bus"
)

const (
	testProject = "lethe-test"
	testSub     = "transcribe"
	testUser    = "0123456789abcdef0123456789abcdef"
)

var testPublishTime = time.Date(2026, 11, 23, 10, 13, 28, 948000000, time.UTC)

func newRegistry(t testing.TB) *events.Registry {
	t.Helper()
	reg, err := events.NewRegistry()
	if err != nil {
		t.Fatalf("events.NewRegistry: %v", err)
	}
	return reg
}

// testEvent is a valid registry event (a retention sweep for one user).
func testEvent(t testing.TB, reg *events.Registry, id string) event.Event {
	t.Helper()
	e, err := reg.NewWithID(id, events.TypeRetentionSweep, events.Subject(testUser, "retention"),
		&events.RetentionSweepRequested{RequestedAt: testPublishTime, User: testUser})
	if err != nil {
		t.Fatalf("NewWithID: %v", err)
	}
	return e
}

func toMessage(t testing.TB, e event.Event) ([]byte, map[string]string) {
	t.Helper()
	data, attrs, err := bus.ToMessage(e)
	if err != nil {
		t.Fatalf("bus.ToMessage: %v", err)
	}
	return data, attrs
}

// wrappedBody is what Pub/Sub (and the gcloud emulator) POST in the wrapped
// form, both spellings of messageId and publishTime included.
func wrappedBody(t testing.TB, sub, msgID string, data []byte, attrs map[string]string, extra map[string]any) []byte {
	t.Helper()
	msg := map[string]any{
		"data":         base64.StdEncoding.EncodeToString(data),
		"attributes":   attrs,
		"messageId":    msgID,
		"message_id":   msgID,
		"publishTime":  testPublishTime.Format(time.RFC3339Nano),
		"publish_time": testPublishTime.Format(time.RFC3339Nano),
	}
	env := map[string]any{
		"message":      msg,
		"subscription": "projects/" + testProject + "/subscriptions/" + sub,
	}
	maps.Copy(env, extra)
	b, err := json.Marshal(env)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// unwrappedHeaders are the headers of an unwrapped push with write_metadata:
// metadata as x-goog-pubsub-*, each attribute as its own header.
func unwrappedHeaders(sub, msgID string, attrs map[string]string) http.Header {
	h := http.Header{}
	for k, v := range attrs {
		h.Set(k, v)
	}
	h.Set(HeaderSubscriptionName, "projects/"+testProject+"/subscriptions/"+sub)
	h.Set(HeaderMessageID, msgID)
	h.Set(HeaderPublishTime, testPublishTime.Format(time.RFC3339Nano))
	return h
}

// recorder records handler calls and dead letters.
type recorder struct {
	mu          sync.Mutex
	handled     []handled
	deadLetters []deadLetter
}

type handled struct {
	e event.Event
	d Delivery
}

type deadLetter struct {
	sub    string
	data   []byte
	attrs  map[string]string
	reason error
	d      Delivery
}

func (r *recorder) handler(result func(event.Event) error) bus.Handler {
	return func(ctx context.Context, e event.Event) error {
		d, _ := DeliveryFromContext(ctx)
		r.mu.Lock()
		r.handled = append(r.handled, handled{e: e, d: d})
		r.mu.Unlock()
		if result == nil {
			return nil
		}
		return result(e)
	}
}

func (r *recorder) deadLetterFunc(fail error) DeadLetterFunc {
	return func(ctx context.Context, sub string, data []byte, attrs map[string]string, reason error) error {
		d, _ := DeliveryFromContext(ctx)
		r.mu.Lock()
		r.deadLetters = append(r.deadLetters, deadLetter{sub: sub, data: data, attrs: attrs, reason: reason, d: d})
		r.mu.Unlock()
		return fail
	}
}

func (r *recorder) snapshot() ([]handled, []deadLetter) {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]handled(nil), r.handled...), append([]deadLetter(nil), r.deadLetters...)
}

// do sends one request to h through a mux with the documented pattern.
func do(h http.Handler, method, path string, header http.Header, body []byte) *httptest.ResponseRecorder {
	mux := http.NewServeMux()
	mux.Handle("/push/{subscription}", h)
	req := httptest.NewRequest(method, path, strings.NewReader(string(body)))
	maps.Copy(req.Header, header)
	w := httptest.NewRecorder()
	mux.ServeHTTP(w, req)
	return w
}
