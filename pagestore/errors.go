package pagestore

import (
	"errors"
	"fmt"
)

// Errors callers branch on; returned wrapped with context.
var (
	// ErrInvalidName: a snapshot name is empty, longer than 128 bytes or has
	// characters outside [A-Za-z0-9._-] (or starts with '.' or '-').
	ErrInvalidName = errors.New("invalid snapshot name")
	// ErrNotFound: no snapshot of that name.
	ErrNotFound = errors.New("snapshot not found")
	// ErrExists: a snapshot of that name, or the destination directory of
	// Get (or its ".partial" sibling), already exists.
	ErrExists = errors.New("already exists")
	// ErrUnsupported: the source directory holds a file type other than a
	// regular file, a directory or a symlink.
	ErrUnsupported = errors.New("unsupported file type")
	// ErrBadManifest: a snapshot manifest cannot be decoded or breaks the
	// format's rules (bad path, chunk sizes that do not add up, ...).
	ErrBadManifest = errors.New("bad snapshot manifest")
	// ErrCorrupt: a chunk is missing, does not decompress, or its content does
	// not hash to its key. Returned inside a *CorruptError.
	ErrCorrupt = errors.New("corrupt chunk")
)

// CorruptError names the damaged chunk and where a snapshot uses it.
// errors.Is(err, ErrCorrupt) holds for it.
type CorruptError struct {
	Snapshot string // snapshot name
	File     string // path of the file inside the snapshot
	Offset   int64  // offset of the chunk in that file
	Chunk    string // chunk key (hex SHA-256)
	Reason   string // "missing", "decompress: ...", "hash mismatch", ...
}

func (e *CorruptError) Error() string {
	return fmt.Sprintf("snapshot %q file %q offset %d chunk %s: %s: %s",
		e.Snapshot, e.File, e.Offset, e.Chunk, ErrCorrupt, e.Reason)
}

// Is reports ErrCorrupt.
func (e *CorruptError) Is(target error) bool { return target == ErrCorrupt }
