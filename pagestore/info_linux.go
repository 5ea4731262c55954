package pagestore

import (
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"time"
)

// SnapshotInfo describes a snapshot. The counts are those measured when it
// was Put, except ExclusiveBytes which Inspect computes from the store as it
// is now.
type SnapshotInfo struct {
	Name    string
	Created time.Time
	Meta    map[string]string
	// LogicalBytes is the sum of the sizes of the snapshot's files.
	LogicalBytes int64
	// Chunks counts chunk references; UniqueChunks distinct keys.
	Chunks       int
	UniqueChunks int
	// NewChunks and NewStoredBytes (compressed) are what this snapshot's Put
	// added to the store: the rest was there already.
	NewChunks      int
	NewStoredBytes int64
	// ManifestBytes is the size of the snapshot's manifest.
	ManifestBytes int64
	// DedupRatio is the fraction of LogicalBytes that Put found stored
	// already (in earlier snapshots or earlier in this one): 0 means
	// nothing was shared, 0.99 that 1% of the data was new.
	DedupRatio float64
	// ExclusiveBytes (Inspect only, else -1) is the stored size of the chunks
	// no other snapshot references: what Delete followed by GC frees.
	ExclusiveBytes int64
}

func infoOf(m *manifest) *SnapshotInfo {
	st := m.Stats
	info := &SnapshotInfo{
		Name: m.Name, Created: m.Created, Meta: m.Meta,
		LogicalBytes: st.LogicalBytes, Chunks: st.Chunks, UniqueChunks: st.UniqueChunks,
		NewChunks: st.NewChunks, NewStoredBytes: st.NewStoredBytes,
		ExclusiveBytes: -1,
	}
	if st.LogicalBytes > 0 {
		info.DedupRatio = float64(st.ReusedBytes) / float64(st.LogicalBytes)
	}
	return info
}

// loadManifest reads and validates snapshots/<name>.json.
func (s *Store) loadManifest(name string) (*manifest, int64, error) {
	if err := validateName(name); err != nil {
		return nil, 0, err
	}
	b, err := os.ReadFile(s.manifestPath(name))
	if errors.Is(err, os.ErrNotExist) {
		return nil, 0, fmt.Errorf("%w: %q", ErrNotFound, name)
	}
	if err != nil {
		return nil, 0, err
	}
	m, err := decodeManifest(name, b)
	if err != nil {
		return nil, 0, err
	}
	return m, int64(len(b)), nil
}

// snapshotNames lists snapshots/ (sorted).
func (s *Store) snapshotNames() ([]string, error) {
	ents, err := os.ReadDir(filepath.Join(s.root, dirSnapshots))
	if err != nil {
		return nil, err
	}
	var names []string
	for _, e := range ents {
		n, ok := strings.CutSuffix(e.Name(), ".json")
		if ok && e.Type().IsRegular() && validateName(n) == nil {
			names = append(names, n)
		}
	}
	return names, nil
}

// List returns every complete snapshot, oldest first. It decodes only the
// manifests' headers; a manifest that cannot be decoded is an error (Verify
// reports it per snapshot).
func (s *Store) List() ([]SnapshotInfo, error) {
	names, err := s.snapshotNames()
	if err != nil {
		return nil, fmt.Errorf("list snapshots: %w", err)
	}
	out := make([]SnapshotInfo, 0, len(names))
	for _, n := range names {
		b, err := os.ReadFile(s.manifestPath(n))
		if errors.Is(err, os.ErrNotExist) {
			continue // deleted meanwhile
		}
		if err != nil {
			return nil, fmt.Errorf("list snapshots: %w", err)
		}
		var h struct {
			Version int               `json:"version"`
			Name    string            `json:"name"`
			Created time.Time         `json:"created"`
			Meta    map[string]string `json:"meta"`
			Stats   putStats          `json:"stats"`
		}
		if err := json.Unmarshal(b, &h); err != nil || h.Version != manifestVersion || h.Name != n {
			return nil, fmt.Errorf("list snapshots: %w: snapshot %q", ErrBadManifest, n)
		}
		info := infoOf(&manifest{Name: h.Name, Created: h.Created, Meta: h.Meta, Stats: h.Stats})
		info.ManifestBytes = int64(len(b))
		out = append(out, *info)
	}
	sort.SliceStable(out, func(i, j int) bool { return out[i].Created.Before(out[j].Created) })
	return out, nil
}

// Inspect returns a snapshot's info, with ExclusiveBytes computed against
// every other snapshot of the store.
func (s *Store) Inspect(name string) (*SnapshotInfo, error) {
	m, size, err := s.loadManifest(name)
	if err != nil {
		return nil, fmt.Errorf("inspect %s: %w", name, err)
	}
	info := infoOf(m)
	info.ManifestBytes = size
	others := make(map[string]struct{})
	names, err := s.snapshotNames()
	if err != nil {
		return nil, fmt.Errorf("inspect %s: %w", name, err)
	}
	for _, n := range names {
		if n == name {
			continue
		}
		om, _, err := s.loadManifest(n)
		if errors.Is(err, ErrNotFound) {
			continue
		}
		if err != nil {
			return nil, fmt.Errorf("inspect %s: %w", name, err)
		}
		addKeys(om, others)
	}
	info.ExclusiveBytes = 0
	mine := make(map[string]struct{})
	addKeys(m, mine)
	for k := range mine {
		if _, shared := others[k]; shared {
			continue
		}
		if fi, err := os.Lstat(s.chunkPath(k)); err == nil {
			info.ExclusiveBytes += fi.Size()
		}
	}
	return info, nil
}

func addKeys(m *manifest, set map[string]struct{}) {
	for i := range m.Files {
		for _, k := range m.Files[i].Chunks {
			set[k] = struct{}{}
		}
	}
}

// Usage is what the store occupies (file sizes, not disk blocks).
type Usage struct {
	Chunks        int
	ChunkBytes    int64
	Snapshots     int
	ManifestBytes int64
	TmpFiles      int // leases and partial files in tmp/
	TmpBytes      int64
}

// Usage walks the store and sums its files.
func (s *Store) Usage() (Usage, error) {
	var u Usage
	for i := 0; i < 256; i++ {
		ents, err := os.ReadDir(filepath.Join(s.root, dirChunks, fmt.Sprintf("%02x", i)))
		if err != nil {
			return u, fmt.Errorf("usage: %w", err)
		}
		for _, e := range ents {
			if fi, err := e.Info(); err == nil {
				u.Chunks++
				u.ChunkBytes += fi.Size()
			}
		}
	}
	for _, d := range []string{dirSnapshots, dirTmp} {
		ents, err := os.ReadDir(filepath.Join(s.root, d))
		if err != nil {
			return u, fmt.Errorf("usage: %w", err)
		}
		for _, e := range ents {
			fi, err := e.Info()
			if err != nil {
				continue
			}
			if d == dirSnapshots {
				u.Snapshots++
				u.ManifestBytes += fi.Size()
			} else {
				u.TmpFiles++
				u.TmpBytes += fi.Size()
			}
		}
	}
	return u, nil
}
