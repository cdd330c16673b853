package deepgram

import (
	"context"
	"encoding/json"
	"io"
	"math"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/lethe-dev/lethe/infra/audio"
	"github.com/lethe-dev/lethe/infra/stt"
	"github.com/lethe-dev/lethe/infra/stt/stttest"
)

// listenFake answers /v1/listen like Deepgram would for the suite's sample:
// the sample sentence, diarised into two turns with word timings spread over
// the audio it received, or an empty alternative for silence.
func listenFake(t *testing.T) *httptest.Server {
	words := strings.Fields("hello world, this is a test of the memory pipeline.")
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Header.Get("Authorization") != "Token "+testKey || r.URL.Query().Get("model") != "nova-3" {
			w.WriteHeader(401)
			_, _ = io.WriteString(w, errBody("INVALID_AUTH", "Invalid credentials."))
			return
		}
		b, _ := io.ReadAll(r.Body)
		p, err := audio.Decode(r.Header.Get("Content-Type"), b)
		if err != nil {
			w.WriteHeader(400)
			_, _ = io.WriteString(w, errBody("Bad Request", "corrupt or unsupported data"))
			return
		}
		type dgWord struct {
			Word           string  `json:"word"`
			Start          float64 `json:"start"`
			End            float64 `json:"end"`
			Confidence     float64 `json:"confidence"`
			Speaker        int     `json:"speaker"`
			PunctuatedWord string  `json:"punctuated_word"`
		}
		dur := audio.Duration(p).Seconds()
		transcript := ""
		out := []dgWord{}
		if rms(p) > 100 {
			var punct []string
			step := dur / float64(len(words)+1)
			for i, wd := range words {
				pw := wd
				if i == 0 {
					pw = "Hello"
				}
				speaker := 0
				if i >= 2 {
					speaker = 1
				}
				out = append(out, dgWord{strings.Trim(wd, ",."), step * float64(i+1), step * (float64(i) + 1.8), 0.9, speaker, pw})
				punct = append(punct, pw)
			}
			transcript = strings.Join(punct, " ")
		}
		resp := map[string]any{
			"metadata": map[string]any{"request_id": "c0ffee00-0000-4000-8000-000000000000", "duration": dur, "channels": 1,
				"model_info": map[string]any{"m": map[string]string{"name": "general-nova-3", "version": "2025-01-13.0", "arch": "nova-3"}}},
			"results": map[string]any{"channels": []any{map[string]any{"alternatives": []any{
				map[string]any{"transcript": transcript, "confidence": 0.9, "words": out},
			}}}},
		}
		w.Header().Set("Content-Type", "application/json")
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
	return New(Config{APIKey: testKey, BaseURL: h.srv.URL})
}
func (harness) MinContentWords() int { return len(stttest.ContentWords()) }
func (harness) Close()               {}

func TestConformance(t *testing.T) {
	stttest.RunConformanceTests(t, func(_ context.Context, t *testing.T) (stttest.Harness, error) {
		return harness{srv: listenFake(t)}, nil
	})
}
