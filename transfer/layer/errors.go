package layer

import (
	"errors"
	"fmt"
)

// Sentinel errors. Callers branch on them with errors.Is; every error
// returned for a stream entry is an *EntryError wrapping one of them (or a
// system error).
var (
	// ErrUnsafeEntry: an entry name or hard-link target is absolute,
	// contains "..", or resolves through a symlink or outside the upper
	// directory.
	ErrUnsafeEntry = errors.New("unsafe entry")
	// ErrDeviceNotAllowed: a device node in a diff applied without
	// ApplyOptions.AllowDevices.
	ErrDeviceNotAllowed = errors.New("device node not allowed")
	// ErrTruncated: the stream ended before its end-of-archive marker.
	ErrTruncated = errors.New("diff stream truncated")
	// ErrCorrupt: the stream is not a well-formed tar archive.
	ErrCorrupt = errors.New("diff stream corrupt")
	// ErrUnsupported: something this format cannot carry: an entry type
	// other than file, dir, symlink, hard link, device or fifo; a file name
	// that looks like a whiteout; an overlay upper that depends on its
	// lower layer (redirect_dir, metacopy); overlay-private xattrs in a
	// stream.
	ErrUnsupported = errors.New("unsupported")
)

// EntryError names the path (a tar entry name, or a path relative to the
// walked directory) that an operation failed on.
type EntryError struct {
	Name string
	Err  error
}

func (e *EntryError) Error() string { return fmt.Sprintf("entry %q: %v", e.Name, e.Err) }

func (e *EntryError) Unwrap() error { return e.Err }

func entryErr(name string, err error) error { return &EntryError{Name: name, Err: err} }
