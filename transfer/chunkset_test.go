package transfer

import (
	"errors"
	"os"
	"path/filepath"
	"reflect"
	"testing"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	transferv1 "github.com/migratehq/migrate/api/transfer/v1"
)

func testHeader() *transferv1.Header {
	const cs = MinChunkSize
	return &transferv1.Header{TransferId: "t", ChunkSize: cs, Files: []*transferv1.File{
		{Name: "a", Size: 5*cs + 10}, // 6 chunks, the last short
		{Name: "empty"},
		{Name: "b", Size: 2 * cs},
	}}
}

func TestChunkSetRanges(t *testing.T) {
	h := testHeader()
	const cs = MinChunkSize
	s := newChunkSet(h)
	for _, c := range [][2]int64{{0, 0}, {0, 1}, {0, 3}, {0, 5}, {2, 1}} {
		s.set(uint32(c[0]), c[1])
	}
	want := []*transferv1.Range{
		{File: 0, Offset: 0, Length: 2 * cs},
		{File: 0, Offset: 3 * cs, Length: cs},
		{File: 0, Offset: 5 * cs, Length: 10},
		{File: 2, Offset: cs, Length: cs},
	}
	got := s.ranges()
	if !reflect.DeepEqual(got, want) {
		t.Fatalf("ranges %v, want %v", got, want)
	}
	if s.missing() != 3 {
		t.Errorf("missing %d, want 3", s.missing())
	}
	// The sender's reading of the ranges gives back the same set.
	back := newChunkSet(h)
	back.covered(got)
	if !reflect.DeepEqual(back.bits, s.bits) {
		t.Errorf("covered %v, want %v", back.bits, s.bits)
	}
	// Partial or hostile ranges never mark a chunk that is not wholly covered.
	part := newChunkSet(h)
	part.covered([]*transferv1.Range{
		{File: 0, Offset: 1, Length: cs},           // inside chunks 0 and 1, covers neither
		{File: 0, Offset: 2 * cs, Length: cs - 1},  // one byte short of chunk 2
		{File: 0, Offset: 5 * cs, Length: 1 << 40}, // the short last chunk, overlong
		{File: 9, Offset: 0, Length: cs},           // no such file
		{File: 2, Offset: -cs, Length: 3 * cs},     // negative offset
		{File: 2, Offset: cs, Length: -1},          // negative length
	})
	if part.missing() != 7 || !part.has(0, 5) {
		t.Errorf("partial ranges: missing %d (want 7), last chunk held %v", part.missing(), part.has(0, 5))
	}
	s.fill()
	if s.missing() != 0 {
		t.Error("fill left chunks missing")
	}
}

func TestJournal(t *testing.T) {
	h := testHeader()
	path := filepath.Join(t.TempDir(), "journal")
	s := newChunkSet(h)
	j, err := openJournal(path, s, false)
	if err != nil {
		t.Fatal(err)
	}
	j.add(0, 1)
	j.add(2, 0)
	j.add(0, 5)
	if err := j.flush(); err != nil {
		t.Fatal(err)
	}
	j.add(0, 2) // queued, never flushed: lost, as after a crash
	j.close()

	load := func() *chunkSet {
		t.Helper()
		s := newChunkSet(h)
		j, err := openJournal(path, s, false)
		if err != nil {
			t.Fatal(err)
		}
		j.close()
		return s
	}
	s = load()
	if !s.has(0, 1) || !s.has(2, 0) || !s.has(0, 5) || s.has(0, 2) || s.missing() != 5 {
		t.Fatalf("reloaded %v", s.bits)
	}

	// A torn last record is cut off and appending continues after the good ones.
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_APPEND, 0)
	if err != nil {
		t.Fatal(err)
	}
	f.Write(appendRecord(nil, 0, 3)[:7])
	f.Close()
	s = newChunkSet(h)
	j, err = openJournal(path, s, false)
	if err != nil {
		t.Fatal(err)
	}
	if s.has(0, 3) || s.missing() != 5 {
		t.Fatalf("torn record read as %v", s.bits)
	}
	j.add(0, 4)
	if err := j.flush(); err != nil {
		t.Fatal(err)
	}
	j.close()
	if s = load(); !s.has(0, 4) || s.missing() != 4 {
		t.Fatalf("append after torn tail: %v", s.bits)
	}

	// A corrupt record ends the valid part.
	data, _ := os.ReadFile(path)
	data[len(journalMagic)+journalRecord+2] ^= 1
	os.WriteFile(path, data, 0o600)
	if s = load(); s.missing() != 7 || !s.has(0, 1) {
		t.Fatalf("after corrupt second record: %v", s.bits)
	}

	// A record outside the header discards the journal: resending is safe.
	os.WriteFile(path, appendRecord(appendRecord(append([]byte(nil), journalMagic...), 0, 1), 7, 0), 0o600)
	if s = load(); s.missing() != 8 {
		t.Fatalf("journal of another header: %v", s.bits)
	}

	// rewrite keeps exactly the set.
	s = newChunkSet(h)
	j, err = openJournal(path, s, false)
	if err != nil {
		t.Fatal(err)
	}
	s.set(2, 1)
	if err := j.rewrite(s); err != nil {
		t.Fatal(err)
	}
	j.close()
	if s = load(); s.missing() != 7 || !s.has(2, 1) {
		t.Fatalf("after rewrite: %v", s.bits)
	}
}

func TestStatusRoundTrip(t *testing.T) {
	chunk := &ChunkError{File: "pages-1.img", Offset: 4 << 20, Err: ErrChunkChecksum}
	st := toStatus(chunk)
	if status.Code(st) != codes.DataLoss {
		t.Errorf("code %v", status.Code(st))
	}
	var ce *ChunkError
	back := fromStatus(st)
	if !errors.As(back, &ce) || ce.File != "pages-1.img" || ce.Offset != 4<<20 || !errors.Is(back, ErrChunkChecksum) {
		t.Fatalf("chunk error came back as %v", back)
	}
	file := toStatus(&FileError{File: "core-1.img", Err: ErrDigestMismatch})
	var fe *FileError
	if back := fromStatus(file); !errors.As(back, &fe) || fe.File != "core-1.img" || !errors.Is(back, ErrDigestMismatch) {
		t.Fatalf("file error came back as %v", back)
	}
	for _, r := range reasons {
		if back := fromStatus(toStatus(r.err)); !errors.Is(back, r.err) {
			t.Errorf("%v came back as %v", r.err, back)
		}
	}
	if back := fromStatus(toStatus(errors.New("disk on fire"))); status.Code(back) != codes.Internal {
		t.Errorf("plain error: %v", back)
	}
}
