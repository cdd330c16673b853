// Package stt is the speech-to-text port.
package stt

import (
	"context"
	"errors"

	"github.com/lethe-dev/lethe/infra/audio"
)

// ErrUnavailable: the recogniser is not installed or not reachable.
var ErrUnavailable = errors.New("stt: recogniser unavailable")

// Segment is a stretch of recognised speech.
type Segment struct {
	StartMS int64
	EndMS   int64
	Text    string
	Speaker int // -1 when the model does not diarise
}

// Transcript of one chunk of audio.
type Transcript struct {
	Text     string
	Segments []Segment
	Model    string
}

// Transcriber turns 16 kHz mono PCM into text. The transcribe worker
// hands it one piece of a recording at a time (audio.Segments with
// audio.DefaultCutting: at most a minute, cut at a quiet moment), never a
// whole long recording, so an adapter's request size and timeout are
// bounded by a piece, and a failure costs one piece's retry.
type Transcriber interface {
	Transcribe(ctx context.Context, pcm audio.PCM) (Transcript, error)
}

// Breaker is what WithBreaker needs of a circuit breaker (breaker.Breaker).
type Breaker interface {
	Do(ctx context.Context, fn func(context.Context) error) error
}

// WithBreaker calls t through b: while a hosted provider is down the
// breaker fails calls fast (a transient error the bus redelivers) instead
// of every message spending its own retries on it.
func WithBreaker(t Transcriber, b Breaker) Transcriber { return breakerTranscriber{t, b} }

type breakerTranscriber struct {
	t Transcriber
	b Breaker
}

func (bt breakerTranscriber) Transcribe(ctx context.Context, pcm audio.PCM) (Transcript, error) {
	var out Transcript
	err := bt.b.Do(ctx, func(ctx context.Context) error {
		var err error
		out, err = bt.t.Transcribe(ctx, pcm)
		return err
	})
	return out, err
}

// Unavailable reports whether err says the provider is down (what trips a
// breaker): its own ErrUnavailable, or a call that ran out of time.
func Unavailable(err error) bool {
	return errors.Is(err, ErrUnavailable) || errors.Is(err, context.DeadlineExceeded)
}
