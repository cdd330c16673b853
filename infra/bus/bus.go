// Package bus carries CloudEvents over Google Cloud Pub/Sub (the v2 client)
// in binary content mode, as the CloudEvents Pub/Sub protocol binding says.
//
// The same code runs against the real service (Application Default
// Credentials), the gcloud emulator (Config.EmulatorHost) and, in embedded
// mode, an in-process pstest server. Receive runs a Handler per message and
// maps its result to Pub/Sub: nil (or events.ErrDropped) acknowledges, a
// permanent error (events.IsPermanent) copies the message with its reason to
// the topic's dead-letter topic and acknowledges, anything else nacks for
// redelivery. Subscriptions carry a DeadLetterPolicy as the backstop, so a
// message that keeps failing is not redelivered forever.
package bus

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"sync"
	"time"

	"cloud.google.com/go/pubsub/v2"
	"cloud.google.com/go/pubsub/v2/apiv1/pubsubpb"
	"cloud.google.com/go/pubsub/v2/pstest"
	"github.com/cloudevents/sdk-go/v2/event"
	"google.golang.org/api/iterator"
	"google.golang.org/api/option"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/status"
)

// Handler processes one event. It returns nil when done, an error wrapping
// events.ErrDropped when it deliberately ignores the event, a permanent error
// (events.Permanent) for poison, and any other error to have the message
// redelivered.
type Handler func(ctx context.Context, e event.Event) error

// Middleware wraps a Handler with a cross-cutting concern.
type Middleware func(Handler) Handler

// Chain wraps h with mws; the first middleware is the outermost, so
// Chain(h, a, b) runs a, then b, then h.
func Chain(h Handler, mws ...Middleware) Handler {
	for i := len(mws) - 1; i >= 0; i-- {
		h = mws[i](h)
	}
	return h
}

// ErrClosed is returned by Bus methods called after Close.
var ErrClosed = errors.New("bus: closed")

// Defaults for Config fields left zero.
const (
	DefaultEmbeddedProjectID = "lethe-embedded"
	// pstest hands each streaming pull one message per 10 ms tick, so an
	// embedded receiver needs many streams to keep up.
	DefaultEmbeddedStreams = 16
	DefaultStreams         = 2
	DefaultDrainTimeout    = 10 * time.Second
)

// Config selects the Pub/Sub backend and tunes receivers. Exactly one
// backend applies: Embedded, else EmulatorHost, else the real service with
// Application Default Credentials. Nothing here reads the environment.
type Config struct {
	// ProjectID is required except in embedded mode (default
	// DefaultEmbeddedProjectID).
	ProjectID string
	// Embedded starts an in-process pstest server; it lives until Close.
	Embedded bool
	// EmulatorHost is host:port of a gcloud Pub/Sub emulator (what
	// PUBSUB_EMULATOR_HOST holds), reached over plaintext gRPC.
	EmulatorHost string
	// Logger receives the bus's own logs (dead letters, undecodable
	// messages, recovered panics). Nil discards them.
	Logger *slog.Logger
	// Validate, when set, checks every event on publish and receive (e.g.
	// the events registry's schema check). A failure on receive dead-letters
	// the message; on publish it is returned as a permanent error.
	Validate func(event.Event) error
	// NumGoroutines is the number of streaming pulls per Receive. Zero means
	// DefaultEmbeddedStreams in embedded mode, DefaultStreams otherwise.
	NumGoroutines int
	// MaxOutstanding bounds the unacknowledged messages per Receive (and so
	// the concurrent handlers). Zero keeps the client default (1000).
	MaxOutstanding int
	// DrainTimeout is how long in-flight handlers keep a live context after
	// Receive's context is cancelled. Zero means DefaultDrainTimeout.
	DrainTimeout time.Duration
	// PublishDelay is how long a publisher waits to batch messages. Zero
	// keeps the client default (10 ms); lower trades throughput for latency.
	PublishDelay time.Duration
	// PingTopic is the topic Ping reads. Empty: Ping lists one topic.
	PingTopic string
}

// Bus publishes and receives CloudEvents on Pub/Sub. It is safe for
// concurrent use.
type Bus struct {
	cfg    Config
	log    *slog.Logger
	client *pubsub.Client
	conn   *grpc.ClientConn // nil when the client dialled on its own
	srv    *pstest.Server   // embedded mode only

	mu         sync.Mutex
	closed     bool
	publishers map[string]*pubsub.Publisher // by full topic name
}

// Open connects to the backend cfg selects.
func Open(ctx context.Context, cfg Config) (*Bus, error) {
	if cfg.Embedded && cfg.ProjectID == "" {
		cfg.ProjectID = DefaultEmbeddedProjectID
	}
	if cfg.ProjectID == "" {
		return nil, errors.New("bus.Open: ProjectID is required")
	}
	if strings.ContainsRune(cfg.ProjectID, '/') {
		return nil, fmt.Errorf("bus.Open: invalid ProjectID %q", cfg.ProjectID)
	}
	if cfg.NumGoroutines <= 0 {
		cfg.NumGoroutines = DefaultStreams
		if cfg.Embedded {
			cfg.NumGoroutines = DefaultEmbeddedStreams
		}
	}
	if cfg.DrainTimeout <= 0 {
		cfg.DrainTimeout = DefaultDrainTimeout
	}
	b := &Bus{cfg: cfg, log: cfg.Logger, publishers: map[string]*pubsub.Publisher{}}
	if b.log == nil {
		b.log = slog.New(slog.DiscardHandler)
	}

	var opts []option.ClientOption
	addr := ""
	switch {
	case cfg.Embedded:
		b.srv = pstest.NewServer()
		addr = b.srv.Addr
	case cfg.EmulatorHost != "":
		addr = cfg.EmulatorHost
	}
	if addr != "" {
		conn, err := grpc.NewClient(addr, grpc.WithTransportCredentials(insecure.NewCredentials()))
		if err != nil {
			b.closeServer()
			return nil, fmt.Errorf("bus.Open: grpc.NewClient %s: %w", addr, err)
		}
		b.conn = conn
		opts = append(opts, option.WithGRPCConn(conn))
	}
	client, err := pubsub.NewClient(ctx, cfg.ProjectID, opts...)
	if err != nil {
		b.closeServer()
		return nil, fmt.Errorf("bus.Open: pubsub.NewClient: %w", err)
	}
	b.client = client
	return b, nil
}

// Client exposes the underlying Pub/Sub client for administration and tests
// (raw pulls, deleting resources). Publishing through it bypasses the
// CloudEvents mapping.
func (b *Bus) Client() *pubsub.Client { return b.client }

// ProjectID is the project the bus talks to.
func (b *Bus) ProjectID() string { return b.cfg.ProjectID }

// TopicName returns the full resource name of a topic id (names already
// starting with "projects/" are returned unchanged).
func (b *Bus) TopicName(topic string) string {
	if strings.HasPrefix(topic, "projects/") {
		return topic
	}
	return "projects/" + b.cfg.ProjectID + "/topics/" + topic
}

// SubscriptionName returns the full resource name of a subscription id.
func (b *Bus) SubscriptionName(sub string) string {
	if strings.HasPrefix(sub, "projects/") {
		return sub
	}
	return "projects/" + b.cfg.ProjectID + "/subscriptions/" + sub
}

// Ping checks that the backend answers: it reads Config.PingTopic, or lists
// one topic of the project when none is configured.
func (b *Bus) Ping(ctx context.Context) error {
	if b.isClosed() {
		return ErrClosed
	}
	if b.cfg.PingTopic != "" {
		if _, err := b.client.TopicAdminClient.GetTopic(ctx, &pubsubpb.GetTopicRequest{Topic: b.TopicName(b.cfg.PingTopic)}); err != nil {
			return fmt.Errorf("bus.Ping: GetTopic: %w", err)
		}
		return nil
	}
	it := b.client.TopicAdminClient.ListTopics(ctx, &pubsubpb.ListTopicsRequest{
		Project:  "projects/" + b.cfg.ProjectID,
		PageSize: 1,
	})
	if _, err := it.Next(); err != nil && !errors.Is(err, iterator.Done) {
		return fmt.Errorf("bus.Ping: ListTopics: %w", err)
	}
	return nil
}

// Close stops every publisher (flushing what is pending), closes the client
// and, in embedded mode, stops the pstest server. Cancel the contexts of
// running Receive calls first so their handlers drain. Close is idempotent.
func (b *Bus) Close() error {
	b.mu.Lock()
	if b.closed {
		b.mu.Unlock()
		return nil
	}
	b.closed = true
	pubs := b.publishers
	b.publishers = nil
	b.mu.Unlock()

	for _, p := range pubs {
		p.Stop() // flushes pending messages
	}
	var errs []error
	if err := b.client.Close(); err != nil {
		errs = append(errs, fmt.Errorf("bus.Close: pubsub.Client.Close: %w", err))
	}
	if b.conn != nil {
		// The client usually closes the connection it was given already;
		// closing it again only reports that.
		if err := b.conn.Close(); err != nil && status.Code(err) != codes.Canceled {
			errs = append(errs, fmt.Errorf("bus.Close: grpc.ClientConn.Close: %w", err))
		}
	}
	if err := b.closeServer(); err != nil {
		errs = append(errs, err)
	}
	return errors.Join(errs...)
}

func (b *Bus) closeServer() error {
	if b.srv == nil {
		return nil
	}
	err := b.srv.Close()
	b.srv = nil
	if err != nil {
		return fmt.Errorf("bus.Close: pstest.Server.Close: %w", err)
	}
	return nil
}

func (b *Bus) isClosed() bool {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.closed
}

// publisher returns the cached publisher of a topic, creating it on first
// use. Ordering is enabled on every publisher: messages without an ordering
// key are unaffected.
func (b *Bus) publisher(topic string) (*pubsub.Publisher, error) {
	name := b.TopicName(topic)
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.closed {
		return nil, ErrClosed
	}
	if p, ok := b.publishers[name]; ok {
		return p, nil
	}
	p := b.client.Publisher(name)
	p.EnableMessageOrdering = true
	if b.cfg.PublishDelay > 0 {
		p.PublishSettings.DelayThreshold = b.cfg.PublishDelay
	}
	b.publishers[name] = p
	return p, nil
}
