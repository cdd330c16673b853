// Package redislimit is the production adapter of the rate-limit port: GCRA in
// Redis through github.com/go-redis/redis_rate/v10, so every instance of the
// edge shares one count per key.
//
// Keys: the caller passes keys that are already keyed hashes (of a uid, an IP)
// plus a route name — never raw user ids, phone numbers or addresses, which
// would then sit in Redis in clear. This adapter prefixes each key (default
// DefaultPrefix) and redis_rate adds its own "rate:", so a key k is stored as
// "rate:" + prefix + k, with a TTL of at most one burst window.
//
// Errors: a Redis that does not answer (refused, timed out, closed, loading,
// read-only, out of memory, failing authentication) gives an error wrapping
// ratelimit.ErrUnavailable, which ratelimit.Fallback turns into a local limit
// or a 503 depending on the route. A canceled caller context is returned as
// is; it is not an outage.
package redislimit

import (
	"context"
	"errors"
	"fmt"
	"net/url"
	"strings"
	"time"

	"github.com/go-redis/redis_rate/v10"
	"github.com/redis/go-redis/v9"

	"github.com/lethe-dev/lethe/infra/ratelimit"
)

// DefaultPrefix namespaces lethe's limiter keys in a shared Redis.
const DefaultPrefix = "lethe:rl:"

// Timeouts applied by Open unless the URL sets them (dial_timeout,
// read_timeout, write_timeout, pool_timeout, max_retries). A limiter sits on
// every request's path: better to answer "unavailable" quickly and fall back
// than to hold requests for go-redis' 5 s defaults.
const (
	DefaultDialTimeout  = 500 * time.Millisecond
	DefaultReadTimeout  = 200 * time.Millisecond
	DefaultWriteTimeout = 200 * time.Millisecond
	DefaultPoolTimeout  = 300 * time.Millisecond
	// DefaultMaxRetries: one retry covers a pooled connection that died with
	// a Redis restart; more would only stretch an outage's latency.
	DefaultMaxRetries = 1
	// DefaultDialerRetries: dial attempts per new connection.
	DefaultDialerRetries = 1
)

// Limiter is a Redis-backed GCRA limiter. Safe for concurrent use.
type Limiter struct {
	client  *redis.Client
	limiter *redis_rate.Limiter
	prefix  string
	// owned: Close closes the client (Open made it).
	owned bool
}

var _ ratelimit.Limiter = (*Limiter)(nil)

// New returns a limiter over client, whose keys start with prefix (use
// DefaultPrefix unless several deployments share one Redis). The caller keeps
// ownership of client: Close does not close it.
func New(client *redis.Client, prefix string) *Limiter {
	return &Limiter{client: client, limiter: redis_rate.NewLimiter(client), prefix: prefix}
}

// Open connects to the Redis at rawURL (redis://[user:password@]host:port/db
// or rediss:// for TLS, with go-redis' query options), applies the default
// timeouts the URL does not override, and pings it. A Redis that does not
// answer here is an error wrapping ratelimit.ErrUnavailable: a wrong address
// should stop a deploy rather than silently degrade it. The returned Limiter
// uses DefaultPrefix and owns its client (Close closes it).
func Open(ctx context.Context, rawURL string) (*Limiter, error) {
	opts, err := parseURL(rawURL)
	if err != nil {
		return nil, err
	}
	client := redis.NewClient(opts)
	l := New(client, DefaultPrefix)
	l.owned = true
	if err := l.Ping(ctx); err != nil {
		_ = client.Close()
		return nil, fmt.Errorf("redislimit.Open: %w", err)
	}
	return l, nil
}

// parseURL turns rawURL into client options. Its errors never quote the URL:
// it may hold a password.
func parseURL(rawURL string) (*redis.Options, error) {
	u, err := url.Parse(rawURL)
	if err != nil {
		return nil, errors.New("redislimit: invalid Redis URL (not a URL)")
	}
	if u.Scheme != "redis" && u.Scheme != "rediss" {
		return nil, errors.New("redislimit: invalid Redis URL: scheme must be redis or rediss")
	}
	if u.Host == "" {
		return nil, errors.New("redislimit: invalid Redis URL: no host")
	}
	q := u.Query()
	if q.Has("skip_verify") {
		// Turning off TLS verification would let anyone on the path read the
		// password and forge limiter answers.
		return nil, errors.New("redislimit: invalid Redis URL: skip_verify is not allowed")
	}
	opts, err := redis.ParseURL(rawURL)
	if err != nil {
		if pw, ok := u.User.Password(); ok && pw != "" && strings.Contains(err.Error(), pw) {
			return nil, errors.New("redislimit: invalid Redis URL")
		}
		return nil, fmt.Errorf("redislimit: invalid Redis URL: %w", err)
	}
	if !q.Has("dial_timeout") {
		opts.DialTimeout = DefaultDialTimeout
	}
	if !q.Has("read_timeout") {
		opts.ReadTimeout = DefaultReadTimeout
	}
	if !q.Has("write_timeout") {
		opts.WriteTimeout = DefaultWriteTimeout
	}
	if !q.Has("pool_timeout") {
		opts.PoolTimeout = DefaultPoolTimeout
	}
	if !q.Has("max_retries") {
		opts.MaxRetries = DefaultMaxRetries
	}
	// go-redis redials a refused connection 5 times, 100 ms apart, inside
	// one call; the Fallback's cooldown is the better place to wait.
	opts.DialerRetries = DefaultDialerRetries
	// Let a request's own deadline cut a slow call short too.
	opts.ContextTimeoutEnabled = true
	return opts, nil
}

// Allow counts one event against key under limit, atomically in Redis.
func (l *Limiter) Allow(ctx context.Context, key string, limit ratelimit.Limit) (ratelimit.Result, error) {
	if err := limit.Validate(); err != nil {
		return ratelimit.Result{}, fmt.Errorf("redislimit.Allow: %w", err)
	}
	if err := ratelimit.ValidateKey(key); err != nil {
		return ratelimit.Result{}, fmt.Errorf("redislimit.Allow: %w", err)
	}
	if err := ctx.Err(); err != nil {
		return ratelimit.Result{}, fmt.Errorf("redislimit.Allow: %w", err)
	}
	res, err := l.limiter.Allow(ctx, l.prefix+key, redis_rate.Limit{Rate: limit.Rate, Burst: limit.Burst, Period: limit.Period})
	if err != nil {
		return ratelimit.Result{}, classify(ctx, "redis_rate.Allow", err)
	}
	return toResult(res), nil
}

// redisKey is where redis_rate keeps key's state.
func (l *Limiter) redisKey(key string) string { return "rate:" + l.prefix + key }

// Forget deletes the keys' state and returns how many existed.
func (l *Limiter) Forget(ctx context.Context, keys ...string) (int, error) {
	rk, err := l.redisKeys(keys)
	if err != nil || len(rk) == 0 {
		return 0, err
	}
	n, err := l.client.Del(ctx, rk...).Result()
	if err != nil {
		return 0, classify(ctx, "redis.Del", err)
	}
	return int(n), nil
}

// Held counts the keys that have state (redis_rate expires idle ones).
func (l *Limiter) Held(ctx context.Context, keys ...string) (int, error) {
	rk, err := l.redisKeys(keys)
	if err != nil || len(rk) == 0 {
		return 0, err
	}
	n, err := l.client.Exists(ctx, rk...).Result()
	if err != nil {
		return 0, classify(ctx, "redis.Exists", err)
	}
	return int(n), nil
}

func (l *Limiter) redisKeys(keys []string) ([]string, error) {
	out := make([]string, 0, len(keys))
	for _, k := range keys {
		if err := ratelimit.ValidateKey(k); err != nil {
			return nil, fmt.Errorf("redislimit: %w", err)
		}
		out = append(out, l.redisKey(k))
	}
	return out, nil
}

// toResult maps redis_rate's result onto the port's: RetryAfter is -1 there
// when allowed and 0 here.
func toResult(res *redis_rate.Result) ratelimit.Result {
	r := ratelimit.Result{
		Allowed:    res.Allowed > 0,
		Remaining:  max(res.Remaining, 0),
		ResetAfter: max(res.ResetAfter, 0),
	}
	if !r.Allowed {
		r.RetryAfter = max(res.RetryAfter, 0)
	}
	return r
}

// Ping checks that Redis answers (for readiness probes).
func (l *Limiter) Ping(ctx context.Context) error {
	if err := l.client.Ping(ctx).Err(); err != nil {
		return classify(ctx, "redis.Ping", err)
	}
	return nil
}

// Close releases the client if Open made it.
func (l *Limiter) Close() error {
	if !l.owned {
		return nil
	}
	if err := l.client.Close(); err != nil {
		return fmt.Errorf("redis.Close: %w", err)
	}
	return nil
}

// unavailableReply reports whether a Redis error reply means "this server
// cannot serve now" rather than "this command is wrong".
func unavailableReply(msg string) bool {
	code, _, _ := strings.Cut(msg, " ")
	switch code {
	case "LOADING", "READONLY", "MASTERDOWN", "CLUSTERDOWN", "TRYAGAIN", "BUSY",
		"NOREPLICAS", "OOM", "NOAUTH", "WRONGPASS", "NOPERM":
		return true
	}
	return false
}

// classify wraps err from call: the context's error for a caller that went
// away (whatever the client then reported: with ContextTimeoutEnabled an
// expired deadline surfaces as an i/o timeout), ErrUnavailable for a backend
// that does not answer, and the plain error for a reply that says the
// command itself is wrong (a bug).
func classify(ctx context.Context, call string, err error) error {
	ctxErr := ctx.Err()
	if dl, ok := ctx.Deadline(); ctxErr == nil && ok && !time.Now().Before(dl) {
		// The socket deadline is the context's and its timer may fire before
		// the context's own: past the deadline, the expiry is the caller's.
		ctxErr = context.DeadlineExceeded
	}
	if ctxErr != nil {
		if errors.Is(err, ctxErr) {
			return fmt.Errorf("%s: %w", call, err)
		}
		return fmt.Errorf("%s: %w: %w", call, ctxErr, err)
	}
	var reply redis.Error
	if errors.As(err, &reply) {
		if unavailableReply(reply.Error()) {
			return fmt.Errorf("%s: %w: %w", call, ratelimit.ErrUnavailable, err)
		}
		return fmt.Errorf("%s: %w", call, err)
	}
	// Refused, reset, timed out, pool exhausted, client closed, EOF: no answer.
	return fmt.Errorf("%s: %w: %w", call, ratelimit.ErrUnavailable, err)
}
