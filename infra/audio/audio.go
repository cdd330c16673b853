// Package audio decodes the audio the edge accepts (PCM16 WAV, raw
// audio/L16, Ogg Opus) into 16 kHz mono PCM for speech-to-text.
package audio

import (
	"errors"
	"fmt"
)

// ErrUnsupported: a content type or encoding we do not accept.
var ErrUnsupported = errors.New("audio: unsupported format")

// ErrTooLong: a recording that plays longer than MaxDuration. It wraps
// ErrUnsupported.
var ErrTooLong = fmt.Errorf("%w: recording longer than the limit", ErrUnsupported)

// ErrMalformed: bytes that do not parse as the declared format.
var ErrMalformed = errors.New("audio: malformed")

// PCM is mono signed 16-bit samples at SampleRate.
type PCM struct {
	SampleRate int
	Samples    []int16
}
