package push

import (
	"bytes"
	"encoding/base64"
	"encoding/json"
	"errors"
	"io"
	"math"
	"net/http"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/lethe-dev/lethe/events"
)

// Headers Pub/Sub sets on an unwrapped push request when the subscription's
// no_wrapper.write_metadata is true (PushConfig.NoWrapper in the API): the
// message metadata as x-goog-pubsub-<KEY>, the message attributes as plain
// <KEY>: <VALUE> headers.
const (
	HeaderSubscriptionName = "X-Goog-Pubsub-Subscription-Name"
	HeaderMessageID        = "X-Goog-Pubsub-Message-Id"
	HeaderPublishTime      = "X-Goog-Pubsub-Publish-Time"
	HeaderOrderingKey      = "X-Goog-Pubsub-Ordering-Key"
	// The gcloud emulator (528.0.0) names the ordering key header this way;
	// both are read.
	headerOrderingKeyEmulator = "X-Goog-Ordering-Key"
)

// ceHeaderPrefix is the canonical form of the "ce-" prefix of CloudEvents
// attributes carried as HTTP headers.
const ceHeaderPrefix = "Ce-"

// attrContentType is the Pub/Sub attribute that carries datacontenttype in
// binary mode (bus.AttrContentType).
const attrContentType = "content-type"

// maxDeliveryAttempt bounds deliveryAttempt (an int32 in the API). It can
// exceed the dead-letter policy's maximum when forwarding fails, so no lower
// bound is assumed.
const maxDeliveryAttempt = math.MaxInt32

// pushMessage is one decoded push request.
type pushMessage struct {
	Delivery
	// SubscriptionName is the full subscription name the request names
	// (wrapper field or header), empty when it names none.
	SubscriptionName string
	Data             []byte
	Attributes       map[string]string
}

// isUnwrapped reports whether a request is an unwrapped push: Pub/Sub then
// sends the metadata and attributes as headers. A wrapped push never carries
// x-goog-pubsub-* or ce-* headers, so their presence decides. An unwrapped
// push without write_metadata carries neither and is read as a wrapper,
// which fails: without its attributes the message is not a CloudEvent.
func isUnwrapped(h http.Header) bool {
	if len(h.Values(HeaderMessageID)) > 0 {
		return true
	}
	for k := range h {
		if len(k) > len(ceHeaderPrefix) && strings.EqualFold(k[:len(ceHeaderPrefix)], ceHeaderPrefix) {
			return true
		}
	}
	return false
}

// decodePush parses a push request body and headers in either push format.
// Every failure is a permanent error (events.IsPermanent): the request can
// never be decoded, however often Pub/Sub redelivers it.
func decodePush(h http.Header, body []byte) (pushMessage, error) {
	if isUnwrapped(h) {
		return decodeUnwrapped(h, body)
	}
	return decodeWrapped(body)
}

// decodeUnwrapped reads the unwrapped form: the body is the message data,
// ce-* headers and Content-Type are the attributes the CloudEvents mapping
// needs. Other attributes cannot be told apart from ordinary HTTP headers
// and are not collected.
func decodeUnwrapped(h http.Header, body []byte) (pushMessage, error) {
	m := pushMessage{Data: body, Attributes: map[string]string{}}
	m.Unwrapped = true
	for k, vs := range h {
		lk := strings.ToLower(k)
		if !strings.HasPrefix(lk, "ce-") && lk != attrContentType {
			continue
		}
		v, err := singleValue(lk, vs)
		if err != nil {
			return pushMessage{}, err
		}
		// Only a hand-built Header can hold two spellings of one name.
		if prev, dup := m.Attributes[lk]; dup && prev != v {
			return pushMessage{}, events.Permanentf("push: header %q given twice with different values", truncate(lk, 64))
		}
		m.Attributes[lk] = v
	}
	var err error
	if m.MessageID, err = headerValue(h, HeaderMessageID); err != nil {
		return pushMessage{}, err
	}
	if m.SubscriptionName, err = headerValue(h, HeaderSubscriptionName); err != nil {
		return pushMessage{}, err
	}
	if m.SubscriptionName != "" {
		if _, err := shortSubscriptionName(m.SubscriptionName); err != nil {
			return pushMessage{}, err
		}
	}
	pt, err := headerValue(h, HeaderPublishTime)
	if err != nil {
		return pushMessage{}, err
	}
	if m.PublishTime, err = parsePublishTime(pt, ""); err != nil {
		return pushMessage{}, err
	}
	ok1, err := headerValue(h, HeaderOrderingKey)
	if err != nil {
		return pushMessage{}, err
	}
	ok2, err := headerValue(h, headerOrderingKeyEmulator)
	if err != nil {
		return pushMessage{}, err
	}
	if m.OrderingKey, err = agree("ordering key", ok1, ok2); err != nil {
		return pushMessage{}, err
	}
	return m, nil
}

// singleValue returns the one value of a header carrying an attribute.
// Attributes whose names differ only in case arrive as one header with
// several values: identical values are harmless, different ones ambiguous.
func singleValue(name string, vs []string) (string, error) {
	if len(vs) == 0 {
		return "", nil
	}
	for _, v := range vs[1:] {
		if v != vs[0] {
			return "", events.Permanentf("push: header %q given twice with different values", truncate(name, 64))
		}
	}
	if !utf8.ValidString(vs[0]) {
		return "", events.Permanentf("push: header %q is not valid UTF-8", truncate(name, 64))
	}
	return vs[0], nil
}

func headerValue(h http.Header, name string) (string, error) {
	return singleValue(strings.ToLower(name), h.Values(name))
}

// wireEnvelope and wireMessage are the wrapped push format: a JSON object
// {"message": PubsubMessage, "subscription": name, "deliveryAttempt": n}
// where PubsubMessage is the REST representation (data in base64). Pub/Sub
// writes messageId and publishTime twice, also as message_id and
// publish_time; both spellings are read and must agree.
type wireEnvelope struct {
	Message         *wireMessage `json:"message"`
	Subscription    *string      `json:"subscription"`
	DeliveryAttempt *int64       `json:"deliveryAttempt"`
}

type wireMessage struct {
	Data             *string            `json:"data"`
	Attributes       map[string]*string `json:"attributes"`
	MessageID        *string            `json:"messageId"`
	MessageIDSnake   *string            `json:"message_id"`
	PublishTime      *string            `json:"publishTime"`
	PublishTimeSnake *string            `json:"publish_time"`
	OrderingKey      *string            `json:"orderingKey"`
}

// decodeWrapped reads the wrapped form strictly: the body must be exactly
// one JSON object; keys match exactly (encoding/json alone would match them
// case-insensitively) and appear once; known fields must have their types.
// Unknown keys are tolerated in the two objects Google owns (the envelope
// and the message) because Google adds fields there over time; refusing
// them would dead-letter every message the day it does.
func decodeWrapped(body []byte) (pushMessage, error) {
	if !utf8.Valid(body) {
		return pushMessage{}, events.Permanentf("push: wrapped body is not valid UTF-8")
	}
	var env wireEnvelope
	if err := strictObject(body, &env, "envelope"); err != nil {
		return pushMessage{}, err
	}
	if env.Message == nil {
		return pushMessage{}, events.Permanentf("push: wrapped body has no message")
	}
	wm := env.Message
	m := pushMessage{}
	if wm.Data != nil && *wm.Data != "" {
		d, err := base64.StdEncoding.Strict().DecodeString(*wm.Data)
		if err != nil {
			return pushMessage{}, events.Permanentf("push: message data is not base64")
		}
		m.Data = d
	}
	m.Attributes = make(map[string]string, len(wm.Attributes))
	for k, v := range wm.Attributes {
		if v == nil {
			return pushMessage{}, events.Permanentf("push: attribute %q is null", truncate(k, 64))
		}
		m.Attributes[k] = *v
	}
	var err error
	if m.MessageID, err = agree("messageId", deref(wm.MessageID), deref(wm.MessageIDSnake)); err != nil {
		return pushMessage{}, err
	}
	if m.MessageID == "" {
		return pushMessage{}, events.Permanentf("push: message has no messageId")
	}
	if m.PublishTime, err = parsePublishTime(deref(wm.PublishTime), deref(wm.PublishTimeSnake)); err != nil {
		return pushMessage{}, err
	}
	m.OrderingKey = deref(wm.OrderingKey)
	if env.Subscription != nil {
		if _, err := shortSubscriptionName(*env.Subscription); err != nil {
			return pushMessage{}, err
		}
		m.SubscriptionName = *env.Subscription
	}
	if env.DeliveryAttempt != nil {
		if n := *env.DeliveryAttempt; n < 1 || n > maxDeliveryAttempt {
			return pushMessage{}, events.Permanentf("push: deliveryAttempt is not a positive integer")
		}
		m.DeliveryAttempt = int(*env.DeliveryAttempt)
	}
	return m, nil
}

// strictObject decodes one JSON object into v after checking that it is
// exactly one object with unique keys, and that the known keys of v (and of
// its nested "message" object) are spelled exactly.
func strictObject(body []byte, v *wireEnvelope, what string) error {
	top, err := objectKeys(body, what)
	if err != nil {
		return err
	}
	if raw, ok := top["message"]; ok && !bytes.Equal(bytes.TrimSpace(raw), []byte("null")) {
		msg, err := objectKeys(raw, "message")
		if err != nil {
			return err
		}
		if raw, ok := msg["attributes"]; ok && !bytes.Equal(bytes.TrimSpace(raw), []byte("null")) {
			if _, err := objectKeys(raw, "attributes"); err != nil {
				return err
			}
		}
		v.Message = &wireMessage{}
		if err := decodeKnown(msg, map[string]any{
			"data":         &v.Message.Data,
			"attributes":   &v.Message.Attributes,
			"messageId":    &v.Message.MessageID,
			"message_id":   &v.Message.MessageIDSnake,
			"publishTime":  &v.Message.PublishTime,
			"publish_time": &v.Message.PublishTimeSnake,
			"orderingKey":  &v.Message.OrderingKey,
		}); err != nil {
			return err
		}
	}
	return decodeKnown(top, map[string]any{
		"subscription":    &v.Subscription,
		"deliveryAttempt": &v.DeliveryAttempt,
	})
}

// decodeKnown decodes the fields named in dst from obj; other keys are left
// alone (see decodeWrapped).
func decodeKnown(obj map[string]json.RawMessage, dst map[string]any) error {
	for k, p := range dst {
		raw, ok := obj[k]
		if !ok {
			continue
		}
		if err := json.Unmarshal(raw, p); err != nil {
			return events.Permanentf("push: field %q has the wrong type", k)
		}
	}
	return nil
}

// objectKeys splits one JSON object into its members, refusing anything
// that is not exactly one object, and duplicate keys (which parsers resolve
// differently, so an attacker could show one value to a checker and another
// to us).
func objectKeys(data []byte, what string) (map[string]json.RawMessage, error) {
	dec := json.NewDecoder(bytes.NewReader(data))
	dec.UseNumber()
	tok, err := dec.Token()
	if err != nil {
		return nil, events.Permanentf("push: %s is not JSON", what)
	}
	if d, ok := tok.(json.Delim); !ok || d != '{' {
		return nil, events.Permanentf("push: %s is not a JSON object", what)
	}
	out := map[string]json.RawMessage{}
	for dec.More() {
		tok, err := dec.Token()
		if err != nil {
			return nil, events.Permanentf("push: %s is not valid JSON", what)
		}
		key, ok := tok.(string)
		if !ok {
			return nil, events.Permanentf("push: %s is not valid JSON", what)
		}
		if _, dup := out[key]; dup {
			return nil, events.Permanentf("push: %s has key %q twice", what, truncate(key, 64))
		}
		var raw json.RawMessage
		if err := dec.Decode(&raw); err != nil {
			return nil, events.Permanentf("push: %s is not valid JSON", what)
		}
		out[key] = raw
	}
	if _, err := dec.Token(); err != nil { // the closing '}'
		return nil, events.Permanentf("push: %s is not valid JSON", what)
	}
	if _, err := dec.Token(); !errors.Is(err, io.EOF) {
		return nil, events.Permanentf("push: %s has trailing data", what)
	}
	return out, nil
}

// agree returns the value given under two names (either may be empty); two
// different non-empty values are ambiguous.
func agree(field, a, b string) (string, error) {
	switch {
	case a == "":
		return b, nil
	case b == "" || a == b:
		return a, nil
	}
	return "", events.Permanentf("push: %s given twice with different values", field)
}

func parsePublishTime(a, b string) (time.Time, error) {
	s, err := agree("publishTime", a, b)
	if err != nil || s == "" {
		return time.Time{}, err
	}
	t, err := time.Parse(time.RFC3339Nano, s)
	if err != nil {
		return time.Time{}, events.Permanentf("push: publishTime is not an RFC 3339 timestamp")
	}
	return t, nil
}

// shortSubscriptionName returns S of "projects/P/subscriptions/S".
func shortSubscriptionName(full string) (string, error) {
	parts := strings.Split(full, "/")
	if len(parts) != 4 || parts[0] != "projects" || parts[2] != "subscriptions" || parts[1] == "" || parts[3] == "" {
		return "", events.Permanentf("push: subscription %q is not projects/*/subscriptions/*", truncate(full, 128))
	}
	return parts[3], nil
}

func deref(p *string) string {
	if p == nil {
		return ""
	}
	return *p
}

// truncate cuts s to at most n bytes on a rune boundary and makes it valid
// UTF-8, for quoting outside input in errors.
func truncate(s string, n int) string {
	s = strings.ToValidUTF8(s, "\uFFFD")
	if len(s) <= n {
		return s
	}
	for n > 0 && !utf8.RuneStart(s[n]) {
		n--
	}
	return s[:n]
}
