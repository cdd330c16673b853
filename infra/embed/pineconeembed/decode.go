package pineconeembed

import (
	"encoding/json"
	"fmt"

	"github.com/lethe-dev/lethe/infra/internal/httpretry"
)

// response is Pinecone's EmbeddingsList; data has no index: it is in input
// order.
type response struct {
	VectorType string `json:"vector_type"`
	Data       *[]struct {
		Values     *[]float32 `json:"values"`
		VectorType string     `json:"vector_type"`
	} `json:"data"`
}

// decodeResponse checks the answer for n inputs of dim floats.
func decodeResponse(body []byte, n, dim int) ([][]float32, error) {
	var r response
	if err := json.Unmarshal(body, &r); err != nil {
		return nil, fmt.Errorf("%w: decode: %s", ErrBadResponse, httpretry.DescribeJSONError(err))
	}
	if r.VectorType != "" && r.VectorType != "dense" {
		return nil, fmt.Errorf("%w: vector_type is not dense", ErrBadResponse)
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
		if d.VectorType != "" && d.VectorType != "dense" {
			return nil, fmt.Errorf("%w: data[%d] is not a dense embedding", ErrBadResponse, i)
		}
		if d.Values == nil {
			return nil, fmt.Errorf("%w: data[%d] has no values", ErrBadResponse, i)
		}
		if len(*d.Values) != dim {
			return nil, fmt.Errorf("%w: data[%d] has %d dimensions, want %d", ErrBadResponse, i, len(*d.Values), dim)
		}
		out[i] = *d.Values
	}
	return out, nil
}

// decodeError takes the code from Pinecone's ErrorResponse
// {"status": 400, "error": {"code": "INVALID_ARGUMENT", "message": "..."}};
// the message is dropped.
func decodeError(body []byte) httpretry.ErrorInfo {
	var e struct {
		Error json.RawMessage `json:"error"`
	}
	if json.Unmarshal(body, &e) != nil || len(e.Error) == 0 {
		return httpretry.ErrorInfo{}
	}
	var pe struct {
		Code any `json:"code"`
	}
	if json.Unmarshal(e.Error, &pe) != nil {
		return httpretry.ErrorInfo{}
	}
	code, _ := pe.Code.(string)
	return httpretry.ErrorInfo{Code: code}
}
