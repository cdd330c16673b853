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

// Transcriber turns 16 kHz mono PCM into text.
type Transcriber interface {
	Transcribe(ctx context.Context, pcm audio.PCM) (Transcript, error)
}
