package openaiembed

import (
	"encoding/json"
	"fmt"

	"github.com/lethe-dev/lethe/infra/internal/httpretry"
)

// response is {"object":"list","data":[{"object":"embedding","index":i,
// "embedding":[...]}],"model":...,"usage":{...}}.
type response struct {
	Data *[]struct {
		Index     *int      `json:"index"`
		Embedding []float32 `json:"embedding"`
	} `json:"data"`
}

// decodeResponse checks the answer for n inputs of dim floats and returns
// the vectors in input order (by index, which servers may permute).
func decodeResponse(body []byte, n, dim int) ([][]float32, error) {
	var r response
	if err := json.Unmarshal(body, &r); err != nil {
		return nil, fmt.Errorf("%w: decode: %s", ErrBadResponse, httpretry.DescribeJSONError(err))
	}
	if r.Data == nil {
		return nil, fmt.Errorf("%w: no data field", ErrBadResponse)
	}
	data := *r.Data
	if len(data) != n {
		return nil, fmt.Errorf("%w: %d embeddings for %d inputs", ErrBadResponse, len(data), n)
	}
	out := make([][]float32, n)
	for i, d := range data {
		if d.Index == nil || *d.Index < 0 || *d.Index >= n {
			return nil, fmt.Errorf("%w: data[%d] has a missing or out-of-range index", ErrBadResponse, i)
		}
		if out[*d.Index] != nil {
			return nil, fmt.Errorf("%w: index %d appears twice", ErrBadResponse, *d.Index)
		}
		if len(d.Embedding) != dim {
			return nil, fmt.Errorf("%w: data[%d] has %d dimensions, want %d", ErrBadResponse, i, len(d.Embedding), dim)
		}
		out[*d.Index] = d.Embedding
	}
	return out, nil
}

// decodeError takes type and code from OpenAI's
// {"error":{"message","type","param","code"}}; the message is dropped.
func decodeError(body []byte) httpretry.ErrorInfo {
	var e struct {
		Error json.RawMessage `json:"error"`
	}
	if json.Unmarshal(body, &e) != nil || len(e.Error) == 0 {
		return httpretry.ErrorInfo{}
	}
	var oe struct {
		Type  any `json:"type"`
		Param any `json:"param"`
		Code  any `json:"code"`
	}
	if json.Unmarshal(e.Error, &oe) != nil {
		return httpretry.ErrorInfo{}
	}
	typ, _ := oe.Type.(string)
	code, _ := oe.Code.(string)
	param, _ := oe.Param.(string)
	switch {
	case typ != "" && code != "":
		return httpretry.ErrorInfo{Code: typ + ":" + code, Param: param}
	case code != "":
		return httpretry.ErrorInfo{Code: code, Param: param}
	default:
		return httpretry.ErrorInfo{Code: typ, Param: param}
	}
}
