package dirblobs

import (
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"time"
)

// An object file is a header followed by the object's bytes, so data and
// attributes are replaced together by one rename:
//
//	magic "LETHEBL1" | size uint64 BE | n uint32 BE | n bytes of JSON meta | data
//
// size is written after the data is copied (the header is fixed width up
// to the JSON), so Write can stream.
const (
	magic         = "LETHEBL1"
	fixedHeader   = len(magic) + 8 + 4
	maxMetaJSON   = 64 << 10
	sizeFieldSpot = len(magic)
)

type meta struct {
	ContentType string            `json:"content_type"`
	Metadata    map[string]string `json:"metadata,omitempty"`
	Created     time.Time         `json:"created"`
}

var errCorrupt = errors.New("dirblobs: corrupt object file")

// encodeHeader returns the header with size 0; patchSize fills it in.
func encodeHeader(m meta) ([]byte, error) {
	j, err := json.Marshal(m)
	if err != nil {
		return nil, fmt.Errorf("json.Marshal: %w", err)
	}
	if len(j) > maxMetaJSON {
		return nil, errors.New("dirblobs: attributes too large")
	}
	h := make([]byte, fixedHeader, fixedHeader+len(j))
	copy(h, magic)
	binary.BigEndian.PutUint32(h[len(magic)+8:], uint32(len(j)))
	return append(h, j...), nil
}

// decodeHeader reads the header from r and returns the attributes, the
// data size and the header length. fileSize checks the recorded size, so a
// truncated file is reported, never served short.
func decodeHeader(r io.Reader, fileSize int64) (meta, int64, int64, error) {
	var fixed [fixedHeader]byte
	if _, err := io.ReadFull(r, fixed[:]); err != nil {
		return meta{}, 0, 0, errCorrupt
	}
	if string(fixed[:len(magic)]) != magic {
		return meta{}, 0, 0, errCorrupt
	}
	size := binary.BigEndian.Uint64(fixed[len(magic):])
	n := binary.BigEndian.Uint32(fixed[len(magic)+8:])
	if n > maxMetaJSON {
		return meta{}, 0, 0, errCorrupt
	}
	hlen := int64(fixedHeader) + int64(n)
	if size > uint64(1<<62) || fileSize-hlen != int64(size) {
		return meta{}, 0, 0, errCorrupt
	}
	j := make([]byte, n)
	if _, err := io.ReadFull(r, j); err != nil {
		return meta{}, 0, 0, errCorrupt
	}
	var m meta
	if err := json.Unmarshal(j, &m); err != nil {
		return meta{}, 0, 0, errCorrupt
	}
	return m, int64(size), hlen, nil
}
