package pagestore

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
)

// Delete removes a snapshot's manifest. Its chunks stay until GC.
func (s *Store) Delete(name string) error {
	if err := validateName(name); err != nil {
		return fmt.Errorf("delete: %w", err)
	}
	if err := os.Remove(s.manifestPath(name)); err != nil {
		if errors.Is(err, os.ErrNotExist) {
			return fmt.Errorf("delete: %w: %q", ErrNotFound, name)
		}
		return fmt.Errorf("delete %s: %w", name, err)
	}
	if err := syncDir(filepath.Join(s.root, dirSnapshots)); err != nil {
		return fmt.Errorf("delete %s: %w", name, err)
	}
	return nil
}

// GC deletes the chunks no snapshot and no live lease references, and the
// leases and partial files of dead processes. It returns the bytes of chunks
// and partial files it removed. It holds the store lock exclusively, so Puts
// and Gets stall in their short locked step until it is done.
//
// Order matters: leases are read before manifests, because a finishing Put
// writes its manifest before dropping its lease; whichever GC misses, it
// sees the other.
func (s *Store) GC(ctx context.Context) (freed int64, err error) {
	l, err := s.lock(ctx, true)
	if err != nil {
		return 0, fmt.Errorf("gc: %w", err)
	}
	defer l.unlock()
	boot, err := bootID()
	if err != nil {
		return 0, fmt.Errorf("gc: %w", err)
	}
	live := make(map[string]struct{})
	tmpDir := filepath.Join(s.root, dirTmp)
	ents, err := os.ReadDir(tmpDir)
	if err != nil {
		return 0, fmt.Errorf("gc: %w", err)
	}
	for _, e := range ents {
		o, ok := parseOwner(e.Name())
		if !ok {
			continue // not ours to judge
		}
		p := filepath.Join(tmpDir, e.Name())
		if o.alive(boot) {
			if strings.HasSuffix(e.Name(), ".lease") {
				if err := readLeaseKeys(p, live); err != nil && !errors.Is(err, os.ErrNotExist) {
					return 0, fmt.Errorf("gc: read lease: %w", err)
				}
			}
			continue
		}
		fi, err := e.Info()
		if err != nil {
			continue
		}
		if err := os.Remove(p); err != nil && !errors.Is(err, os.ErrNotExist) {
			return freed, fmt.Errorf("gc: %w", err)
		}
		if !strings.HasSuffix(e.Name(), ".lease") {
			freed += fi.Size()
		}
	}
	names, err := s.snapshotNames()
	if err != nil {
		return freed, fmt.Errorf("gc: %w", err)
	}
	for _, n := range names {
		m, _, err := s.loadManifest(n)
		if errors.Is(err, ErrNotFound) {
			continue
		}
		if err != nil {
			// Without the manifest we cannot know what it references:
			// deleting anything now could destroy a snapshot.
			return freed, fmt.Errorf("gc: refusing to collect: %w", err)
		}
		addKeys(m, live)
	}
	for i := 0; i < 256; i++ {
		if err := ctx.Err(); err != nil {
			return freed, fmt.Errorf("gc: %w", err)
		}
		dir := filepath.Join(s.root, dirChunks, fmt.Sprintf("%02x", i))
		ents, err := os.ReadDir(dir)
		if err != nil {
			return freed, fmt.Errorf("gc: %w", err)
		}
		removed := false
		for _, e := range ents {
			if _, ok := live[e.Name()]; ok {
				continue
			}
			fi, err := e.Info()
			if err != nil {
				continue
			}
			if err := os.Remove(filepath.Join(dir, e.Name())); err != nil && !errors.Is(err, os.ErrNotExist) {
				return freed, fmt.Errorf("gc: %w", err)
			}
			freed += fi.Size()
			removed = true
		}
		if removed {
			if err := syncDir(dir); err != nil {
				return freed, fmt.Errorf("gc: %w", err)
			}
		}
	}
	return freed, nil
}
