package criu

import (
	"errors"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
)

func TestNotFound(t *testing.T) {
	c := &Client{Path: filepath.Join(t.TempDir(), "criu")}
	_, err := c.Version(t.Context())
	if !errors.Is(err, ErrNotFound) {
		t.Fatalf("err = %v, want ErrNotFound", err)
	}
	want := "criu not found at " + c.Path + ": run scripts/setup.sh (or make test) to build CRIU >= 4.1"
	if err.Error() != want {
		t.Errorf("message %q, want %q", err, want)
	}
	if err := checkBinary(DefaultPath + ".does-not-exist"); err == nil || !strings.Contains(err.Error(), DefaultPath+".does-not-exist") {
		t.Errorf("checkBinary: %v", err)
	}
}

// A prepared swrk's files are matched to a restore's inherited files by
// identity, each fd once: a file inherited twice needs two fds.
func TestPreparedInheritFds(t *testing.T) {
	var files []*os.File
	for range 3 {
		r, w, err := os.Pipe()
		if err != nil {
			t.Fatal(err)
		}
		defer r.Close()
		defer w.Close()
		files = append(files, r)
	}
	x, a, b := files[0], files[1], files[2]
	p := &Prepared{files: []*os.File{x, a, a, b}}
	for _, tc := range []struct {
		inherit []*os.File
		want    []int // nil: the prepared swrk cannot serve
	}{
		{[]*os.File{b, a}, []int{7, 5}},
		{[]*os.File{a, b, a}, []int{5, 7, 6}},
		{[]*os.File{a, a, a}, nil},
		{[]*os.File{b, b}, nil},
		{nil, []int{}},
	} {
		var fds []InheritFd
		for _, f := range tc.inherit {
			fds = append(fds, InheritFd{Key: "k", File: f})
		}
		got, ok := p.inheritFds(fds)
		if tc.want == nil {
			if ok {
				t.Errorf("inheritFds(%d files) = %v, want no match", len(fds), got)
			}
			continue
		}
		if !ok || !slices.Equal(got, tc.want) {
			t.Errorf("inheritFds(%d files) = %v, %v; want %v", len(fds), got, ok, tc.want)
		}
	}
}
