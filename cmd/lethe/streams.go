package main

import (
	"fmt"
	"io"
	"time"

	"github.com/lethe-dev/lethe/functions"
	"github.com/lethe-dev/lethe/infra/ratelimit"
	"github.com/lethe-dev/lethe/infra/ratelimit/memlimit"
)

// validateStreams bounds the streaming settings: a chunk must stay within
// what the decoder and a chunk body accept (5 minutes at 48 kHz is 28.8 MB).
func (c Config) validateStreams() []error {
	var errs []error
	check := func(ok bool, format string, args ...any) {
		if !ok {
			errs = append(errs, fmt.Errorf(format, args...))
		}
	}
	check(c.StreamChunkSeconds >= 1 && c.StreamChunkSeconds <= 300, "LETHE_STREAM_CHUNK_SECONDS=%d: want 1..300", c.StreamChunkSeconds)
	check(c.StreamMaxFrameBytes >= 1024 && c.StreamMaxFrameBytes <= 1<<20, "LETHE_STREAM_MAX_FRAME_BYTES=%d: want 1024..1048576", c.StreamMaxFrameBytes)
	check(c.StreamIdleTimeout >= time.Second && c.StreamIdleTimeout <= 10*time.Minute, "LETHE_STREAM_IDLE_TIMEOUT=%s: want 1s..10m", c.StreamIdleTimeout)
	check(c.StreamMaxDuration >= time.Minute && c.StreamMaxDuration <= 24*time.Hour, "LETHE_STREAM_MAX_DURATION=%s: want 1m..24h", c.StreamMaxDuration)
	check(c.StreamMaxPerUser >= 1 && c.StreamMaxPerUser <= 100, "LETHE_STREAM_MAX_PER_USER=%d: want 1..100", c.StreamMaxPerUser)
	return errs
}

// streamLimits are the edge's per-connection stream limits (zero fields,
// in tests that build a Config by hand, take the edge's defaults).
func (c Config) streamLimits() functions.StreamLimits {
	return functions.StreamLimits{
		ChunkDuration: time.Duration(c.StreamChunkSeconds) * time.Second,
		MaxFrameBytes: c.StreamMaxFrameBytes, IdleTimeout: c.StreamIdleTimeout,
		MaxDuration: c.StreamMaxDuration, MaxPerUser: c.StreamMaxPerUser,
	}
}

// streamLeases is where open streams are counted: the shared limiter's
// Redis when there is one (so the cap holds across instances), else this
// process. Redis down: new streams close 1013 rather than go uncounted.
func streamLeases(shared io.Closer) ratelimit.Leases {
	if l, ok := shared.(ratelimit.Leases); ok {
		return l
	}
	return memlimit.NewLeases(nil)
}
