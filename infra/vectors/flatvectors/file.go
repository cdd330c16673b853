package flatvectors

import (
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"
	"math"
	"slices"
	"strings"

	"github.com/lethe-dev/lethe/infra/vectors"
)

// On-disk layout of one namespace, little-endian:
//
//	"LVEC" | version u32 | dim u32 | count u32
//	count × ( idLen u16 | id | dim × f32 (already normalised) | metaLen u32 | meta )
//	crc32c u32 over everything before it
//
// meta is nfields u16, then per field keyLen u16 | key | tag u8 | value, with
// tag 's' (len u32 | bytes), 'f' (f64), 'i' (i64), 'b' (u8 0/1). The
// checksum turns a torn or corrupted file into an error instead of wrong
// search results.
const (
	fileMagic   = "LVEC"
	fileVersion = 1
	headerSize  = 16
)

var errCorrupt = errors.New("flatvectors: corrupt namespace file")

func corrupt(what string) error { return fmt.Errorf("%w: %s", errCorrupt, what) }

// snapshot is the decoded content of one namespace file.
type snapshot struct {
	dim  int
	ids  []string
	vecs []float32
	meta []map[string]any
}

func encodeSnapshot(s *snapshot) ([]byte, error) {
	n := len(s.ids)
	buf := make([]byte, 0, headerSize+n*(4*s.dim+64)+4)
	buf = append(buf, fileMagic...)
	buf = binary.LittleEndian.AppendUint32(buf, fileVersion)
	buf = binary.LittleEndian.AppendUint32(buf, uint32(s.dim))
	buf = binary.LittleEndian.AppendUint32(buf, uint32(n))
	for i, id := range s.ids {
		buf = binary.LittleEndian.AppendUint16(buf, uint16(len(id)))
		buf = append(buf, id...)
		for _, x := range s.vecs[i*s.dim : (i+1)*s.dim] {
			buf = binary.LittleEndian.AppendUint32(buf, math.Float32bits(x))
		}
		lenAt := len(buf)
		buf = binary.LittleEndian.AppendUint32(buf, 0)
		var err error
		if buf, err = appendMeta(buf, s.meta[i]); err != nil {
			return nil, err
		}
		binary.LittleEndian.PutUint32(buf[lenAt:], uint32(len(buf)-lenAt-4))
	}
	return binary.LittleEndian.AppendUint32(buf, crc32.Checksum(buf, crcTable())), nil
}

func crcTable() *crc32.Table { return crc32.MakeTable(crc32.Castagnoli) }

func appendMeta(buf []byte, md map[string]any) ([]byte, error) {
	// Sorted keys make the file a pure function of the content.
	keys := make([]string, 0, len(md))
	for k := range md {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	buf = binary.LittleEndian.AppendUint16(buf, uint16(len(keys)))
	for _, k := range keys {
		buf = binary.LittleEndian.AppendUint16(buf, uint16(len(k)))
		buf = append(buf, k...)
		switch v := md[k].(type) {
		case string:
			buf = append(buf, 's')
			buf = binary.LittleEndian.AppendUint32(buf, uint32(len(v)))
			buf = append(buf, v...)
		case float64:
			buf = append(buf, 'f')
			buf = binary.LittleEndian.AppendUint64(buf, math.Float64bits(v))
		case int64:
			buf = append(buf, 'i')
			buf = binary.LittleEndian.AppendUint64(buf, uint64(v))
		case bool:
			b := byte(0)
			if v {
				b = 1
			}
			buf = append(buf, 'b', b)
		default:
			return nil, fmt.Errorf("flatvectors: metadata type %T", v)
		}
	}
	return buf, nil
}

// reader is a bounds-checked cursor; every read of attacker-controlled
// lengths goes through it.
type reader struct {
	b   []byte
	err error
}

func (r *reader) take(n int) []byte {
	if r.err != nil {
		return nil
	}
	if n < 0 || n > len(r.b) {
		r.err = corrupt("truncated")
		return nil
	}
	out := r.b[:n]
	r.b = r.b[n:]
	return out
}

func (r *reader) u8() byte {
	if b := r.take(1); b != nil {
		return b[0]
	}
	return 0
}

func (r *reader) u16() int {
	if b := r.take(2); b != nil {
		return int(binary.LittleEndian.Uint16(b))
	}
	return 0
}

func (r *reader) u32() uint32 {
	if b := r.take(4); b != nil {
		return binary.LittleEndian.Uint32(b)
	}
	return 0
}

func (r *reader) u64() uint64 {
	if b := r.take(8); b != nil {
		return binary.LittleEndian.Uint64(b)
	}
	return 0
}

// decodeSnapshot parses and fully validates a namespace file.
func decodeSnapshot(data []byte) (*snapshot, error) {
	if len(data) < headerSize+4 {
		return nil, corrupt("short file")
	}
	body, sum := data[:len(data)-4], binary.LittleEndian.Uint32(data[len(data)-4:])
	if crc32.Checksum(body, crcTable()) != sum {
		return nil, corrupt("checksum mismatch")
	}
	r := &reader{b: body}
	if string(r.take(4)) != fileMagic {
		return nil, corrupt("bad magic")
	}
	if v := r.u32(); v != fileVersion {
		return nil, corrupt(fmt.Sprintf("unsupported version %d", v))
	}
	dim, count := int(r.u32()), int(r.u32())
	if dim < 1 || dim > vectors.MaxDimension {
		return nil, corrupt("dimension out of range")
	}
	// Each record takes at least 2+1+4*dim+4+2 bytes: bound count before
	// allocating anything from it.
	if minRec := 9 + 4*dim; count > len(r.b)/minRec {
		return nil, corrupt("record count exceeds file size")
	}
	s := &snapshot{
		dim:  dim,
		ids:  make([]string, 0, count),
		vecs: make([]float32, 0, count*dim),
		meta: make([]map[string]any, 0, count),
	}
	seen := make(map[string]struct{}, count)
	for range count {
		id := string(r.take(r.u16()))
		if r.err != nil {
			return nil, r.err
		}
		if vectors.ValidateID(id) != nil {
			return nil, corrupt("invalid id")
		}
		if _, dup := seen[id]; dup {
			return nil, corrupt("duplicate id")
		}
		seen[id] = struct{}{}
		raw := r.take(4 * dim)
		if r.err != nil {
			return nil, r.err
		}
		vec := make([]float32, dim)
		for j := range vec {
			vec[j] = math.Float32frombits(binary.LittleEndian.Uint32(raw[4*j:]))
		}
		if err := vectors.ValidateVector(vec); err != nil {
			return nil, corrupt("invalid vector")
		}
		mr := &reader{b: r.take(int(r.u32()))}
		if r.err != nil {
			return nil, r.err
		}
		md, err := readMeta(mr)
		if err != nil {
			return nil, err
		}
		s.ids = append(s.ids, id)
		s.vecs = append(s.vecs, vec...)
		s.meta = append(s.meta, md)
	}
	if len(r.b) != 0 {
		return nil, corrupt("trailing bytes")
	}
	return s, nil
}

func readMeta(r *reader) (map[string]any, error) {
	n := r.u16()
	if r.err != nil {
		return nil, r.err
	}
	if n == 0 {
		if len(r.b) != 0 {
			return nil, corrupt("trailing metadata bytes")
		}
		return nil, nil
	}
	md := make(map[string]any, min(n, 64))
	for range n {
		k := string(r.take(r.u16()))
		var v any
		switch r.u8() {
		case 's':
			v = string(r.take(int(r.u32())))
		case 'f':
			v = math.Float64frombits(r.u64())
		case 'i':
			v = int64(r.u64())
		case 'b':
			switch r.u8() {
			case 0:
				v = false
			case 1:
				v = true
			default:
				return nil, corrupt("bad bool")
			}
		default:
			if r.err == nil {
				return nil, corrupt("bad metadata tag")
			}
		}
		if r.err != nil {
			return nil, r.err
		}
		if _, dup := md[k]; dup {
			return nil, corrupt("duplicate metadata field")
		}
		md[k] = v
	}
	if len(r.b) != 0 {
		return nil, corrupt("trailing metadata bytes")
	}
	if _, err := vectors.CopyMetadata(md); err != nil {
		return nil, corrupt("invalid metadata")
	}
	return md, nil
}

// IsTempFile reports whether a file name (the base name) is a namespace
// file being rewritten: a backup leaves it out.
func IsTempFile(name string) bool { return strings.Contains(name, tmpMarker) }
