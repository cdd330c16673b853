// Package push receives Pub/Sub push deliveries over HTTP
// (POST /push/{subscription}) and hands each to the bus.Router of the
// subscription, the one the pull receiver in infra/bus uses: decode,
// validate, recover, classify and dead-letter are the same code for both.
//
// Both push formats are accepted, told apart by their headers:
//
//   - wrapped (the default): a JSON body {"message": {"data": base64,
//     "attributes": {...}, "messageId", "message_id", "publishTime",
//     "publish_time", "orderingKey"}, "subscription":
//     "projects/P/subscriptions/S", "deliveryAttempt": N}. deliveryAttempt
//     is present only on subscriptions with a dead-letter policy.
//   - unwrapped (PushConfig.NoWrapper with write_metadata = true): the body
//     is the message data; the metadata arrives as x-goog-pubsub-* headers
//     (subscription-name, message-id, publish-time, ordering-key) and every
//     message attribute as a header of its own name, so the CloudEvents
//     ce-* attributes are ce-* headers and the content-type attribute is the
//     Content-Type header. Only ce-* and Content-Type are collected as
//     attributes: other attributes cannot be told from ordinary HTTP
//     headers. An unwrapped subscription without write_metadata loses the
//     ce-* attributes, so its messages cannot be decoded (they are
//     dead-lettered): always set write_metadata.
//
// Pub/Sub treats 102, 200, 201, 202 and 204 as an acknowledgement and every
// other status as a negative acknowledgement, which it redelivers with
// backoff until the subscription's dead-letter policy moves the message
// away. So the receiver answers:
//
//	204  handler returned nil or events.ErrDropped           (ack)
//	204  message undecodable (bad JSON, bad base64, not a CloudEvent),
//	     Config.Validate failed, or the handler returned a permanent error
//	     (events.IsPermanent): Config.DeadLetter stored a copy with the
//	     reason first                                         (ack)
//	500  the dead-letter copy failed, or the handler panicked (nack: retried,
//	     nothing lost)
//	503  the handler returned any other error                (nack: retried)
//	400  the delivery names another subscription than the path (nack: a
//	     misconfigured push endpoint, not a bad message)
//	401  Config.Verifier refused the request                 (nack)
//	404  unknown subscription                                (nack)
//	405  not POST                                            (nack)
//	413  body over Config.MaxBody                            (nack; the
//	     dead-letter policy is the backstop, as the body cannot be copied)
//
// A poison message is never answered with an error status: it would be
// redelivered until the dead-letter policy gave up, wasting every attempt.
// Duplicate deliveries reach the handler each time; idempotency is the
// handler's job, as with the pull receiver.
package push

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"maps"
	"net/http"
	"strings"
	"time"

	"github.com/cloudevents/sdk-go/v2/event"

	"github.com/lethe-dev/lethe/functions/internal/reply"
	"github.com/lethe-dev/lethe/infra/bus"
)

// DefaultMaxBody is the body limit when Config.MaxBody is zero. Lethe's
// events carry at most events.MaxDataSize (256 KiB) of data; the wrapped
// form adds a third for base64.
const DefaultMaxBody int64 = 1 << 20

// AttrUndecodedBody marks a dead-letter copy whose data is the raw HTTP body
// of a push request that could not be decoded (so not a message's data).
const AttrUndecodedBody = "lethe-push-undecoded-body"

// Verifier authenticates a push request before anything in it is read.
type Verifier interface {
	Verify(r *http.Request) error
}

// DeadLetterFunc stores a poison message with the reason it failed. data and
// attrs are the message's data and attributes when the request could be
// decoded; otherwise data is the raw body and attrs holds only
// AttrUndecodedBody. A nil return means the copy is durable: the delivery is
// then acknowledged.
type DeadLetterFunc func(ctx context.Context, subscription string, data []byte, attrs map[string]string, reason error) error

// Config configures a Receiver.
type Config struct {
	// Handlers by subscription id (the S of projects/P/subscriptions/S).
	Handlers map[string]bus.Handler
	// Decoders by subscription id, for subscriptions whose messages are
	// not CloudEvents (a Cloud Storage notification); the others use
	// bus.FromMessage.
	Decoders map[string]bus.Decoder
	// Validate, when set, checks every decoded event (the events
	// registry); a failure dead-letters the message.
	Validate func(event.Event) error
	// DeadLetter stores poison messages (required).
	DeadLetter DeadLetterFunc
	// MaxBody bounds the request body; zero means DefaultMaxBody.
	MaxBody int64
	// Verifier, when set, authenticates every request (OIDCVerifier for a
	// public service); a refusal is a 401 and nothing is processed.
	Verifier Verifier
	// Logger receives one line per failed or dead-lettered delivery. Nil
	// discards.
	Logger *slog.Logger
}

// Receiver is the http.Handler of POST /push/{subscription}. Mount it on a
// pattern with a {subscription} wildcard, or on "/push/" (the subscription
// is then the rest of the path). It is safe for concurrent use.
type Receiver struct {
	routers  map[string]*bus.Router // by subscription id
	maxBody  int64
	verifier Verifier
	log      *slog.Logger
}

// NewReceiver checks cfg and returns its Receiver.
func NewReceiver(cfg Config) (*Receiver, error) {
	if cfg.DeadLetter == nil {
		return nil, errors.New("push.NewReceiver: DeadLetter is required")
	}
	if len(cfg.Handlers) == 0 {
		return nil, errors.New("push.NewReceiver: no Handlers")
	}
	for name, h := range cfg.Handlers {
		if name == "" || strings.Contains(name, "/") {
			return nil, fmt.Errorf("push.NewReceiver: invalid subscription id %q", name)
		}
		if h == nil {
			return nil, fmt.Errorf("push.NewReceiver: nil handler for %q", name)
		}
	}
	for name, d := range cfg.Decoders {
		if cfg.Handlers[name] == nil || d == nil {
			return nil, fmt.Errorf("push.NewReceiver: decoder for %q without a handler, or nil", name)
		}
	}
	if cfg.MaxBody < 0 {
		return nil, fmt.Errorf("push.NewReceiver: negative MaxBody %d", cfg.MaxBody)
	}
	rc := &Receiver{
		routers:  make(map[string]*bus.Router, len(cfg.Handlers)),
		maxBody:  cfg.MaxBody,
		verifier: cfg.Verifier,
		log:      cfg.Logger,
	}
	if rc.maxBody == 0 {
		rc.maxBody = DefaultMaxBody
	}
	if rc.log == nil {
		rc.log = slog.New(slog.DiscardHandler)
	}
	deadLetter := cfg.DeadLetter
	sink := func(ctx context.Context, d bus.Delivery, reason error) error {
		return deadLetter(ctx, d.Subscription, d.Data, maps.Clone(d.Attributes), reason)
	}
	for sub, h := range cfg.Handlers {
		rc.routers[sub] = &bus.Router{Decode: cfg.Decoders[sub], Validate: cfg.Validate, Handler: h, DeadLetter: sink, Logger: rc.log}
	}
	return rc, nil
}

// Delivery is the Pub/Sub metadata of the push delivery being handled.
type Delivery struct {
	Subscription string    // subscription id, from the path
	MessageID    string    // empty only for an unwrapped push without write_metadata
	PublishTime  time.Time // zero when not sent
	OrderingKey  string
	// DeliveryAttempt is 1 for the first delivery, 0 when Pub/Sub does not
	// send it (no dead-letter policy, or the unwrapped form).
	DeliveryAttempt int
	Unwrapped       bool
}

type deliveryKey struct{}

// DeliveryFromContext returns the delivery a handler (or DeadLetter) is
// called for.
func DeliveryFromContext(ctx context.Context) (Delivery, bool) {
	d, ok := ctx.Value(deliveryKey{}).(Delivery)
	return d, ok
}

// ServeHTTP handles one push delivery; see the package doc for the status
// codes.
func (rc *Receiver) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if r.Method != http.MethodPost {
		w.Header().Set("Allow", http.MethodPost)
		writeError(w, http.StatusMethodNotAllowed, "method_not_allowed", "use POST")
		return
	}
	// Authenticate first, so an anonymous caller learns nothing, not even
	// which subscriptions exist.
	if rc.verifier != nil {
		if err := rc.verifier.Verify(r); err != nil {
			rc.log.WarnContext(r.Context(), "push: request refused", slog.String("error", err.Error()))
			w.Header().Set("WWW-Authenticate", `Bearer error="invalid_token"`)
			writeError(w, http.StatusUnauthorized, "unauthenticated", "missing or invalid token")
			return
		}
	}
	sub := subscriptionFromPath(r)
	router, ok := rc.routers[sub]
	if !ok {
		rc.log.WarnContext(r.Context(), "push: unknown subscription", slog.String("subscription", truncate(sub, 128)))
		writeError(w, http.StatusNotFound, "not_found", "unknown subscription")
		return
	}
	if r.ContentLength > rc.maxBody {
		rc.log.WarnContext(r.Context(), "push: body too large", slog.String("subscription", sub), slog.Int64("content_length", r.ContentLength))
		writeError(w, http.StatusRequestEntityTooLarge, "too_large", "body too large")
		return
	}
	body, err := io.ReadAll(http.MaxBytesReader(w, r.Body, rc.maxBody))
	if err != nil {
		var tooLarge *http.MaxBytesError
		if errors.As(err, &tooLarge) {
			rc.log.WarnContext(r.Context(), "push: body too large", slog.String("subscription", sub))
			writeError(w, http.StatusRequestEntityTooLarge, "too_large", "body too large")
			return
		}
		// The sender went away mid-body: nothing to process, it retries.
		writeError(w, http.StatusBadRequest, "bad_request", "unreadable body")
		return
	}

	msg, err := decodePush(r.Header, body)
	if err != nil {
		ctx := context.WithValue(r.Context(), deliveryKey{}, Delivery{Subscription: sub})
		d := bus.Delivery{Subscription: sub, Data: body, Attributes: map[string]string{AttrUndecodedBody: "true"}}
		writeResult(w, router.Reject(ctx, d, err))
		return
	}
	msg.Subscription = sub
	if msg.SubscriptionName != "" {
		if named, _ := shortSubscriptionName(msg.SubscriptionName); named != sub {
			rc.log.ErrorContext(r.Context(), "push: delivery names another subscription; check the push endpoint",
				slog.String("subscription", sub), slog.String("message_id", msg.MessageID), slog.String("named", truncate(named, 128)))
			writeError(w, http.StatusBadRequest, "misrouted", "delivery is for another subscription")
			return
		}
	}
	ctx := context.WithValue(r.Context(), deliveryKey{}, msg.Delivery)
	res := router.Dispatch(ctx, bus.Delivery{
		Subscription:    sub,
		MessageID:       msg.MessageID,
		Data:            msg.Data,
		Attributes:      msg.Attributes,
		DeliveryAttempt: msg.DeliveryAttempt,
	})
	if res.Outcome == bus.OutcomeRetry && !res.Panicked && res.DeadLetterErr == nil {
		rc.log.WarnContext(ctx, "push: handler failed, nacking",
			slog.String("subscription", sub), slog.String("message_id", msg.MessageID), slog.String("error", res.Err.Error()))
	}
	writeResult(w, res)
}

// writeResult answers a routed delivery: 204 acknowledges (done, dropped or
// dead-lettered), 500 nacks a panic or a failed dead-letter copy, 503 any
// other retry.
func writeResult(w http.ResponseWriter, res bus.Result) {
	switch {
	case res.Outcome != bus.OutcomeRetry:
		w.WriteHeader(http.StatusNoContent)
	case res.Panicked:
		writeError(w, http.StatusInternalServerError, "internal", "handler failed")
	case res.DeadLetterErr != nil:
		writeError(w, http.StatusInternalServerError, "internal", "dead-letter copy failed")
	default:
		writeError(w, http.StatusServiceUnavailable, "retry", "temporary failure")
	}
}

// subscriptionFromPath reads {subscription} from the route pattern, or the
// path segment after /push/ when the Receiver is mounted on a prefix.
func subscriptionFromPath(r *http.Request) string {
	if s := r.PathValue("subscription"); s != "" {
		return s
	}
	s, ok := strings.CutPrefix(r.URL.Path, "/push/")
	if !ok || strings.Contains(s, "/") {
		return ""
	}
	return s
}

// writeError answers in the edge's error shape, with no internals.
var writeError = reply.Error
