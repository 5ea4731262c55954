package memcheck

import (
	"bytes"
	"errors"
	"path/filepath"
	"testing"
)

func TestSplitMix64Reference(t *testing.T) {
	t.Parallel()
	// First outputs for state 0 from the reference C implementation
	// (https://prng.di.unimi.it/splitmix64.c).
	want := []uint64{0xe220a8397b1dcdaf, 0x6e789e6aa1b965f4, 0x06c45d188009454f}
	var s uint64
	for i, w := range want {
		if got := SplitMix64(&s); got != w {
			t.Fatalf("output %d = %#x, want %#x", i, got, w)
		}
	}
}

func TestNewRegionSize(t *testing.T) {
	t.Parallel()
	for _, size := range []int{0, -PageSize, PageSize + 1} {
		if _, err := NewRegion(size, 1); !errors.Is(err, ErrSize) {
			t.Errorf("NewRegion(%d) error = %v, want ErrSize", size, err)
		}
		if _, err := ExpectedSum(size, 1, 10, 0); !errors.Is(err, ErrSize) {
			t.Errorf("ExpectedSum(%d) error = %v, want ErrSize", size, err)
		}
	}
}

func TestRegionDeterministicAndSeeded(t *testing.T) {
	t.Parallel()
	a, _ := NewRegion(16*PageSize, 7)
	b, _ := NewRegion(16*PageSize, 7)
	c, _ := NewRegion(16*PageSize, 8)
	if !bytes.Equal(a.Bytes(), b.Bytes()) {
		t.Fatal("same seed gave different content")
	}
	if bytes.Equal(a.Bytes(), c.Bytes()) {
		t.Fatal("different seeds gave the same content")
	}
	// Pages of one region must differ from each other, or a page mapped at the
	// wrong offset after restore would go unnoticed.
	seen := map[string]int{}
	for i := 0; i < a.Pages(); i++ {
		p := string(a.Bytes()[i*PageSize : (i+1)*PageSize])
		if j, ok := seen[p]; ok {
			t.Fatalf("pages %d and %d are identical", j, i)
		}
		seen[p] = i
	}
	if bytes.Count(a.Bytes(), []byte{0}) > len(a.Bytes())/100 {
		t.Fatal("pattern is mostly zeros; CRIU would store it as zero pages")
	}
}

func TestVerifyDetectsCorruption(t *testing.T) {
	t.Parallel()
	r, _ := NewRegion(8*PageSize, 3)
	if err := r.Verify(); err != nil {
		t.Fatalf("fresh region: %v", err)
	}
	r.Bytes()[5*PageSize+100] ^= 0x01
	var ce *CorruptError
	if err := r.Verify(); !errors.As(err, &ce) || ce.Page != 5 {
		t.Fatalf("Verify after bit flip = %v, want corrupt page 5", err)
	}
	r.Bytes()[5*PageSize+100] ^= 0x01
	if err := r.Verify(); err != nil {
		t.Fatalf("after repair: %v", err)
	}
}

func TestTouchShare(t *testing.T) {
	t.Parallel()
	const pages = 1000
	for _, pct := range []int{0, 1, 25, 50, 99, 100} {
		r, _ := NewRegion(pages*PageSize, 11)
		before := append([]byte(nil), r.Bytes()...)
		n := r.Touch(pct)
		if want := pages * pct / 100; n != want {
			t.Errorf("Touch(%d) rewrote %d pages, want %d", pct, n, want)
		}
		changed := 0
		for i := 0; i < pages; i++ {
			if !bytes.Equal(before[i*PageSize:(i+1)*PageSize], r.Bytes()[i*PageSize:(i+1)*PageSize]) {
				changed++
			}
		}
		if changed != n {
			t.Errorf("Touch(%d): %d pages changed, Touch reported %d", pct, changed, n)
		}
		if err := r.Verify(); err != nil {
			t.Errorf("Touch(%d) then Verify: %v", pct, err)
		}
	}
}

func TestTouchRoundsDiffer(t *testing.T) {
	t.Parallel()
	const pages = 400
	same := 0
	for i := 0; i < pages; i++ {
		if Selected(5, 1, i, pages, 10) && Selected(5, 2, i, pages, 10) {
			same++
		}
	}
	if same == pages/10 {
		t.Fatal("rounds 1 and 2 select exactly the same pages")
	}
}

func TestExpectedSumMatchesRegion(t *testing.T) {
	t.Parallel()
	r, _ := NewRegion(64*PageSize, 42)
	for round := 0; round <= 4; round++ {
		if round > 0 {
			r.Touch(30)
		}
		want, err := ExpectedSum(64*PageSize, 42, 30, round)
		if err != nil {
			t.Fatal(err)
		}
		if got := r.Sum(); got != want {
			t.Fatalf("round %d: region sum %s, ExpectedSum %s", round, got, want)
		}
	}
	other, _ := ExpectedSum(64*PageSize, 42, 30, 5)
	if other == r.Sum() {
		t.Fatal("ExpectedSum does not depend on the round count")
	}
}

func TestStatusRoundTrip(t *testing.T) {
	t.Parallel()
	in := Status{Seq: 9, State: StateTouched, Round: 3, Sum: "abc123", Pid: 77, Addr: 0x7f0012340000, Size: 1 << 20}
	out, err := ParseStatus(in.String())
	if err != nil {
		t.Fatal(err)
	}
	if out != in {
		t.Fatalf("round trip: got %+v, want %+v", out, in)
	}
	path := filepath.Join(t.TempDir(), "status")
	if err := WriteStatus(path, in); err != nil {
		t.Fatal(err)
	}
	in.Seq++
	if err := WriteStatus(path, in); err != nil {
		t.Fatal(err)
	}
	got, err := ReadStatus(path)
	if err != nil || got != in {
		t.Fatalf("ReadStatus = %+v, %v; want %+v", got, err, in)
	}
	matches, _ := filepath.Glob(filepath.Join(filepath.Dir(path), ".status.*"))
	if len(matches) != 0 {
		t.Fatalf("temp files left behind: %v", matches)
	}
	for _, bad := range []string{"", "seq=1", "seq=x state=ok round=0 sha256= pid=1 addr=0x0 size=1", "seq=1 state=ok round=0 sha256= pid=1 addr=0x0 color=1"} {
		if _, err := ParseStatus(bad); !errors.Is(err, ErrStatus) {
			t.Errorf("ParseStatus(%q) error = %v, want ErrStatus", bad, err)
		}
	}
}

func BenchmarkNewRegion(b *testing.B) {
	b.SetBytes(64 << 20)
	for b.Loop() {
		if _, err := NewRegion(64<<20, 1); err != nil {
			b.Fatal(err)
		}
	}
}
