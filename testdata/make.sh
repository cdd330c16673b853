#!/bin/sh
# Regenerates the shared test audio. Needs: espeak-ng, sox, opus-tools (opusenc).
# Only for regenerating: tests read the committed files and need none of these tools.
set -eu
cd "$(dirname "$0")"
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT

SENTENCE="hello world this is a test of the memory pipeline"
# klatt2 at 150 wpm is the espeak-ng voice PocketSphinx's en-us model recognises best
# (measured: default en-us voice yields mostly wrong words).
VOICE=en-us+klatt2
SPEED=150

espeak-ng -v "$VOICE" -s "$SPEED" -w "$tmp/hello.wav" "$SENTENCE"        # 22050 Hz mono PCM16
espeak-ng -v "$VOICE" -s "$SPEED" -w "$tmp/short.wav" "hello world"

# -D: no dither, so the files are reproducible byte for byte.
sox -D "$tmp/hello.wav" -r 16000 -c 1 -b 16 -e signed-integer -t wavpcm speech-hello.wav
sox -D "$tmp/hello.wav" -r 22050 -c 1 -b 16 -e signed-integer -t wavpcm speech-hello-22050.wav
# Stereo 44.1 kHz is large, so it carries the short phrase; the left channel
# has the speech and the right channel the same speech at half level.
sox -D "$tmp/short.wav" -r 44100 -c 1 -b 16 -e signed-integer "$tmp/short44.wav"
sox -D "$tmp/short44.wav" -r 44100 -c 2 -b 16 -e signed-integer -t wavpcm speech-hello-44100-stereo.wav remix 1 1v0.5
# audio/L16;rate=16000: raw big-endian signed 16-bit mono (RFC 2586).
sox -D speech-hello.wav -t raw -e signed-integer -b 16 -B speech-hello-16000.l16
# Ogg Opus at 16 kbit/s, 20 ms frames, speech tuning: every packet is SILK wideband.
opusenc --quiet --serial 1 --bitrate 16 --framesize 20 --speech --discard-comments --padding 0 \
	speech-hello.wav speech-hello.opus
ls -l speech-hello*
