package pagestore

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"syscall"
	"testing"
)

const benchPages = 256 << 20 / PageSize // a 256 MiB page image

// benchSrc builds a 256 MiB page image once per benchmark and a copy with
// 1% of its pages rewritten (scattered when run == 1, else in runs).
func benchSrc(b *testing.B, dir string, run int) (first, second string) {
	b.Helper()
	first, second = filepath.Join(dir, "first"), filepath.Join(dir, "second")
	writePageFile(b, filepath.Join(first, "images", "pages-1.img"), benchPages, 1)
	writePageFile(b, filepath.Join(second, "images", "pages-1.img"), benchPages, 1)
	rewritePages(b, filepath.Join(second, "images", "pages-1.img"), 0.01, run, 2)
	return first, second
}

// diskBytes is what the store's chunks occupy in file system blocks.
func diskBytes(b *testing.B, root string) int64 {
	var n int64
	err := filepath.Walk(filepath.Join(root, dirChunks), func(_ string, fi os.FileInfo, err error) error {
		if err != nil {
			return err
		}
		if st, ok := fi.Sys().(*syscall.Stat_t); ok && fi.Mode().IsRegular() {
			n += st.Blocks * 512
		}
		return nil
	})
	if err != nil {
		b.Fatal(err)
	}
	return n
}

// BenchmarkPut measures a first Put of a 256 MiB page image and an
// incremental Put after 1% of its pages were rewritten, for several page
// chunk sizes and write patterns. Metrics: stored-B (chunks + manifest of
// that Put), stored-% (incremental over first), disk-B (blocks of the
// chunks, first Put only).
func BenchmarkPut(b *testing.B) {
	for _, pat := range []struct {
		name string
		run  int
	}{{"scattered", 1}, {"runs16", 16}} {
		for _, cs := range []int{8 << 10, 16 << 10, 64 << 10, 256 << 10} {
			if pat.run != 1 && cs != DefaultPageChunkSize && cs != 64<<10 {
				continue
			}
			name := fmt.Sprintf("%s/chunk=%dK", pat.name, cs>>10)
			var first, second string
			srcDir := b.TempDir()
			b.Run(name+"/first", func(b *testing.B) {
				if first == "" {
					first, second = benchSrc(b, filepath.Join(srcDir, name), pat.run)
				}
				b.SetBytes(benchPages * PageSize)
				var stored, disk int64
				for i := 0; i < b.N; i++ {
					b.StopTimer()
					root := filepath.Join(b.TempDir(), fmt.Sprint(i))
					s, err := Open(root, Options{PageChunkSize: cs})
					if err != nil {
						b.Fatal(err)
					}
					b.StartTimer()
					info, err := s.Put(context.Background(), "first", first, nil)
					if err != nil {
						b.Fatal(err)
					}
					b.StopTimer()
					stored = info.NewStoredBytes + info.ManifestBytes
					disk = diskBytes(b, root)
					s.Close()
					os.RemoveAll(root)
					b.StartTimer()
				}
				b.ReportMetric(float64(stored), "stored-B")
				b.ReportMetric(float64(disk), "disk-B")
			})
			b.Run(name+"/incremental", func(b *testing.B) {
				if first == "" {
					first, second = benchSrc(b, filepath.Join(srcDir, name), pat.run)
				}
				b.SetBytes(benchPages * PageSize)
				var stored, base int64
				for i := 0; i < b.N; i++ {
					b.StopTimer()
					root := filepath.Join(b.TempDir(), fmt.Sprint(i))
					s, err := Open(root, Options{PageChunkSize: cs})
					if err != nil {
						b.Fatal(err)
					}
					in1, err := s.Put(context.Background(), "first", first, nil)
					if err != nil {
						b.Fatal(err)
					}
					b.StartTimer()
					info, err := s.Put(context.Background(), "second", second, nil)
					if err != nil {
						b.Fatal(err)
					}
					b.StopTimer()
					stored = info.NewStoredBytes + info.ManifestBytes
					base = in1.NewStoredBytes + in1.ManifestBytes
					s.Close()
					os.RemoveAll(root)
					b.StartTimer()
				}
				b.ReportMetric(float64(stored), "stored-B")
				b.ReportMetric(100*float64(stored)/float64(base), "stored-%")
			})
		}
	}
}
