package pagestore

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"runtime"
	"sync/atomic"
	"time"

	"github.com/klauspost/compress/zstd"
	"golang.org/x/sys/unix"
)

// DefaultPageChunkSize is the chunk size of page images: 2 pages. See
// docs/pagestore.md for the measurements behind it.
const DefaultPageChunkSize = 2 * PageSize

// Options tune a Store; the zero value gives the defaults.
type Options struct {
	// PageChunkSize is the chunk size of pages-*.img files, a multiple of
	// PageSize up to 4 MiB. Default DefaultPageChunkSize.
	PageChunkSize int
	// Workers is the number of goroutines hashing and compressing.
	// Default GOMAXPROCS.
	Workers int
	// IOWorkers is the number of goroutines writing (and fsyncing) new chunks
	// or reading chunks back; fsyncs in parallel share journal commits.
	// Default 16.
	IOWorkers int
}

// Store is a pagestore rooted at a directory. Its methods are safe for
// concurrent use, and several Stores (in one process or several) may share a
// root.
type Store struct {
	root    string
	opts    Options
	owner   owner
	ownerID string
	seq     atomic.Uint64
	enc     *zstd.Encoder
	dec     *zstd.Decoder

	// failpoint, when set (tests only), is called at named points of a Put
	// without the store lock held: "batch" after each batch is committed
	// (n: chunks written so far), "chunk" after a new chunk is written and
	// fsync'd in tmp/ but before its rename (n: its ordinal in the Put).
	failpoint func(point string, n int)
}

const (
	dirChunks    = "chunks"
	dirSnapshots = "snapshots"
	dirTmp       = "tmp"
	lockName     = "lock"
)

// Open opens the store at root, creating its layout if needed.
func Open(root string, opts Options) (*Store, error) {
	if opts.PageChunkSize == 0 {
		opts.PageChunkSize = DefaultPageChunkSize
	}
	if opts.PageChunkSize%PageSize != 0 || opts.PageChunkSize <= 0 || opts.PageChunkSize > cdcMax {
		return nil, fmt.Errorf("open pagestore %s: page chunk size %d is not a multiple of %d up to %d",
			root, opts.PageChunkSize, PageSize, cdcMax)
	}
	if opts.Workers <= 0 {
		opts.Workers = runtime.GOMAXPROCS(0)
	}
	if opts.IOWorkers <= 0 {
		opts.IOWorkers = 16
	}
	abs, err := filepath.Abs(root)
	if err != nil {
		return nil, fmt.Errorf("open pagestore %s: %w", root, err)
	}
	if err := initLayout(abs); err != nil {
		return nil, fmt.Errorf("open pagestore %s: %w", abs, err)
	}
	me, err := selfOwner()
	if err != nil {
		return nil, fmt.Errorf("open pagestore %s: %w", abs, err)
	}
	// Chunks are small and compressed one by one: a single-segment frame
	// without entropy coding of literals and with small tables runs at
	// ~575 MB/s per 16 KiB chunk here against ~130 MB/s for the defaults
	// (table set-up dominates small inputs), for the same ratio on memory
	// pages, whose redundancy is mostly runs and repeats.
	enc, err := zstd.NewWriter(nil, zstd.WithEncoderLevel(zstd.SpeedFastest),
		zstd.WithEncoderConcurrency(opts.Workers+opts.IOWorkers), zstd.WithEncoderCRC(false),
		zstd.WithSingleSegment(true), zstd.WithNoEntropyCompression(true), zstd.WithLowerEncoderMem(true))
	if err != nil {
		return nil, fmt.Errorf("open pagestore %s: %w", abs, err)
	}
	dec, err := zstd.NewReader(nil, zstd.WithDecoderConcurrency(opts.IOWorkers),
		zstd.WithDecoderMaxMemory(2*cdcMax), zstd.WithDecoderMaxWindow(cdcMax*2))
	if err != nil {
		enc.Close()
		return nil, fmt.Errorf("open pagestore %s: %w", abs, err)
	}
	return &Store{root: abs, opts: opts, owner: me, ownerID: me.String(), enc: enc, dec: dec}, nil
}

// Close releases the compressor state. It does not wait for operations in
// progress; call it when they have returned.
func (s *Store) Close() error {
	s.dec.Close()
	return s.enc.Close()
}

// Root returns the store's directory.
func (s *Store) Root() string { return s.root }

// initLayout creates root (0700: checkpoints hold process memory, secrets
// included), its subdirectories and the 256 chunk fan-out directories.
func initLayout(root string) error {
	created := false
	mk := func(p string) error {
		err := os.Mkdir(p, 0o700)
		if err == nil {
			created = true
			return nil
		}
		if errors.Is(err, os.ErrExist) {
			return nil
		}
		return err
	}
	if err := os.MkdirAll(filepath.Dir(root), 0o755); err != nil {
		return err
	}
	if err := mk(root); err != nil {
		return err
	}
	for _, d := range []string{dirChunks, dirSnapshots, dirTmp} {
		if err := mk(filepath.Join(root, d)); err != nil {
			return err
		}
	}
	for i := 0; i < 256; i++ {
		if err := mk(filepath.Join(root, dirChunks, fmt.Sprintf("%02x", i))); err != nil {
			return err
		}
	}
	f, err := os.OpenFile(filepath.Join(root, lockName), os.O_CREATE|os.O_RDONLY, 0o600)
	if err != nil {
		return err
	}
	f.Close()
	if created {
		for _, d := range []string{filepath.Join(root, dirChunks), root, filepath.Dir(root)} {
			if err := syncDir(d); err != nil {
				return err
			}
		}
	}
	return nil
}

func (s *Store) chunkPath(key string) string {
	return filepath.Join(s.root, dirChunks, key[:2], key)
}

func (s *Store) manifestPath(name string) string {
	return filepath.Join(s.root, dirSnapshots, name+".json")
}

// tmpName is a fresh tmp/ path owned by this process; GC removes it once the
// process is gone.
func (s *Store) tmpName(kind string) string {
	return filepath.Join(s.root, dirTmp, fmt.Sprintf("%s.%d.%s", s.ownerID, s.seq.Add(1), kind))
}

// storeLock is a flock on root/lock. Puts and Gets hold it shared for the
// short step that records keys in their lease and checks which chunks
// exist; GC holds it exclusively for its whole run. Every acquisition opens
// its own fd: flock belongs to the open file description, so sharing one fd
// would let GC and Put of one process convert each other's lock.
type storeLock struct{ f *os.File }

func (s *Store) lock(ctx context.Context, exclusive bool) (*storeLock, error) {
	f, err := os.Open(filepath.Join(s.root, lockName))
	if err != nil {
		return nil, fmt.Errorf("lock store: %w", err)
	}
	how := unix.LOCK_SH
	if exclusive {
		how = unix.LOCK_EX
	}
	// Poll rather than block so ctx can cancel the wait.
	delay := time.Millisecond
	for {
		err := unix.Flock(int(f.Fd()), how|unix.LOCK_NB)
		if err == nil {
			return &storeLock{f: f}, nil
		}
		if !errors.Is(err, unix.EWOULDBLOCK) && !errors.Is(err, unix.EINTR) {
			f.Close()
			return nil, fmt.Errorf("lock store: %w", err)
		}
		select {
		case <-ctx.Done():
			f.Close()
			return nil, fmt.Errorf("lock store: %w", ctx.Err())
		case <-time.After(delay):
		}
		if delay < 20*time.Millisecond {
			delay *= 2
		}
	}
}

func (l *storeLock) unlock() { l.f.Close() }

func syncDir(dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		return err
	}
	defer d.Close()
	if err := d.Sync(); err != nil {
		return fmt.Errorf("fsync %s: %w", dir, err)
	}
	return nil
}

// writeFileAtomic writes b to dst through a temp file in tmp/: write, fsync,
// rename (never replacing an existing dst when noReplace), fsync dst's dir.
func (s *Store) writeFileAtomic(dst string, b []byte, noReplace bool) error {
	tmp := s.tmpName("file")
	f, err := os.OpenFile(tmp, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
	if err != nil {
		return err
	}
	_, err = f.Write(b)
	if err == nil {
		err = f.Sync()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = rename(tmp, dst, noReplace)
	}
	if err != nil {
		os.Remove(tmp)
		return err
	}
	return syncDir(filepath.Dir(dst))
}

func rename(from, to string, noReplace bool) error {
	if !noReplace {
		return os.Rename(from, to)
	}
	if err := unix.Renameat2(unix.AT_FDCWD, from, unix.AT_FDCWD, to, unix.RENAME_NOREPLACE); err != nil {
		if errors.Is(err, unix.EEXIST) {
			return fmt.Errorf("rename %s: %w", to, ErrExists)
		}
		return &os.LinkError{Op: "rename", Old: from, New: to, Err: err}
	}
	return nil
}
