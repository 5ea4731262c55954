package pagestore

import (
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"os"
	"path"
	"path/filepath"
	"strconv"
	"strings"

	"google.golang.org/protobuf/encoding/protowire"
)

// Page images are cut at virtual addresses, not file offsets. CRIU writes
// the present pages of every mapping back to back into pages-<id>.img, in the
// order of pagemap-<pid>.img; when a mapping before the big one grows or
// shrinks by a page between two dumps (a Go heap, a stack), every later file
// offset moves, and chunks cut at fixed file offsets would all change. Cut
// at multiples of the chunk size in the address space instead (and at the
// ends of each pagemap entry), a page keeps its chunk across dumps. Measured:
// a memwriter with 1% of its pages rewritten stored ~100% again with file
// offsets, ~4% with addresses.

// CRIU image framing: a u32 magic pair, then entries of u32 length + protobuf.
const (
	imgCommonMagic = 0x54564319
	pagemapMagic   = 0x56084025

	pePresent = 1 << 2 // pagemap_entry.flags: the pages are in pages-<id>.img
	peParent  = 1 << 0 // ... in the parent image
)

// pageChunkSizes returns the chunk sizes to cut pages-<id>.img at, from the
// pagemap image in the same directory that names that id; nil if there is
// none or it does not describe a file of size bytes, in which case the caller
// cuts at fixed offsets.
func pageChunkSizes(pagesPath string, size int64, chunk int) []int64 {
	id, ok := strings.CutSuffix(strings.TrimPrefix(path.Base(pagesPath), "pages-"), ".img")
	if !ok {
		return nil
	}
	want, err := strconv.ParseUint(id, 10, 32)
	if err != nil {
		return nil
	}
	maps, _ := filepath.Glob(filepath.Join(filepath.Dir(pagesPath), "pagemap-*.img"))
	for _, m := range maps {
		b, err := os.ReadFile(m)
		if err != nil {
			continue
		}
		pid, entries, err := parsePagemap(b)
		if err != nil || pid != want {
			continue
		}
		return cutEntries(entries, size, chunk)
	}
	return nil
}

type pagemapEntry struct {
	vaddr uint64
	pages uint64
}

// parsePagemap decodes a pagemap image: the pages id of its head and its
// entries whose pages are in the pages image.
func parsePagemap(b []byte) (uint64, []pagemapEntry, error) {
	bad := errors.New("not a pagemap image")
	if len(b) < 8 || binary.LittleEndian.Uint32(b) != imgCommonMagic || binary.LittleEndian.Uint32(b[4:]) != pagemapMagic {
		return 0, nil, bad
	}
	b = b[8:]
	var pagesID uint64
	var out []pagemapEntry
	for first := true; len(b) > 0; first = false {
		if len(b) < 4 {
			return 0, nil, bad
		}
		n := int(binary.LittleEndian.Uint32(b))
		if len(b) < 4+n {
			return 0, nil, bad
		}
		msg := b[4 : 4+n]
		b = b[4+n:]
		var e pagemapEntry
		var flags uint64
		var inParent bool
		hasFlags := false
		for len(msg) > 0 {
			num, typ, l := protowire.ConsumeTag(msg)
			if l < 0 {
				return 0, nil, bad
			}
			msg = msg[l:]
			if typ != protowire.VarintType {
				l = protowire.ConsumeFieldValue(num, typ, msg)
				if l < 0 {
					return 0, nil, bad
				}
				msg = msg[l:]
				continue
			}
			v, l := protowire.ConsumeVarint(msg)
			if l < 0 {
				return 0, nil, bad
			}
			msg = msg[l:]
			switch {
			case first && num == 1:
				pagesID = v
			case !first && num == 1:
				e.vaddr = v
			case !first && num == 2 && e.pages == 0:
				e.pages = v // nr_pages (u32)
			case !first && num == 5:
				e.pages = v // pages (u64), which newer CRIU writes instead
			case !first && num == 3:
				inParent = v != 0
			case !first && num == 4:
				flags, hasFlags = v, true
			}
		}
		if first {
			continue
		}
		present := !inParent
		if hasFlags {
			present = flags&pePresent != 0 && flags&peParent == 0
		}
		if present && e.pages > 0 {
			out = append(out, e)
		}
	}
	return pagesID, out, nil
}

// cutEntries cuts each entry's pages at addresses that are multiples of
// chunk; nil unless the entries account for exactly size bytes.
func cutEntries(entries []pagemapEntry, size int64, chunk int) []int64 {
	var out []int64
	var total int64
	c := uint64(chunk)
	for _, e := range entries {
		start, end := e.vaddr, e.vaddr+e.pages*PageSize
		if start%PageSize != 0 || end < start {
			return nil
		}
		for a := start; a < end; {
			next := min((a/c+1)*c, end)
			out = append(out, int64(next-a))
			total += int64(next - a)
			a = next
		}
	}
	if total != size {
		return nil
	}
	return out
}

// sizedSplitter cuts at the given sizes.
type sizedSplitter struct {
	f     *os.File
	sizes []int64
}

func (s *sizedSplitter) next() ([]byte, error) {
	if len(s.sizes) == 0 {
		return nil, io.EOF
	}
	b := make([]byte, s.sizes[0])
	s.sizes = s.sizes[1:]
	if _, err := io.ReadFull(s.f, b); err != nil {
		return nil, fmt.Errorf("page image shorter than its pagemap: %w", err)
	}
	return b, nil
}
