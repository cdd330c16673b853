package events

import (
	"encoding/binary"
	"fmt"
	"math"
)

// EncodeVector is the wire form of a vector inside a sealed payload
// (EmbeddingCreated.SealedVector before sealing): little-endian float32s.
func EncodeVector(v []float32) []byte {
	b := make([]byte, 4*len(v))
	for i, f := range v {
		binary.LittleEndian.PutUint32(b[4*i:], math.Float32bits(f))
	}
	return b
}

// DecodeVector is the inverse of EncodeVector; it refuses partial and
// non-finite values.
func DecodeVector(b []byte) ([]float32, error) {
	if len(b)%4 != 0 {
		return nil, fmt.Errorf("vector encoding: %d bytes is not a multiple of 4", len(b))
	}
	v := make([]float32, len(b)/4)
	for i := range v {
		f := math.Float32frombits(binary.LittleEndian.Uint32(b[4*i:]))
		if math.IsNaN(float64(f)) || math.IsInf(float64(f), 0) {
			return nil, fmt.Errorf("vector encoding: non-finite value at %d", i)
		}
		v[i] = f
	}
	return v, nil
}
