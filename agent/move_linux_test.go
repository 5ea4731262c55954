package agent

import (
	"errors"
	"os"
	"path/filepath"
	"slices"
	"testing"

	"github.com/migratehq/migrate/agent/checkpoint"
)

func TestMoveMode(t *testing.T) {
	for _, m := range []string{"", "cold", "auto"} {
		if got, err := moveMode(m); err != nil || got != "cold" {
			t.Errorf("moveMode(%q) = %q, %v; want cold", m, got, err)
		}
	}
	for _, m := range []string{"live", "COLD", "warp"} {
		if _, err := moveMode(m); !errors.Is(err, ErrInvalid) {
			t.Errorf("moveMode(%q): %v, want ErrInvalid", m, err)
		}
	}
}

func TestResolveCgroup(t *testing.T) {
	for _, c := range []struct{ path, id, want string }{
		{"", "c1", "/migrate/c1"},
		{"n2/c1", "c1", "/migrate/n2/c1"},
		{"../../etc", "c1", "/migrate/etc"},
		{"/a/b/../c", "c1", "/a/c"},
	} {
		if got := resolveCgroup(c.path, c.id); got != c.want {
			t.Errorf("resolveCgroup(%q, %q) = %q, want %q", c.path, c.id, got, c.want)
		}
	}
}

func TestMoveFiles(t *testing.T) {
	work := t.TempDir()
	for _, p := range []string{"checkpoint/manifest.json", "checkpoint/images/pages-1.img", "base.tar"} {
		if err := os.MkdirAll(filepath.Join(work, filepath.Dir(p)), 0o700); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(work, p), []byte(p), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	if err := os.Symlink("/etc/passwd", filepath.Join(work, "checkpoint", "link")); err != nil {
		t.Fatal(err)
	}
	m := &checkpoint.Manifest{Files: []checkpoint.File{{Path: "images/pages-1.img", SHA256: "abc"}}}
	files, sums, err := moveFiles(work, m)
	if err != nil {
		t.Fatal(err)
	}
	slices.Sort(files)
	want := []string{"base.tar", "checkpoint/images/pages-1.img", "checkpoint/manifest.json"}
	if !slices.Equal(files, want) {
		t.Errorf("files %v, want %v (regular files only)", files, want)
	}
	if len(sums) != 1 || sums["checkpoint/images/pages-1.img"] != "abc" {
		t.Errorf("sums %v", sums)
	}
}

func TestMoveTable(t *testing.T) {
	mt := newMoveTable()
	if !mt.reserveOutgoing("c") || mt.reserveOutgoing("c") {
		t.Fatal("a second move of the same container was not refused")
	}
	mt.releaseOutgoing("c")
	if !mt.reserveOutgoing("c") {
		t.Fatal("released container cannot be moved again")
	}
	first, again, other := mt.in("t1"), mt.in("t1"), mt.in("t2")
	if first != again || first == other {
		t.Fatal("incoming moves are not tracked per transfer")
	}
}
