package layer

import (
	"archive/tar"
	"bytes"
	"errors"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// mountOverlay mounts lower+upper at merged (work beside them) and
// unmounts it at cleanup. redirect_dir and metacopy are off, as migrate
// mounts them: a renamed lower directory is then copied up whole.
func mountOverlay(t *testing.T, lower, upper, merged string) {
	t.Helper()
	work := merged + ".work"
	for _, d := range []string{work, merged} {
		must(t, os.MkdirAll(d, 0o755))
	}
	opts := "lowerdir=" + lower + ",upperdir=" + upper + ",workdir=" + work + ",redirect_dir=off,metacopy=off"
	if err := unix.Mount("overlay", merged, "overlay", 0, opts); err != nil {
		t.Fatalf("mount overlay at %s: %v", merged, err)
	}
	t.Cleanup(func() {
		if err := unix.Unmount(merged, 0); err != nil {
			unix.Unmount(merged, unix.MNT_DETACH)
		}
	})
}

// baseTree is a small read-only base: the lower layer.
func baseTree(t *testing.T, base string) {
	writeFile(t, filepath.Join(base, "etc/passwd"), "root:x:0:0::/root:/bin/sh\n", 0o644)
	writeFile(t, filepath.Join(base, "etc/motd"), "hello\n", 0o644)
	writeFile(t, filepath.Join(base, "etc/gone"), "to be deleted\n", 0o644)
	writeFile(t, filepath.Join(base, "bin/sh"), "#!shell\n", 0o755)
	writeFile(t, filepath.Join(base, "var/cache/a"), "cache a\n", 0o644)
	writeFile(t, filepath.Join(base, "var/cache/b/c"), "cache c\n", 0o644)
	writeFile(t, filepath.Join(base, "var/log/old.log"), "old\n", 0o644)
	writeFile(t, filepath.Join(base, "opt/app/lib.so"), "lib\n", 0o755)
	must(t, os.Symlink("sh", filepath.Join(base, "bin/bash")))
}

// TestOverlayRoundTrip changes a container's view through a real overlay,
// carries the upper directory as a diff to a fresh upper, mounts that over
// the same base and compares the two merged trees entry by entry.
func TestOverlayRoundTrip(t *testing.T) {
	requireRoot(t)
	t.Parallel()
	dir := tempDir(t)
	base, upper, merged := filepath.Join(dir, "base"), filepath.Join(dir, "upper"), filepath.Join(dir, "merged")
	baseTree(t, base)
	must(t, os.Mkdir(upper, 0o755))
	mountOverlay(t, base, upper, merged)

	m := func(p string) string { return filepath.Join(merged, p) }
	// New, modified and deleted files; a deleted directory that stays
	// deleted and one recreated (overlay makes it opaque).
	writeFile(t, m("new/dir/file"), "new file\n", 0o640)
	writeFile(t, m("etc/motd"), "changed\n", 0o644)
	must(t, os.Remove(m("etc/gone")))
	must(t, os.RemoveAll(m("opt")))
	must(t, os.RemoveAll(m("var/cache")))
	writeFile(t, m("var/cache/fresh"), "fresh\n", 0o644)
	// Metadata of lower files: setuid, owner, xattrs (copy-up).
	must(t, unix.Chmod(m("bin/sh"), 0o4755))
	must(t, os.Lchown(m("etc/passwd"), 1234, 5678))
	must(t, unix.Setxattr(m("etc/motd"), "user.note", []byte("n"), 0))
	must(t, unix.Setxattr(m("bin/sh"), "trusted.app", []byte("t"), 0))
	must(t, unix.Setxattr(m("new/dir"), "user.dir", []byte{0, 1, 2}, 0))
	// Symlinks, hard links (between new files and to a lower file), a fifo.
	must(t, os.Symlink("/etc/passwd", m("new/abs-link")))
	must(t, os.Symlink("../etc/motd", m("new/rel-link")))
	must(t, os.Lchown(m("new/rel-link"), 42, 43))
	must(t, os.Link(m("new/dir/file"), m("new/hard")))
	must(t, os.Link(m("var/log/old.log"), m("var/log/old.log.1")))
	must(t, unix.Mkfifo(m("new/fifo"), 0o600))
	// An empty file, one larger than the copy buffer with a nanosecond
	// mtime, a read-only directory.
	writeFile(t, m("new/empty"), "", 0o600)
	writeFile(t, m("new/big"), strings.Repeat("0123456789abcdef", 300_000), 0o644)
	when := time.Date(2001, 2, 3, 4, 5, 6, 789, time.UTC)
	must(t, os.Chtimes(m("new/big"), when, when))
	must(t, os.Mkdir(m("new/ro"), 0o700))
	must(t, unix.Chmod(m("new/ro"), 0o555))

	var diff bytes.Buffer
	n, err := WriteDiff(upper, &diff)
	must(t, err)
	if n != int64(diff.Len()) {
		t.Errorf("WriteDiff returned %d, wrote %d", n, diff.Len())
	}
	names := tarNames(t, diff.Bytes())
	for _, want := range []string{"etc/.wh.gone", ".wh.opt", "var/cache/", "var/cache/.wh..wh..opq", "new/hard"} {
		if _, ok := names[want]; !ok {
			t.Errorf("diff has no entry %q; entries: %v", want, names)
		}
	}
	if names["new/hard"] != tar.TypeLink && names["new/dir/file"] != tar.TypeLink {
		t.Errorf("hard link not carried as TypeLink")
	}

	upper2, merged2 := filepath.Join(dir, "upper2"), filepath.Join(dir, "merged2")
	must(t, os.Mkdir(upper2, 0o755))
	if _, err := ApplyDiff(bytes.NewReader(diff.Bytes()), upper2, ApplyOptions{}); err != nil {
		t.Fatal(err)
	}
	// The applied upper holds real overlay whiteouts and opaque markers.
	var st unix.Stat_t
	must(t, unix.Lstat(filepath.Join(upper2, "etc/gone"), &st))
	if st.Mode&unix.S_IFMT != unix.S_IFCHR || st.Rdev != 0 {
		t.Errorf("etc/gone in applied upper is not a 0:0 whiteout: mode %o rdev %d", st.Mode, st.Rdev)
	}
	v := make([]byte, 8)
	if k, err := unix.Lgetxattr(filepath.Join(upper2, "var/cache"), "trusted.overlay.opaque", v); err != nil || string(v[:k]) != "y" {
		t.Errorf("var/cache not opaque in applied upper: %q, %v", v[:k], err)
	}

	mountOverlay(t, base, upper2, merged2)
	want, got := snapshot(t, merged), snapshot(t, merged2)
	compareTrees(t, want, got)
	for _, p := range []string{"etc/gone", "opt", "var/cache/a", "var/cache/b"} {
		if _, ok := got[p]; ok {
			t.Errorf("%s deleted in the original is visible after apply", p)
		}
	}
	if _, ok := got["var/cache/fresh"]; !ok {
		t.Errorf("var/cache/fresh missing")
	}
	d1, err := Digest(merged)
	must(t, err)
	d2, err := Digest(merged2)
	must(t, err)
	if d1 != d2 {
		t.Errorf("merged digests differ: %s vs %s", d1, d2)
	}
}

func tarNames(t *testing.T, data []byte) map[string]byte {
	t.Helper()
	out := map[string]byte{}
	tr := tar.NewReader(bytes.NewReader(data))
	for {
		hdr, err := tr.Next()
		if err == io.EOF {
			return out
		}
		must(t, err)
		out[hdr.Name] = hdr.Typeflag
	}
}

// TestDevices: a device node in an upper is carried, and applied only
// with AllowDevices.
func TestDevices(t *testing.T) {
	requireRoot(t)
	t.Parallel()
	src := tempDir(t)
	must(t, unix.Mknod(filepath.Join(src, "null"), unix.S_IFCHR|0o666, int(unix.Mkdev(1, 3))))
	must(t, unix.Mknod(filepath.Join(src, "loop9"), unix.S_IFBLK|0o660, int(unix.Mkdev(7, 9))))
	var diff bytes.Buffer
	_, err := WriteDiff(src, &diff)
	must(t, err)

	if _, err := ApplyDiff(bytes.NewReader(diff.Bytes()), tempDir(t), ApplyOptions{}); !errors.Is(err, ErrDeviceNotAllowed) {
		t.Errorf("without AllowDevices: err = %v; want ErrDeviceNotAllowed", err)
	}
	dst := tempDir(t)
	_, err = ApplyDiff(bytes.NewReader(diff.Bytes()), dst, ApplyOptions{AllowDevices: true})
	must(t, err)
	compareTrees(t, snapshot(t, src), snapshot(t, dst))
}

// TestUserXattrOpaque: with UserXattr the opaque marker is user.overlay.opaque.
func TestUserXattrOpaque(t *testing.T) {
	t.Parallel()
	upper := tempDir(t)
	data := craft(t, tarEntry{name: "d/", typ: tar.TypeDir}, tarEntry{name: "d/.wh..wh..opq"})
	_, err := ApplyDiff(bytes.NewReader(data), upper, ApplyOptions{UserXattr: true})
	if errors.Is(err, unix.ENOTSUP) || errors.Is(err, unix.EPERM) {
		t.Skipf("file system takes no user xattrs here: %v", err)
	}
	must(t, err)
	v := make([]byte, 8)
	if k, err := unix.Lgetxattr(filepath.Join(upper, "d"), "user.overlay.opaque", v); err != nil || string(v[:k]) != "y" {
		t.Errorf("user.overlay.opaque = %q, %v", v[:k], err)
	}
}

// TestWriteDiffRefuses: what the format cannot carry is an error, not a
// silently different tree.
func TestWriteDiffRefuses(t *testing.T) {
	t.Parallel()
	t.Run("whiteout-like name", func(t *testing.T) {
		t.Parallel()
		src := tempDir(t)
		writeFile(t, filepath.Join(src, "d/.wh.x"), "", 0o644)
		_, err := WriteDiff(src, io.Discard)
		var ee *EntryError
		if !errors.Is(err, ErrUnsupported) || !errors.As(err, &ee) || ee.Name != "d/.wh.x" {
			t.Errorf("err = %v; want ErrUnsupported naming d/.wh.x", err)
		}
	})
	t.Run("redirect", func(t *testing.T) {
		requireRoot(t)
		t.Parallel()
		src := tempDir(t)
		must(t, os.Mkdir(filepath.Join(src, "moved"), 0o755))
		must(t, unix.Setxattr(filepath.Join(src, "moved"), "trusted.overlay.redirect", []byte("/orig"), 0))
		if _, err := WriteDiff(src, io.Discard); !errors.Is(err, ErrUnsupported) {
			t.Errorf("err = %v; want ErrUnsupported", err)
		}
	})
	t.Run("not a directory", func(t *testing.T) {
		t.Parallel()
		f := filepath.Join(tempDir(t), "f")
		writeFile(t, f, "x", 0o644)
		if _, err := WriteDiff(f, io.Discard); !errors.Is(err, unix.ENOTDIR) {
			t.Errorf("err = %v; want ENOTDIR", err)
		}
	})
}
