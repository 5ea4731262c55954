package layer

import (
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

func cpA(t *testing.T, src, dst string) {
	t.Helper()
	if out, err := exec.Command("cp", "-a", src, dst).CombinedOutput(); err != nil {
		t.Fatalf("cp -a: %v: %s", err, out)
	}
}

func mustDigest(t *testing.T, dir string) string {
	t.Helper()
	d, err := Digest(dir)
	if err != nil {
		t.Fatal(err)
	}
	return d
}

func TestDigestOfCopy(t *testing.T) {
	t.Parallel()
	root := tempDir(t)
	src, dst := filepath.Join(root, "src"), filepath.Join(root, "dst")
	must(t, os.Mkdir(src, 0o755))
	plainTree(t, src)
	cpA(t, src, dst)
	d := mustDigest(t, src)
	if !regexp.MustCompile(`^sha256:[0-9a-f]{64}$`).MatchString(d) {
		t.Errorf("digest %q is not sha256:<hex>", d)
	}
	if c := mustDigest(t, dst); c != d {
		t.Errorf("copy digests %s, original %s", c, d)
	}
	for _, workers := range []int{1, 2, 7} {
		got, err := digest(src, workers)
		must(t, err)
		if got != d {
			t.Errorf("%d workers: %s; want %s", workers, got, d)
		}
	}
}

// TestDigestSensitivity changes one thing at a time in a copy: content,
// metadata and structure change the digest, timestamps do not.
func TestDigestSensitivity(t *testing.T) {
	t.Parallel()
	root := tempDir(t)
	src := filepath.Join(root, "src")
	must(t, os.Mkdir(src, 0o755))
	plainTree(t, src)
	base := mustDigest(t, src)
	userXattrs := unix.Lsetxattr(filepath.Join(src, "bin/tool"), "user.probe", []byte("1"), 0) == nil
	if userXattrs {
		must(t, unix.Lremovexattr(filepath.Join(src, "bin/tool"), "user.probe"))
	}

	cases := []struct {
		name   string
		same   bool
		root   bool
		xattrs bool
		change func(t *testing.T, d string)
	}{
		{name: "one byte", change: func(t *testing.T, d string) {
			f, err := os.OpenFile(filepath.Join(d, "data/big.bin"), os.O_WRONLY, 0)
			must(t, err)
			_, err = f.WriteAt([]byte{0xff}, 777777)
			must(t, err)
			must(t, f.Close())
		}},
		{name: "appended byte", change: func(t *testing.T, d string) {
			f, err := os.OpenFile(filepath.Join(d, "etc/empty"), os.O_WRONLY|os.O_APPEND, 0)
			must(t, err)
			_, err = f.Write([]byte{0})
			must(t, err)
			must(t, f.Close())
		}},
		{name: "mode", change: func(t *testing.T, d string) { must(t, unix.Chmod(filepath.Join(d, "etc/hostname"), 0o640)) }},
		{name: "setuid", change: func(t *testing.T, d string) { must(t, unix.Chmod(filepath.Join(d, "bin/tool"), 0o755)) }},
		{name: "dir mode", change: func(t *testing.T, d string) { must(t, unix.Chmod(filepath.Join(d, "sticky"), 0o777)) }},
		{name: "owner", root: true, change: func(t *testing.T, d string) { must(t, os.Lchown(filepath.Join(d, "etc/empty"), 0, 1)) }},
		{name: "symlink owner", root: true, change: func(t *testing.T, d string) { must(t, os.Lchown(filepath.Join(d, "data/rel-link"), 5, 5)) }},
		{name: "xattr value", xattrs: true, change: func(t *testing.T, d string) {
			must(t, unix.Lsetxattr(filepath.Join(d, "etc/hostname"), "user.migrate.test", []byte("v\x00bio"), 0))
		}},
		{name: "xattr added", xattrs: true, change: func(t *testing.T, d string) {
			must(t, unix.Lsetxattr(filepath.Join(d, "bin/tool"), "user.extra", nil, 0))
		}},
		{name: "symlink target", change: func(t *testing.T, d string) {
			must(t, os.Remove(filepath.Join(d, "data/abs-link")))
			must(t, os.Symlink("/nonexistent/abz", filepath.Join(d, "data/abs-link")))
		}},
		{name: "hard link broken", change: func(t *testing.T, d string) {
			p := filepath.Join(d, "bin/hostname-hard2")
			must(t, os.Remove(p))
			cpA(t, filepath.Join(d, "etc/hostname"), p)
		}},
		{name: "renamed", change: func(t *testing.T, d string) {
			must(t, os.Rename(filepath.Join(d, "etc/empty"), filepath.Join(d, "etc/empty2")))
		}},
		{name: "empty dir added", change: func(t *testing.T, d string) { must(t, os.Mkdir(filepath.Join(d, "etc/new"), 0o755)) }},
		{name: "fifo became file", change: func(t *testing.T, d string) {
			p := filepath.Join(d, "data/fifo")
			must(t, os.Remove(p))
			writeFile(t, p, "", 0o620)
		}},
		{name: "mtimes", same: true, change: func(t *testing.T, d string) {
			old := time.Unix(1e9, 0)
			for _, p := range []string{"data/big.bin", "etc", "."} {
				must(t, os.Chtimes(filepath.Join(d, p), old, old))
			}
		}},
	}
	for i, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			if c.root {
				requireRoot(t)
			}
			if c.xattrs && !userXattrs {
				t.Skip("no user xattrs on this file system")
			}
			t.Parallel()
			d := filepath.Join(root, "copy", string(rune('a'+i)))
			must(t, os.MkdirAll(filepath.Dir(d), 0o755))
			cpA(t, src, d)
			if got := mustDigest(t, d); got != base {
				t.Fatalf("unchanged copy digests %s, original %s", got, base)
			}
			c.change(t, d)
			got := mustDigest(t, d)
			if c.same && got != base {
				t.Errorf("digest changed: %s -> %s", base, got)
			}
			if !c.same && got == base {
				t.Errorf("digest did not change (%s)", got)
			}
		})
	}
}

func TestDigestErrors(t *testing.T) {
	t.Parallel()
	if _, err := Digest(filepath.Join(tempDir(t), "missing")); err == nil {
		t.Error("digest of a missing directory succeeded")
	}
	if os.Geteuid() != 0 {
		d := tempDir(t)
		writeFile(t, filepath.Join(d, "secret"), "x", 0o000)
		if _, err := Digest(d); err == nil {
			t.Error("digest with an unreadable file succeeded")
		}
	}
}
