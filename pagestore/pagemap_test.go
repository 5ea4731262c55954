package pagestore

import (
	"context"
	"encoding/binary"
	"os"
	"path/filepath"
	"reflect"
	"testing"

	"google.golang.org/protobuf/encoding/protowire"
)

// pagemapImage encodes a pagemap image as CRIU 4 writes it (pages in field 5).
func pagemapImage(pagesID uint64, entries []pagemapEntry) []byte {
	b := binary.LittleEndian.AppendUint32(nil, imgCommonMagic)
	b = binary.LittleEndian.AppendUint32(b, pagemapMagic)
	msg := func(m []byte) {
		b = binary.LittleEndian.AppendUint32(b, uint32(len(m)))
		b = append(b, m...)
	}
	msg(protowire.AppendVarint(protowire.AppendTag(nil, 1, protowire.VarintType), pagesID))
	for _, e := range entries {
		var m []byte
		m = protowire.AppendVarint(protowire.AppendTag(m, 1, protowire.VarintType), e.vaddr)
		m = protowire.AppendVarint(protowire.AppendTag(m, 2, protowire.VarintType), 0)
		m = protowire.AppendVarint(protowire.AppendTag(m, 4, protowire.VarintType), pePresent)
		m = protowire.AppendVarint(protowire.AppendTag(m, 5, protowire.VarintType), e.pages)
		msg(m)
	}
	// An entry whose pages are in a parent image has none in this file.
	msg(protowire.AppendVarint(protowire.AppendTag(protowire.AppendVarint(protowire.AppendTag(
		protowire.AppendVarint(protowire.AppendTag(nil, 1, protowire.VarintType), 1<<40),
		4, protowire.VarintType), peParent), 5, protowire.VarintType), 9))
	return b
}

func TestParsePagemapAndCut(t *testing.T) {
	es := []pagemapEntry{{vaddr: 0x400000, pages: 1}, {vaddr: 0x401000 + 2*PageSize, pages: 7}}
	id, got, err := parsePagemap(pagemapImage(3, es))
	if err != nil || id != 3 || !reflect.DeepEqual(got, es) {
		t.Fatalf("parse: %d %+v %v", id, got, err)
	}
	// 16 KiB chunks at addresses: [0x400000,+1p] then 0x403000 (page 3 of its
	// 4-page block): 1 page, then 4, then 2.
	sizes := cutEntries(got, 8*PageSize, 4*PageSize)
	want := []int64{PageSize, PageSize, 4 * PageSize, 2 * PageSize}
	if !reflect.DeepEqual(sizes, want) {
		t.Errorf("cut %v, want %v", sizes, want)
	}
	if cutEntries(got, 9*PageSize, 4*PageSize) != nil {
		t.Error("cut entries that do not match the file size")
	}
	if _, _, err := parsePagemap([]byte("garbage!")); err == nil {
		t.Error("parsed garbage")
	}
}

// TestPageShiftDedup: a mapping before the big one grows by a page between two
// dumps, shifting every later page in pages-1.img by one page. Cut at
// addresses, the second snapshot still stores only the rewritten 1%.
func TestPageShiftDedup(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	s := openStore(t, filepath.Join(dir, "store"), Options{})
	const big = 4096 // pages
	dump := func(name string, small uint64, rewrite bool) *SnapshotInfo {
		src := filepath.Join(dir, name)
		img := filepath.Join(src, "images")
		// small pages of one mapping, then the big mapping: its content is
		// the same pattern in both dumps (seed 5), only its file offset moves.
		writePageFile(t, filepath.Join(img, "small.raw"), int(small), 4)
		writePageFile(t, filepath.Join(img, "big.raw"), big, 5)
		if rewrite {
			rewritePages(t, filepath.Join(img, "big.raw"), 0.01, 1, 6)
		}
		a, _ := os.ReadFile(filepath.Join(img, "small.raw"))
		b, _ := os.ReadFile(filepath.Join(img, "big.raw"))
		writeFile(t, filepath.Join(img, "pages-1.img"), append(a, b...), 0o600)
		os.Remove(filepath.Join(img, "small.raw"))
		os.Remove(filepath.Join(img, "big.raw"))
		writeFile(t, filepath.Join(img, "pagemap-1.img"), pagemapImage(1, []pagemapEntry{
			{vaddr: 0x10000000, pages: small}, {vaddr: 0x7f0000000000, pages: big},
		}), 0o600)
		info, err := s.Put(context.Background(), name, src, nil)
		if err != nil {
			t.Fatal(err)
		}
		out := filepath.Join(dir, name+".out")
		if err := s.Get(context.Background(), name, out); err != nil {
			t.Fatal(err)
		}
		sameTree(t, src, out)
		return info
	}
	first := dump("one", 3, false)
	second := dump("two", 4, true)
	ratio := float64(second.NewStoredBytes) / float64(first.NewStoredBytes)
	t.Logf("first %d stored, second %d (%.2f%%)", first.NewStoredBytes, second.NewStoredBytes, 100*ratio)
	if ratio > 0.06 {
		t.Errorf("a one-page shift made the second snapshot store %.1f%% of the first", 100*ratio)
	}
}
