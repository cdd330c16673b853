// Package memlimit is the in-process adapter of the rate-limit port: the same
// GCRA as github.com/go-redis/redis_rate/v10 (one theoretical arrival time,
// TAT, per key), so it passes the same conformance suite as the Redis adapter.
//
// State lives in this process only: with several instances each enforces its
// own limit. It is the embedded default and the fallback for per-user limits
// when Redis does not answer (see ratelimit.Fallback).
//
// Memory is bounded: a key whose TAT has passed holds no information (its
// state equals "never seen"), so such keys are dropped as calls go by; and at
// most MaxKeys keys are kept, the least recently used being evicted first.
// Evicting a key that is still limited forgives it, so size MaxKeys above the
// number of keys active within one burst window.
package memlimit

import (
	"context"
	"fmt"
	"hash/maphash"
	"sync"
	"time"

	"github.com/lethe-dev/lethe/infra/ratelimit"
)

// DefaultMaxKeys is MaxKeys when Options leaves it zero: about 20 MB of
// state with 64-byte keys.
const DefaultMaxKeys = 100_000

// maxShards spreads keys over independent locks so that concurrent requests
// for different keys rarely wait on each other.
const maxShards = 16

// sweepPerCall is how many idle keys one call may drop from the cold end of
// its shard: enough to keep up with arrivals, small enough to bound latency.
const sweepPerCall = 4

// Options configures a Limiter. The zero value is usable.
type Options struct {
	// MaxKeys caps the number of keys held (default DefaultMaxKeys).
	MaxKeys int
	// Now is the clock (default time.Now); tests inject a fake one.
	Now func() time.Time
}

// Limiter is a GCRA rate limiter held in memory. Safe for concurrent use.
type Limiter struct {
	now    func() time.Time
	seed   maphash.Seed
	shards []shard
}

// shard is one lock's worth of keys, kept in LRU order.
type shard struct {
	mu   sync.Mutex
	max  int
	keys map[string]*entry
	// head is the most recently used entry, tail the least.
	head, tail *entry
}

type entry struct {
	key        string
	tat        time.Time
	prev, next *entry
}

var _ ratelimit.Limiter = (*Limiter)(nil)

// New returns an empty Limiter.
func New(opts Options) *Limiter {
	if opts.MaxKeys <= 0 {
		opts.MaxKeys = DefaultMaxKeys
	}
	if opts.Now == nil {
		opts.Now = time.Now
	}
	return newSharded(opts, min(maxShards, opts.MaxKeys))
}

// newSharded splits opts.MaxKeys over n shards so the total is exact.
func newSharded(opts Options, n int) *Limiter {
	l := &Limiter{now: opts.Now, seed: maphash.MakeSeed(), shards: make([]shard, n)}
	for i := range l.shards {
		l.shards[i].max = opts.MaxKeys / n
		if i < opts.MaxKeys%n {
			l.shards[i].max++
		}
		l.shards[i].keys = make(map[string]*entry)
	}
	return l
}

// Allow counts one event against key under limit. The arithmetic is
// redis_rate's allowN script with cost 1, in integer nanoseconds.
func (l *Limiter) Allow(ctx context.Context, key string, limit ratelimit.Limit) (ratelimit.Result, error) {
	if err := ctx.Err(); err != nil {
		return ratelimit.Result{}, fmt.Errorf("memlimit.Allow: %w", err)
	}
	if err := limit.Validate(); err != nil {
		return ratelimit.Result{}, fmt.Errorf("memlimit.Allow: %w", err)
	}
	if err := ratelimit.ValidateKey(key); err != nil {
		return ratelimit.Result{}, fmt.Errorf("memlimit.Allow: %w", err)
	}
	interval := limit.Emission()
	burstOffset := interval * time.Duration(limit.Burst)

	s := &l.shards[maphash.String(l.seed, key)%uint64(len(l.shards))]
	s.mu.Lock()
	defer s.mu.Unlock()
	now := l.now()
	s.sweep(now, sweepPerCall)

	e := s.keys[key]
	tat := now
	if e != nil && e.tat.After(now) {
		tat = e.tat
	}
	newTAT := tat.Add(interval)
	diff := now.Sub(newTAT.Add(-burstOffset)) // now - allow_at
	if diff < 0 {
		// Denied: like the script, nothing is stored, so hammering a limited
		// key does not push its TAT further out.
		if e != nil {
			s.moveToFront(e)
		}
		return ratelimit.Result{Allowed: false, Remaining: 0, RetryAfter: -diff, ResetAfter: tat.Sub(now)}, nil
	}
	if e == nil {
		e = &entry{key: key}
		s.insert(e)
	} else {
		s.moveToFront(e)
	}
	e.tat = newTAT
	return ratelimit.Result{
		Allowed:    true,
		Remaining:  int(diff / interval), // the script's integer reply truncates too
		ResetAfter: newTAT.Sub(now),
	}, nil
}

// Forget drops the keys' state and returns how many were held.
func (l *Limiter) Forget(ctx context.Context, keys ...string) (int, error) {
	return l.each(ctx, "memlimit.Forget", keys, func(s *shard, e *entry) { s.remove(e) })
}

// Held counts the keys with state (a key whose TAT has passed holds none).
func (l *Limiter) Held(ctx context.Context, keys ...string) (int, error) {
	return l.each(ctx, "memlimit.Held", keys, func(*shard, *entry) {})
}

// each calls fn on every live entry of keys and counts them.
func (l *Limiter) each(ctx context.Context, call string, keys []string, fn func(*shard, *entry)) (int, error) {
	if err := ctx.Err(); err != nil {
		return 0, fmt.Errorf("%s: %w", call, err)
	}
	n := 0
	for _, key := range keys {
		if err := ratelimit.ValidateKey(key); err != nil {
			return n, fmt.Errorf("%s: %w", call, err)
		}
		s := &l.shards[maphash.String(l.seed, key)%uint64(len(l.shards))]
		s.mu.Lock()
		if e := s.keys[key]; e != nil && e.tat.After(l.now()) {
			n++
			fn(s, e)
		}
		s.mu.Unlock()
	}
	return n, nil
}

// Len reports how many keys are held.
func (l *Limiter) Len() int {
	n := 0
	for i := range l.shards {
		s := &l.shards[i]
		s.mu.Lock()
		n += len(s.keys)
		s.mu.Unlock()
	}
	return n
}

// sweep drops up to n entries from the cold end whose TAT has passed: their
// state is the same as an absent key's, so dropping them loses nothing.
func (s *shard) sweep(now time.Time, n int) {
	for ; n > 0 && s.tail != nil && !s.tail.tat.After(now); n-- {
		s.remove(s.tail)
	}
}

// insert adds e as most recent, evicting the least recently used entry when
// the shard is full.
func (s *shard) insert(e *entry) {
	for len(s.keys) >= s.max && s.tail != nil {
		s.remove(s.tail)
	}
	s.keys[e.key] = e
	s.pushFront(e)
}

func (s *shard) remove(e *entry) {
	s.unlink(e)
	delete(s.keys, e.key)
}

func (s *shard) moveToFront(e *entry) {
	if s.head == e {
		return
	}
	s.unlink(e)
	s.pushFront(e)
}

func (s *shard) pushFront(e *entry) {
	e.prev, e.next = nil, s.head
	if s.head != nil {
		s.head.prev = e
	}
	s.head = e
	if s.tail == nil {
		s.tail = e
	}
}

func (s *shard) unlink(e *entry) {
	if e.prev != nil {
		e.prev.next = e.next
	} else {
		s.head = e.next
	}
	if e.next != nil {
		e.next.prev = e.prev
	} else {
		s.tail = e.prev
	}
	e.prev, e.next = nil, nil
}
