package pagestore

import (
	"bytes"
	"errors"
	"io"
	"math/rand/v2"
	"testing"
)

func split(t *testing.T, sp splitter) [][]byte {
	t.Helper()
	var out [][]byte
	for {
		b, err := sp.next()
		if errors.Is(err, io.EOF) {
			return out
		}
		if err != nil {
			t.Fatal(err)
		}
		out = append(out, b)
	}
}

func TestFixedSplitter(t *testing.T) {
	data := make([]byte, 5*PageSize+100)
	for i := range data {
		data[i] = byte(i)
	}
	got := split(t, &fixedSplitter{r: bytes.NewReader(data), size: 2 * PageSize})
	if len(got) != 3 || len(got[0]) != 2*PageSize || len(got[2]) != PageSize+100 {
		t.Fatalf("chunks of %d, %d, ... (%d chunks)", len(got[0]), len(got[len(got)-1]), len(got))
	}
	if !bytes.Equal(bytes.Join(got, nil), data) {
		t.Error("chunks do not add up to the data")
	}
	if got := split(t, &fixedSplitter{r: bytes.NewReader(nil), size: PageSize}); len(got) != 0 {
		t.Errorf("empty input gave %d chunks", len(got))
	}
}

// TestCDCShift checks what content-defined chunking is for: bytes inserted
// near the start change only the chunks around them.
func TestCDCShift(t *testing.T) {
	data := make([]byte, 24<<20)
	rand.NewChaCha8([32]byte{1}).Read(data)
	a := split(t, &cdcSplitter{r: bytes.NewReader(data)})
	shifted := append(append(append([]byte{}, data[:1000]...), []byte("inserted member header")...), data[1000:]...)
	b := split(t, &cdcSplitter{r: bytes.NewReader(shifted)})
	if !bytes.Equal(bytes.Join(a, nil), data) || !bytes.Equal(bytes.Join(b, nil), shifted) {
		t.Fatal("chunks do not add up to the data")
	}
	for _, c := range a {
		if len(c) > cdcMax || (len(c) <= cdcMin && &c[0] != &a[len(a)-1][0]) {
			t.Errorf("chunk of %d bytes outside (%d, %d]", len(c), cdcMin, cdcMax)
		}
	}
	seen := make(map[string]bool)
	for _, c := range a {
		seen[sha256Hex(c)] = true
	}
	shared := 0
	for _, c := range b {
		if seen[sha256Hex(c)] {
			shared++
		}
	}
	t.Logf("%d chunks, %d shared after an insertion", len(a), shared)
	if len(a) < 8 || shared < len(a)-2 {
		t.Errorf("%d of %d chunks shared after an insertion, want all but 2", shared, len(a))
	}
}

func TestIsPageImage(t *testing.T) {
	for name, want := range map[string]bool{
		"images/pages-1.img": true, "pages-12.img": true, "images/pagemap-1.img": false,
		"images/pages-1.img.bak": false, "rootfs-diff.tar": false,
	} {
		if isPageImage(name) != want {
			t.Errorf("isPageImage(%q) = %v", name, !want)
		}
	}
}
