package openaistt

import (
	"context"
	"encoding/json"
	"io"
	"math"
	"net/http"
	"net/http/httptest"
	"testing"

	"github.com/lethe-dev/lethe/infra/audio"
	"github.com/lethe-dev/lethe/infra/stt"
	"github.com/lethe-dev/lethe/infra/stt/stttest"
)

// transcriptionsFake answers like a whisper server would for the suite's
// sample: verbose_json with two segments timed within the audio received,
// or empty text for silence.
func transcriptionsFake(t *testing.T) *httptest.Server {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		if err := r.ParseMultipartForm(32 << 20); err != nil || r.FormValue("response_format") != "verbose_json" {
			w.WriteHeader(400)
			_, _ = io.WriteString(w, openAIError("invalid_request_error", "", "", "bad form"))
			return
		}
		file, _, err := r.FormFile("file")
		if err != nil {
			w.WriteHeader(400)
			return
		}
		b, _ := io.ReadAll(file)
		p, err := audio.Decode("audio/wav", b)
		if err != nil {
			w.WriteHeader(400)
			_, _ = io.WriteString(w, openAIError("invalid_request_error", "file", "invalid_value", "bad audio"))
			return
		}
		dur := audio.Duration(p).Seconds()
		resp := map[string]any{"task": "transcribe", "language": "english", "duration": dur, "text": "", "segments": []any{}}
		if rms(p) > 100 {
			resp["text"] = " Hello world, this is a test of the memory pipeline."
			resp["segments"] = []any{
				map[string]any{"id": 0, "seek": 0, "start": 0.0, "end": dur / 3, "text": " Hello world,"},
				map[string]any{"id": 1, "seek": 0, "start": dur / 3, "end": dur, "text": " this is a test of the memory pipeline."},
			}
		}
		_ = json.NewEncoder(w).Encode(resp)
	}))
	t.Cleanup(srv.Close)
	return srv
}

func rms(p audio.PCM) float64 {
	var s float64
	for _, x := range p.Samples {
		s += float64(x) * float64(x)
	}
	return math.Sqrt(s / float64(max(1, len(p.Samples))))
}

type harness struct{ srv *httptest.Server }

func (h harness) MakeTranscriber(_ context.Context, _ *testing.T) (stt.Transcriber, error) {
	return New(Config{BaseURL: h.srv.URL + "/v1"})
}
func (harness) MinContentWords() int { return len(stttest.ContentWords()) }
func (harness) Close()               {}

func TestConformance(t *testing.T) {
	stttest.RunConformanceTests(t, func(_ context.Context, t *testing.T) (stttest.Harness, error) {
		return harness{srv: transcriptionsFake(t)}, nil
	})
}
