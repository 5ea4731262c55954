package pagestore

import (
	"context"
	"errors"
	"fmt"
	"sort"
	"sync"
)

// Report is the result of Verify.
type Report struct {
	Snapshots int   // snapshots checked
	Chunks    int   // distinct chunks checked
	Bytes     int64 // their raw (logical) size
	Damage    []Damage
}

// OK reports whether Verify found no damage.
func (r *Report) OK() bool { return len(r.Damage) == 0 }

// Damage is one use of a damaged chunk by a snapshot, or a snapshot whose
// manifest is unreadable (File and Chunk empty).
type Damage struct {
	Snapshot string
	File     string
	Offset   int64
	Chunk    string
	Problem  string
}

func (d Damage) String() string {
	if d.Chunk == "" {
		return fmt.Sprintf("snapshot %q: %s", d.Snapshot, d.Problem)
	}
	return fmt.Sprintf("snapshot %q file %q offset %d chunk %s: %s", d.Snapshot, d.File, d.Offset, d.Chunk, d.Problem)
}

type chunkUse struct {
	snap   string
	file   string
	offset int64
}

// Verify checks that every chunk of every snapshot exists, decompresses to
// its size and hashes to its key; each chunk is read once. Damage goes into
// the report; the error is for Verify itself failing (I/O, ctx). It holds
// the store lock shared, so GC waits for it.
func (s *Store) Verify(ctx context.Context) (Report, error) {
	var r Report
	l, err := s.lock(ctx, false)
	if err != nil {
		return r, fmt.Errorf("verify: %w", err)
	}
	defer l.unlock()
	names, err := s.snapshotNames()
	if err != nil {
		return r, fmt.Errorf("verify: %w", err)
	}
	sizes := make(map[string]int64)
	uses := make(map[string][]chunkUse)
	for _, n := range names {
		m, _, err := s.loadManifest(n)
		if errors.Is(err, ErrNotFound) {
			continue
		}
		r.Snapshots++
		if err != nil {
			r.Damage = append(r.Damage, Damage{Snapshot: n, Problem: err.Error()})
			continue
		}
		for i := range m.Files {
			f := &m.Files[i]
			var off int64
			for j, k := range f.Chunks {
				sz := f.chunkSizeAt(j)
				sizes[k] = sz
				uses[k] = append(uses[k], chunkUse{snap: n, file: f.Path, offset: off})
				off += sz
			}
		}
	}
	keys := make([]string, 0, len(sizes))
	for k := range sizes {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	var mu sync.Mutex
	err = parallel(ctx, s.opts.IOWorkers, len(keys), func(i int) error {
		k := keys[i]
		_, err := s.readChunk(k, sizes[k])
		mu.Lock()
		r.Chunks++
		r.Bytes += sizes[k]
		mu.Unlock()
		var ce *CorruptError
		if errors.As(err, &ce) {
			mu.Lock()
			for _, u := range uses[k] {
				r.Damage = append(r.Damage, Damage{Snapshot: u.snap, File: u.file, Offset: u.offset, Chunk: k, Problem: ce.Reason})
			}
			mu.Unlock()
			return nil
		}
		return err
	})
	if err != nil {
		return r, fmt.Errorf("verify: %w", err)
	}
	sort.Slice(r.Damage, func(i, j int) bool {
		a, b := r.Damage[i], r.Damage[j]
		if a.Snapshot != b.Snapshot {
			return a.Snapshot < b.Snapshot
		}
		if a.File != b.File {
			return a.File < b.File
		}
		return a.Offset < b.Offset
	})
	return r, nil
}
