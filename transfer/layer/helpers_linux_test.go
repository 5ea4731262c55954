package layer

import (
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"sort"
	"strings"
	"testing"

	"golang.org/x/sys/unix"
)

// fileState is what a tree comparison looks at for one path. It is built
// with filepath.WalkDir and plain syscalls, independently of the package's
// walker.
type fileState struct {
	Type   uint32
	Mode   uint32
	UID    uint32
	GID    uint32
	Size   int64
	Sum    string
	Target string
	Rdev   uint64
	Mtime  unix.Timespec
	Xattrs string
	Links  string // other paths of the same inode, sorted
}

// snapshot records every path under root (not root's own mtime when
// skipRootTime: a mount point's parent may touch it).
func snapshot(t testing.TB, root string) map[string]fileState {
	t.Helper()
	out := map[string]fileState{}
	inodes := map[[2]uint64][]string{}
	err := filepath.WalkDir(root, func(p string, _ fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(root, p)
		var st unix.Stat_t
		if err := unix.Lstat(p, &st); err != nil {
			return err
		}
		s := fileState{
			Type: st.Mode & unix.S_IFMT, Mode: st.Mode & 07777, UID: st.Uid, GID: st.Gid,
			Mtime: st.Mtim, Xattrs: xattrString(t, p),
		}
		switch s.Type {
		case unix.S_IFREG:
			b, err := os.ReadFile(p)
			if err != nil {
				return err
			}
			sum := sha256.Sum256(b)
			s.Size, s.Sum = st.Size, hex.EncodeToString(sum[:])
		case unix.S_IFLNK:
			if s.Target, err = os.Readlink(p); err != nil {
				return err
			}
		case unix.S_IFCHR, unix.S_IFBLK:
			s.Rdev = st.Rdev
		}
		if s.Type != unix.S_IFDIR && st.Nlink > 1 {
			k := [2]uint64{st.Dev, st.Ino}
			inodes[k] = append(inodes[k], rel)
		}
		out[rel] = s
		return nil
	})
	if err != nil {
		t.Fatalf("snapshot %s: %v", root, err)
	}
	for _, paths := range inodes {
		for _, p := range paths {
			s := out[p]
			others := slices.DeleteFunc(slices.Clone(paths), func(q string) bool { return q == p })
			sort.Strings(others)
			s.Links = strings.Join(others, ",")
			out[p] = s
		}
	}
	return out
}

func xattrString(t testing.TB, p string) string {
	t.Helper()
	buf := make([]byte, 64<<10)
	n, err := unix.Llistxattr(p, buf)
	if err != nil || n == 0 {
		return ""
	}
	var names []string
	for _, name := range strings.Split(strings.TrimSuffix(string(buf[:n]), "\x00"), "\x00") {
		if name != "security.selinux" {
			names = append(names, name)
		}
	}
	sort.Strings(names)
	var b strings.Builder
	for _, name := range names {
		v := make([]byte, 64<<10)
		k, err := unix.Lgetxattr(p, name, v)
		if err != nil {
			t.Fatalf("getxattr %s %s: %v", p, name, err)
		}
		fmt.Fprintf(&b, "%s=%q;", name, v[:k])
	}
	return b.String()
}

// compareTrees fails the test with every difference between two snapshots.
func compareTrees(t testing.TB, want, got map[string]fileState) {
	t.Helper()
	var diffs []string
	for p, w := range want {
		g, ok := got[p]
		switch {
		case !ok:
			diffs = append(diffs, fmt.Sprintf("%s: missing", p))
		case g != w:
			diffs = append(diffs, fmt.Sprintf("%s:\n  want %+v\n  got  %+v", p, w, g))
		}
	}
	for p := range got {
		if _, ok := want[p]; !ok {
			diffs = append(diffs, fmt.Sprintf("%s: unexpected", p))
		}
	}
	sort.Strings(diffs)
	if len(diffs) > 0 {
		t.Errorf("trees differ in %d paths:\n%s", len(diffs), strings.Join(diffs, "\n"))
	}
}

func must(t testing.TB, err error) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
}

// writeFile writes p with the raw mode bits (0o4755 is setuid here, unlike
// in os.FileMode), making missing parents.
func writeFile(t testing.TB, p, content string, mode uint32) {
	t.Helper()
	must(t, os.MkdirAll(filepath.Dir(p), 0o755))
	must(t, os.WriteFile(p, []byte(content), 0o600))
	must(t, unix.Chmod(p, mode))
}

// plainTree builds a tree any user can make: directories, files (one
// larger than the copy buffer), an empty file, symlinks, hard links, a
// fifo, a setuid file, a read-only directory and user xattrs where the file
// system takes them.
func plainTree(t testing.TB, root string) {
	t.Helper()
	writeFile(t, filepath.Join(root, "etc/hostname"), "box\n", 0o644)
	writeFile(t, filepath.Join(root, "etc/empty"), "", 0o600)
	writeFile(t, filepath.Join(root, "bin/tool"), "#!/bin/sh\necho hi\n", 0o4755)
	big := make([]byte, copyBufSize+12345)
	for i := range big {
		big[i] = byte(i*7 + i>>9)
	}
	writeFile(t, filepath.Join(root, "data/big.bin"), string(big), 0o640)
	must(t, os.Symlink("../etc/hostname", filepath.Join(root, "data/rel-link")))
	must(t, os.Symlink("/nonexistent/abs", filepath.Join(root, "data/abs-link")))
	must(t, os.Link(filepath.Join(root, "etc/hostname"), filepath.Join(root, "data/hostname-hard")))
	must(t, os.Link(filepath.Join(root, "etc/hostname"), filepath.Join(root, "bin/hostname-hard2")))
	must(t, unix.Mkfifo(filepath.Join(root, "data/fifo"), 0o620))
	must(t, os.MkdirAll(filepath.Join(root, "ro/sub"), 0o755))
	writeFile(t, filepath.Join(root, "ro/sub/f"), "x", 0o444)
	must(t, os.Chmod(filepath.Join(root, "ro"), 0o555))
	must(t, os.Mkdir(filepath.Join(root, "sticky"), 0o700))
	must(t, unix.Chmod(filepath.Join(root, "sticky"), 0o1777))
	must(t, os.Mkdir(filepath.Join(root, "setgid"), 0o700))
	must(t, unix.Chmod(filepath.Join(root, "setgid"), 0o2750))
	if err := unix.Lsetxattr(filepath.Join(root, "etc/hostname"), "user.migrate.test", []byte("v\x00bin"), 0); err == nil {
		must(t, unix.Lsetxattr(filepath.Join(root, "data"), "user.dir", []byte("d"), 0))
	}
}

func requireRoot(t testing.TB) {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("needs root")
	}
}

// tempDir is t.TempDir whose directories are made writable again before
// removal, so a tree with read-only directories can be cleaned up without
// root.
func tempDir(t testing.TB) string {
	t.Helper()
	d := t.TempDir()
	t.Cleanup(func() {
		filepath.WalkDir(d, func(p string, e fs.DirEntry, err error) error {
			if err == nil && e.IsDir() {
				os.Chmod(p, 0o755)
			}
			return nil
		})
	})
	return d
}
