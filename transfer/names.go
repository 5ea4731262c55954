package transfer

import (
	"crypto/sha256"
	"fmt"
	"strings"

	transferv1 "github.com/migratehq/migrate/api/transfer/v1"
)

// Limits of a header. A checkpoint has tens to hundreds of files; the cap keeps
// a hostile header from making the receiver open an unbounded number of files.
const (
	DefaultChunkSize = 1 << 20
	MinChunkSize     = 64 << 10
	// MaxChunkSize keeps a chunk message, even uncompressed, under gRPC's default
	// 4 MiB receive limit.
	MaxChunkSize = 2 << 20
	MaxFiles     = 4096
	maxIDLen     = 128
	maxNameLen   = 1024
	maxElemLen   = 255
	// maxFileSize keeps chunk indices within the journal's 32 bits at the
	// smallest chunk size.
	maxFileSize = int64(MinChunkSize) << 32
)

// ValidateID reports whether id can name a transfer: 1 to 128 characters of
// [A-Za-z0-9._-], starting with a letter or digit (so never "." or "..").
func ValidateID(id string) error {
	if id == "" || len(id) > maxIDLen {
		return fmt.Errorf("%w: %q", ErrBadTransferID, id)
	}
	for i := 0; i < len(id); i++ {
		c := id[i]
		alnum := c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9'
		if !alnum && (i == 0 || c != '.' && c != '_' && c != '-') {
			return fmt.Errorf("%w: %q", ErrBadTransferID, id)
		}
	}
	return nil
}

// ValidateName reports whether name is an acceptable relative file name: not
// absolute, no empty, "." or ".." elements, no NUL, bounded length.
func ValidateName(name string) error {
	if name == "" || len(name) > maxNameLen || strings.HasPrefix(name, "/") || strings.ContainsRune(name, 0) {
		return fmt.Errorf("%w: %q", ErrBadName, name)
	}
	for _, e := range strings.Split(name, "/") {
		if e == "" || e == "." || e == ".." || len(e) > maxElemLen {
			return fmt.Errorf("%w: %q", ErrBadName, name)
		}
	}
	return nil
}

// validateNames checks every name and that the set is consistent: no name twice,
// and no name that is also a directory of another ("a" and "a/b").
func validateNames(names []string) error {
	set := make(map[string]bool, len(names))
	for _, n := range names {
		if err := ValidateName(n); err != nil {
			return err
		}
		if set[n] {
			return fmt.Errorf("%w: %q listed twice", ErrBadName, n)
		}
		set[n] = true
	}
	for _, n := range names {
		for i := strings.IndexByte(n, '/'); i >= 0; i = next(n, i) {
			if set[n[:i]] {
				return fmt.Errorf("%w: %q is both a file and the directory of %q", ErrBadName, n[:i], n)
			}
		}
	}
	return nil
}

func next(s string, i int) int {
	j := strings.IndexByte(s[i+1:], '/')
	if j < 0 {
		return -1
	}
	return i + 1 + j
}

// validateHeader checks everything a receiver needs of a header before it
// touches the disk.
func validateHeader(h *transferv1.Header) error {
	if err := ValidateID(h.GetTransferId()); err != nil {
		return err
	}
	cs := h.GetChunkSize()
	if cs < MinChunkSize || cs > MaxChunkSize {
		return fmt.Errorf("%w: chunk size %d not in [%d, %d]", ErrBadHeader, cs, MinChunkSize, MaxChunkSize)
	}
	files := h.GetFiles()
	if len(files) > MaxFiles {
		return fmt.Errorf("%w: %d files, at most %d", ErrBadHeader, len(files), MaxFiles)
	}
	names := make([]string, len(files))
	for i, f := range files {
		names[i] = f.GetName()
		if f.GetSize() < 0 || f.GetSize() > maxFileSize {
			return fmt.Errorf("%w: file %q: size %d", ErrBadHeader, f.GetName(), f.GetSize())
		}
		if len(f.GetSha256()) != sha256.Size {
			return fmt.Errorf("%w: file %q: digest of %d bytes", ErrBadHeader, f.GetName(), len(f.GetSha256()))
		}
	}
	return validateNames(names)
}

// chunkCount is the number of chunks of a file of size bytes.
func chunkCount(size int64, chunkSize uint32) int64 {
	return (size + int64(chunkSize) - 1) / int64(chunkSize)
}

// chunkLen is the raw length of chunk idx of a file of size bytes.
func chunkLen(size int64, chunkSize uint32, idx int64) int {
	off := idx * int64(chunkSize)
	return int(min(int64(chunkSize), size-off))
}
