package audio

import (
	"encoding/binary"
	"fmt"
)

// Ogg framing (RFC 3533): pages of up to 255 lacing segments; a packet is a
// run of 255-byte segments ended by one shorter segment and may continue
// across pages.
const (
	oggHeaderLen     = 27
	oggFlagContinued = 0x01
	oggFlagBOS       = 0x02
	oggFlagEOS       = 0x04
)

// oggPacket is one complete packet of one logical stream. Granule is the
// granule position of the page on which the packet ends when it is the last
// packet to end there, else -1 (RFC 3533 section 6).
type oggPacket struct {
	Serial  uint32
	Data    []byte
	Granule int64
	BOS     bool // first packet of its stream
	EOS     bool // last packet of its stream
}

type oggStream struct {
	partial []byte
	seq     uint32
	ended   bool
	packets int
}

// demuxOgg walks every page of data, checking capture pattern, version,
// CRC, bounds, page order and packet continuity, and calls emit for each
// complete packet. Packet data aliases data when a packet lies within one
// page and is a fresh copy otherwise; so memory stays within len(data).
func demuxOgg(data []byte, emit func(oggPacket) error) error {
	crcTable := oggCRCTable()
	streams := map[uint32]*oggStream{}
	off := 0
	for pageNo := 0; off < len(data); pageNo++ {
		page := data[off:]
		if len(page) < oggHeaderLen {
			return fmt.Errorf("%w: ogg: page %d: truncated header", ErrMalformed, pageNo)
		}
		if string(page[0:4]) != "OggS" {
			return fmt.Errorf("%w: ogg: page %d: no capture pattern", ErrMalformed, pageNo)
		}
		if page[4] != 0 {
			return fmt.Errorf("%w: ogg: page %d: version %d", ErrUnsupported, pageNo, page[4])
		}
		flags := page[5]
		granule := int64(binary.LittleEndian.Uint64(page[6:14]))
		serial := binary.LittleEndian.Uint32(page[14:18])
		seq := binary.LittleEndian.Uint32(page[18:22])
		crc := binary.LittleEndian.Uint32(page[22:26])
		nseg := int(page[26])
		if len(page) < oggHeaderLen+nseg {
			return fmt.Errorf("%w: ogg: page %d: truncated segment table", ErrMalformed, pageNo)
		}
		lacing := page[oggHeaderLen : oggHeaderLen+nseg]
		bodyLen := 0
		for _, l := range lacing {
			bodyLen += int(l)
		}
		pageLen := oggHeaderLen + nseg + bodyLen
		if len(page) < pageLen {
			return fmt.Errorf("%w: ogg: page %d: %d body bytes declared, %d present", ErrMalformed, pageNo, bodyLen, len(page)-oggHeaderLen-nseg)
		}
		page = page[:pageLen]
		if got := oggCRC(crcTable, page); got != crc {
			return fmt.Errorf("%w: ogg: page %d: CRC mismatch", ErrMalformed, pageNo)
		}
		off += pageLen

		st := streams[serial]
		if st == nil {
			if flags&oggFlagBOS == 0 {
				return fmt.Errorf("%w: ogg: page %d: stream starts without BOS flag", ErrMalformed, pageNo)
			}
			st = &oggStream{}
			streams[serial] = st
		} else {
			if flags&oggFlagBOS != 0 {
				return fmt.Errorf("%w: ogg: page %d: second BOS for a stream", ErrMalformed, pageNo)
			}
			if st.ended {
				return fmt.Errorf("%w: ogg: page %d: page after end of stream", ErrMalformed, pageNo)
			}
			if seq != st.seq+1 {
				return fmt.Errorf("%w: ogg: page %d: sequence %d after %d (lost page)", ErrMalformed, pageNo, seq, st.seq)
			}
		}
		st.seq = seq
		continued := flags&oggFlagContinued != 0
		if continued != (st.partial != nil) {
			if continued {
				return fmt.Errorf("%w: ogg: page %d: continuation without a packet to continue", ErrMalformed, pageNo)
			}
			return fmt.Errorf("%w: ogg: page %d: packet cut off by the next page", ErrMalformed, pageNo)
		}

		// Find where the last packet on this page ends, for its granule.
		lastEnd := -1
		for i, l := range lacing {
			if l < 255 {
				lastEnd = i
			}
		}
		body := page[oggHeaderLen+nseg:]
		start := 0
		pos := 0
		for i, l := range lacing {
			pos += int(l)
			if l == 255 {
				continue
			}
			p := oggPacket{Serial: serial, Granule: -1, BOS: st.packets == 0}
			if st.partial != nil {
				p.Data = append(st.partial, body[start:pos]...)
				st.partial = nil
			} else {
				p.Data = body[start:pos:pos]
			}
			start = pos
			if i == lastEnd {
				p.Granule = granule
				p.EOS = flags&oggFlagEOS != 0
			}
			st.packets++
			if err := emit(p); err != nil {
				return err
			}
		}
		if start < pos {
			// The last packet continues on the next page.
			st.partial = append(st.partial, body[start:pos]...)
		}
		if flags&oggFlagEOS != 0 {
			if st.partial != nil {
				return fmt.Errorf("%w: ogg: page %d: stream ends inside a packet", ErrMalformed, pageNo)
			}
			st.ended = true
		}
	}
	for _, st := range streams {
		if st.partial != nil {
			return fmt.Errorf("%w: ogg: data ends inside a packet", ErrMalformed)
		}
	}
	if len(streams) == 0 {
		return fmt.Errorf("%w: ogg: no pages", ErrMalformed)
	}
	return nil
}

// oggCRC is CRC-32 with polynomial 0x04c11db7, no reflection, zero initial
// value, computed with the page's CRC field taken as zero.
func oggCRC(table *[256]uint32, page []byte) uint32 {
	var crc uint32
	for i, b := range page {
		if i >= 22 && i < 26 {
			b = 0
		}
		crc = crc<<8 ^ table[byte(crc>>24)^b]
	}
	return crc
}

func oggCRCTable() *[256]uint32 {
	var table [256]uint32
	for i := range table {
		r := uint32(i) << 24
		for range 8 {
			if r&0x80000000 != 0 {
				r = r<<1 ^ 0x04c11db7
			} else {
				r <<= 1
			}
		}
		table[i] = r
	}
	return &table
}
