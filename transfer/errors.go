package transfer

import (
	"context"
	"errors"
	"fmt"
	"strconv"

	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

// Errors callers branch on. Send returns them (wrapped) for failures the receiver
// reports as well as for its own.
var (
	// ErrBadTransferID: the transfer id is empty, too long or has characters
	// outside [A-Za-z0-9._-].
	ErrBadTransferID = errors.New("invalid transfer id")
	// ErrBadName: a file name is absolute, has an empty, "." or ".." element, is
	// listed twice, or is also the directory of another listed file.
	ErrBadName = errors.New("invalid file name")
	// ErrBadHeader: the header is malformed (chunk size, sizes, digests, count).
	ErrBadHeader = errors.New("invalid transfer header")
	// ErrProtocol: a message arrived that the protocol does not allow there, or a
	// chunk does not fit the header.
	ErrProtocol = errors.New("transfer protocol violation")
	// ErrChunkChecksum: a chunk's raw bytes do not match its CRC-32C, or it does
	// not decompress to its announced length. Returned inside a *ChunkError.
	ErrChunkChecksum = errors.New("chunk checksum mismatch")
	// ErrDigestMismatch: a received file's SHA-256 differs from the header.
	// Returned inside a *FileError; the receiver forgets the file's chunks.
	ErrDigestMismatch = errors.New("file digest mismatch")
	// ErrBusy: another Send of the same transfer id is in progress.
	ErrBusy = errors.New("transfer busy")
	// ErrHeaderMismatch: the transfer id is already complete with other files.
	ErrHeaderMismatch = errors.New("transfer id already complete with different files")
	// ErrIncomplete: the stream ended or the connection broke before every chunk
	// arrived. The received chunks are kept and the next Send with the same id
	// resumes.
	ErrIncomplete = errors.New("transfer incomplete")
)

// ChunkError is a failure at one chunk of one file.
type ChunkError struct {
	File   string
	Offset int64
	Err    error
}

func (e *ChunkError) Error() string {
	return fmt.Sprintf("file %q at offset %d: %v", e.File, e.Offset, e.Err)
}

func (e *ChunkError) Unwrap() error { return e.Err }

// FileError is a failure of one whole file.
type FileError struct {
	File string
	Err  error
}

func (e *FileError) Error() string { return fmt.Sprintf("file %q: %v", e.File, e.Err) }

func (e *FileError) Unwrap() error { return e.Err }

// errorDomain names this package's google.rpc.ErrorInfo details.
const errorDomain = "transfer.migrate"

// reasons maps sentinels to ErrorInfo reasons and gRPC codes for the API edge.
var reasons = []struct {
	err    error
	reason string
	code   codes.Code
}{
	{ErrBadTransferID, "BAD_TRANSFER_ID", codes.InvalidArgument},
	{ErrBadName, "BAD_NAME", codes.InvalidArgument},
	{ErrBadHeader, "BAD_HEADER", codes.InvalidArgument},
	{ErrProtocol, "PROTOCOL", codes.InvalidArgument},
	{ErrChunkChecksum, "CHUNK_CHECKSUM", codes.DataLoss},
	{ErrDigestMismatch, "DIGEST_MISMATCH", codes.DataLoss},
	{ErrBusy, "BUSY", codes.Aborted},
	{ErrHeaderMismatch, "HEADER_MISMATCH", codes.FailedPrecondition},
	{ErrIncomplete, "INCOMPLETE", codes.FailedPrecondition},
}

// toStatus converts a receiver error to a gRPC status carrying the sentinel's
// reason and, for chunk and file errors, the file and offset.
func toStatus(err error) error {
	if err == nil {
		return nil
	}
	if _, ok := status.FromError(err); ok {
		return err
	}
	code := codes.Internal
	switch {
	case errors.Is(err, context.Canceled):
		code = codes.Canceled
	case errors.Is(err, context.DeadlineExceeded):
		code = codes.DeadlineExceeded
	}
	info := &errdetails.ErrorInfo{Domain: errorDomain, Metadata: map[string]string{}}
	for _, r := range reasons {
		if errors.Is(err, r.err) {
			code, info.Reason = r.code, r.reason
			break
		}
	}
	var ce *ChunkError
	var fe *FileError
	switch {
	case errors.As(err, &ce):
		info.Metadata["file"] = ce.File
		info.Metadata["offset"] = strconv.FormatInt(ce.Offset, 10)
	case errors.As(err, &fe):
		info.Metadata["file"] = fe.File
	}
	st := status.New(code, err.Error())
	if info.Reason != "" {
		if d, derr := st.WithDetails(info); derr == nil {
			st = d
		}
	}
	return st.Err()
}

// remoteError is an error the receiver reported: its message, matching the
// sentinel named by its reason.
type remoteError struct {
	msg      string
	sentinel error
}

func (e *remoteError) Error() string { return "receiver: " + e.msg }

func (e *remoteError) Unwrap() error { return e.sentinel }

// fromStatus turns a status from the receiver back into the package's errors,
// so callers can use errors.Is and errors.As on what Send returns.
func fromStatus(err error) error {
	st, ok := status.FromError(err)
	if !ok {
		return err
	}
	switch st.Code() {
	case codes.Canceled:
		return fmt.Errorf("%w: %s", context.Canceled, st.Message())
	case codes.DeadlineExceeded:
		return fmt.Errorf("%w: %s", context.DeadlineExceeded, st.Message())
	case codes.Unavailable:
		// The connection broke: what arrived is kept, a new Send resumes.
		return fmt.Errorf("%w: %w", ErrIncomplete, err)
	}
	for _, d := range st.Details() {
		info, ok := d.(*errdetails.ErrorInfo)
		if !ok || info.GetDomain() != errorDomain {
			continue
		}
		for _, r := range reasons {
			if r.reason != info.GetReason() {
				continue
			}
			file, hasFile := info.GetMetadata()["file"]
			if !hasFile {
				return &remoteError{msg: st.Message(), sentinel: r.err}
			}
			// The message already names file and offset; keep only the cause.
			re := &remoteError{msg: r.err.Error(), sentinel: r.err}
			if off, ok := info.GetMetadata()["offset"]; ok {
				n, _ := strconv.ParseInt(off, 10, 64)
				return &ChunkError{File: file, Offset: n, Err: re}
			}
			return &FileError{File: file, Err: re}
		}
	}
	return err
}
