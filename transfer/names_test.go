package transfer

import (
	"errors"
	"strings"
	"testing"

	transferv1 "github.com/migratehq/migrate/api/transfer/v1"
)

func TestValidateID(t *testing.T) {
	for _, id := range []string{"a", "move-1.ckpt_2", strings.Repeat("x", 128), "0"} {
		if err := ValidateID(id); err != nil {
			t.Errorf("%q: %v", id, err)
		}
	}
	for _, id := range []string{"", ".", "..", ".hidden", "-x", "a/b", "a b", "a\x00", strings.Repeat("x", 129), "é"} {
		if err := ValidateID(id); !errors.Is(err, ErrBadTransferID) {
			t.Errorf("%q: %v, want ErrBadTransferID", id, err)
		}
	}
}

func TestValidateNames(t *testing.T) {
	ok := [][]string{
		{"pages-1.img", "core-1.img"},
		{"a/b/c", "a/b/d", "a/e"},
		{"..a", "a..", ".x"},
		{"ab", "a/b"},
		{},
	}
	for _, names := range ok {
		if err := validateNames(names); err != nil {
			t.Errorf("%q: %v", names, err)
		}
	}
	bad := [][]string{
		{"/abs"}, {".."}, {"."}, {"a/.."}, {"../a"}, {"a/./b"}, {"a//b"}, {"a/"}, {""},
		{"a\x00"}, {strings.Repeat("x", 256)}, {strings.Repeat("a/", 600) + "x"},
		{"a", "a"}, {"a", "a/b"}, {"a/b/c", "a/b"},
	}
	for _, names := range bad {
		if err := validateNames(names); !errors.Is(err, ErrBadName) {
			t.Errorf("%q: %v, want ErrBadName", names, err)
		}
	}
}

func TestValidateHeader(t *testing.T) {
	good := func() *transferv1.Header {
		return &transferv1.Header{TransferId: "t", ChunkSize: DefaultChunkSize, Files: []*transferv1.File{
			{Name: "a", Size: 5, Sha256: make([]byte, 32)},
		}}
	}
	if err := validateHeader(good()); err != nil {
		t.Fatal(err)
	}
	for name, mod := range map[string]func(h *transferv1.Header){
		"small chunk": func(h *transferv1.Header) { h.ChunkSize = MinChunkSize - 1 },
		"large chunk": func(h *transferv1.Header) { h.ChunkSize = MaxChunkSize + 1 },
		"negative":    func(h *transferv1.Header) { h.Files[0].Size = -1 },
		"huge":        func(h *transferv1.Header) { h.Files[0].Size = maxFileSize + 1 },
		"short sha":   func(h *transferv1.Header) { h.Files[0].Sha256 = h.Files[0].Sha256[:31] },
		"many": func(h *transferv1.Header) {
			h.Files = make([]*transferv1.File, MaxFiles+1)
			for i := range h.Files {
				h.Files[i] = &transferv1.File{Name: strings.Repeat("x", i%200+1), Sha256: make([]byte, 32)}
			}
		},
	} {
		h := good()
		mod(h)
		if err := validateHeader(h); !errors.Is(err, ErrBadHeader) {
			t.Errorf("%s: %v, want ErrBadHeader", name, err)
		}
	}
}

func TestChunkMath(t *testing.T) {
	for _, c := range []struct {
		size  int64
		n     int64
		lastN int
	}{{0, 0, 0}, {1, 1, 1}, {MinChunkSize, 1, MinChunkSize}, {MinChunkSize + 1, 2, 1}, {3*MinChunkSize - 7, 3, MinChunkSize - 7}} {
		n := chunkCount(c.size, MinChunkSize)
		if n != c.n || n > 0 && chunkLen(c.size, MinChunkSize, n-1) != c.lastN {
			t.Errorf("size %d: %d chunks, last %d; want %d, %d", c.size, n, chunkLen(c.size, MinChunkSize, n-1), c.n, c.lastN)
		}
	}
}
