package layer

import (
	"bytes"
	"fmt"
	"io"
	"math/rand/v2"
	"os"
	"path/filepath"
	"runtime"
	"sync"
	"testing"

	"golang.org/x/sys/unix"
)

// benchTree is a ~100 MiB tree shared by the benchmarks: 48 files of 1 MiB
// and 6400 files of 8 KiB in 16 directories, random contents.
var benchTree struct {
	once  sync.Once
	dir   string
	bytes int64
	err   error
}

func TestMain(m *testing.M) {
	code := m.Run()
	if benchTree.dir != "" {
		os.RemoveAll(benchTree.dir)
	}
	os.Exit(code)
}

func syntheticTree(b *testing.B) (string, int64) {
	b.Helper()
	benchTree.once.Do(func() {
		benchTree.dir, benchTree.err = os.MkdirTemp("", "layer-bench-")
		if benchTree.err != nil {
			return
		}
		rng := rand.NewChaCha8([32]byte{1})
		write := func(p string, size int) error {
			buf := make([]byte, size)
			rng.Read(buf)
			benchTree.bytes += int64(size)
			return os.WriteFile(p, buf, 0o644)
		}
		for i := range 48 {
			if err := write(filepath.Join(benchTree.dir, fmt.Sprintf("large-%02d", i)), 1<<20); err != nil {
				benchTree.err = err
				return
			}
		}
		for d := range 16 {
			dir := filepath.Join(benchTree.dir, fmt.Sprintf("dir-%02d", d))
			if benchTree.err = os.Mkdir(dir, 0o755); benchTree.err != nil {
				return
			}
			for i := range 400 {
				if err := write(filepath.Join(dir, fmt.Sprintf("small-%03d", i)), 8<<10); err != nil {
					benchTree.err = err
					return
				}
			}
		}
	})
	if benchTree.err != nil {
		b.Fatalf("benchmark tree: %v", benchTree.err)
	}
	return benchTree.dir, benchTree.bytes
}

// debianRootfs is the cached Debian minbase fixture, if built.
func debianRootfs(b *testing.B) string {
	b.Helper()
	cache := os.Getenv("MIGRATE_CACHE")
	if cache == "" {
		cache = "/var/cache/migrate"
	}
	dir := filepath.Join(cache, "debian", "rootfs")
	if _, err := os.Stat(filepath.Join(dir, "etc/debian_version")); err != nil {
		b.Skipf("no Debian rootfs at %s (make fixtures)", dir)
	}
	return dir
}

// treeBytes sums the sizes of a tree's regular files (once per inode).
func treeBytes(b *testing.B, dir string) int64 {
	b.Helper()
	var total int64
	seen := map[uint64]bool{}
	err := filepath.WalkDir(dir, func(p string, e os.DirEntry, err error) error {
		if err != nil || !e.Type().IsRegular() {
			return err
		}
		var st unix.Stat_t
		if err := unix.Lstat(p, &st); err != nil {
			return err
		}
		if !seen[st.Ino] {
			seen[st.Ino] = true
			total += st.Size
		}
		return nil
	})
	if err != nil {
		b.Fatal(err)
	}
	return total
}

func benchDigest(b *testing.B, dir string, size int64) {
	for _, workers := range []int{1, runtime.GOMAXPROCS(0)} {
		b.Run(fmt.Sprintf("workers=%d", workers), func(b *testing.B) {
			b.SetBytes(size)
			for b.Loop() {
				if _, err := digest(dir, workers); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

func benchWriteDiff(b *testing.B, dir string, size int64) {
	b.SetBytes(size)
	for b.Loop() {
		if _, err := WriteDiff(dir, io.Discard); err != nil {
			b.Fatal(err)
		}
	}
}

func benchApplyDiff(b *testing.B, dir string, size int64) {
	var diff bytes.Buffer
	if _, err := WriteDiff(dir, &diff); err != nil {
		b.Fatal(err)
	}
	scratch := b.TempDir()
	b.SetBytes(size)
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		dst := filepath.Join(scratch, fmt.Sprint(i))
		if err := os.Mkdir(dst, 0o755); err != nil {
			b.Fatal(err)
		}
		if _, err := ApplyDiff(bytes.NewReader(diff.Bytes()), dst, ApplyOptions{AllowDevices: true}); err != nil {
			b.Fatal(err)
		}
		b.StopTimer()
		if err := os.RemoveAll(dst); err != nil {
			b.Fatal(err)
		}
		b.StartTimer()
	}
}

func BenchmarkDigest(b *testing.B) {
	dir, size := syntheticTree(b)
	benchDigest(b, dir, size)
}

func BenchmarkWriteDiff(b *testing.B) {
	dir, size := syntheticTree(b)
	benchWriteDiff(b, dir, size)
}

func BenchmarkApplyDiff(b *testing.B) {
	dir, size := syntheticTree(b)
	benchApplyDiff(b, dir, size)
}

func BenchmarkDebian(b *testing.B) {
	dir := debianRootfs(b)
	size := treeBytes(b, dir)
	b.Run("Digest", func(b *testing.B) { benchDigest(b, dir, size) })
	b.Run("WriteDiff", func(b *testing.B) { benchWriteDiff(b, dir, size) })
	b.Run("ApplyDiff", func(b *testing.B) {
		if os.Geteuid() != 0 {
			b.Skip("needs root: the tree is owned by several users")
		}
		benchApplyDiff(b, dir, size)
	})
}
