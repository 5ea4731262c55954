package pagestore

import (
	"context"
	"errors"
	"path/filepath"
	"testing"
)

// copySnapshot copies name from a to b the way two agents do, returning the
// number of chunks sent.
func copySnapshot(t *testing.T, a, b *Store, name string) int {
	t.Helper()
	ctx := context.Background()
	ex, err := a.Export(ctx, name)
	if err != nil {
		t.Fatal(err)
	}
	defer ex.Close()
	im, err := b.BeginImport(ctx, name, ex.Manifest())
	if err != nil {
		t.Fatal(err)
	}
	missing := im.Missing()
	for _, k := range missing {
		comp, err := ex.Chunk(k)
		if err != nil {
			t.Fatal(err)
		}
		if err := im.PutChunk(k, comp); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := im.Commit(); err != nil {
		t.Fatal(err)
	}
	return len(missing)
}

// TestExportImport copies two snapshots to another store: the second sends
// only the chunks the first did not, the copies read back identical, and the
// receiving store is clean.
func TestExportImport(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	src := filepath.Join(dir, "src")
	checkpointDir(t, src, 400, 7)
	a := openStore(t, filepath.Join(dir, "a"), Options{})
	b := openStore(t, filepath.Join(dir, "b"), Options{})
	ctx := context.Background()
	if _, err := a.Put(ctx, "s1", src, nil); err != nil {
		t.Fatal(err)
	}
	rewritePages(t, filepath.Join(src, "images", "pages-1.img"), 0.01, 1, 8)
	if _, err := a.Put(ctx, "s2", src, nil); err != nil {
		t.Fatal(err)
	}
	n1 := copySnapshot(t, a, b, "s1")
	n2 := copySnapshot(t, a, b, "s2")
	if n1 == 0 || n2 == 0 || n2*10 > n1 {
		t.Errorf("sent %d chunks for s1, %d for s2: want s2 to send few", n1, n2)
	}
	if _, err := b.BeginImport(ctx, "s2", mustManifest(t, a, "s2")); !errors.Is(err, ErrExists) {
		t.Errorf("import over an existing snapshot: %v", err)
	}
	out := filepath.Join(dir, "out")
	if err := b.Get(ctx, "s2", out); err != nil {
		t.Fatal(err)
	}
	sameTree(t, src, out)
	mustVerify(t, b)
	if u := usage(t, b); u.TmpFiles != 0 {
		t.Errorf("import left %d tmp files", u.TmpFiles)
	}
}

func mustManifest(t *testing.T, s *Store, name string) []byte {
	t.Helper()
	ex, err := s.Export(context.Background(), name)
	if err != nil {
		t.Fatal(err)
	}
	defer ex.Close()
	return ex.Manifest()
}

// TestImportRefusesBadChunk: a chunk whose content does not match its key is
// refused, and an import missing chunks cannot commit; GC then reclaims what
// the aborted import wrote.
func TestImportRefusesBadChunk(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	src := filepath.Join(dir, "src")
	checkpointDir(t, src, 100, 9)
	a := openStore(t, filepath.Join(dir, "a"), Options{})
	b := openStore(t, filepath.Join(dir, "b"), Options{})
	ctx := context.Background()
	if _, err := a.Put(ctx, "s1", src, nil); err != nil {
		t.Fatal(err)
	}
	ex, err := a.Export(ctx, "s1")
	if err != nil {
		t.Fatal(err)
	}
	defer ex.Close()
	im, err := b.BeginImport(ctx, "s1", ex.Manifest())
	if err != nil {
		t.Fatal(err)
	}
	keys := im.Missing()
	good, err := ex.Chunk(keys[0])
	if err != nil {
		t.Fatal(err)
	}
	other, err := ex.Chunk(keys[1])
	if err != nil {
		t.Fatal(err)
	}
	err = im.PutChunk(keys[0], other)
	var ce *CorruptError
	if !errors.As(err, &ce) || ce.Snapshot != "s1" || ce.Chunk != keys[0] {
		t.Fatalf("wrong content for a key: %v", err)
	}
	if err := im.PutChunk(keys[0], good); err != nil {
		t.Fatal(err)
	}
	if _, err := im.Commit(); !errors.Is(err, ErrCorrupt) {
		t.Fatalf("commit with %d chunks missing: %v", len(keys)-1, err)
	}
	if list, _ := b.List(); len(list) != 0 {
		t.Errorf("a failed import is listed: %+v", list)
	}
	freed, err := b.GC(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if freed != int64(len(good)) {
		t.Errorf("gc freed %d, want the one chunk received (%d)", freed, len(good))
	}
	if u := usage(t, b); u.Chunks != 0 || u.TmpFiles != 0 {
		t.Errorf("after gc: %+v", u)
	}
}
