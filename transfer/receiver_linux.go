package transfer

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"hash/crc32"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/klauspost/compress/zstd"
	"golang.org/x/sys/unix"
	"google.golang.org/protobuf/proto"

	transferv1 "github.com/migratehq/migrate/api/transfer/v1"
)

// Receiver keeps incoming transfers under Root, one directory per transfer id:
//
//	<Root>/<id>/lock      flock'd while a Send of id is being served
//	<Root>/<id>/header    the accepted header (protobuf), written atomically
//	<Root>/<id>/journal   completed chunks (see journal.go)
//	<Root>/<id>/complete  present once every file's SHA-256 was verified
//	<Root>/<id>/files/    the files, by their relative names
//
// The zero value is not usable: set Root. A Receiver may serve many transfers at
// once; a new Receiver on the same Root (after a restart) resumes them.
type Receiver struct {
	// Root is the directory transfers are written under; created 0700 if missing.
	Root string
	// Workers is the number of chunks decompressed and written in parallel
	// (default GOMAXPROCS).
	Workers int
	// SyncBytes is how many bytes are written between journal syncs (default
	// 64 MiB); a sync also happens every second and when a stream ends. It bounds
	// what a crash can make the sender send again.
	SyncBytes int64
	// NoSync leaves out every fsync: for data worthless after a crash of the
	// machine (a move's checkpoint: the source resumes the container), where
	// the page cache survives a crash of the process anyway and the digest
	// check at the end still catches what a crash lost.
	NoSync bool

	written atomic.Int64
}

const (
	defaultSyncBytes = 64 << 20
	syncInterval     = time.Second
	filesDirName     = "files"
)

// Dir is the directory holding the files of transfer id; they are complete and
// verified once Complete reports true. It is "" for an invalid id, so no id can
// name a path outside Root.
func (r *Receiver) Dir(id string) string {
	if ValidateID(id) != nil {
		return ""
	}
	return filepath.Join(r.Root, id, filesDirName)
}

// Complete reports whether transfer id finished and every file was verified.
func (r *Receiver) Complete(id string) (bool, error) {
	if err := ValidateID(id); err != nil {
		return false, err
	}
	_, err := os.Stat(filepath.Join(r.Root, id, "complete"))
	if errors.Is(err, fs.ErrNotExist) {
		return false, nil
	}
	return err == nil, err
}

// Remove deletes transfer id, complete or partial. It fails with ErrBusy while a
// Send of id is being received.
func (r *Receiver) Remove(id string) error {
	if err := ValidateID(id); err != nil {
		return err
	}
	dir := filepath.Join(r.Root, id)
	lock, err := lockDir(context.Background(), dir, false, 0)
	if errors.Is(err, fs.ErrNotExist) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("remove transfer %s: %w", id, err)
	}
	defer lock.Close()
	if err := os.RemoveAll(dir); err != nil {
		return fmt.Errorf("remove transfer %s: %w", id, err)
	}
	return nil
}

// WrittenBytes is the number of raw bytes this Receiver wrote, over all transfers.
func (r *Receiver) WrittenBytes() int64 { return r.written.Load() }

// lockWait is how long a new Send waits for the lock of its transfer: a stream
// the sender cancelled a moment ago may still be flushing its journal.
const lockWait = 3 * time.Second

// lockDir takes the exclusive lock of a transfer directory, creating it first
// when create is set. It waits up to wait for a holder to let go, then fails
// with ErrBusy.
func lockDir(ctx context.Context, dir string, create bool, wait time.Duration) (*os.File, error) {
	flags := os.O_RDWR
	if create {
		if err := os.Mkdir(dir, 0o700); err != nil && !errors.Is(err, fs.ErrExist) {
			return nil, err
		}
		flags |= os.O_CREATE
	}
	f, err := os.OpenFile(filepath.Join(dir, "lock"), flags, 0o600)
	if err != nil {
		return nil, err
	}
	deadline := time.Now().Add(wait)
	for {
		err := unix.Flock(int(f.Fd()), unix.LOCK_EX|unix.LOCK_NB)
		if err == nil {
			return f, nil
		}
		if !errors.Is(err, unix.EWOULDBLOCK) {
			f.Close()
			return nil, fmt.Errorf("lock: %w", err)
		}
		if time.Now().After(deadline) {
			f.Close()
			return nil, ErrBusy
		}
		select {
		case <-ctx.Done():
			f.Close()
			return nil, ctx.Err()
		case <-time.After(10 * time.Millisecond):
		}
	}
}

// sendStream is the server side of a Transfer.Send stream.
type sendStream interface {
	Send(*transferv1.SendResponse) error
	Recv() (*transferv1.SendRequest, error)
	Context() context.Context
}

// inbound is one transfer being received.
type inbound struct {
	h        *transferv1.Header
	dir      string
	lock     *os.File
	files    []*os.File
	complete bool
	noSync   bool // Receiver.NoSync

	mu       sync.Mutex
	done     *chunkSet // guarded by mu
	j        *journal  // guarded by mu
	dirty    []bool    // guarded by mu: files written since the last sync
	unsynced int64     // guarded by mu
	lastSync time.Time // guarded by mu
	written  int64     // guarded by mu: raw bytes written by this Send
}

// receive serves one Send stream.
func (r *Receiver) receive(st sendStream) error {
	req, err := st.Recv()
	if err != nil {
		return fmt.Errorf("receive header: %w", err)
	}
	h := req.GetHeader()
	if h == nil {
		return fmt.Errorf("%w: first message is not a header", ErrProtocol)
	}
	if err := validateHeader(h); err != nil {
		return err
	}
	id := h.GetTransferId()
	t, err := r.open(st.Context(), h)
	if err != nil {
		return fmt.Errorf("transfer %s: %w", id, err)
	}
	defer t.close()
	if err := st.Send(&transferv1.SendResponse{Msg: &transferv1.SendResponse_Have{Have: &transferv1.Have{Ranges: t.done.ranges()}}}); err != nil {
		return fmt.Errorf("transfer %s: send have: %w", id, err)
	}
	if !t.complete {
		err = r.receiveChunks(st, t)
		if err == nil {
			err = t.finish(r.workers())
		}
	} else {
		err = expectCommit(st)
	}
	if err != nil {
		return fmt.Errorf("transfer %s: %w", id, err)
	}
	// Unlock before answering, so the sender may act on the transfer (resend,
	// remove) as soon as it has the answer.
	t.close()
	done := &transferv1.Done{WrittenBytes: t.written}
	if err := st.Send(&transferv1.SendResponse{Msg: &transferv1.SendResponse_Done{Done: done}}); err != nil {
		return fmt.Errorf("transfer %s: send done: %w", id, err)
	}
	return nil
}

func (r *Receiver) workers() int {
	if r.Workers > 0 {
		return r.Workers
	}
	return runtime.GOMAXPROCS(0)
}

// expectCommit reads the commit of a stream that has nothing to send.
func expectCommit(st sendStream) error {
	req, err := st.Recv()
	if err != nil {
		return fmt.Errorf("%w: %w", ErrIncomplete, err)
	}
	if req.GetCommit() == nil {
		return fmt.Errorf("%w: expected commit", ErrProtocol)
	}
	return nil
}

// open prepares the directory of h's transfer: lock, compare with a stored
// header (a different header restarts a partial transfer and is refused for a
// complete one), create and preallocate the files, load the journal.
func (r *Receiver) open(ctx context.Context, h *transferv1.Header) (_ *inbound, err error) {
	if err := os.MkdirAll(r.Root, 0o700); err != nil {
		return nil, err
	}
	t := &inbound{h: h, dir: filepath.Join(r.Root, h.GetTransferId()), done: newChunkSet(h), lastSync: time.Now(), noSync: r.NoSync}
	t.lock, err = lockDir(ctx, t.dir, true, lockWait)
	if err != nil {
		return nil, err
	}
	defer func() {
		if err != nil {
			t.close()
		}
	}()
	hdrPath := filepath.Join(t.dir, "header")
	old, err := os.ReadFile(hdrPath)
	switch {
	case errors.Is(err, fs.ErrNotExist):
	case err != nil:
		return nil, fmt.Errorf("read header: %w", err)
	default:
		var oh transferv1.Header
		if uerr := proto.Unmarshal(old, &oh); uerr == nil && proto.Equal(&oh, h) {
			_, err := os.Stat(filepath.Join(t.dir, "complete"))
			t.complete = err == nil
			break
		}
		if _, err := os.Stat(filepath.Join(t.dir, "complete")); err == nil {
			return nil, ErrHeaderMismatch
		}
		// A partial transfer of other files (the source checkpointed again):
		// start over. The journal goes first so it never outlives its data.
		for _, name := range []string{"journal", filesDirName, "header"} {
			if err := os.RemoveAll(filepath.Join(t.dir, name)); err != nil {
				return nil, fmt.Errorf("reset: %w", err)
			}
		}
		old = nil
	}
	if t.complete {
		t.done.fill()
		return t, nil
	}
	if old == nil {
		data, err := proto.MarshalOptions{Deterministic: true}.Marshal(h)
		if err != nil {
			return nil, err
		}
		if err := writeFileAtomic(hdrPath, data, !t.noSync); err != nil {
			return nil, fmt.Errorf("write header: %w", err)
		}
	}
	if err := t.createFiles(); err != nil {
		return nil, err
	}
	t.dirty = make([]bool, len(t.files))
	if t.j, err = openJournal(filepath.Join(t.dir, "journal"), t.done, t.noSync); err != nil {
		return nil, err
	}
	return t, nil
}

const resolveFlags = unix.RESOLVE_BENEATH | unix.RESOLVE_NO_SYMLINKS | unix.RESOLVE_NO_MAGICLINKS | unix.RESOLVE_NO_XDEV

// createFiles opens (creating as needed) every file of the header under the
// files directory. Every open goes through openat2 with RESOLVE_BENEATH and
// RESOLVE_NO_SYMLINKS, so even an entry planted in the directory cannot lead a
// write outside it; names were validated already.
func (t *inbound) createFiles() error {
	root := filepath.Join(t.dir, filesDirName)
	if err := os.Mkdir(root, 0o700); err != nil && !errors.Is(err, fs.ErrExist) {
		return err
	}
	rootFd, err := unix.Open(root, unix.O_DIRECTORY|unix.O_RDONLY|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0)
	if err != nil {
		return fmt.Errorf("open %s: %w", root, err)
	}
	defer unix.Close(rootFd)
	dirs := map[string]bool{".": true}
	for _, f := range t.h.GetFiles() {
		name := f.GetName()
		if d := filepath.Dir(name); !dirs[d] {
			if err := mkdirBeneath(rootFd, d); err != nil {
				return fmt.Errorf("create directory %q: %w", d, err)
			}
			dirs[d] = true
		}
		fd, err := unix.Openat2(rootFd, name, &unix.OpenHow{
			Flags:   unix.O_RDWR | unix.O_CREAT | unix.O_NOFOLLOW | unix.O_CLOEXEC,
			Mode:    0o600,
			Resolve: resolveFlags,
		})
		if err != nil {
			return fmt.Errorf("create %q: %w", name, err)
		}
		file := os.NewFile(uintptr(fd), filepath.Join(root, name))
		t.files = append(t.files, file)
		var stx unix.Stat_t
		if err := unix.Fstat(fd, &stx); err != nil {
			return fmt.Errorf("stat %q: %w", name, err)
		}
		if stx.Mode&unix.S_IFMT != unix.S_IFREG {
			return fmt.Errorf("%w: %q exists and is not a regular file", ErrBadName, name)
		}
		if err := preallocate(fd, f.GetSize()); err != nil {
			return fmt.Errorf("preallocate %q: %w", name, err)
		}
	}
	// Make the new directory entries durable before any journal record
	// refers to data in them.
	for d := range dirs {
		if t.noSync {
			break
		}
		if err := syncDir(filepath.Join(root, d)); err != nil {
			return err
		}
	}
	return nil
}

// mkdirBeneath creates the relative directory path under rootFd, element by
// element, never following a symlink.
func mkdirBeneath(rootFd int, path string) error {
	fd, err := unix.Dup(rootFd)
	if err != nil {
		return err
	}
	for _, e := range strings.Split(path, "/") {
		if err := unix.Mkdirat(fd, e, 0o700); err != nil && !errors.Is(err, unix.EEXIST) {
			unix.Close(fd)
			return err
		}
		nfd, err := unix.Openat2(fd, e, &unix.OpenHow{
			Flags:   unix.O_PATH | unix.O_DIRECTORY | unix.O_NOFOLLOW | unix.O_CLOEXEC,
			Resolve: resolveFlags,
		})
		unix.Close(fd)
		if err != nil {
			return err
		}
		fd = nfd
	}
	return unix.Close(fd)
}

// preallocate reserves size bytes so chunk writes in any order neither fragment
// the file nor fail half-way for lack of space.
func preallocate(fd int, size int64) error {
	if size == 0 {
		return unix.Ftruncate(fd, 0)
	}
	err := unix.Fallocate(fd, 0, 0, size)
	if errors.Is(err, unix.EOPNOTSUPP) || errors.Is(err, unix.ENOSYS) {
		return unix.Ftruncate(fd, size)
	}
	if err != nil {
		return err
	}
	// A longer file left by an earlier attempt would fail its digest for ever.
	return unix.Ftruncate(fd, size)
}

// close releases the transfer; it may be called more than once.
func (t *inbound) close() {
	if t.j != nil {
		t.j.close()
	}
	for _, f := range t.files {
		f.Close()
	}
	t.files = nil
	if t.lock != nil {
		t.lock.Close()
		t.lock = nil
	}
}

// receiveChunks reads chunks until the commit, verifying and writing them on
// worker goroutines. It returns with every written chunk journaled and synced,
// whatever ended the stream.
func (r *Receiver) receiveChunks(st sendStream, t *inbound) (err error) {
	ctx, cancel := context.WithCancelCause(st.Context())
	defer cancel(nil)
	syncBytes := r.SyncBytes
	if syncBytes <= 0 {
		syncBytes = defaultSyncBytes
	}
	workers := r.workers()
	dec, err := zstd.NewReader(nil, zstd.WithDecoderConcurrency(workers), zstd.WithDecoderMaxMemory(MaxChunkSize))
	if err != nil {
		return err
	}
	defer dec.Close()

	// Receiving runs on its own goroutine so a worker's failure or a
	// cancellation ends the loop below without waiting for the next message.
	msgs := make(chan *transferv1.SendRequest)
	recvErr := make(chan error, 1)
	stop := make(chan struct{})
	defer close(stop)
	go func() {
		for {
			m, err := st.Recv()
			if err != nil {
				recvErr <- err
				return
			}
			select {
			case msgs <- m:
			case <-stop:
				return
			}
		}
	}()

	jobs := make(chan *transferv1.Chunk, 2*workers)
	var wg sync.WaitGroup
	for range workers {
		wg.Go(func() {
			// Grown to the largest chunk decoded: a small transfer does not
			// clear a chunk-sized buffer per worker.
			var buf []byte
			for c := range jobs {
				if ctx.Err() != nil {
					continue // drain
				}
				n, err := t.writeChunk(dec, c, &buf)
				if err != nil {
					cancel(err)
					continue
				}
				r.written.Add(int64(n))
				if err := t.mark(c, n, syncBytes); err != nil {
					cancel(err)
				}
			}
		})
	}
	defer func() {
		close(jobs)
		wg.Wait()
		t.mu.Lock()
		ferr := t.flushLocked()
		t.mu.Unlock()
		if cause := context.Cause(ctx); err == nil && cause != nil && !errors.Is(cause, context.Canceled) {
			err = cause // a worker failed after the commit arrived
		}
		if err == nil {
			err = ferr
		}
	}()

	claimed := t.done.clone() // chunks held or queued, to refuse duplicates
	for {
		select {
		case <-ctx.Done():
			return context.Cause(ctx)
		case err := <-recvErr:
			if err == io.EOF {
				return fmt.Errorf("%w: stream ended before commit", ErrIncomplete)
			}
			return fmt.Errorf("%w: %w", ErrIncomplete, err)
		case m := <-msgs:
			if m.GetCommit() != nil {
				return nil
			}
			c := m.GetChunk()
			if c == nil {
				return fmt.Errorf("%w: expected chunk or commit", ErrProtocol)
			}
			if err := t.checkChunk(c, claimed); err != nil {
				return err
			}
			select {
			case jobs <- c:
			case <-ctx.Done():
				return context.Cause(ctx)
			}
		}
	}
}

// checkChunk refuses a chunk that does not fit the header or was seen already.
func (t *inbound) checkChunk(c *transferv1.Chunk, claimed *chunkSet) error {
	cs := int64(t.h.GetChunkSize())
	idx := c.GetOffset() / cs
	if c.GetOffset()%cs != 0 || !claimed.valid(c.GetFile(), idx) {
		return fmt.Errorf("%w: chunk of file %d at offset %d is outside the header", ErrProtocol, c.GetFile(), c.GetOffset())
	}
	f := t.h.GetFiles()[c.GetFile()]
	if want := chunkLen(f.GetSize(), t.h.GetChunkSize(), idx); int(c.GetRawLength()) != want {
		return &ChunkError{File: f.GetName(), Offset: c.GetOffset(), Err: fmt.Errorf("%w: raw length %d, want %d", ErrProtocol, c.GetRawLength(), want)}
	}
	if claimed.has(c.GetFile(), idx) {
		return &ChunkError{File: f.GetName(), Offset: c.GetOffset(), Err: fmt.Errorf("%w: chunk sent twice", ErrProtocol)}
	}
	claimed.set(c.GetFile(), idx)
	return nil
}

// writeChunk decodes and verifies c, then writes it at its offset. Nothing is
// written for a chunk that fails verification.
func (t *inbound) writeChunk(dec *zstd.Decoder, c *transferv1.Chunk, buf *[]byte) (int, error) {
	f := t.h.GetFiles()[c.GetFile()]
	bad := func(err error) error { return &ChunkError{File: f.GetName(), Offset: c.GetOffset(), Err: err} }
	var raw []byte
	switch c.GetEncoding() {
	case transferv1.Encoding_ENCODING_RAW:
		raw = c.GetData()
	case transferv1.Encoding_ENCODING_ZSTD:
		var err error
		raw, err = dec.DecodeAll(c.GetData(), (*buf)[:0])
		if err != nil {
			return 0, bad(fmt.Errorf("%w: decompress: %v", ErrChunkChecksum, err))
		}
		if cap(raw) > cap(*buf) {
			*buf = raw[:0]
		}
	default:
		return 0, bad(fmt.Errorf("%w: encoding %v", ErrProtocol, c.GetEncoding()))
	}
	if len(raw) != int(c.GetRawLength()) {
		return 0, bad(fmt.Errorf("%w: %d bytes, announced %d", ErrChunkChecksum, len(raw), c.GetRawLength()))
	}
	if crc32.Checksum(raw, castagnoli) != c.GetCrc32C() {
		return 0, bad(ErrChunkChecksum)
	}
	if _, err := t.files[c.GetFile()].WriteAt(raw, c.GetOffset()); err != nil {
		return 0, bad(fmt.Errorf("write: %w", err))
	}
	return len(raw), nil
}

// mark records a written chunk, syncing data and journal when enough bytes or
// time have passed.
func (t *inbound) mark(c *transferv1.Chunk, n int, syncBytes int64) error {
	t.mu.Lock()
	defer t.mu.Unlock()
	idx := c.GetOffset() / int64(t.h.GetChunkSize())
	t.done.set(c.GetFile(), idx)
	t.j.add(c.GetFile(), idx)
	t.dirty[c.GetFile()] = true
	t.unsynced += int64(n)
	t.written += int64(n)
	if t.unsynced >= syncBytes || time.Since(t.lastSync) >= syncInterval {
		return t.flushLocked()
	}
	return nil
}

// flushLocked makes written chunks durable: data first, then their journal
// records, so the journal never lists data a crash could lose.
func (t *inbound) flushLocked() error {
	for i, d := range t.dirty {
		if d {
			if t.noSync {
				t.dirty[i] = false
				continue
			}
			if err := unix.Fdatasync(int(t.files[i].Fd())); err != nil {
				return fmt.Errorf("sync %q: %w", t.h.GetFiles()[i].GetName(), err)
			}
			t.dirty[i] = false
		}
	}
	if err := t.j.flush(); err != nil {
		return err
	}
	t.unsynced, t.lastSync = 0, time.Now()
	return nil
}

// finish checks that every chunk arrived and every file has its header digest,
// then marks the transfer complete. A file whose digest differs loses its
// journal records, so the next Send sends it whole again.
func (t *inbound) finish(workers int) error {
	if n := t.done.missing(); n > 0 {
		return fmt.Errorf("%w: commit with %d chunks missing", ErrIncomplete, n)
	}
	files := t.h.GetFiles()
	errs := make([]error, len(files))
	idx := make(chan int)
	var wg sync.WaitGroup
	for range min(workers, max(len(files), 1)) {
		wg.Go(func() {
			for i := range idx {
				sum := sha256.New()
				if _, err := io.Copy(sum, io.NewSectionReader(t.files[i], 0, files[i].GetSize())); err != nil {
					errs[i] = &FileError{File: files[i].GetName(), Err: fmt.Errorf("read back: %w", err)}
				} else if !bytes.Equal(sum.Sum(nil), files[i].GetSha256()) {
					errs[i] = &FileError{File: files[i].GetName(), Err: ErrDigestMismatch}
				}
			}
		})
	}
	for i := range files {
		idx <- i
	}
	close(idx)
	wg.Wait()
	var first error
	t.mu.Lock()
	defer t.mu.Unlock()
	for i, err := range errs {
		if err != nil && errors.Is(err, ErrDigestMismatch) {
			t.done.clearFile(uint32(i))
		}
		if first == nil {
			first = err
		}
	}
	if first != nil {
		if err := t.j.rewrite(t.done); err != nil {
			return errors.Join(first, err)
		}
		return first
	}
	for i, f := range t.files {
		if t.noSync {
			break
		}
		if err := f.Sync(); err != nil {
			return fmt.Errorf("sync %q: %w", files[i].GetName(), err)
		}
	}
	if err := writeFileAtomic(filepath.Join(t.dir, "complete"), nil, !t.noSync); err != nil {
		return fmt.Errorf("mark complete: %w", err)
	}
	t.complete = true
	return nil
}

// Verified returns the SHA-256 (hex) of every file of complete transfer id, as the
// receiver verified them, by name: a caller can trust these digests instead of
// hashing the files again.
func (r *Receiver) Verified(id string) (map[string]string, error) {
	done, err := r.Complete(id)
	if err != nil {
		return nil, err
	}
	if !done {
		return nil, fmt.Errorf("transfer %s: %w", id, ErrIncomplete)
	}
	data, err := os.ReadFile(filepath.Join(r.Root, id, "header"))
	if err != nil {
		return nil, fmt.Errorf("transfer %s: read header: %w", id, err)
	}
	var h transferv1.Header
	if err := proto.Unmarshal(data, &h); err != nil {
		return nil, fmt.Errorf("transfer %s: %w: %v", id, ErrBadHeader, err)
	}
	out := make(map[string]string, len(h.GetFiles()))
	for _, f := range h.GetFiles() {
		out[f.GetName()] = hex.EncodeToString(f.GetSha256())
	}
	return out, nil
}
