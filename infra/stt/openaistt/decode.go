package openaistt

import (
	"encoding/json"
	"fmt"
	"math"
	"strings"
	"time"

	"github.com/lethe-dev/lethe/infra/internal/httpretry"
	"github.com/lethe-dev/lethe/infra/stt"
)

// transcription covers both answers: json is {text}; verbose_json adds
// language, duration and segments[{id, seek, start, end, text, tokens, ...}].
type transcription struct {
	Text     *string   `json:"text"`
	Segments []segment `json:"segments"`
}

type segment struct {
	Start *float64 `json:"start"`
	End   *float64 `json:"end"`
	Text  *string  `json:"text"`
}

const maxSeconds = 24 * 60 * 60

// decodeResponse parses a 200 body (json or verbose_json) into a Transcript
// (without Model). Whisper does not diarise: every speaker is -1.
func decodeResponse(body []byte, duration time.Duration) (stt.Transcript, error) {
	var r transcription
	if err := json.Unmarshal(body, &r); err != nil {
		return stt.Transcript{}, fmt.Errorf("%w: decode: %s", ErrBadResponse, httpretry.DescribeJSONError(err))
	}
	if r.Text == nil {
		return stt.Transcript{}, fmt.Errorf("%w: no text field", ErrBadResponse)
	}
	tr := stt.Transcript{Text: strings.TrimSpace(*r.Text)}
	for i, s := range r.Segments {
		if s.Start == nil || s.End == nil || s.Text == nil {
			return stt.Transcript{}, fmt.Errorf("%w: segment %d lacks start/end/text", ErrBadResponse, i)
		}
		start, end := *s.Start, *s.End
		if math.IsNaN(start) || math.IsNaN(end) || start < 0 || end < start || end > maxSeconds {
			return stt.Transcript{}, fmt.Errorf("%w: segment %d has timings out of range", ErrBadResponse, i)
		}
		text := strings.TrimSpace(*s.Text)
		if text == "" {
			continue
		}
		tr.Segments = append(tr.Segments, stt.Segment{
			StartMS: int64(math.Round(start * 1000)),
			EndMS:   int64(math.Round(end * 1000)),
			Text:    text,
			Speaker: -1,
		})
	}
	if len(tr.Segments) == 0 && tr.Text != "" {
		// Plain json: one segment over the whole chunk.
		tr.Segments = []stt.Segment{{StartMS: 0, EndMS: duration.Milliseconds(), Text: tr.Text, Speaker: -1}}
	}
	return tr, nil
}

// decodeError takes identifiers from the error shapes these servers use:
// OpenAI's {"error":{"message","type","param","code"}}, whisper.cpp's
// {"error":"..."} and FastAPI's {"detail":[{"loc":[...],"msg","type"}]}.
// Messages are read only to recognise a refused response_format, never kept.
func decodeError(body []byte) httpretry.ErrorInfo {
	var e struct {
		Error  json.RawMessage `json:"error"`
		Detail json.RawMessage `json:"detail"`
	}
	if json.Unmarshal(body, &e) != nil {
		return httpretry.ErrorInfo{}
	}
	var info httpretry.ErrorInfo
	var oe struct {
		Message any `json:"message"`
		Type    any `json:"type"`
		Param   any `json:"param"`
		Code    any `json:"code"`
	}
	if len(e.Error) > 0 && json.Unmarshal(e.Error, &oe) == nil {
		typ, _ := oe.Type.(string)
		code, _ := oe.Code.(string)
		switch {
		case typ != "" && code != "":
			info.Code = typ + ":" + code
		case code != "":
			info.Code = code
		default:
			info.Code = typ
		}
		info.Param, _ = oe.Param.(string)
		if msg, _ := oe.Message.(string); info.Param == "" && mentionsFormat(msg) {
			info.Param = "response_format"
		}
	}
	if msg := ""; len(e.Error) > 0 && json.Unmarshal(e.Error, &msg) == nil && mentionsFormat(msg) {
		info.Param = "response_format"
	}
	var details []struct {
		Loc  []any  `json:"loc"`
		Type string `json:"type"`
	}
	if len(e.Detail) > 0 && json.Unmarshal(e.Detail, &details) == nil {
		for _, d := range details {
			if info.Code == "" {
				info.Code = d.Type
			}
			for _, l := range d.Loc {
				if s, _ := l.(string); s == "response_format" {
					info.Param = "response_format"
				}
			}
		}
	}
	return info
}

func mentionsFormat(msg string) bool {
	return strings.Contains(msg, "response_format") || strings.Contains(msg, "verbose_json")
}
