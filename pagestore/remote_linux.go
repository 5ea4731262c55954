package pagestore

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"sync"
)

// Copying a snapshot between stores (another node's, over the network) goes
// through an Export on the sending side and an Import on the receiving side:
//
//	sender: Export(name) -> Manifest() ----------> receiver: BeginImport(name, manifest)
//	                                     <-------- Missing(): keys it lacks
//	        Chunk(key) for each missing key -----> PutChunk(key, compressed) (verified)
//	                                               Commit(): manifest visible
//
// Chunks travel compressed, as stored. Both sides lease the snapshot's keys
// for the whole exchange, so a GC on either side cannot delete a chunk the
// other relies on; a receiver that dies leaves only unreferenced chunks and a
// void lease, which GC reclaims.

// Export reads one snapshot out of the store for a copy elsewhere. Its
// chunks are leased until Close.
type Export struct {
	s     *Store
	m     *manifest
	raw   []byte
	lease *lease
	sizes map[string]int64
}

// Export opens snapshot name for copying. Close it when done.
func (s *Store) Export(ctx context.Context, name string) (*Export, error) {
	if err := validateName(name); err != nil {
		return nil, fmt.Errorf("export: %w", err)
	}
	l, err := s.lock(ctx, false)
	if err != nil {
		return nil, fmt.Errorf("export %s: %w", name, err)
	}
	defer l.unlock()
	m, _, err := s.loadManifest(name)
	if err != nil {
		return nil, fmt.Errorf("export %s: %w", name, err)
	}
	raw, err := os.ReadFile(s.manifestPath(name))
	if err != nil {
		return nil, fmt.Errorf("export %s: %w", name, err)
	}
	ls, err := s.newLease()
	if err != nil {
		return nil, fmt.Errorf("export %s: %w", name, err)
	}
	sizes := chunkSizes(m)
	if err := ls.add(rawKeys(sizes)); err != nil {
		ls.release()
		return nil, fmt.Errorf("export %s: %w", name, err)
	}
	return &Export{s: s, m: m, raw: raw, lease: ls, sizes: sizes}, nil
}

// Manifest is the snapshot's manifest as stored, for BeginImport.
func (e *Export) Manifest() []byte { return e.raw }

// Keys lists the snapshot's distinct chunk keys, sorted.
func (e *Export) Keys() []string {
	keys := make([]string, 0, len(e.sizes))
	for k := range e.sizes {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	return keys
}

// Chunk returns chunk key as stored (compressed), after checking that it
// decompresses to content with that hash: a damaged chunk is reported here,
// as a *CorruptError naming the snapshot, rather than by the receiver.
func (e *Export) Chunk(key string) ([]byte, error) {
	size, ok := e.sizes[key]
	if !ok {
		return nil, fmt.Errorf("export %s: chunk %s: %w", e.m.Name, key, ErrNotFound)
	}
	comp, err := os.ReadFile(e.s.chunkPath(key))
	if errors.Is(err, os.ErrNotExist) {
		return nil, &CorruptError{Snapshot: e.m.Name, Chunk: key, Reason: "missing"}
	}
	if err != nil {
		return nil, fmt.Errorf("export %s: %w", e.m.Name, err)
	}
	if err := e.s.checkChunk(key, size, comp); err != nil {
		var ce *CorruptError
		if errors.As(err, &ce) {
			ce.Snapshot = e.m.Name
		}
		return nil, err
	}
	return comp, nil
}

// Close drops the export's lease.
func (e *Export) Close() { e.lease.release() }

// checkChunk checks that comp decompresses to size bytes hashing to key.
func (s *Store) checkChunk(key string, size int64, comp []byte) error {
	corrupt := func(reason string) error { return &CorruptError{Chunk: key, Reason: reason} }
	raw, err := s.dec.DecodeAll(comp, make([]byte, 0, size))
	if err != nil {
		return corrupt("decompress: " + err.Error())
	}
	if int64(len(raw)) != size {
		return corrupt(fmt.Sprintf("%d bytes, want %d", len(raw), size))
	}
	want, err := hex.DecodeString(key)
	if err != nil {
		return corrupt("bad key")
	}
	if sum := sha256.Sum256(raw); !bytes.Equal(sum[:], want) {
		return corrupt("hash mismatch")
	}
	return nil
}

// Import receives one snapshot from another store.
type Import struct {
	s     *Store
	ctx   context.Context
	name  string
	raw   []byte
	lease *lease
	sizes map[string]int64

	mu       sync.Mutex
	missing  map[string]struct{} // guarded by mu
	received int64               // guarded by mu: compressed bytes written
}

// BeginImport validates a manifest received from another store for snapshot
// name, leases every chunk it references and works out which are missing
// here. Abort or Commit it.
func (s *Store) BeginImport(ctx context.Context, name string, manifestJSON []byte) (*Import, error) {
	if err := validateName(name); err != nil {
		return nil, fmt.Errorf("import: %w", err)
	}
	m, err := decodeManifest(name, manifestJSON)
	if err != nil {
		return nil, fmt.Errorf("import %s: %w", name, err)
	}
	if _, err := os.Lstat(s.manifestPath(name)); err == nil {
		return nil, fmt.Errorf("import %s: snapshot %w", name, ErrExists)
	}
	sizes := chunkSizes(m)
	ls, err := s.newLease()
	if err != nil {
		return nil, fmt.Errorf("import %s: %w", name, err)
	}
	// As in Put: lease, then check, both under the lock, so a GC either ran
	// before the check or sees the lease.
	l, err := s.lock(ctx, false)
	if err != nil {
		ls.release()
		return nil, fmt.Errorf("import %s: %w", name, err)
	}
	err = ls.add(rawKeys(sizes))
	missing := make(map[string]struct{})
	for k := range sizes {
		if err != nil {
			break
		}
		_, serr := os.Lstat(s.chunkPath(k))
		switch {
		case errors.Is(serr, os.ErrNotExist):
			missing[k] = struct{}{}
		case serr != nil:
			err = serr
		}
	}
	l.unlock()
	if err != nil {
		ls.release()
		return nil, fmt.Errorf("import %s: %w", name, err)
	}
	return &Import{s: s, ctx: ctx, name: name, raw: manifestJSON, lease: ls, sizes: sizes, missing: missing}, nil
}

// Missing lists the chunks the store lacks, sorted.
func (im *Import) Missing() []string {
	im.mu.Lock()
	defer im.mu.Unlock()
	keys := make([]string, 0, len(im.missing))
	for k := range im.missing {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	return keys
}

// Received is the compressed size of the chunks PutChunk wrote.
func (im *Import) Received() int64 {
	im.mu.Lock()
	defer im.mu.Unlock()
	return im.received
}

// PutChunk stores a missing chunk received compressed. It is checked first
// (decompresses to the size the manifest gives, hashes to key); a bad one is
// a *CorruptError and is not stored. Safe for concurrent use.
func (im *Import) PutChunk(key string, comp []byte) error {
	size, ok := im.sizes[key]
	if !ok {
		return fmt.Errorf("import %s: %w: chunk %s is not in the snapshot", im.name, ErrBadManifest, key)
	}
	if err := im.s.checkChunk(key, size, comp); err != nil {
		var ce *CorruptError
		if errors.As(err, &ce) {
			ce.Snapshot = im.name
		}
		return fmt.Errorf("import %s: %w", im.name, err)
	}
	im.mu.Lock()
	_, need := im.missing[key]
	im.mu.Unlock()
	if !need {
		return nil
	}
	tmp := im.s.tmpName("chunk")
	f, err := os.OpenFile(tmp, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600) // os.OpenFile sets O_CLOEXEC
	if err != nil {
		return fmt.Errorf("import %s: %w", im.name, err)
	}
	_, err = f.Write(comp)
	if err == nil {
		err = f.Sync()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = os.Rename(tmp, im.s.chunkPath(key))
	}
	if err != nil {
		os.Remove(tmp)
		return fmt.Errorf("import %s: chunk %s: %w", im.name, key, err)
	}
	im.mu.Lock()
	delete(im.missing, key)
	im.received += int64(len(comp))
	im.mu.Unlock()
	return nil
}

// Commit makes the imported snapshot visible once every chunk is there and
// durable, and releases the lease.
func (im *Import) Commit() (*SnapshotInfo, error) {
	defer im.lease.release()
	if left := im.Missing(); len(left) > 0 {
		return nil, fmt.Errorf("import %s: %d chunks never arrived (first %s): %w", im.name, len(left), left[0], ErrCorrupt)
	}
	dirs := map[string]struct{}{}
	for k := range im.sizes {
		dirs[k[:2]] = struct{}{}
	}
	names := make([]string, 0, len(dirs))
	for d := range dirs {
		names = append(names, d)
	}
	if err := parallel(im.ctx, im.s.opts.IOWorkers, len(names), func(i int) error {
		return syncDir(filepath.Join(im.s.root, dirChunks, names[i]))
	}); err != nil {
		return nil, fmt.Errorf("import %s: %w", im.name, err)
	}
	if err := im.s.writeFileAtomic(im.s.manifestPath(im.name), im.raw, true); err != nil {
		return nil, fmt.Errorf("import %s: write manifest: %w", im.name, err)
	}
	info, err := im.s.Inspect(im.name)
	if err != nil {
		return nil, fmt.Errorf("import %s: %w", im.name, err)
	}
	return info, nil
}

// Abort gives the import up: chunks already received stay until GC finds
// them unreferenced.
func (im *Import) Abort() { im.lease.release() }

// chunkSizes maps each distinct key of m to its raw size.
func chunkSizes(m *manifest) map[string]int64 {
	sizes := make(map[string]int64)
	for i := range m.Files {
		f := &m.Files[i]
		for j, k := range f.Chunks {
			sizes[k] = f.chunkSizeAt(j)
		}
	}
	return sizes
}

func rawKeys(sizes map[string]int64) [][32]byte {
	keys := make([][32]byte, 0, len(sizes))
	for k := range sizes {
		var b [32]byte
		hex.Decode(b[:], []byte(k)) // validated with the manifest
		keys = append(keys, b)
	}
	return keys
}

// ReadFile returns the content of one file of a snapshot, every chunk
// checked, for small files such as a checkpoint's manifest.
func (s *Store) ReadFile(name, path string) ([]byte, error) {
	m, _, err := s.loadManifest(name)
	if err != nil {
		return nil, fmt.Errorf("read %s of %s: %w", path, name, err)
	}
	for i := range m.Files {
		f := &m.Files[i]
		if f.Path != path || f.Type != typeFile {
			continue
		}
		out := make([]byte, 0, f.Size)
		var off int64
		for j, k := range f.Chunks {
			raw, err := s.readChunk(k, f.chunkSizeAt(j))
			if err != nil {
				var ce *CorruptError
				if errors.As(err, &ce) {
					ce.Snapshot, ce.File, ce.Offset = name, f.Path, off
				}
				return nil, err
			}
			out = append(out, raw...)
			off += int64(len(raw))
		}
		return out, nil
	}
	return nil, fmt.Errorf("read %s of %s: %w", path, name, os.ErrNotExist)
}
