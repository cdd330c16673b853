package audio

import (
	"fmt"
	"mime"
	"strconv"
	"time"
)

// Bounds on what Decode and Open accept. Decode's memory is bounded by the
// body size (PCM formats) or by MaxDuration (Opus, whose packets expand
// ~1000x); Open and Segments hold one piece of samples at a time.
const (
	MinSampleRate = 8000
	MaxSampleRate = 48000
	// MaxDuration is the longest recording the pipeline takes, by any
	// route: above the ~35 minutes a 64 MiB signed upload of 16 kHz WAV
	// holds, well below an hour. README.md states it; a test holds them
	// together.
	MaxDuration = 40 * time.Minute
	// STTRate is the rate speech-to-text wants and the rate Opus decodes to.
	STTRate = 16000
)

// Decode turns an upload into mono PCM at its native rate (Opus: 16 kHz).
// Accepted media types: audio/wav, audio/wave, audio/x-wav, audio/vnd.wave
// (PCM16 mono/stereo), audio/L16;rate=N[;channels=C] (RFC 2586, big-endian),
// audio/ogg[;codecs=opus] and audio/opus (Ogg Opus, RFC 7845).
// Anything else, and audio outside the bounds above, fails with
// ErrUnsupported; bytes that do not parse fail with ErrMalformed, as does
// audio with no samples.
func Decode(contentType string, body []byte) (PCM, error) {
	mt, params, err := mime.ParseMediaType(contentType)
	if err != nil {
		return PCM{}, fmt.Errorf("%w: content type: %v", ErrUnsupported, err)
	}
	var p PCM
	switch mt {
	case "audio/wav", "audio/wave", "audio/x-wav", "audio/vnd.wave":
		p, err = decodeWAV(body)
	case "audio/l16":
		p, err = decodeL16(params, body)
	case "audio/ogg", "audio/opus":
		if c, ok := params["codecs"]; ok && c != "opus" {
			return PCM{}, fmt.Errorf("%w: audio/ogg codec %q", ErrUnsupported, truncate(c))
		}
		p, err = decodeOggOpus(body, int(MaxDuration/time.Second)*STTRate)
	default:
		return PCM{}, fmt.Errorf("%w: media type %q", ErrUnsupported, truncate(mt))
	}
	if err != nil {
		return PCM{}, err
	}
	if len(p.Samples) == 0 {
		return PCM{}, fmt.Errorf("%w: no audio samples", ErrMalformed)
	}
	return p, nil
}

// Duration is the playing time of p.
func Duration(p PCM) time.Duration {
	if p.SampleRate <= 0 {
		return 0
	}
	return time.Duration(int64(len(p.Samples)) * int64(time.Second) / int64(p.SampleRate))
}

func checkRate(rate int) error {
	if rate < MinSampleRate || rate > MaxSampleRate {
		return fmt.Errorf("%w: sample rate %d outside %d..%d", ErrUnsupported, rate, MinSampleRate, MaxSampleRate)
	}
	return nil
}

func checkLength(frames int64, rate int) error {
	if frames > int64(MaxDuration/time.Second)*int64(rate) {
		return fmt.Errorf("%w of %s", ErrTooLong, MaxDuration)
	}
	return nil
}

// decodeL16 reads RFC 2586 audio/L16: big-endian signed 16-bit, rate
// required, channels defaulting to 1.
func decodeL16(params map[string]string, body []byte) (PCM, error) {
	rate, channels, err := l16Format(params, body)
	if err != nil {
		return PCM{}, err
	}
	frames := &pcmFrames{data: body, channels: channels, bigEndian: true}
	if err := checkLength(int64(frames.frames()), rate); err != nil {
		return PCM{}, err
	}
	out := make([]int16, frames.frames())
	frames.read(out)
	return PCM{SampleRate: rate, Samples: out}, nil
}

// l16Format checks an audio/L16 body against its media type parameters.
func l16Format(params map[string]string, body []byte) (rate, channels int, err error) {
	rs, ok := params["rate"]
	if !ok {
		return 0, 0, fmt.Errorf("%w: audio/L16 without rate parameter", ErrMalformed)
	}
	rate, err = strconv.Atoi(rs)
	if err != nil {
		return 0, 0, fmt.Errorf("%w: audio/L16 rate %q", ErrMalformed, truncate(rs))
	}
	if err := checkRate(rate); err != nil {
		return 0, 0, err
	}
	channels = 1
	if cs, ok := params["channels"]; ok {
		channels, err = strconv.Atoi(cs)
		if err != nil || channels < 1 {
			return 0, 0, fmt.Errorf("%w: audio/L16 channels %q", ErrMalformed, truncate(cs))
		}
	}
	if channels > 2 {
		return 0, 0, fmt.Errorf("%w: %d channels", ErrUnsupported, channels)
	}
	frameSize := 2 * channels
	if len(body)%frameSize != 0 {
		return 0, 0, fmt.Errorf("%w: audio/L16 body of %d bytes is not whole %d-byte frames", ErrMalformed, len(body), frameSize)
	}
	return rate, channels, nil
}

// truncate bounds caller-supplied strings echoed into errors.
func truncate(s string) string {
	const limit = 40
	if len(s) > limit {
		return s[:limit] + "…"
	}
	return s
}
