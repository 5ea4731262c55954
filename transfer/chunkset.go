package transfer

import (
	transferv1 "github.com/migratehq/migrate/api/transfer/v1"
)

// chunkSet records which chunks of which files are held, one bit per chunk.
type chunkSet struct {
	chunkSize uint32
	sizes     []int64
	bits      [][]uint64
}

func newChunkSet(h *transferv1.Header) *chunkSet {
	s := &chunkSet{chunkSize: h.GetChunkSize()}
	for _, f := range h.GetFiles() {
		n := chunkCount(f.GetSize(), s.chunkSize)
		s.sizes = append(s.sizes, f.GetSize())
		s.bits = append(s.bits, make([]uint64, (n+63)/64))
	}
	return s
}

// valid reports whether chunk idx of file exists.
func (s *chunkSet) valid(file uint32, idx int64) bool {
	return int(file) < len(s.sizes) && idx >= 0 && idx < chunkCount(s.sizes[file], s.chunkSize)
}

func (s *chunkSet) has(file uint32, idx int64) bool {
	return s.bits[file][idx/64]&(1<<(idx%64)) != 0
}

func (s *chunkSet) set(file uint32, idx int64) { s.bits[file][idx/64] |= 1 << (idx % 64) }

// fill marks every chunk held.
func (s *chunkSet) fill() {
	for f := range s.sizes {
		for i := range chunkCount(s.sizes[f], s.chunkSize) {
			s.set(uint32(f), i)
		}
	}
}

func (s *chunkSet) clearFile(file uint32) { clear(s.bits[file]) }

func (s *chunkSet) clone() *chunkSet {
	c := &chunkSet{chunkSize: s.chunkSize, sizes: s.sizes, bits: make([][]uint64, len(s.bits))}
	for i, b := range s.bits {
		c.bits[i] = append([]uint64(nil), b...)
	}
	return c
}

// missing is the number of chunks not held.
func (s *chunkSet) missing() int64 {
	var n int64
	for f := range s.sizes {
		for i := range chunkCount(s.sizes[f], s.chunkSize) {
			if !s.has(uint32(f), i) {
				n++
			}
		}
	}
	return n
}

// ranges lists the held bytes as coalesced ranges, in file and offset order.
func (s *chunkSet) ranges() []*transferv1.Range {
	var out []*transferv1.Range
	for f := range s.sizes {
		var cur *transferv1.Range
		for i := range chunkCount(s.sizes[f], s.chunkSize) {
			if !s.has(uint32(f), i) {
				cur = nil
				continue
			}
			n := int64(chunkLen(s.sizes[f], s.chunkSize, i))
			if cur != nil {
				cur.Length += n
				continue
			}
			cur = &transferv1.Range{File: uint32(f), Offset: i * int64(s.chunkSize), Length: n}
			out = append(out, cur)
		}
	}
	return out
}

// covered marks, in s, every chunk lying wholly inside one of ranges; it is how a
// sender reads a receiver's Have. Ranges outside the files are ignored.
func (s *chunkSet) covered(ranges []*transferv1.Range) {
	cs := int64(s.chunkSize)
	for _, r := range ranges {
		f := r.GetFile()
		if int(f) >= len(s.sizes) || r.GetOffset() < 0 || r.GetLength() <= 0 {
			continue
		}
		end := min(r.GetOffset()+r.GetLength(), s.sizes[f])
		for i := (r.GetOffset() + cs - 1) / cs; i*cs < end; i++ {
			if i*cs+int64(chunkLen(s.sizes[f], s.chunkSize, i)) <= end {
				s.set(f, i)
			}
		}
	}
}
