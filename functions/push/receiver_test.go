package push

import (
	"bytes"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"

	"github.com/cloudevents/sdk-go/v2/event"

	"github.com/lethe-dev/lethe/events"
	"github.com/lethe-dev/lethe/infra/bus"
)

var errTransient = errors.New("store unavailable")

func TestReceiver(t *testing.T) {
	reg := newRegistry(t)
	e := testEvent(t, reg, "evt-1")
	data, attrs := toMessage(t, e)
	wrapped := wrappedBody(t, testSub, "m-1", data, attrs, map[string]any{"deliveryAttempt": 3})
	unwrappedH := unwrappedHeaders(testSub, "m-2", attrs)
	unwrappedH.Set(HeaderOrderingKey, "conv-1")

	// A message that decodes but is no CloudEvent (no ce-* attributes).
	notCE := wrappedBody(t, testSub, "m-3", []byte(`{"status":"hi"}`), map[string]string{"content-type": "application/json"}, nil)
	// A CloudEvent the registry refuses (unknown type).
	bad := e.Clone()
	bad.SetType("dev.lethe.unknown.v1")
	badData, badAttrs := toMessage(t, bad)
	invalid := wrappedBody(t, testSub, "m-4", badData, badAttrs, nil)
	misrouted := wrappedBody(t, "embed", "m-5", data, attrs, nil)
	snakeOnly := []byte(`{"message":{"data":"` + b64(data) + `","attributes":` + mustJSON(t, attrs) + `,"message_id":"m-6","publish_time":"2026-11-23T10:13:28.948Z"},"subscription":"projects/p/subscriptions/` + testSub + `"}`)

	permanent := func(event.Event) error { return events.Permanentf("cannot transcribe: %w", errBadAudio) }
	dropped := func(event.Event) error { return fmt.Errorf("tombstoned: %w", events.ErrDropped) }
	retry := func(event.Event) error { return errTransient }
	panics := func(event.Event) error { panic("boom") }

	tests := []struct {
		name    string
		method  string
		path    string
		header  http.Header
		body    []byte
		result  func(event.Event) error
		dlFails bool
		maxBody int64
		direct  bool // call ServeHTTP without a mux (mounted on "/push/")

		wantStatus  int
		wantHandled int
		wantDL      int
		check       func(t *testing.T, h []handled, dl []deadLetter)
	}{
		{
			name: "wrapped reaches handler", body: wrapped,
			wantStatus: 204, wantHandled: 1,
			check: func(t *testing.T, h []handled, _ []deadLetter) {
				assertEvent(t, h[0].e, e)
				want := Delivery{Subscription: testSub, MessageID: "m-1", PublishTime: testPublishTime, DeliveryAttempt: 3}
				if h[0].d != want {
					t.Errorf("delivery = %+v, want %+v", h[0].d, want)
				}
			},
		},
		{
			name: "unwrapped reaches handler", header: unwrappedH, body: data,
			wantStatus: 204, wantHandled: 1,
			check: func(t *testing.T, h []handled, _ []deadLetter) {
				assertEvent(t, h[0].e, e)
				want := Delivery{Subscription: testSub, MessageID: "m-2", PublishTime: testPublishTime, OrderingKey: "conv-1", Unwrapped: true}
				if h[0].d != want {
					t.Errorf("delivery = %+v, want %+v", h[0].d, want)
				}
			},
		},
		{
			name: "snake_case message_id only", body: snakeOnly,
			wantStatus: 204, wantHandled: 1,
			check: func(t *testing.T, h []handled, _ []deadLetter) {
				if h[0].d.MessageID != "m-6" {
					t.Errorf("MessageID = %q", h[0].d.MessageID)
				}
			},
		},
		{name: "mounted on prefix", direct: true, path: "/push/" + testSub, body: wrapped, wantStatus: 204, wantHandled: 1},
		{name: "body over limit", body: wrapped, maxBody: int64(len(wrapped) - 1), wantStatus: 413},
		{name: "GET", method: http.MethodGet, wantStatus: 405},
		{name: "PUT", method: http.MethodPut, body: wrapped, wantStatus: 405},
		{name: "unknown subscription", path: "/push/nope", body: wrapped, wantStatus: 404},
		{name: "nested path", direct: true, path: "/push/" + testSub + "/x", body: wrapped, wantStatus: 404},
		{
			name: "garbage JSON is dead-lettered and acked", body: []byte(`{"message": {"data": "x"`),
			wantStatus: 204, wantDL: 1,
			check: func(t *testing.T, _ []handled, dl []deadLetter) {
				if !bytes.Equal(dl[0].data, []byte(`{"message": {"data": "x"`)) || dl[0].attrs[AttrUndecodedBody] != "true" {
					t.Errorf("dead letter = %q %v, want the raw body marked undecoded", dl[0].data, dl[0].attrs)
				}
				if !events.IsPermanent(dl[0].reason) || dl[0].sub != testSub {
					t.Errorf("reason %v sub %q", dl[0].reason, dl[0].sub)
				}
			},
		},
		{
			name: "bad base64 is dead-lettered", body: []byte(`{"message":{"data":"!!!","messageId":"m"},"subscription":"projects/p/subscriptions/` + testSub + `"}`),
			wantStatus: 204, wantDL: 1,
		},
		{
			name: "not a CloudEvent is dead-lettered with its message", body: notCE,
			wantStatus: 204, wantDL: 1,
			check: func(t *testing.T, _ []handled, dl []deadLetter) {
				if string(dl[0].data) != `{"status":"hi"}` || dl[0].attrs["content-type"] != "application/json" || dl[0].attrs[AttrUndecodedBody] != "" {
					t.Errorf("dead letter = %q %v", dl[0].data, dl[0].attrs)
				}
				if dl[0].d.MessageID != "m-3" {
					t.Errorf("delivery in DeadLetter ctx = %+v", dl[0].d)
				}
			},
		},
		{name: "validation failure is dead-lettered", body: invalid, wantStatus: 204, wantDL: 1},
		{
			name: "permanent error is dead-lettered with reason", body: wrapped, result: permanent,
			wantStatus: 204, wantHandled: 1, wantDL: 1,
			check: func(t *testing.T, _ []handled, dl []deadLetter) {
				if !errors.Is(dl[0].reason, errBadAudio) || !events.IsPermanent(dl[0].reason) {
					t.Errorf("reason = %v", dl[0].reason)
				}
				if !bytes.Equal(dl[0].data, data) || dl[0].attrs["ce-id"] != "evt-1" {
					t.Errorf("dead letter carries %q %v, want the message", dl[0].data, dl[0].attrs)
				}
			},
		},
		{name: "dropped is acked", body: wrapped, result: dropped, wantStatus: 204, wantHandled: 1},
		{name: "retryable is nacked", body: wrapped, result: retry, wantStatus: 503, wantHandled: 1},
		{name: "unwrapped retryable is nacked", header: unwrappedH, body: data, result: retry, wantStatus: 503, wantHandled: 1},
		{name: "panic is recovered and nacked", body: wrapped, result: panics, wantStatus: 500, wantHandled: 1},
		{name: "dead-letter failure nacks permanent", body: wrapped, result: permanent, dlFails: true, wantStatus: 500, wantHandled: 1, wantDL: 1},
		{name: "dead-letter failure nacks poison", body: []byte("garbage"), dlFails: true, wantStatus: 500, wantDL: 1},
		{name: "misrouted delivery", body: misrouted, wantStatus: 400},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			rec := &recorder{}
			var dlErr error
			if tc.dlFails {
				dlErr = errors.New("publish failed")
			}
			rc, err := NewReceiver(Config{
				Handlers:   map[string]bus.Handler{testSub: rec.handler(tc.result), "embed": rec.handler(nil)},
				Validate:   reg.Validate,
				DeadLetter: rec.deadLetterFunc(dlErr),
				MaxBody:    tc.maxBody,
			})
			if err != nil {
				t.Fatal(err)
			}
			method, path := tc.method, tc.path
			if method == "" {
				method = http.MethodPost
			}
			if path == "" {
				path = "/push/" + testSub
			}
			var w *httptest.ResponseRecorder
			if tc.direct {
				w = httptest.NewRecorder()
				req := httptest.NewRequest(method, path, bytes.NewReader(tc.body))
				for k, v := range tc.header {
					req.Header[k] = v
				}
				rc.ServeHTTP(w, req)
			} else {
				w = do(rc, method, path, tc.header, tc.body)
			}
			if w.Code != tc.wantStatus {
				t.Fatalf("status = %d, want %d (body %s)", w.Code, tc.wantStatus, w.Body)
			}
			if w.Code >= 300 {
				assertErrorBody(t, w)
			}
			if tc.wantStatus == 405 && w.Header().Get("Allow") != "POST" {
				t.Errorf("Allow = %q", w.Header().Get("Allow"))
			}
			h, dl := rec.snapshot()
			if len(h) != tc.wantHandled || len(dl) != tc.wantDL {
				t.Fatalf("handled %d, dead-lettered %d; want %d, %d", len(h), len(dl), tc.wantHandled, tc.wantDL)
			}
			if tc.check != nil {
				tc.check(t, h, dl)
			}
		})
	}
}

var errBadAudio = errors.New("bad audio")

// TestReceiverChunkedOverLimit checks the limit when no Content-Length is
// announced (chunked transfer), over a real connection.
func TestReceiverChunkedOverLimit(t *testing.T) {
	rec := &recorder{}
	rc, err := NewReceiver(Config{Handlers: map[string]bus.Handler{testSub: rec.handler(nil)}, DeadLetter: rec.deadLetterFunc(nil), MaxBody: 64})
	if err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewServer(rc)
	defer srv.Close()
	body := io.MultiReader(strings.NewReader(`{"message":{"data":"`), strings.NewReader(strings.Repeat("A", 1000)+`"}}`))
	req, err := http.NewRequest(http.MethodPost, srv.URL+"/push/"+testSub, body)
	if err != nil {
		t.Fatal(err)
	}
	req.ContentLength = -1
	resp, err := srv.Client().Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusRequestEntityTooLarge {
		t.Fatalf("status = %d, want 413", resp.StatusCode)
	}
	if h, dl := rec.snapshot(); len(h)+len(dl) != 0 {
		t.Fatalf("handled %d dead-lettered %d, want nothing", len(h), len(dl))
	}
}

// TestReceiverReplay: the same delivery twice (Pub/Sub is at-least-once)
// reaches the handler twice and is never dead-lettered; concurrent replays
// are safe.
func TestReceiverReplay(t *testing.T) {
	reg := newRegistry(t)
	data, attrs := toMessage(t, testEvent(t, reg, "evt-replay"))
	body := wrappedBody(t, testSub, "m-replay", data, attrs, nil)
	rec := &recorder{}
	rc, err := NewReceiver(Config{Handlers: map[string]bus.Handler{testSub: rec.handler(nil)}, Validate: reg.Validate, DeadLetter: rec.deadLetterFunc(nil)})
	if err != nil {
		t.Fatal(err)
	}
	const n = 8
	var wg sync.WaitGroup
	for range n {
		wg.Go(func() {
			if w := do(rc, http.MethodPost, "/push/"+testSub, nil, body); w.Code != 204 {
				t.Errorf("status = %d", w.Code)
			}
		})
	}
	wg.Wait()
	h, dl := rec.snapshot()
	if len(h) != n || len(dl) != 0 {
		t.Fatalf("handled %d dead-lettered %d, want %d, 0", len(h), len(dl), n)
	}
	for _, x := range h {
		if x.e.ID() != "evt-replay" || x.d.MessageID != "m-replay" {
			t.Fatalf("got %s/%s", x.e.ID(), x.d.MessageID)
		}
	}
}

func TestNewReceiverRejectsBadConfig(t *testing.T) {
	rec := &recorder{}
	ok := map[string]bus.Handler{testSub: rec.handler(nil)}
	tests := []struct {
		name string
		cfg  Config
	}{
		{"no dead letter", Config{Handlers: ok}},
		{"no handlers", Config{DeadLetter: rec.deadLetterFunc(nil)}},
		{"nil handler", Config{Handlers: map[string]bus.Handler{"a": nil}, DeadLetter: rec.deadLetterFunc(nil)}},
		{"full name", Config{Handlers: map[string]bus.Handler{"projects/p/subscriptions/a": rec.handler(nil)}, DeadLetter: rec.deadLetterFunc(nil)}},
		{"negative max body", Config{Handlers: ok, DeadLetter: rec.deadLetterFunc(nil), MaxBody: -1}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			if _, err := NewReceiver(tc.cfg); err == nil {
				t.Fatal("NewReceiver accepted a bad config")
			}
		})
	}
}

func assertEvent(t *testing.T, got, want event.Event) {
	t.Helper()
	if got.ID() != want.ID() || got.Type() != want.Type() || got.Subject() != want.Subject() ||
		got.Source() != want.Source() || !got.Time().Equal(want.Time()) || got.DataContentType() != want.DataContentType() {
		t.Errorf("event = %s, want %s", got, want)
	}
	if !bytes.Equal(got.Data(), want.Data()) {
		t.Errorf("data = %q, want %q", got.Data(), want.Data())
	}
}

func assertErrorBody(t *testing.T, w *httptest.ResponseRecorder) {
	t.Helper()
	var body struct {
		Error struct{ Code, Message string } `json:"error"`
	}
	if err := json.Unmarshal(w.Body.Bytes(), &body); err != nil || body.Error.Code == "" {
		t.Errorf("error body %q is not {\"error\":{code,message}}", w.Body)
	}
}

func b64(b []byte) string { return base64.StdEncoding.EncodeToString(b) }

func mustJSON(t testing.TB, v any) string {
	t.Helper()
	b, err := json.Marshal(v)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

// TestReceiverDecoders: a subscription with a Config.Decoders entry reads
// its messages with that decoder (here a raw, non-CloudEvents
// notification, as Cloud Storage sends); its errors follow the receiver's
// outcome rules, other subscriptions keep CloudEvents decoding, and
// NewReceiver refuses a decoder it could never use.
func TestReceiverDecoders(t *testing.T) {
	const uploadsSub = "uploads"
	reg := newRegistry(t)
	errNotUpload := errors.New("not an upload notification")
	// decodeNotification turns {"name": ID} into the registry event of
	// that id; deletions are dropped, anything else is refused.
	decodeNotification := func(data []byte, attrs map[string]string) (event.Event, error) {
		if attrs["eventType"] == "OBJECT_DELETE" {
			return event.Event{}, fmt.Errorf("deletion: %w", events.ErrDropped)
		}
		var n struct {
			Name string `json:"name"`
		}
		if err := json.Unmarshal(data, &n); err != nil || n.Name == "" || attrs["eventType"] != "OBJECT_FINALIZE" {
			return event.Event{}, errNotUpload // not marked permanent: the receiver makes it so
		}
		// Built here, not with testEvent: this runs in the subtests.
		e, err := reg.NewWithID(n.Name, events.TypeRetentionSweep, events.Subject(testUser, "retention"),
			&events.RetentionSweepRequested{RequestedAt: testPublishTime, User: testUser})
		if n.Name == "unregistered" {
			e.SetType("dev.lethe.unknown.v1")
		}
		return e, err
	}
	finalize := map[string]string{"eventType": "OBJECT_FINALIZE", "payloadFormat": "JSON_API_V1"}
	raw := []byte(`{"name":"evt-from-notification"}`)
	ceData, ceAttrs := toMessage(t, testEvent(t, reg, "evt-ce"))

	tests := []struct {
		name        string
		sub         string
		data        []byte
		attrs       map[string]string
		wantStatus  int
		wantHandled string // id of the event the handler got; "" for none
		wantDL      bool
	}{
		{name: "raw notification reaches the handler", sub: uploadsSub, data: raw, attrs: finalize, wantStatus: 204, wantHandled: "evt-from-notification"},
		{name: "decoder error is dead-lettered", sub: uploadsSub, data: []byte(`{"bucket":"b"}`), attrs: finalize, wantStatus: 204, wantDL: true},
		{name: "decoder drop is acked", sub: uploadsSub, data: raw, attrs: map[string]string{"eventType": "OBJECT_DELETE"}, wantStatus: 204},
		{name: "decoded event still validated", sub: uploadsSub, data: []byte(`{"name":"unregistered"}`), attrs: finalize, wantStatus: 204, wantDL: true},
		{name: "a CloudEvent is not a notification", sub: uploadsSub, data: ceData, attrs: ceAttrs, wantStatus: 204, wantDL: true},
		{name: "other subscription keeps CloudEvents", sub: testSub, data: ceData, attrs: ceAttrs, wantStatus: 204, wantHandled: "evt-ce"},
		{name: "other subscription refuses the raw notification", sub: testSub, data: raw, attrs: finalize, wantStatus: 204, wantDL: true},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			rec := &recorder{}
			rc, err := NewReceiver(Config{
				Handlers:   map[string]bus.Handler{testSub: rec.handler(nil), uploadsSub: rec.handler(nil)},
				Decoders:   map[string]bus.Decoder{uploadsSub: decodeNotification},
				Validate:   reg.Validate,
				DeadLetter: rec.deadLetterFunc(nil),
			})
			if err != nil {
				t.Fatal(err)
			}
			w := do(rc, http.MethodPost, "/push/"+tc.sub, nil, wrappedBody(t, tc.sub, "m-dec", tc.data, tc.attrs, nil))
			if w.Code != tc.wantStatus {
				t.Fatalf("status = %d, want %d (body %s)", w.Code, tc.wantStatus, w.Body)
			}
			h, dl := rec.snapshot()
			switch {
			case tc.wantHandled == "" && len(h) != 0:
				t.Fatalf("handler got %d events, want none", len(h))
			case tc.wantHandled != "" && (len(h) != 1 || h[0].e.ID() != tc.wantHandled || h[0].d.MessageID != "m-dec"):
				t.Fatalf("handled %+v, want event %s of message m-dec", h, tc.wantHandled)
			}
			if !tc.wantDL {
				if len(dl) != 0 {
					t.Fatalf("dead-lettered %d: %v", len(dl), dl[0].reason)
				}
				return
			}
			if len(dl) != 1 {
				t.Fatalf("dead-lettered %d, want 1", len(dl))
			}
			// The copy is the message as it came, with a permanent reason.
			if dl[0].sub != tc.sub || !bytes.Equal(dl[0].data, tc.data) || dl[0].attrs["eventType"] != tc.attrs["eventType"] || !events.IsPermanent(dl[0].reason) {
				t.Fatalf("dead letter %s %q %v (%v)", dl[0].sub, dl[0].data, dl[0].attrs, dl[0].reason)
			}
		})
	}

	t.Run("decoder error that is the decoder's", func(t *testing.T) {
		rec := &recorder{}
		rc, err := NewReceiver(Config{
			Handlers:   map[string]bus.Handler{uploadsSub: rec.handler(nil)},
			Decoders:   map[string]bus.Decoder{uploadsSub: decodeNotification},
			DeadLetter: rec.deadLetterFunc(nil),
		})
		if err != nil {
			t.Fatal(err)
		}
		do(rc, http.MethodPost, "/push/"+uploadsSub, nil, wrappedBody(t, uploadsSub, "m", []byte(`{}`), finalize, nil))
		if _, dl := rec.snapshot(); len(dl) != 1 || !errors.Is(dl[0].reason, errNotUpload) {
			t.Fatalf("dead letters %+v, want the decoder's error as the reason", dl)
		}
	})

	rec := &recorder{}
	bad := []struct {
		name string
		cfg  Config
	}{
		{"decoder without a handler", Config{
			Handlers: map[string]bus.Handler{testSub: rec.handler(nil)},
			Decoders: map[string]bus.Decoder{uploadsSub: decodeNotification}, DeadLetter: rec.deadLetterFunc(nil),
		}},
		{"nil decoder", Config{
			Handlers: map[string]bus.Handler{uploadsSub: rec.handler(nil)},
			Decoders: map[string]bus.Decoder{uploadsSub: nil}, DeadLetter: rec.deadLetterFunc(nil),
		}},
	}
	for _, tc := range bad {
		t.Run(tc.name, func(t *testing.T) {
			if _, err := NewReceiver(tc.cfg); err == nil {
				t.Fatal("NewReceiver accepted the config")
			}
		})
	}
}
