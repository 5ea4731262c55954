package pagestore

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"sync"
	"syscall"
	"testing"
	"time"
)

func TestPutGetRoundTrip(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	src := filepath.Join(dir, "src")
	checkpointDir(t, src, 1000, 1)
	s := openStore(t, filepath.Join(dir, "store"), Options{})
	ctx := context.Background()
	info, err := s.Put(ctx, "snap1", src, map[string]string{"container": "c1"})
	if err != nil {
		t.Fatal(err)
	}
	wantLogical := int64(len(`{"container":"c1"}`) + 3000 + 3 + 3<<20 + 123 + 1000*PageSize)
	if info.LogicalBytes != wantLogical {
		t.Errorf("logical bytes %d, want %d", info.LogicalBytes, wantLogical)
	}
	if info.NewStoredBytes <= 0 || info.NewStoredBytes >= info.LogicalBytes {
		t.Errorf("stored %d of %d logical bytes", info.NewStoredBytes, info.LogicalBytes)
	}
	u := usage(t, s)
	if u.ChunkBytes != info.NewStoredBytes || u.Chunks != info.NewChunks || u.TmpFiles != 0 {
		t.Errorf("usage %+v after put %+v", u, info)
	}

	dst := filepath.Join(dir, "out")
	if err := s.Get(ctx, "snap1", dst); err != nil {
		t.Fatal(err)
	}
	sameTree(t, src, dst)
	if _, err := os.Lstat(dst + ".partial"); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("partial dir left: %v", err)
	}
	if u := usage(t, s); u.TmpFiles != 0 {
		t.Errorf("get left %d files in tmp/", u.TmpFiles)
	}

	list, err := s.List()
	if err != nil {
		t.Fatal(err)
	}
	if len(list) != 1 || list[0].Name != "snap1" || list[0].Meta["container"] != "c1" || list[0].LogicalBytes != wantLogical {
		t.Errorf("list = %+v", list)
	}
	in, err := s.Inspect("snap1")
	if err != nil {
		t.Fatal(err)
	}
	if in.ExclusiveBytes != info.NewStoredBytes {
		t.Errorf("exclusive bytes %d, want %d", in.ExclusiveBytes, info.NewStoredBytes)
	}

	// The same directory again stores nothing new.
	info2, err := s.Put(ctx, "snap2", src, nil)
	if err != nil {
		t.Fatal(err)
	}
	if info2.NewChunks != 0 || info2.NewStoredBytes != 0 || info2.DedupRatio != 1 {
		t.Errorf("second put of same data: %+v", info2)
	}
	if in, _ := s.Inspect("snap1"); in.ExclusiveBytes != 0 {
		t.Errorf("exclusive bytes with a twin snapshot: %d", in.ExclusiveBytes)
	}
	mustVerify(t, s)
}

func TestPutErrors(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	src := filepath.Join(dir, "src")
	writeFile(t, filepath.Join(src, "a.img"), []byte("a"), 0o600)
	s := openStore(t, filepath.Join(dir, "store"), Options{})
	ctx := context.Background()
	for _, bad := range []string{"", ".", "..", "a/b", "-x", ".hidden", string(make([]byte, 200))} {
		if _, err := s.Put(ctx, bad, src, nil); !errors.Is(err, ErrInvalidName) {
			t.Errorf("put %q: %v, want ErrInvalidName", bad, err)
		}
	}
	if _, err := s.Put(ctx, "one", src, nil); err != nil {
		t.Fatal(err)
	}
	if _, err := s.Put(ctx, "one", src, nil); !errors.Is(err, ErrExists) {
		t.Errorf("second put of one: %v, want ErrExists", err)
	}
	if err := s.Get(ctx, "nope", filepath.Join(dir, "x")); !errors.Is(err, ErrNotFound) {
		t.Errorf("get nope: %v, want ErrNotFound", err)
	}
	if err := s.Get(ctx, "one", src); !errors.Is(err, ErrExists) {
		t.Errorf("get into existing dir: %v, want ErrExists", err)
	}
	if err := s.Delete("nope"); !errors.Is(err, ErrNotFound) {
		t.Errorf("delete nope: %v, want ErrNotFound", err)
	}
	if err := syscall.Mkfifo(filepath.Join(src, "fifo"), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := s.Put(ctx, "two", src, nil); !errors.Is(err, ErrUnsupported) {
		t.Errorf("put with a fifo: %v, want ErrUnsupported", err)
	}
	if list, _ := s.List(); len(list) != 1 {
		t.Errorf("failed puts left snapshots: %+v", list)
	}
	if u := usage(t, s); u.TmpFiles != 0 {
		t.Errorf("failed put left %d tmp files", u.TmpFiles)
	}
}

func TestIncrementalOnePercent(t *testing.T) {
	if testing.Short() {
		t.Skip("256 MiB")
	}
	t.Parallel()
	dir := t.TempDir()
	src := filepath.Join(dir, "src")
	pages := 256 << 20 / PageSize
	writeFile(t, filepath.Join(src, "manifest.json"), []byte(`{}`), 0o644)
	pf := filepath.Join(src, "images", "pages-1.img")
	writePageFile(t, pf, pages, 7)
	s := openStore(t, filepath.Join(dir, "store"), Options{})
	ctx := context.Background()
	t0 := time.Now()
	first, err := s.Put(ctx, "t1", src, nil)
	if err != nil {
		t.Fatal(err)
	}
	// 1% of pages, scattered uniformly: the worst case for chunk-level dedup.
	t1 := time.Now()
	n := rewritePages(t, pf, 0.01, 1, 8)
	t2 := time.Now()
	second, err := s.Put(ctx, "t2", src, nil)
	if err != nil {
		t.Fatal(err)
	}
	firstBytes := first.NewStoredBytes + first.ManifestBytes
	secondBytes := second.NewStoredBytes + second.ManifestBytes
	frac := float64(secondBytes) / float64(firstBytes)
	t.Logf("rewrote %d of %d pages; first put stored %d B, second %d B (%.2f%%), dedup %.3f",
		n, pages, firstBytes, secondBytes, 100*frac, second.DedupRatio)
	if frac >= 0.05 {
		t.Errorf("second snapshot stored %.2f%% of the first's bytes, want < 5%%", 100*frac)
	}
	t3 := time.Now()
	dst := filepath.Join(dir, "out")
	if err := s.Get(ctx, "t2", dst); err != nil {
		t.Fatal(err)
	}
	t.Logf("first put %v, second put %v, get %v", t1.Sub(t0), t3.Sub(t2), time.Since(t3))
	sameTree(t, src, dst)
}

func TestCorruptChunk(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	src := filepath.Join(dir, "src")
	checkpointDir(t, src, 64, 3)
	s := openStore(t, filepath.Join(dir, "store"), Options{})
	ctx := context.Background()
	if _, err := s.Put(ctx, "good", src, nil); err != nil {
		t.Fatal(err)
	}
	m, _, err := s.loadManifest("good")
	if err != nil {
		t.Fatal(err)
	}
	var pf *fileEntry
	for i := range m.Files {
		if m.Files[i].Path == "images/pages-1.img" {
			pf = &m.Files[i]
		}
	}
	key := pf.Chunks[2]
	// Flip one byte of the stored (compressed) chunk.
	cp := s.chunkPath(key)
	b, err := os.ReadFile(cp)
	if err != nil {
		t.Fatal(err)
	}
	b[len(b)/2] ^= 0x40
	if err := os.WriteFile(cp, b, 0o600); err != nil {
		t.Fatal(err)
	}

	dst := filepath.Join(dir, "out")
	err = s.Get(ctx, "good", dst)
	var ce *CorruptError
	if !errors.Is(err, ErrCorrupt) || !errors.As(err, &ce) {
		t.Fatalf("get of corrupt snapshot: %v, want ErrCorrupt", err)
	}
	if ce.Snapshot != "good" || ce.File != "images/pages-1.img" || ce.Chunk != key || ce.Offset != 2*int64(pf.ChunkSize) {
		t.Errorf("corrupt error names %+v", ce)
	}
	for _, p := range []string{dst, dst + ".partial"} {
		if _, err := os.Lstat(p); !errors.Is(err, os.ErrNotExist) {
			t.Errorf("%s exists after failed get: %v", p, err)
		}
	}

	// Verify names the damage; a missing chunk is damage too.
	other := m.Files[0]
	for i := range m.Files {
		if m.Files[i].Path == "rootfs-diff.tar" {
			other = m.Files[i]
		}
	}
	if err := os.Remove(s.chunkPath(other.Chunks[0])); err != nil {
		t.Fatal(err)
	}
	r, err := s.Verify(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if len(r.Damage) != 2 {
		t.Fatalf("verify damage = %v, want 2 entries", r.Damage)
	}
	if d := r.Damage[0]; d.Snapshot != "good" || d.File != "images/pages-1.img" || d.Chunk != key {
		t.Errorf("damage[0] = %v", d)
	}
	if d := r.Damage[1]; d.Snapshot != "good" || d.File != "rootfs-diff.tar" || d.Problem != "missing" {
		t.Errorf("damage[1] = %v", d)
	}
}

func TestDeleteThenGCFreesUnshared(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	srcA, srcB := filepath.Join(dir, "a"), filepath.Join(dir, "b")
	checkpointDir(t, srcA, 512, 10)
	checkpointDir(t, srcB, 512, 10)
	rewritePages(t, filepath.Join(srcB, "images", "pages-1.img"), 0.1, 8, 11)
	writeFile(t, filepath.Join(srcB, "images", "core-1.img"), randBytes(5000, 12), 0o600)
	s := openStore(t, filepath.Join(dir, "store"), Options{})
	ctx := context.Background()
	if _, err := s.Put(ctx, "a", srcA, nil); err != nil {
		t.Fatal(err)
	}
	if _, err := s.Put(ctx, "b", srcB, nil); err != nil {
		t.Fatal(err)
	}
	if freed, err := s.GC(ctx); err != nil || freed != 0 {
		t.Fatalf("gc with nothing to collect freed %d: %v", freed, err)
	}
	ia, err := s.Inspect("a")
	if err != nil {
		t.Fatal(err)
	}
	if ia.ExclusiveBytes <= 0 || ia.ExclusiveBytes >= ia.NewStoredBytes {
		t.Fatalf("a: exclusive %d of %d stored", ia.ExclusiveBytes, ia.NewStoredBytes)
	}
	before := usage(t, s)
	if err := s.Delete("a"); err != nil {
		t.Fatal(err)
	}
	freed, err := s.GC(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if freed != ia.ExclusiveBytes {
		t.Errorf("gc freed %d, want a's exclusive %d", freed, ia.ExclusiveBytes)
	}
	after := usage(t, s)
	if before.ChunkBytes-after.ChunkBytes != freed {
		t.Errorf("chunk bytes %d -> %d, freed %d", before.ChunkBytes, after.ChunkBytes, freed)
	}
	mustVerify(t, s)
	dst := filepath.Join(dir, "out")
	if err := s.Get(ctx, "b", dst); err != nil {
		t.Fatal(err)
	}
	sameTree(t, srcB, dst)
}

// TestGCDuringPut pauses a Put after its first batch, whose chunks it found
// in the store already (from a deleted snapshot), and runs GC: the lease must
// keep those chunks.
func TestGCDuringPut(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	src := filepath.Join(dir, "src")
	// Several batches: 48 MiB of pages at 16 KiB per chunk.
	checkpointDir(t, src, 12<<8, 20)
	root := filepath.Join(dir, "store")
	ctx := context.Background()
	s1 := openStore(t, root, Options{})
	if _, err := s1.Put(ctx, "old", src, nil); err != nil {
		t.Fatal(err)
	}
	if err := s1.Delete("old"); err != nil {
		t.Fatal(err)
	}
	writeFile(t, filepath.Join(src, "images", "pages-2.img"), randBytes(40<<20, 21), 0o600)

	s2 := openStore(t, root, Options{})
	paused, resume := make(chan struct{}), make(chan struct{})
	var once sync.Once
	s2.failpoint = func(point string, n int) {
		if point == "batch" {
			once.Do(func() { close(paused); <-resume })
		}
	}
	done := make(chan error, 1)
	var info *SnapshotInfo
	go func() {
		var err error
		info, err = s2.Put(ctx, "new", src, nil)
		done <- err
	}()
	<-paused
	if _, err := s1.GC(ctx); err != nil {
		close(resume)
		t.Fatal(err)
	}
	close(resume)
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	if info.DedupRatio == 0 {
		t.Errorf("put reused nothing of the deleted snapshot: test is not testing the race")
	}
	mustVerify(t, s1)
	dst := filepath.Join(dir, "out")
	if err := s1.Get(ctx, "new", dst); err != nil {
		t.Fatal(err)
	}
	sameTree(t, src, dst)
}
