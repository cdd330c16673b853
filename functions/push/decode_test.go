package push

import (
	"bufio"
	"bytes"
	"encoding/base64"
	"encoding/json"
	"maps"
	"net/http"
	"net/textproto"
	"strings"
	"testing"
	"time"

	"github.com/lethe-dev/lethe/events"
)

// emulatorWrapped is a wrapped push body exactly as the gcloud Pub/Sub
// emulator (SDK 528.0.0) sent it to an endpoint.
const emulatorWrapped = `{"subscription":"projects\/lethe-test\/subscriptions\/probe-wrapped","message":{"publishTime":"2026-11-23T10:13:28.948Z","data":"eyJzdGF0dXMiOiJoaSJ9","publish_time":"2026-11-23T10:13:28.948Z","messageId":"1","attributes":{"Weird_Key":"v","content-type":"application\/json","ce-specversion":"1.0","ce-id":"abc"},"message_id":"1"}}`

func TestDecodeWrapped(t *testing.T) {
	tests := []struct {
		name    string
		body    string
		wantErr bool
		check   func(t *testing.T, m pushMessage)
	}{
		{name: "emulator body", body: emulatorWrapped, check: func(t *testing.T, m pushMessage) {
			if string(m.Data) != `{"status":"hi"}` || m.MessageID != "1" || m.SubscriptionName != "projects/lethe-test/subscriptions/probe-wrapped" {
				t.Errorf("got %+v", m)
			}
			if !m.PublishTime.Equal(testPublishTime) {
				t.Errorf("PublishTime = %v", m.PublishTime)
			}
			want := map[string]string{"Weird_Key": "v", "content-type": "application/json", "ce-specversion": "1.0", "ce-id": "abc"}
			if !maps.Equal(m.Attributes, want) {
				t.Errorf("attributes = %v", m.Attributes)
			}
		}},
		{name: "delivery attempt and ordering key", body: `{"message":{"data":"aGk=","messageId":"7","orderingKey":"k"},"subscription":"projects/p/subscriptions/s","deliveryAttempt":5}`, check: func(t *testing.T, m pushMessage) {
			if m.DeliveryAttempt != 5 || m.OrderingKey != "k" || string(m.Data) != "hi" {
				t.Errorf("got %+v", m)
			}
		}},
		{name: "no data, attributes only", body: `{"message":{"attributes":{"a":"b"},"messageId":"7"}}`, check: func(t *testing.T, m pushMessage) {
			if len(m.Data) != 0 || m.Attributes["a"] != "b" {
				t.Errorf("got %+v", m)
			}
		}},
		{name: "unknown fields Google may add are tolerated", body: `{"message":{"data":"aGk=","messageId":"7","newField":{"x":[1]}},"subscription":"projects/p/subscriptions/s","future":true}`},
		{name: "whitespace around the object", body: " \n" + emulatorWrapped + "\n "},

		{name: "empty body", body: ``, wantErr: true},
		{name: "not JSON", body: `garbage`, wantErr: true},
		{name: "truncated", body: `{"message":{"data":"aGk="`, wantErr: true},
		{name: "array", body: `[{"message":{}}]`, wantErr: true},
		{name: "trailing data", body: emulatorWrapped + `{}`, wantErr: true},
		{name: "no message", body: `{"subscription":"projects/p/subscriptions/s"}`, wantErr: true},
		{name: "null message", body: `{"message":null}`, wantErr: true},
		{name: "message not an object", body: `{"message":"x"}`, wantErr: true},
		{name: "no messageId", body: `{"message":{"data":"aGk="}}`, wantErr: true},
		{name: "messageId in another case is not messageId", body: `{"message":{"data":"aGk=","MessageID":"7"}}`, wantErr: true},
		{name: "messageId not a string", body: `{"message":{"data":"aGk=","messageId":7}}`, wantErr: true},
		{name: "message ids disagree", body: `{"message":{"messageId":"1","message_id":"2","data":"aGk="}}`, wantErr: true},
		{name: "duplicate key in envelope", body: `{"message":{"messageId":"1","data":"aGk="},"message":{"messageId":"2","data":"aGk="}}`, wantErr: true},
		{name: "duplicate data key", body: `{"message":{"messageId":"1","data":"aGk=","data":"Ynll"}}`, wantErr: true},
		{name: "duplicate attribute", body: `{"message":{"messageId":"1","attributes":{"ce-id":"a","ce-id":"b"}}}`, wantErr: true},
		{name: "bad base64", body: `{"message":{"messageId":"1","data":"!!!"}}`, wantErr: true},
		{name: "url-safe base64", body: `{"message":{"messageId":"1","data":"_-8="}}`, wantErr: true},
		{name: "non-canonical base64 padding bits", body: `{"message":{"messageId":"1","data":"aGl="}}`, wantErr: true},
		{name: "data not a string", body: `{"message":{"messageId":"1","data":[1]}}`, wantErr: true},
		{name: "attribute not a string", body: `{"message":{"messageId":"1","attributes":{"a":1}}}`, wantErr: true},
		{name: "attribute null", body: `{"message":{"messageId":"1","attributes":{"a":null}}}`, wantErr: true},
		{name: "attributes not an object", body: `{"message":{"messageId":"1","attributes":["a"]}}`, wantErr: true},
		{name: "bad publishTime", body: `{"message":{"messageId":"1","data":"aGk=","publishTime":"yesterday"}}`, wantErr: true},
		{name: "publish times disagree", body: `{"message":{"messageId":"1","data":"aGk=","publishTime":"2026-11-23T10:13:28Z","publish_time":"2026-11-23T10:13:29Z"}}`, wantErr: true},
		{name: "subscription not a full name", body: `{"message":{"messageId":"1","data":"aGk="},"subscription":"s"}`, wantErr: true},
		{name: "deliveryAttempt zero", body: `{"message":{"messageId":"1","data":"aGk="},"deliveryAttempt":0}`, wantErr: true},
		{name: "deliveryAttempt string", body: `{"message":{"messageId":"1","data":"aGk="},"deliveryAttempt":"3"}`, wantErr: true},
		{name: "deliveryAttempt fraction", body: `{"message":{"messageId":"1","data":"aGk="},"deliveryAttempt":1.5}`, wantErr: true},
		{name: "deliveryAttempt huge", body: `{"message":{"messageId":"1","data":"aGk="},"deliveryAttempt":99999999999}`, wantErr: true},
		{name: "invalid UTF-8", body: "{\"message\":{\"messageId\":\"\xff\",\"data\":\"aGk=\"}}", wantErr: true},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			m, err := decodePush(http.Header{}, []byte(tc.body))
			if tc.wantErr {
				if err == nil {
					t.Fatalf("decoded %+v, want an error", m)
				}
				if !events.IsPermanent(err) {
					t.Fatalf("error %v is not permanent", err)
				}
				return
			}
			if err != nil {
				t.Fatalf("decodePush: %v", err)
			}
			if m.Unwrapped {
				t.Error("Unwrapped = true for a wrapped body")
			}
			if tc.check != nil {
				tc.check(t, m)
			}
		})
	}
}

// emulatorUnwrapped is the header block the gcloud emulator sent for an
// unwrapped push with write_metadata (attributes as headers, metadata as
// x-goog-pubsub-*, the ordering key as x-goog-ordering-key).
const emulatorUnwrapped = "ce-id: abc\r\nce-specversion: 1.0\r\ncontent-type: application/json\r\nWeird_Key: v\r\n" +
	"x-goog-ordering-key: k1\r\nx-goog-pubsub-message-id: 1\r\nx-goog-pubsub-publish-time: 2026-11-23T10:13:28.948Z\r\n" +
	"x-goog-pubsub-subscription-name: projects/lethe-test/subscriptions/probe-unwrapped\r\nUser-Agent: Java/17.0.15\r\n\r\n"

func TestDecodeUnwrapped(t *testing.T) {
	tests := []struct {
		name    string
		header  string
		wantErr bool
		check   func(t *testing.T, m pushMessage)
	}{
		{name: "emulator headers", header: emulatorUnwrapped, check: func(t *testing.T, m pushMessage) {
			want := map[string]string{"ce-id": "abc", "ce-specversion": "1.0", "content-type": "application/json"}
			if !maps.Equal(m.Attributes, want) {
				t.Errorf("attributes = %v, want %v", m.Attributes, want)
			}
			if m.MessageID != "1" || m.OrderingKey != "k1" || !m.PublishTime.Equal(testPublishTime) ||
				m.SubscriptionName != "projects/lethe-test/subscriptions/probe-unwrapped" || string(m.Data) != `{"status":"hi"}` {
				t.Errorf("got %+v", m)
			}
		}},
		{name: "ce headers without metadata", header: "Ce-Id: x\r\nCe-Specversion: 1.0\r\n\r\n", check: func(t *testing.T, m pushMessage) {
			if m.Attributes["ce-id"] != "x" || m.MessageID != "" {
				t.Errorf("got %+v", m)
			}
		}},
		{name: "documented ordering key header", header: "X-Goog-Pubsub-Message-Id: 1\r\nX-Goog-Pubsub-Ordering-Key: k\r\n\r\n", check: func(t *testing.T, m pushMessage) {
			if m.OrderingKey != "k" {
				t.Errorf("OrderingKey = %q", m.OrderingKey)
			}
		}},
		{name: "same attribute twice, same value", header: "ce-id: a\r\nCE-ID: a\r\n\r\n"},
		{name: "same attribute twice, different values", header: "ce-id: a\r\nCE-ID: b\r\n\r\n", wantErr: true},
		{name: "bad publish time", header: "x-goog-pubsub-message-id: 1\r\nx-goog-pubsub-publish-time: soon\r\n\r\n", wantErr: true},
		{name: "bad subscription name", header: "x-goog-pubsub-message-id: 1\r\nx-goog-pubsub-subscription-name: s\r\n\r\n", wantErr: true},
		{name: "ordering keys disagree", header: "x-goog-pubsub-message-id: 1\r\nx-goog-ordering-key: a\r\nx-goog-pubsub-ordering-key: b\r\n\r\n", wantErr: true},
		{name: "attribute not UTF-8", header: "ce-id: \xff\r\n\r\n", wantErr: true},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			h := parseHeader(t, tc.header)
			m, err := decodePush(h, []byte(`{"status":"hi"}`))
			if tc.wantErr {
				if err == nil || !events.IsPermanent(err) {
					t.Fatalf("decoded %+v, err %v; want a permanent error", m, err)
				}
				return
			}
			if err != nil {
				t.Fatalf("decodePush: %v", err)
			}
			if !m.Unwrapped {
				t.Error("Unwrapped = false")
			}
			if tc.check != nil {
				tc.check(t, m)
			}
		})
	}
}

// parseHeader reads a raw header block the way net/http's server does.
func parseHeader(t testing.TB, block string) http.Header {
	t.Helper()
	mh, err := textproto.NewReader(bufio.NewReader(strings.NewReader(block))).ReadMIMEHeader()
	if err != nil {
		t.Fatalf("ReadMIMEHeader: %v", err)
	}
	return http.Header(mh)
}

// FuzzDecodePush feeds arbitrary bodies and header blocks to the push
// parser. It must never panic; whatever it accepts must be self-consistent,
// and an accepted wrapped message must survive re-encoding unchanged.
func FuzzDecodePush(f *testing.F) {
	f.Add([]byte(emulatorWrapped), "")
	f.Add([]byte(`{"status":"hi"}`), emulatorUnwrapped)
	f.Add([]byte(`{"message":{"data":"aGk=","messageId":"7","orderingKey":"k"},"subscription":"projects/p/subscriptions/s","deliveryAttempt":5}`), "")
	f.Add([]byte(`{"message":{"messageId":"1","data":"aGk=","data":"Ynll"}}`), "")
	f.Add([]byte(`{"message":{"attributes":{"a":null},"message_id":"1"}}`), "")
	f.Add([]byte("garbage"), "ce-id: a\r\nCE-ID: b\r\n\r\n")
	f.Add([]byte{}, "\r\n")
	f.Fuzz(func(t *testing.T, body []byte, header string) {
		mh, err := textproto.NewReader(bufio.NewReader(strings.NewReader(header))).ReadMIMEHeader()
		if err != nil && len(mh) == 0 {
			mh = textproto.MIMEHeader{}
		}
		h := http.Header(mh)
		m, err := decodePush(h, body)
		if err != nil {
			if !events.IsPermanent(err) {
				t.Fatalf("non-permanent decode error: %v", err)
			}
			return
		}
		if m.Unwrapped != isUnwrapped(h) {
			t.Fatalf("Unwrapped = %v for headers %v", m.Unwrapped, h)
		}
		if m.SubscriptionName != "" {
			if _, err := shortSubscriptionName(m.SubscriptionName); err != nil {
				t.Fatalf("accepted subscription %q", m.SubscriptionName)
			}
		}
		if m.Unwrapped {
			if !bytes.Equal(m.Data, body) {
				t.Fatal("unwrapped data is not the body")
			}
			for k := range m.Attributes {
				if k != strings.ToLower(k) || (!strings.HasPrefix(k, "ce-") && k != attrContentType) {
					t.Fatalf("unexpected attribute %q", k)
				}
			}
			return
		}
		if m.MessageID == "" {
			t.Fatal("wrapped message accepted without messageId")
		}
		// Re-encode what was decoded and decode again: same message.
		msg := map[string]any{
			"data":        base64.StdEncoding.EncodeToString(m.Data),
			"attributes":  m.Attributes,
			"messageId":   m.MessageID,
			"orderingKey": m.OrderingKey,
		}
		if !m.PublishTime.IsZero() {
			msg["publishTime"] = m.PublishTime.Format(time.RFC3339Nano)
		}
		env := map[string]any{"message": msg}
		if m.SubscriptionName != "" {
			env["subscription"] = m.SubscriptionName
		}
		if m.DeliveryAttempt != 0 {
			env["deliveryAttempt"] = m.DeliveryAttempt
		}
		again, err := json.Marshal(env)
		if err != nil {
			t.Fatalf("json.Marshal: %v", err)
		}
		m2, err := decodePush(http.Header{}, again)
		if err != nil {
			t.Fatalf("re-encoded message rejected: %v\n%s", err, again)
		}
		if !bytes.Equal(m.Data, m2.Data) || !maps.Equal(m.Attributes, m2.Attributes) || m.MessageID != m2.MessageID ||
			!m.PublishTime.Equal(m2.PublishTime) || m.OrderingKey != m2.OrderingKey ||
			m.SubscriptionName != m2.SubscriptionName || m.DeliveryAttempt != m2.DeliveryAttempt {
			t.Fatalf("round trip changed the message:\n%+v\n%+v", m, m2)
		}
	})
}

// TestDecodeUnwrappedNonCanonicalHeader: a Header built by hand may hold
// one name in two spellings; differing values are ambiguous.
func TestDecodeUnwrappedNonCanonicalHeader(t *testing.T) {
	h := http.Header{"Ce-Id": {"a"}, "ce-id": {"b"}, "Ce-Specversion": {"1.0"}}
	if _, err := decodePush(h, nil); err == nil || !events.IsPermanent(err) {
		t.Fatalf("decodePush = %v, want a permanent error", err)
	}
	h["ce-id"] = []string{"a"}
	if m, err := decodePush(h, nil); err != nil || m.Attributes["ce-id"] != "a" {
		t.Fatalf("decodePush = %+v, %v", m, err)
	}
}
