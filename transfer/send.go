package transfer

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"hash/crc32"
	"io"
	"os"
	"path/filepath"
	"runtime"
	"sync"
	"time"

	"github.com/klauspost/compress/zstd"
	"google.golang.org/grpc"

	transferv1 "github.com/migratehq/migrate/api/transfer/v1"
)

// DefaultLevel is the zstd level chunks are compressed at unless SendOptions
// says otherwise; docs/transfer.md has the measurements behind the choice.
const DefaultLevel = zstd.SpeedFastest

// SendOptions tunes Send. The zero value is ready to use.
type SendOptions struct {
	// ChunkSize is the raw size of a chunk, in [MinChunkSize, MaxChunkSize]
	// (default DefaultChunkSize). A resumed transfer must use the same size.
	ChunkSize int
	// Workers is the number of chunks compressed in parallel (default
	// GOMAXPROCS).
	Workers int
	// InFlight bounds the chunks read but not yet handed to gRPC (default
	// 2*Workers); with the chunk size it bounds the memory a Send uses.
	InFlight int
	// Level is the zstd level (default DefaultLevel).
	Level zstd.EncoderLevel
	// NoCompression sends every chunk raw, for data known to be incompressible
	// (already compressed or encrypted).
	NoCompression bool
	// SHA256 holds hex digests of files already known (a checkpoint manifest
	// has them), by name; files not in it are hashed before sending.
	SHA256 map[string]string
	// Progress, if set, is called after each chunk is handed to gRPC, from one
	// goroutine at a time. It must return quickly.
	Progress func(Progress)

	// corrupt, set by tests, sees each chunk's raw bytes after its checksum was
	// taken and before it is compressed.
	corrupt func(name string, off int64, raw []byte)
}

// Progress is the state of a running Send.
type Progress struct {
	// TotalBytes is the size of all files.
	TotalBytes int64
	// ResumedBytes is what the receiver held already, not sent again.
	ResumedBytes int64
	// RawBytes and WireBytes are the chunk bytes sent so far by this Send,
	// before and after compression.
	RawBytes  int64
	WireBytes int64
}

// Stats describes a finished (or failed) Send.
type Stats struct {
	// RawBytes and WireBytes are the chunk bytes this Send sent, before and
	// after compression.
	RawBytes  int64
	WireBytes int64
	// Chunks is the number of chunks sent.
	Chunks int64
	// Resumed is the number of bytes the receiver already held.
	Resumed int64
	// Written is the number of bytes the receiver reports having written.
	Written  int64
	Duration time.Duration
}

// Send transfers files (names relative to srcDir) to the receiver behind conn
// under transferID. If the receiver holds part of the transfer from an earlier
// Send with the same id and the same files, only the rest is sent. It returns
// once the receiver verified every file's SHA-256, or with the first error;
// cancelling ctx stops it promptly and leaves a resumable state on the
// receiver. Errors the receiver reports match the package's sentinels under
// errors.Is; chunk and file failures are *ChunkError and *FileError.
func Send(ctx context.Context, conn grpc.ClientConnInterface, transferID, srcDir string, files []string, o SendOptions) (Stats, error) {
	start := time.Now()
	stats, err := send(ctx, conn, transferID, srcDir, files, o)
	stats.Duration = time.Since(start)
	if err != nil {
		return stats, fmt.Errorf("send %s: %w", transferID, err)
	}
	return stats, nil
}

func (o *SendOptions) defaults() error {
	if o.ChunkSize == 0 {
		o.ChunkSize = DefaultChunkSize
	}
	if o.ChunkSize < MinChunkSize || o.ChunkSize > MaxChunkSize {
		return fmt.Errorf("chunk size %d not in [%d, %d]", o.ChunkSize, MinChunkSize, MaxChunkSize)
	}
	if o.Workers <= 0 {
		o.Workers = runtime.GOMAXPROCS(0)
	}
	if o.InFlight <= 0 {
		o.InFlight = 2 * o.Workers
	}
	if o.Level == 0 {
		o.Level = DefaultLevel
	}
	return nil
}

func send(ctx context.Context, conn grpc.ClientConnInterface, id, srcDir string, names []string, o SendOptions) (stats Stats, err error) {
	if err := ValidateID(id); err != nil {
		return stats, err
	}
	if err := validateNames(names); err != nil {
		return stats, err
	}
	if len(names) > MaxFiles {
		return stats, fmt.Errorf("%w: %d files, at most %d", ErrBadHeader, len(names), MaxFiles)
	}
	if err := o.defaults(); err != nil {
		return stats, err
	}
	files := make([]*os.File, 0, len(names))
	defer func() {
		for _, f := range files {
			f.Close()
		}
	}()
	h := &transferv1.Header{TransferId: id, ChunkSize: uint32(o.ChunkSize)}
	for _, n := range names {
		f, err := os.Open(filepath.Join(srcDir, filepath.FromSlash(n)))
		if err != nil {
			return stats, err
		}
		files = append(files, f)
		fi, err := f.Stat()
		if err != nil {
			return stats, err
		}
		if !fi.Mode().IsRegular() {
			return stats, fmt.Errorf("%s: not a regular file", f.Name())
		}
		h.Files = append(h.Files, &transferv1.File{Name: n, Size: fi.Size()})
	}
	if err := digests(ctx, h, files, o.SHA256, o.Workers); err != nil {
		return stats, err
	}

	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	stream, err := transferv1.NewTransferClient(conn).Send(ctx)
	if err != nil {
		return stats, fromStatus(err)
	}
	if err := stream.Send(&transferv1.SendRequest{Msg: &transferv1.SendRequest_Header{Header: h}}); err != nil {
		return stats, streamErr(stream, err)
	}
	resp, err := stream.Recv()
	if err != nil {
		return stats, fromStatus(err)
	}
	if resp.GetHave() == nil {
		return stats, fmt.Errorf("%w: expected have", ErrProtocol)
	}
	held := newChunkSet(h)
	held.covered(resp.GetHave().GetRanges())
	var total int64
	for f, fh := range h.GetFiles() {
		total += fh.GetSize()
		for i := range chunkCount(fh.GetSize(), h.GetChunkSize()) {
			if held.has(uint32(f), i) {
				stats.Resumed += int64(chunkLen(fh.GetSize(), h.GetChunkSize(), i))
			}
		}
	}

	if err := sendChunks(ctx, stream, h, files, held, o, total, &stats); err != nil {
		return stats, err
	}
	if err := stream.Send(&transferv1.SendRequest{Msg: &transferv1.SendRequest_Commit{Commit: &transferv1.Commit{}}}); err != nil {
		return stats, streamErr(stream, err)
	}
	if err := stream.CloseSend(); err != nil {
		return stats, streamErr(stream, err)
	}
	resp, err = stream.Recv()
	if err != nil {
		return stats, fromStatus(err)
	}
	if resp.GetDone() == nil {
		return stats, fmt.Errorf("%w: expected done", ErrProtocol)
	}
	stats.Written = resp.GetDone().GetWrittenBytes()
	return stats, nil
}

// streamErr turns the error of a failed stream.Send into the receiver's
// status: Send only says io.EOF when the receiver ended the stream.
func streamErr(stream transferv1.Transfer_SendClient, err error) error {
	if errors.Is(err, io.EOF) {
		for {
			if _, rerr := stream.Recv(); rerr != nil {
				err = rerr
				break
			}
		}
		if errors.Is(err, io.EOF) {
			return fmt.Errorf("%w: receiver closed the stream", ErrIncomplete)
		}
	}
	return fromStatus(err)
}

// digests fills in every file's SHA-256, hashing the files not in known, up to
// workers at a time.
func digests(ctx context.Context, h *transferv1.Header, files []*os.File, known map[string]string, workers int) error {
	errs := make([]error, len(files))
	idx := make(chan int)
	var wg sync.WaitGroup
	for range min(workers, max(len(files), 1)) {
		wg.Go(func() {
			for i := range idx {
				fh := h.GetFiles()[i]
				if hx, ok := known[fh.GetName()]; ok {
					d, err := hex.DecodeString(hx)
					if err != nil || len(d) != sha256.Size {
						errs[i] = fmt.Errorf("%w: file %q: bad sha256 %q", ErrBadHeader, fh.GetName(), hx)
					}
					fh.Sha256 = d
					continue
				}
				sum := sha256.New()
				r := &ctxReader{ctx: ctx, r: io.NewSectionReader(files[i], 0, fh.GetSize())}
				if _, err := io.Copy(sum, r); err != nil {
					errs[i] = fmt.Errorf("hash %q: %w", fh.GetName(), err)
				}
				fh.Sha256 = sum.Sum(nil)
			}
		})
	}
	for i := range files {
		idx <- i
	}
	close(idx)
	wg.Wait()
	return errors.Join(errs...)
}

type ctxReader struct {
	ctx context.Context
	r   io.Reader
}

func (c *ctxReader) Read(p []byte) (int, error) {
	if err := c.ctx.Err(); err != nil {
		return 0, err
	}
	return c.r.Read(p)
}

type readJob struct {
	file uint32
	off  int64
	buf  *[]byte
	raw  []byte
}

// sendChunks runs the sending pipeline: one reader, o.Workers compressors, and
// this goroutine handing chunks to gRPC (a stream's Send is not safe for
// concurrent use). Channels of o.InFlight chunks bound the memory; gRPC's flow
// control pushes back from the receiver.
func sendChunks(ctx context.Context, stream transferv1.Transfer_SendClient, h *transferv1.Header, files []*os.File, held *chunkSet, o SendOptions, total int64, stats *Stats) error {
	enc, err := zstd.NewWriter(nil, zstd.WithEncoderLevel(o.Level), zstd.WithEncoderConcurrency(o.Workers),
		zstd.WithEncoderCRC(false)) // the chunk's CRC-32C covers it
	if err != nil {
		return err
	}
	defer enc.Close()
	ctx, cancel := context.WithCancelCause(ctx)
	defer cancel(nil)
	pool := sync.Pool{New: func() any { b := make([]byte, h.GetChunkSize()); return &b }}
	jobs := make(chan readJob, o.InFlight)
	out := make(chan *transferv1.Chunk, o.InFlight)

	var wg sync.WaitGroup
	wg.Go(func() {
		defer close(jobs)
		cs := h.GetChunkSize()
		for f, fh := range h.GetFiles() {
			for i := range chunkCount(fh.GetSize(), cs) {
				if held.has(uint32(f), i) {
					continue
				}
				off := i * int64(cs)
				n := chunkLen(fh.GetSize(), cs, i)
				// A short chunk (a small file, a file's tail) gets a buffer of
				// its size: clearing a pooled chunk-sized one costs more than
				// sending the few bytes.
				var buf *[]byte
				if n < int(cs)/2 {
					b := make([]byte, n)
					buf = &b
				} else {
					buf = pool.Get().(*[]byte)
				}
				raw := (*buf)[:n]
				if _, err := files[f].ReadAt(raw, off); err != nil {
					cancel(fmt.Errorf("read %q at offset %d: %w", fh.GetName(), off, err))
					return
				}
				select {
				case jobs <- readJob{file: uint32(f), off: off, buf: buf, raw: raw}:
				case <-ctx.Done():
					return
				}
			}
		}
	})
	var workers sync.WaitGroup
	for range o.Workers {
		workers.Go(func() {
			for j := range jobs {
				if ctx.Err() != nil {
					continue // drain
				}
				c := encodeChunk(enc, j, h, o)
				if c.GetEncoding() == transferv1.Encoding_ENCODING_ZSTD && cap(*j.buf) == int(h.GetChunkSize()) {
					pool.Put(j.buf) // raw chunks keep their buffer: gRPC owns it now
				}
				select {
				case out <- c:
				case <-ctx.Done():
				}
			}
		})
	}
	go func() {
		workers.Wait()
		close(out)
	}()

	p := Progress{TotalBytes: total, ResumedBytes: stats.Resumed}
	for c := range out {
		if ctx.Err() != nil {
			continue // drain so the workers finish
		}
		if err := stream.Send(&transferv1.SendRequest{Msg: &transferv1.SendRequest_Chunk{Chunk: c}}); err != nil {
			cancel(streamErr(stream, err))
			continue
		}
		stats.Chunks++
		stats.RawBytes += int64(c.GetRawLength())
		stats.WireBytes += int64(len(c.GetData()))
		if o.Progress != nil {
			p.RawBytes, p.WireBytes = stats.RawBytes, stats.WireBytes
			o.Progress(p)
		}
	}
	wg.Wait()
	if err := context.Cause(ctx); err != nil {
		return err
	}
	return nil
}

// encodeChunk checksums and, when that makes it smaller, compresses a chunk.
func encodeChunk(enc *zstd.Encoder, j readJob, h *transferv1.Header, o SendOptions) *transferv1.Chunk {
	c := &transferv1.Chunk{
		File:      j.file,
		Offset:    j.off,
		RawLength: uint32(len(j.raw)),
		Crc32C:    crc32.Checksum(j.raw, castagnoli),
		Encoding:  transferv1.Encoding_ENCODING_RAW,
		Data:      j.raw,
	}
	if o.corrupt != nil {
		o.corrupt(h.GetFiles()[j.file].GetName(), j.off, j.raw)
	}
	if o.NoCompression {
		return c
	}
	// Compressing must save at least 1/32 to be worth the receiver's decode.
	limit := len(j.raw) - len(j.raw)/32
	z := enc.EncodeAll(j.raw, make([]byte, 0, limit))
	if len(z) < limit {
		c.Encoding, c.Data = transferv1.Encoding_ENCODING_ZSTD, z
	}
	return c
}
