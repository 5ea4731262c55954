package criu

import (
	"os"
	"path/filepath"
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
