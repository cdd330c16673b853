package deepgram

import (
	"encoding/json"
	"fmt"
	"math"
	"strings"
	"time"

	"github.com/lethe-dev/lethe/infra/internal/httpretry"
	"github.com/lethe-dev/lethe/infra/stt"
)

// response is the part of Deepgram's pre-recorded answer we use:
// results.channels[].alternatives[].{transcript, words[]} and metadata.
// Pointers mark the fields whose absence means a wrong shape.
type response struct {
	Metadata *struct {
		RequestID string `json:"request_id"`
		ModelInfo map[string]struct {
			Name    string `json:"name"`
			Version string `json:"version"`
			Arch    string `json:"arch"`
		} `json:"model_info"`
	} `json:"metadata"`
	Results *struct {
		Channels []struct {
			Alternatives []struct {
				Transcript *string `json:"transcript"`
				Words      []word  `json:"words"`
			} `json:"alternatives"`
		} `json:"channels"`
	} `json:"results"`
}

type word struct {
	Word           *string  `json:"word"`
	Start          *float64 `json:"start"`
	End            *float64 `json:"end"`
	Speaker        *int     `json:"speaker"`
	PunctuatedWord string   `json:"punctuated_word"`
}

// maxSeconds bounds timestamps: anything past a day is not from our audio.
const maxSeconds = 24 * 60 * 60

// decodeResponse parses a 200 body into a Transcript (without Model).
// duration is the audio's length, used when words carry no timings.
func decodeResponse(body []byte, duration time.Duration) (stt.Transcript, error) {
	var r response
	if err := json.Unmarshal(body, &r); err != nil {
		return stt.Transcript{}, fmt.Errorf("%w: decode: %v", ErrBadResponse, httpretry.DescribeJSONError(err))
	}
	if r.Metadata == nil {
		return stt.Transcript{}, fmt.Errorf("%w: no metadata", ErrBadResponse)
	}
	if r.Results == nil || len(r.Results.Channels) == 0 || len(r.Results.Channels[0].Alternatives) == 0 {
		return stt.Transcript{}, fmt.Errorf("%w: no results.channels[0].alternatives[0]", ErrBadResponse)
	}
	alt := r.Results.Channels[0].Alternatives[0]
	if alt.Transcript == nil {
		return stt.Transcript{}, fmt.Errorf("%w: alternative without transcript", ErrBadResponse)
	}
	for i, w := range alt.Words {
		if w.Word == nil || w.Start == nil || w.End == nil {
			return stt.Transcript{}, fmt.Errorf("%w: word %d lacks word/start/end", ErrBadResponse, i)
		}
		s, e := *w.Start, *w.End
		if math.IsNaN(s) || math.IsNaN(e) || s < 0 || e < s || e > maxSeconds {
			return stt.Transcript{}, fmt.Errorf("%w: word %d has timings out of range", ErrBadResponse, i)
		}
		if w.Speaker != nil && (*w.Speaker < 0 || *w.Speaker > 1000) {
			return stt.Transcript{}, fmt.Errorf("%w: word %d has speaker out of range", ErrBadResponse, i)
		}
	}

	tr := stt.Transcript{Text: strings.TrimSpace(*alt.Transcript)}
	tr.Segments = speakerTurns(alt.Words)
	if len(tr.Segments) == 0 && tr.Text != "" {
		// Text without word timings: one segment over the whole chunk.
		tr.Segments = []stt.Segment{{StartMS: 0, EndMS: duration.Milliseconds(), Text: tr.Text, Speaker: -1}}
	}
	return tr, nil
}

// speakerTurns groups consecutive words of one speaker into a segment.
// Words without a speaker label (diarisation off) get speaker -1.
func speakerTurns(words []word) []stt.Segment {
	var segs []stt.Segment
	var text []string
	flush := func() {
		if len(text) > 0 {
			segs[len(segs)-1].Text = strings.Join(text, " ")
			text = text[:0]
		}
	}
	for _, w := range words {
		tok := strings.TrimSpace(w.PunctuatedWord)
		if tok == "" {
			tok = strings.TrimSpace(*w.Word)
		}
		if tok == "" {
			continue
		}
		speaker := -1
		if w.Speaker != nil {
			speaker = *w.Speaker
		}
		start, end := toMS(*w.Start), toMS(*w.End)
		if len(segs) == 0 || segs[len(segs)-1].Speaker != speaker {
			flush()
			segs = append(segs, stt.Segment{StartMS: start, EndMS: end, Speaker: speaker})
		}
		last := &segs[len(segs)-1]
		last.EndMS = max(last.EndMS, end)
		text = append(text, tok)
	}
	flush()
	return segs
}

func toMS(sec float64) int64 { return int64(math.Round(sec * 1000)) }

// decodeError takes identifiers from Deepgram's error bodies, which come in
// two documented shapes: {err_code, err_msg, request_id} and
// {category, message, details, request_id}. Messages are never kept.
func decodeError(body []byte) httpretry.ErrorInfo {
	var e struct {
		ErrCode   any `json:"err_code"`
		Category  any `json:"category"`
		RequestID any `json:"request_id"`
	}
	if json.Unmarshal(body, &e) != nil {
		return httpretry.ErrorInfo{}
	}
	code, _ := e.ErrCode.(string)
	if code == "" {
		code, _ = e.Category.(string)
	}
	id, _ := e.RequestID.(string)
	return httpretry.ErrorInfo{Code: code, RequestID: id}
}
