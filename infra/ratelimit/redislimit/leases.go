package redislimit

import (
	"context"
	"fmt"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/lethe-dev/lethe/infra/ratelimit"
)

// Leases live in one sorted set per key: member = holder, score = expiry in
// Redis' own milliseconds (so instances' clocks do not matter). Each script
// first drops the expired holders; the set itself expires with its last
// lease. Keys sit beside the rate limits: "rate:" + prefix + "lease:" + key.
var (
	acquireScript = redis.NewScript(`
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local ttl = tonumber(ARGV[3])
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now)
if not redis.call('ZSCORE', KEYS[1], ARGV[1]) and redis.call('ZCARD', KEYS[1]) >= tonumber(ARGV[2]) then
  return 0
end
redis.call('ZADD', KEYS[1], now + ttl, ARGV[1])
redis.call('PEXPIRE', KEYS[1], ttl)
return 1`)
	renewScript = redis.NewScript(`
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local ttl = tonumber(ARGV[2])
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now)
if not redis.call('ZSCORE', KEYS[1], ARGV[1]) then
  return 0
end
redis.call('ZADD', KEYS[1], now + ttl, ARGV[1])
if redis.call('PTTL', KEYS[1]) < ttl then
  redis.call('PEXPIRE', KEYS[1], ttl)
end
return 1`)
)

var _ ratelimit.Leases = (*Limiter)(nil)

func (l *Limiter) leaseKey(key string) string { return "rate:" + l.prefix + "lease:" + key }

// Acquire implements ratelimit.Leases, atomically in Redis.
func (l *Limiter) Acquire(ctx context.Context, key, holder string, max int, ttl time.Duration) (bool, error) {
	if err := ratelimit.ValidateLease(key, holder, max, ttl); err != nil {
		return false, fmt.Errorf("redislimit.Acquire: %w", err)
	}
	n, err := acquireScript.Run(ctx, l.client, []string{l.leaseKey(key)}, holder, max, ttl.Milliseconds()).Int()
	if err != nil {
		return false, classify(ctx, "redis acquire lease", err)
	}
	return n == 1, nil
}

// Renew implements ratelimit.Leases.
func (l *Limiter) Renew(ctx context.Context, key, holder string, ttl time.Duration) (bool, error) {
	if err := ratelimit.ValidateLease(key, holder, 1, ttl); err != nil {
		return false, fmt.Errorf("redislimit.Renew: %w", err)
	}
	n, err := renewScript.Run(ctx, l.client, []string{l.leaseKey(key)}, holder, ttl.Milliseconds()).Int()
	if err != nil {
		return false, classify(ctx, "redis renew lease", err)
	}
	return n == 1, nil
}

// Release implements ratelimit.Leases.
func (l *Limiter) Release(ctx context.Context, key, holder string) error {
	if err := ratelimit.ValidateKey(key); err != nil {
		return fmt.Errorf("redislimit.Release: %w", err)
	}
	if err := l.client.ZRem(ctx, l.leaseKey(key), holder).Err(); err != nil {
		return classify(ctx, "redis.ZRem lease", err)
	}
	return nil
}
