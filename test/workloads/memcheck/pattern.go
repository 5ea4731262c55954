package memcheck

import (
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"fmt"
	"hash"
)

// PageSize is the unit in which the pattern is generated, verified and touched. It
// matches the x86-64 and arm64 base page so a touch dirties exactly that many pages.
const PageSize = 4096

// ErrSize reports a region size that is not a positive multiple of PageSize.
var ErrSize = errors.New("size must be a positive multiple of the page size")

// CorruptError reports the first page whose content differs from the pattern.
type CorruptError struct {
	Page int // index of the first bad page
}

func (e *CorruptError) Error() string {
	return fmt.Sprintf("page %d does not hold its pattern", e.Page)
}

// SplitMix64 advances *state and returns the next output of Steele, Lea and
// Flood's SplitMix64 generator (the one used to seed xoshiro).
func SplitMix64(state *uint64) uint64 {
	*state += 0x9e3779b97f4a7c15
	z := *state
	z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9
	z = (z ^ (z >> 27)) * 0x94d049bb133111eb
	return z ^ (z >> 31)
}

// pageState is the generator state a page of a generation starts from. The odd
// multipliers spread page and generation over all 64 bits before SplitMix64 mixes.
func pageState(seed uint64, page int, gen uint32) uint64 {
	return seed ^ uint64(page)*0xd1b54a32d192ed03 ^ uint64(gen)*0x8cb92ba72f3d8dd7
}

// FillPage writes the content of page `page` at generation gen into p, which must be
// PageSize bytes long.
func FillPage(p []byte, seed uint64, page int, gen uint32) {
	s := pageState(seed, page, gen)
	for i := 0; i+8 <= len(p); i += 8 {
		binary.LittleEndian.PutUint64(p[i:], SplitMix64(&s))
	}
}

// pageMatches reports whether p holds page `page` at generation gen.
func pageMatches(p []byte, seed uint64, page int, gen uint32) bool {
	s := pageState(seed, page, gen)
	for i := 0; i+8 <= len(p); i += 8 {
		if binary.LittleEndian.Uint64(p[i:]) != SplitMix64(&s) {
			return false
		}
	}
	return true
}

// Selected reports whether Touch round `round` (1, 2, ...) rewrites page `page` of a
// region of `pages` pages at percent. Every round selects exactly pages*percent/100
// pages (rounded down), evenly spread, at a seed- and round-dependent offset so that
// successive rounds dirty different pages.
func Selected(seed uint64, round uint32, page, pages, percent int) bool {
	if percent <= 0 || pages <= 0 {
		return false
	}
	if percent >= 100 {
		return true
	}
	s := seed ^ uint64(round)*0xa0761d6478bd642f
	j := uint64(page) + SplitMix64(&s)%uint64(pages)
	j %= uint64(pages)
	// Page j is chosen when the running share floor(j*percent/100) steps up at it.
	return (j+1)*uint64(percent)/100 > j*uint64(percent)/100
}

// Region is a buffer filled with the pattern, plus the generation of each page.
type Region struct {
	seed  uint64
	buf   []byte
	gen   []uint32 // generation each page was last written with
	round uint32   // touch rounds done so far
}

// NewRegion allocates size bytes and fills them with generation 0 of seed's pattern.
func NewRegion(size int, seed uint64) (*Region, error) {
	if size <= 0 || size%PageSize != 0 {
		return nil, fmt.Errorf("region of %d bytes: %w", size, ErrSize)
	}
	r := &Region{seed: seed, buf: make([]byte, size), gen: make([]uint32, size/PageSize)}
	for i := range r.gen {
		FillPage(r.page(i), seed, i, 0)
	}
	return r, nil
}

func (r *Region) page(i int) []byte { return r.buf[i*PageSize : (i+1)*PageSize] }

// Bytes returns the region's memory itself (not a copy).
func (r *Region) Bytes() []byte { return r.buf }

// Pages returns the number of pages in the region.
func (r *Region) Pages() int { return len(r.gen) }

// Round returns how many Touch rounds the region has had.
func (r *Region) Round() uint32 { return r.round }

// Verify regenerates every page and compares it with memory. It returns a
// *CorruptError naming the first page that differs.
func (r *Region) Verify() error {
	for i, g := range r.gen {
		if !pageMatches(r.page(i), r.seed, i, g) {
			return &CorruptError{Page: i}
		}
	}
	return nil
}

// Sum returns the hex SHA-256 of the region's memory as it is now.
func (r *Region) Sum() string {
	s := sha256.Sum256(r.buf)
	return hex.EncodeToString(s[:])
}

// Touch starts the next round and rewrites the pages Selected for it at percent
// with that round's generation. It returns the number of pages rewritten.
func (r *Region) Touch(percent int) int {
	r.round++
	n := 0
	for i := range r.gen {
		if Selected(r.seed, r.round, i, len(r.gen), percent) {
			FillPage(r.page(i), r.seed, i, r.round)
			r.gen[i] = r.round
			n++
		}
	}
	return n
}

// ExpectedSum returns the hex SHA-256 a Region of size bytes and seed must have
// after `rounds` Touch calls at percent. It streams one page at a time, so it
// checks a region without holding a second copy of it.
func ExpectedSum(size int, seed uint64, percent, rounds int) (string, error) {
	if size <= 0 || size%PageSize != 0 {
		return "", fmt.Errorf("expected sum of %d bytes: %w", size, ErrSize)
	}
	pages := size / PageSize
	var h hash.Hash = sha256.New()
	p := make([]byte, PageSize)
	for i := 0; i < pages; i++ {
		gen := uint32(0)
		for r := rounds; r >= 1; r-- {
			if Selected(seed, uint32(r), i, pages, percent) {
				gen = uint32(r)
				break
			}
		}
		FillPage(p, seed, i, gen)
		h.Write(p)
	}
	return hex.EncodeToString(h.Sum(nil)), nil
}
