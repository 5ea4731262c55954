package criu

import (
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

func TestRemoveStaleKdatTmp(t *testing.T) {
	needRoot(t)
	// CRIU keeps its cache only on a tmpfs: so does the cleanup.
	dir := t.TempDir()
	if err := unix.Mount("tmpfs", dir, "tmpfs", 0, "size=1m"); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = unix.Unmount(dir, unix.MNT_DETACH) })
	p := filepath.Join(dir, "criu.kdat.tmp")
	now := time.Now()
	if removeStaleKdatTmp(p, now) {
		t.Fatal("removed a missing file")
	}
	if err := os.WriteFile(p, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	// A CRIU writing its cache right now.
	if removeStaleKdatTmp(p, now) {
		t.Fatal("removed a fresh file")
	}
	if _, err := os.Stat(p); err != nil {
		t.Fatal(err)
	}
	// Left by a CRIU killed while writing it.
	if err := os.Chtimes(p, now.Add(-2*kdatTmpMaxAge), now.Add(-2*kdatTmpMaxAge)); err != nil {
		t.Fatal(err)
	}
	if !removeStaleKdatTmp(p, now) {
		t.Fatal("kept a stale file")
	}
	if _, err := os.Stat(p); !os.IsNotExist(err) {
		t.Fatalf("stat after removal: %v", err)
	}
	// Not on a tmpfs: CRIU leaves the file on every run there.
	other := filepath.Join(t.TempDir(), "criu.kdat.tmp")
	if err := os.WriteFile(other, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.Chtimes(other, now.Add(-2*kdatTmpMaxAge), now.Add(-2*kdatTmpMaxAge)); err != nil {
		t.Fatal(err)
	}
	var st unix.Statfs_t
	if err := unix.Statfs(filepath.Dir(other), &st); err != nil {
		t.Fatal(err)
	}
	if st.Type != unix.TMPFS_MAGIC && removeStaleKdatTmp(other, now) {
		t.Fatal("removed a file outside a tmpfs")
	}
}

// TestPrimeKdatCache checks, on a host whose /run is not a tmpfs, that the
// cache the agent makes is one CRIU loads instead of probing the kernel.
func TestPrimeKdatCache(t *testing.T) {
	needRoot(t)
	var st unix.Statfs_t
	if err := unix.Statfs(filepath.Dir(kdatFile), &st); err != nil {
		t.Fatal(err)
	}
	if st.Type == unix.TMPFS_MAGIC {
		t.Skip("/run is a tmpfs: CRIU keeps its cache there itself")
	}
	c := &Client{}
	made, err := c.PrimeKdatCache()
	if err != nil || !made {
		t.Fatalf("PrimeKdatCache = %v, %v; want a new cache", made, err)
	}
	log := filepath.Join(t.TempDir(), "check.log")
	if out, err := exec.Command(c.path(), "check", "-v4", "-o", log).CombinedOutput(); err != nil {
		t.Fatalf("criu check: %v: %s", err, out)
	}
	b, err := os.ReadFile(log)
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(string(b), "Loaded kdat cache from "+kdatFile) {
		t.Fatalf("CRIU did not load the cache; its log:\n%s", b)
	}
	// A missing cache is made again before CRIU runs (by this call or by an
	// agent of another test package starting CRIU meanwhile); an existing one
	// is kept.
	if err := os.Remove(kdatFile); err != nil && !os.IsNotExist(err) {
		t.Fatal(err)
	}
	if _, err := ensureKdatCache(c.path(), false); err != nil {
		t.Fatalf("ensureKdatCache without a cache: %v", err)
	}
	if _, err := os.Stat(kdatFile); err != nil {
		t.Fatalf("no cache after ensureKdatCache: %v", err)
	}
	if made, err := ensureKdatCache(c.path(), false); err != nil || made {
		t.Fatalf("ensureKdatCache with a cache = %v, %v; want it kept", made, err)
	}
}
