package logs

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

func readAll(t *testing.T, dir string, o ReadOptions) []Entry {
	t.Helper()
	var out []Entry
	if err := Read(context.Background(), dir, o, func(e Entry) error { out = append(out, e); return nil }); err != nil {
		t.Fatal(err)
	}
	return out
}

func TestWriteRead(t *testing.T) {
	dir := t.TempDir()
	w, err := NewWriter(dir, 1<<20, 3)
	if err != nil {
		t.Fatal(err)
	}
	must := func(err error) {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
	}
	must(w.Write(Stdout, []byte("one\ntwo\npart")))
	must(w.Write(Stderr, []byte("oops\n")))
	must(w.Write(Stdout, []byte("ial\n")))
	must(w.Close(false))
	got := readAll(t, dir, ReadOptions{})
	want := []struct {
		s, l    string
		partial bool
	}{{Stdout, "one", false}, {Stdout, "two", false}, {Stdout, "part", true}, {Stderr, "oops", false}, {Stdout, "ial", false}}
	if len(got) != len(want) {
		t.Fatalf("got %d entries: %+v", len(got), got)
	}
	for i, w := range want {
		if got[i].Stream != w.s || string(got[i].Line) != w.l || got[i].Partial != w.partial {
			t.Errorf("entry %d = %s %q %v, want %s %q %v", i, got[i].Stream, got[i].Line, got[i].Partial, w.s, w.l, w.partial)
		}
	}
	if tail := readAll(t, dir, ReadOptions{Tail: 2}); len(tail) != 2 || string(tail[1].Line) != "ial" {
		t.Errorf("tail 2: %+v", tail)
	}
	// Reopening appends.
	w, err = NewWriter(dir, 1<<20, 3)
	must(err)
	must(w.Write(Stdout, []byte("three\n")))
	must(w.Close(true))
	if got := readAll(t, dir, ReadOptions{}); len(got) != 6 {
		t.Errorf("after reopen: %d entries", len(got))
	}
}

func TestRotationBoundsSize(t *testing.T) {
	dir := t.TempDir()
	const max = 64 * 1024
	w, err := NewWriter(dir, max, 3)
	if err != nil {
		t.Fatal(err)
	}
	for i := range 20000 {
		if err := w.Write(Stdout, fmt.Appendf(nil, "line %06d\n", i)); err != nil {
			t.Fatal(err)
		}
	}
	w.Close(true)
	files, _ := filepath.Glob(filepath.Join(dir, FileName+"*"))
	var total int64
	n := 0
	for _, f := range files {
		if strings.HasSuffix(f, ".eof") {
			continue
		}
		st, _ := os.Stat(f)
		if st.Size() > max {
			t.Errorf("%s is %d bytes, over %d", f, st.Size(), max)
		}
		total += st.Size()
		n++
	}
	if n != 3 {
		t.Errorf("%d log files, want 3: %v", n, files)
	}
	got := readAll(t, dir, ReadOptions{})
	if len(got) == 0 || string(got[len(got)-1].Line) != "line 019999" {
		t.Fatalf("last entry lost")
	}
	for i := 1; i < len(got); i++ {
		var a, b int
		fmt.Sscanf(string(got[i-1].Line), "line %d", &a)
		fmt.Sscanf(string(got[i].Line), "line %d", &b)
		if b != a+1 {
			t.Fatalf("entries out of order or missing at %d: %q then %q", i, got[i-1].Line, got[i].Line)
		}
	}
}

func TestLongLineSplit(t *testing.T) {
	dir := t.TempDir()
	w, _ := NewWriter(dir, 1<<20, 1)
	long := strings.Repeat("x", maxLine*2+10)
	w.Write(Stdout, []byte(long+"\n"))
	w.Close(true)
	got := readAll(t, dir, ReadOptions{})
	if len(got) != 3 || !got[0].Partial || !got[1].Partial || got[2].Partial {
		t.Fatalf("long line entries: %d", len(got))
	}
	var b strings.Builder
	for _, e := range got {
		b.Write(e.Line)
	}
	if b.String() != long {
		t.Error("long line not reassembled")
	}
}

// TestFollow follows a log across rotations until the EOF marker.
func TestFollow(t *testing.T) {
	dir := t.TempDir()
	w, err := NewWriter(dir, 32*1024+100, 2)
	if err != nil {
		t.Fatal(err)
	}
	const n = 3000 // ~4 rotations
	got := make(chan int, n+1)
	errc := make(chan error, 1)
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	go func() {
		errc <- Read(ctx, dir, ReadOptions{Follow: true, Poll: time.Millisecond}, func(e Entry) error {
			var i int
			fmt.Sscanf(string(e.Line), "entry %d", &i)
			got <- i
			return nil
		})
	}()
	for i := range n {
		w.Write(Stdout, fmt.Appendf(nil, "entry %d padding-padding-padding\n", i))
		if i%100 == 0 {
			time.Sleep(2 * time.Millisecond) // let the follower keep up across rotations
		}
	}
	w.Close(true)
	if err := <-errc; err != nil {
		t.Fatalf("follow: %v", err)
	}
	close(got)
	next := 0
	for i := range got {
		if i != next {
			t.Fatalf("followed entry %d, want %d", i, next)
		}
		next++
	}
	if next != n {
		t.Errorf("followed %d entries, want %d", next, n)
	}
}

func TestParseEntryMalformed(t *testing.T) {
	for _, s := range []string{"", "garbage", "2026-01-01T00:00:00Z stdout X line", "notatime stdout F x"} {
		if _, err := ParseEntry([]byte(s)); err == nil {
			t.Errorf("ParseEntry(%q) accepted", s)
		}
	}
}

// TestAdopt gives a writer the log of before a move: read back, the old
// lines come first, then the writer's own, in as many files as before; with
// too few files allowed the oldest go.
func TestAdopt(t *testing.T) {
	lines := func(t *testing.T, dir string) []string {
		var out []string
		for _, e := range readAll(t, dir, ReadOptions{}) {
			out = append(out, string(e.Line))
		}
		return out
	}
	before := t.TempDir()
	old, err := NewWriter(before, 2*maxLine, 3)
	if err != nil {
		t.Fatal(err)
	}
	line := strings.Repeat("a", maxLine/2)
	for i := 0; len(Files(before)) < 3; i++ {
		if err := old.Write(Stdout, []byte(fmt.Sprintf("old%d %s\n", i, line))); err != nil {
			t.Fatal(err)
		}
	}
	old.Close(false)
	// The old lines by file, oldest file first.
	var byFile [][]string
	for _, f := range Files(before) {
		one := t.TempDir()
		b, _ := os.ReadFile(filepath.Join(before, f))
		if err := os.WriteFile(filepath.Join(one, FileName), b, 0o600); err != nil {
			t.Fatal(err)
		}
		byFile = append(byFile, lines(t, one))
	}

	for _, maxFiles := range []int{5, 3, 2, 1} {
		t.Run(fmt.Sprint(maxFiles), func(t *testing.T) {
			src := t.TempDir()
			for _, f := range Files(before) {
				b, _ := os.ReadFile(filepath.Join(before, f))
				if err := os.WriteFile(filepath.Join(src, f), b, 0o600); err != nil {
					t.Fatal(err)
				}
			}
			dir := t.TempDir()
			w, err := NewWriter(dir, 1<<20, maxFiles)
			if err != nil {
				t.Fatal(err)
			}
			if err := w.Write(Stdout, []byte("new\n")); err != nil {
				t.Fatal(err)
			}
			if err := w.Adopt(src); err != nil {
				t.Fatal(err)
			}
			// Their current file joins the writer's (both fit in 1 MiB); their
			// rotated ones follow as far as maxFiles allows.
			var want []string
			rotated := byFile[:len(byFile)-1]
			for _, l := range rotated[max(0, len(rotated)-(maxFiles-1)):] {
				want = append(want, l...)
			}
			want = append(want, byFile[len(byFile)-1]...)
			want = append(want, "new")
			if got := lines(t, dir); strings.Join(got, "|") != strings.Join(want, "|") {
				t.Errorf("read back %d lines %.60q, want %d %.60q", len(got), got, len(want), want)
			}
			if n := len(Files(dir)); n > min(maxFiles, len(byFile)) {
				t.Errorf("%d files, more than %d", n, min(maxFiles, len(byFile)))
			}
			// Writing goes on into the joined file.
			if err := w.Write(Stdout, []byte("after\n")); err != nil {
				t.Fatal(err)
			}
			if got := lines(t, dir); got[len(got)-1] != "after" {
				t.Errorf("last line after the adoption %q, want after", got[len(got)-1])
			}
			w.Close(false)
		})
	}
}
