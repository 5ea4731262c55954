package pagestore

import (
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"sync"
	"sync/atomic"
	"time"
)

// Batches bound the memory a Put holds and how often it takes the store
// lock: hashing of a batch runs on all workers, then its keys are leased and
// checked under one lock, then its new chunks are written in parallel.
const (
	batchBytes  = 16 << 20
	batchPieces = 1024
)

type pending struct {
	data      []byte
	sum       [32]byte
	file, idx int
}

type putter struct {
	s     *Store
	ctx   context.Context
	name  string
	lease *lease
	files []fileEntry
	batch []pending
	bytes int

	seen     map[[32]byte]struct{} // keys leased and present (or written) by this Put
	dirs     map[string]struct{}   // fan-out dirs of every key used, fsync'd before the manifest
	newRaw   int64
	newBytes atomic.Int64
	newCount atomic.Int64
	refs     int
}

// Put stores every file of srcDir (regular files, directories, symlinks) as
// snapshot name. The snapshot becomes visible to List and Get only once it
// and every chunk it references are durable. srcDir must not change during
// the Put. meta is kept with the snapshot.
func (s *Store) Put(ctx context.Context, name, srcDir string, meta map[string]string) (*SnapshotInfo, error) {
	if err := validateName(name); err != nil {
		return nil, fmt.Errorf("put: %w", err)
	}
	if _, err := os.Lstat(s.manifestPath(name)); err == nil {
		return nil, fmt.Errorf("put %s: snapshot %w", name, ErrExists)
	}
	ls, err := s.newLease()
	if err != nil {
		return nil, fmt.Errorf("put %s: %w", name, err)
	}
	defer ls.release()
	p := &putter{
		s: s, ctx: ctx, name: name, lease: ls,
		seen: make(map[[32]byte]struct{}),
		dirs: make(map[string]struct{}),
	}
	if err := p.walk(srcDir); err != nil {
		return nil, fmt.Errorf("put %s: %w", name, err)
	}
	if err := p.flush(); err != nil {
		return nil, fmt.Errorf("put %s: %w", name, err)
	}
	m, b, err := p.commit(meta)
	if err != nil {
		return nil, fmt.Errorf("put %s: %w", name, err)
	}
	info := infoOf(m)
	info.ManifestBytes = int64(len(b))
	return info, nil
}

func (p *putter) walk(srcDir string) error {
	root, err := filepath.Abs(srcDir)
	if err != nil {
		return err
	}
	return filepath.WalkDir(root, func(path string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if path == root {
			if !d.IsDir() {
				return fmt.Errorf("%s: not a directory", srcDir)
			}
			return nil
		}
		if err := p.ctx.Err(); err != nil {
			return err
		}
		rel, err := filepath.Rel(root, path)
		if err != nil {
			return err
		}
		rel = filepath.ToSlash(rel)
		info, err := d.Info()
		if err != nil {
			return err
		}
		mode := uint32(info.Mode() & (fs.ModePerm | fs.ModeSetuid | fs.ModeSetgid | fs.ModeSticky))
		switch {
		case d.IsDir():
			p.files = append(p.files, fileEntry{Path: rel, Type: typeDir, Mode: mode})
		case d.Type()&fs.ModeSymlink != 0:
			t, err := os.Readlink(path)
			if err != nil {
				return err
			}
			p.files = append(p.files, fileEntry{Path: rel, Type: typeSymlink, Mode: mode, Target: t})
		case d.Type().IsRegular():
			return p.addFile(path, rel, mode)
		default:
			return fmt.Errorf("%s: %w (%s)", rel, ErrUnsupported, d.Type())
		}
		return nil
	})
}

func (p *putter) addFile(path, rel string, mode uint32) error {
	f, err := os.OpenFile(path, os.O_RDONLY|noFollow, 0)
	if err != nil {
		return err
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		return err
	}
	if !fi.Mode().IsRegular() {
		return fmt.Errorf("%s: %w (changed to %s)", rel, ErrUnsupported, fi.Mode().Type())
	}
	e := fileEntry{Path: rel, Type: typeFile, Mode: mode}
	var sp splitter
	if isPageImage(rel) {
		// Cut at addresses when the pagemap allows (pagemap.go); chunk
		// sizes are then listed, as for content-defined chunks.
		if sizes := pageChunkSizes(path, fi.Size(), p.s.opts.PageChunkSize); sizes != nil {
			sp = &sizedSplitter{f: f, sizes: sizes}
		} else {
			e.ChunkSize = p.s.opts.PageChunkSize
			sp = &fixedSplitter{r: f, size: e.ChunkSize}
		}
	} else {
		sp = &cdcSplitter{r: f}
	}
	p.files = append(p.files, e)
	fi2 := len(p.files) - 1
	for {
		b, err := sp.next()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			return fmt.Errorf("read %s: %w", rel, err)
		}
		if len(b) == 0 {
			break
		}
		fe := &p.files[fi2]
		fe.Size += int64(len(b))
		fe.Chunks = append(fe.Chunks, "")
		if fe.ChunkSize == 0 {
			fe.Sizes = append(fe.Sizes, int64(len(b)))
		}
		p.batch = append(p.batch, pending{data: b, file: fi2, idx: len(fe.Chunks) - 1})
		p.bytes += len(b)
		if p.bytes >= batchBytes || len(p.batch) >= batchPieces {
			if err := p.flush(); err != nil {
				return err
			}
		}
	}
	return nil
}

// flush commits the pending batch: hash, lease and check, write new chunks.
func (p *putter) flush() error {
	if len(p.batch) == 0 {
		return nil
	}
	if err := p.ctx.Err(); err != nil {
		return err
	}
	s := p.s
	batch := p.batch
	if err := parallel(p.ctx, s.opts.Workers, len(batch), func(i int) error {
		batch[i].sum = sha256.Sum256(batch[i].data)
		return nil
	}); err != nil {
		return err
	}
	// Keys this Put has not met yet, once each, with their first piece.
	var keys [][32]byte
	first := make(map[[32]byte]int)
	for i := range batch {
		k := batch[i].sum
		if _, ok := p.seen[k]; ok {
			continue
		}
		if _, ok := first[k]; ok {
			continue
		}
		first[k] = i
		keys = append(keys, k)
	}
	var missing []int // batch indexes of pieces to write
	if len(keys) > 0 {
		l, err := s.lock(p.ctx, false)
		if err != nil {
			return err
		}
		err = p.lease.add(keys)
		for _, k := range keys {
			if err != nil {
				break
			}
			_, serr := os.Lstat(s.chunkPath(keyHex(k)))
			switch {
			case errors.Is(serr, os.ErrNotExist):
				missing = append(missing, first[k])
			case serr != nil:
				err = fmt.Errorf("check chunk: %w", serr)
			}
		}
		l.unlock()
		if err != nil {
			return err
		}
	}
	if err := p.writeChunks(batch, missing); err != nil {
		return err
	}
	for _, i := range missing {
		p.newRaw += int64(len(batch[i].data))
	}
	for i := range batch {
		k := batch[i].sum
		h := keyHex(k)
		p.seen[k] = struct{}{}
		p.dirs[h[:2]] = struct{}{}
		p.files[batch[i].file].Chunks[batch[i].idx] = h
		p.refs++
	}
	p.batch = p.batch[:0]
	p.bytes = 0
	if s.failpoint != nil {
		s.failpoint("batch", int(p.newCount.Load()))
	}
	return nil
}

// writeChunks stores the given pieces of a batch as new chunks: compress,
// write to tmp/, fsync and close, in parallel (concurrent fsyncs share
// journal commits); then rename each into place. The fan-out directories
// are fsync'd once per Put, before the manifest. A rename may replace the
// same chunk written by a concurrent Put: same key, same content. (One
// syncfs per batch instead of the fsyncs measured no faster and flushes
// every other writer's dirty data of the file system, the checkpoint just
// dumped included.)
func (p *putter) writeChunks(batch []pending, idx []int) error {
	if len(idx) == 0 {
		return nil
	}
	s := p.s
	tmps := make([]string, len(idx))
	defer func() {
		for _, t := range tmps {
			if t != "" {
				os.Remove(t)
			}
		}
	}()
	err := parallel(p.ctx, s.opts.IOWorkers, len(idx), func(j int) error {
		pc := &batch[idx[j]]
		comp := s.enc.EncodeAll(pc.data, make([]byte, 0, len(pc.data)/2+64))
		tmp := s.tmpName("chunk")
		f, err := os.OpenFile(tmp, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
		if err != nil {
			return fmt.Errorf("write chunk: %w", err)
		}
		_, err = f.Write(comp)
		if err == nil {
			err = f.Sync()
		}
		if cerr := f.Close(); err == nil {
			err = cerr
		}
		if err != nil {
			os.Remove(tmp)
			return fmt.Errorf("write chunk: %w", err)
		}
		tmps[j] = tmp
		p.newBytes.Add(int64(len(comp)))
		return nil
	})
	if err != nil {
		return err
	}
	for j, i := range idx {
		if s.failpoint != nil {
			s.failpoint("chunk", int(p.newCount.Load())+1)
		}
		key := keyHex(batch[i].sum)
		if err := os.Rename(tmps[j], s.chunkPath(key)); err != nil {
			return fmt.Errorf("write chunk %s: %w", key, err)
		}
		tmps[j] = ""
		p.newCount.Add(1)
	}
	return nil
}

// commit makes the snapshot durable and visible: fsync the fan-out dirs of
// every chunk it uses (its own renames, and those of a concurrent Put it
// deduplicated against), then write the manifest atomically. The lease is
// released only after, so GC sees either the lease or the manifest.
func (p *putter) commit(meta map[string]string) (*manifest, []byte, error) {
	dirs := make([]string, 0, len(p.dirs))
	for d := range p.dirs {
		dirs = append(dirs, d)
	}
	if err := parallel(p.ctx, p.s.opts.IOWorkers, len(dirs), func(i int) error {
		return syncDir(filepath.Join(p.s.root, dirChunks, dirs[i]))
	}); err != nil {
		return nil, nil, err
	}
	var logical int64
	for i := range p.files {
		logical += p.files[i].Size
	}
	m := &manifest{
		Version: manifestVersion,
		Name:    p.name,
		Created: time.Now().UTC(),
		Meta:    meta,
		Files:   p.files,
		Stats: putStats{
			LogicalBytes:   logical,
			Chunks:         p.refs,
			UniqueChunks:   len(p.seen),
			NewChunks:      int(p.newCount.Load()),
			NewStoredBytes: p.newBytes.Load(),
			ReusedBytes:    logical - p.newRaw,
		},
	}
	if m.Files == nil {
		m.Files = []fileEntry{}
	}
	b, err := encodeManifest(m)
	if err != nil {
		return nil, nil, err
	}
	if err := p.ctx.Err(); err != nil {
		return nil, nil, err
	}
	if err := p.s.writeFileAtomic(p.s.manifestPath(p.name), b, true); err != nil {
		return nil, nil, fmt.Errorf("write manifest: %w", err)
	}
	return m, b, nil
}

// parallel runs fn(0..n-1) on up to workers goroutines and returns the first
// error; after an error or ctx cancellation no new index starts.
func parallel(ctx context.Context, workers, n int, fn func(i int) error) error {
	if n == 0 {
		return nil
	}
	workers = min(workers, n)
	var (
		next     atomic.Int64
		wg       sync.WaitGroup
		mu       sync.Mutex
		firstErr error
		stop     atomic.Bool
	)
	for w := 0; w < workers; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for !stop.Load() {
				i := int(next.Add(1) - 1)
				if i >= n {
					return
				}
				err := ctx.Err()
				if err == nil {
					err = fn(i)
				}
				if err != nil {
					stop.Store(true)
					mu.Lock()
					if firstErr == nil {
						firstErr = err
					}
					mu.Unlock()
					return
				}
			}
		}()
	}
	wg.Wait()
	return firstErr
}
