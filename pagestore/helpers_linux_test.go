package pagestore

import (
	"context"
	"crypto/sha256"
	"io/fs"
	"math/rand/v2"
	"os"
	"path/filepath"
	"testing"
)

// fillPage writes a synthetic memory page: half random (pointers, data),
// half zero, so it compresses about 2:1 like typical anonymous memory.
func fillPage(p []byte, rng *rand.ChaCha8) {
	rng.Read(p[:PageSize/2])
	clear(p[PageSize/2 : PageSize])
}

func seeded(seed uint64) *rand.ChaCha8 {
	var s [32]byte
	for i := range 8 {
		s[i] = byte(seed >> (8 * i))
	}
	return rand.NewChaCha8(s)
}

// writePageFile writes pages synthetic pages to path.
func writePageFile(t testing.TB, path string, pages int, seed uint64) {
	t.Helper()
	rng := seeded(seed)
	buf := make([]byte, 256*PageSize)
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		t.Fatal(err)
	}
	f, err := os.Create(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	for done := 0; done < pages; {
		n := min(256, pages-done)
		for i := range n {
			fillPage(buf[i*PageSize:(i+1)*PageSize], rng)
		}
		if _, err := f.Write(buf[:n*PageSize]); err != nil {
			t.Fatal(err)
		}
		done += n
	}
}

// rewritePages rewrites frac of the file's pages with new content, chosen
// uniformly at random (scattered: the hard case for dedup) or, when run > 1,
// in runs of run consecutive pages.
func rewritePages(t testing.TB, path string, frac float64, run int, seed uint64) int {
	t.Helper()
	f, err := os.OpenFile(path, os.O_RDWR, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		t.Fatal(err)
	}
	pages := int(fi.Size() / PageSize)
	want := int(float64(pages) * frac)
	rng := seeded(seed)
	r := rand.New(rng)
	picked := make(map[int]bool)
	page := make([]byte, PageSize)
	for len(picked) < want {
		start := r.IntN(pages)
		for i := 0; i < max(run, 1) && len(picked) < want && start+i < pages; i++ {
			pg := start + i
			if picked[pg] {
				continue
			}
			picked[pg] = true
			fillPage(page, rng)
			if _, err := f.WriteAt(page, int64(pg)*PageSize); err != nil {
				t.Fatal(err)
			}
		}
	}
	return len(picked)
}

func writeFile(t testing.TB, path string, b []byte, mode fs.FileMode) {
	t.Helper()
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(path, b, mode); err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(path, mode); err != nil {
		t.Fatal(err)
	}
}

func randBytes(n int, seed uint64) []byte {
	b := make([]byte, n)
	seeded(seed).Read(b)
	return b
}

// checkpointDir builds a directory shaped like a checkpoint: manifest.json,
// images/ with small CRIU images and a page image, a rootfs diff tar, a
// symlink and an empty file.
func checkpointDir(t testing.TB, dir string, pages int, seed uint64) {
	t.Helper()
	writeFile(t, filepath.Join(dir, "manifest.json"), []byte(`{"container":"c1"}`), 0o644)
	writeFile(t, filepath.Join(dir, "images", "core-1.img"), randBytes(3000, seed+1), 0o600)
	writeFile(t, filepath.Join(dir, "images", "inventory.img"), []byte("inv"), 0o600)
	writeFile(t, filepath.Join(dir, "images", "empty.img"), nil, 0o600)
	writeFile(t, filepath.Join(dir, "rootfs-diff.tar"), randBytes(3<<20+123, seed+2), 0o640)
	writePageFile(t, filepath.Join(dir, "images", "pages-1.img"), pages, seed+3)
	if err := os.Symlink("pages-1.img", filepath.Join(dir, "images", "pages-link.img")); err != nil {
		t.Fatal(err)
	}
	if err := os.Mkdir(filepath.Join(dir, "images", "sub"), 0o750); err != nil {
		t.Fatal(err)
	}
}

// treeOf describes a directory: path -> type, mode and content digest (or
// symlink target).
func treeOf(t testing.TB, dir string) map[string]string {
	t.Helper()
	out := make(map[string]string)
	err := filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(dir, p)
		if rel == "." {
			return nil
		}
		fi, err := d.Info()
		if err != nil {
			return err
		}
		desc := fi.Mode().String()
		switch {
		case fi.Mode()&fs.ModeSymlink != 0:
			tgt, err := os.Readlink(p)
			if err != nil {
				return err
			}
			desc += " -> " + tgt
		case fi.Mode().IsRegular():
			b, err := os.ReadFile(p)
			if err != nil {
				return err
			}
			desc += " " + string(sha256Hex(b))
		}
		out[rel] = desc
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return out
}

func sha256Hex(b []byte) string { s := sha256.Sum256(b); return keyHex(s) }

func sameTree(t testing.TB, want, got string) {
	t.Helper()
	a, b := treeOf(t, want), treeOf(t, got)
	if len(a) != len(b) {
		t.Errorf("tree %s has %d entries, %s has %d", want, len(a), got, len(b))
	}
	for k, v := range a {
		if b[k] != v {
			t.Errorf("%s: want %q, got %q", k, v, b[k])
		}
	}
}

func openStore(t testing.TB, root string, opts Options) *Store {
	t.Helper()
	s, err := Open(root, opts)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	return s
}

func usage(t testing.TB, s *Store) Usage {
	t.Helper()
	u, err := s.Usage()
	if err != nil {
		t.Fatal(err)
	}
	return u
}

func mustVerify(t testing.TB, s *Store) Report {
	t.Helper()
	r, err := s.Verify(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	if !r.OK() {
		t.Fatalf("verify found %d damaged chunk uses, first: %v", len(r.Damage), r.Damage[0])
	}
	return r
}
