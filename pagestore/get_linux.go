package pagestore

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
)

// readChunk reads, decompresses and checks one chunk. Damage comes back as a
// *CorruptError naming only the chunk; callers add where it is used.
func (s *Store) readChunk(key string, size int64) ([]byte, error) {
	corrupt := func(reason string) error { return &CorruptError{Chunk: key, Reason: reason} }
	f, err := os.Open(s.chunkPath(key))
	if errors.Is(err, os.ErrNotExist) {
		return nil, corrupt("missing")
	}
	if err != nil {
		return nil, fmt.Errorf("read chunk %s: %w", key, err)
	}
	defer f.Close()
	// zstd never grows data by more than a few bytes per 128 KiB block.
	comp, err := io.ReadAll(io.LimitReader(f, size+size/64+1024))
	if err != nil {
		return nil, fmt.Errorf("read chunk %s: %w", key, err)
	}
	raw, err := s.dec.DecodeAll(comp, make([]byte, 0, size))
	if err != nil {
		return nil, corrupt("decompress: " + err.Error())
	}
	if int64(len(raw)) != size {
		return nil, corrupt(fmt.Sprintf("%d bytes, want %d", len(raw), size))
	}
	want, err := hex.DecodeString(key)
	if err != nil {
		return nil, corrupt("bad key")
	}
	if sum := sha256.Sum256(raw); !bytes.Equal(sum[:], want) {
		return nil, corrupt("hash mismatch")
	}
	return raw, nil
}

// Get rebuilds snapshot name as directory dstDir, which must not exist. It
// builds dstDir+".partial", checking every chunk's hash, and renames it to
// dstDir only when complete and synced: on any error, a corrupt chunk
// included (a *CorruptError naming snapshot, file and chunk), dstDir does not
// appear and the partial directory is removed.
func (s *Store) Get(ctx context.Context, name, dstDir string) error {
	if err := validateName(name); err != nil {
		return fmt.Errorf("get: %w", err)
	}
	dst, err := filepath.Abs(dstDir)
	if err != nil {
		return fmt.Errorf("get %s: %w", name, err)
	}
	if _, err := os.Lstat(dst); err == nil {
		return fmt.Errorf("get %s: %s: %w", name, dst, ErrExists)
	}
	// Lease the snapshot's chunks under the lock so a GC after a concurrent
	// Delete cannot pull them from under us.
	l, err := s.lock(ctx, false)
	if err != nil {
		return fmt.Errorf("get %s: %w", name, err)
	}
	m, _, err := s.loadManifest(name)
	var ls *lease
	if err == nil {
		ls, err = s.newLease()
	}
	if err == nil {
		set := make(map[string]struct{})
		addKeys(m, set)
		keys := make([][32]byte, 0, len(set))
		for k := range set {
			var b [32]byte
			hex.Decode(b[:], []byte(k)) // validated by loadManifest
			keys = append(keys, b)
		}
		err = ls.add(keys)
	}
	l.unlock()
	if ls != nil {
		defer ls.release()
	}
	if err != nil {
		return fmt.Errorf("get %s: %w", name, err)
	}

	partial := dst + ".partial"
	if err := os.Mkdir(partial, 0o700); err != nil {
		if errors.Is(err, os.ErrExist) {
			return fmt.Errorf("get %s: %s: %w (left by an interrupted Get?)", name, partial, ErrExists)
		}
		return fmt.Errorf("get %s: %w", name, err)
	}
	if err := s.build(ctx, m, partial); err != nil {
		os.RemoveAll(partial)
		return fmt.Errorf("get %s: %w", name, err)
	}
	if err := rename(partial, dst, true); err != nil {
		os.RemoveAll(partial)
		return fmt.Errorf("get %s: %w", name, err)
	}
	if err := syncDir(filepath.Dir(dst)); err != nil {
		return fmt.Errorf("get %s: %w", name, err)
	}
	return nil
}

// build writes m's files under dir (a fresh, empty directory). Parents are
// listed before children (checked by validate), and symlinks are made last,
// so no path is ever resolved through a symlink from the manifest.
func (s *Store) build(ctx context.Context, m *manifest, dir string) error {
	for i := range m.Files {
		f := &m.Files[i]
		p := filepath.Join(dir, filepath.FromSlash(f.Path))
		switch f.Type {
		case typeDir:
			if err := os.Mkdir(p, 0o700); err != nil {
				return err
			}
		case typeFile:
			if err := s.buildFile(ctx, m.Name, f, p); err != nil {
				return err
			}
		}
	}
	for i := range m.Files {
		f := &m.Files[i]
		if f.Type == typeSymlink {
			if err := os.Symlink(f.Target, filepath.Join(dir, filepath.FromSlash(f.Path))); err != nil {
				return err
			}
		}
	}
	// Files were fsync'd as written; now the directories, so that the
	// whole tree is durable before the rename makes it visible.
	if err := syncDir(dir); err != nil {
		return err
	}
	for i := range m.Files {
		if f := &m.Files[i]; f.Type == typeDir {
			if err := syncDir(filepath.Join(dir, filepath.FromSlash(f.Path))); err != nil {
				return err
			}
		}
	}
	// Directory modes last (deepest first): a read-only directory would
	// have refused its own children, or its fsync.
	for i := len(m.Files) - 1; i >= 0; i-- {
		f := &m.Files[i]
		if f.Type == typeDir {
			if err := os.Chmod(filepath.Join(dir, filepath.FromSlash(f.Path)), fs.FileMode(f.Mode)); err != nil {
				return err
			}
		}
	}
	return nil
}

func (s *Store) buildFile(ctx context.Context, snap string, f *fileEntry, p string) error {
	out, err := os.OpenFile(p, os.O_WRONLY|os.O_CREATE|os.O_EXCL|noFollow, 0o600)
	if err != nil {
		return err
	}
	defer out.Close()
	offs := make([]int64, len(f.Chunks))
	var off int64
	for i := range f.Chunks {
		offs[i] = off
		off += f.chunkSizeAt(i)
	}
	err = parallel(ctx, s.opts.IOWorkers, len(f.Chunks), func(i int) error {
		raw, err := s.readChunk(f.Chunks[i], f.chunkSizeAt(i))
		if err != nil {
			var ce *CorruptError
			if errors.As(err, &ce) {
				ce.Snapshot, ce.File, ce.Offset = snap, f.Path, offs[i]
			}
			return err
		}
		_, err = out.WriteAt(raw, offs[i])
		return err
	})
	if err != nil {
		return err
	}
	if err := out.Chmod(fs.FileMode(f.Mode)); err != nil {
		return err
	}
	if err := out.Sync(); err != nil {
		return err
	}
	return out.Close()
}
