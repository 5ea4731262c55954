package pagestore

import (
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io/fs"
	"path"
	"regexp"
	"strings"
	"time"
)

const manifestVersion = 1

// File types in a manifest.
const (
	typeFile    = "file"
	typeDir     = "dir"
	typeSymlink = "symlink"
)

// manifest is snapshots/<name>.json. Files come last so that List can skip
// them cheaply.
type manifest struct {
	Version int               `json:"version"`
	Name    string            `json:"name"`
	Created time.Time         `json:"created"`
	Meta    map[string]string `json:"meta,omitempty"`
	Stats   putStats          `json:"stats"`
	Files   []fileEntry       `json:"files"`
}

// putStats are measured by Put and kept in the manifest.
type putStats struct {
	LogicalBytes   int64 `json:"logicalBytes"`
	Chunks         int   `json:"chunks"`
	UniqueChunks   int   `json:"uniqueChunks"`
	NewChunks      int   `json:"newChunks"`
	NewStoredBytes int64 `json:"newStoredBytes"`
	ReusedBytes    int64 `json:"reusedBytes"` // logical bytes found in the store already
}

// fileEntry is one file of a snapshot. Chunk sizes are implied for page
// images (every chunk ChunkSize bytes but the last) and listed in Sizes for
// content-defined chunks, which keeps a manifest of a GiB page image small.
type fileEntry struct {
	Path      string  `json:"path"` // slash-separated, relative
	Type      string  `json:"type"`
	Mode      uint32  `json:"mode"` // permission bits
	Size      int64   `json:"size,omitempty"`
	Target    string  `json:"target,omitempty"`
	ChunkSize int     `json:"chunkSize,omitempty"`
	Sizes     []int64 `json:"sizes,omitempty"`
	// Keys holds the chunk keys as raw 32-byte digests, concatenated and
	// base64-encoded: 43 bytes a chunk against 67 for a list of hex
	// strings, which matters for the cost of an incremental snapshot.
	Keys string `json:"keys,omitempty"`
	// Chunks are the keys in hex, as in chunk paths (decoded from Keys).
	Chunks []string `json:"-"`
}

// chunkSizeAt is the raw size of the file's i-th chunk.
func (f *fileEntry) chunkSizeAt(i int) int64 {
	if f.ChunkSize > 0 {
		if i == len(f.Chunks)-1 {
			return f.Size - int64(i)*int64(f.ChunkSize)
		}
		return int64(f.ChunkSize)
	}
	return f.Sizes[i]
}

var nameRE = regexp.MustCompile(`^[A-Za-z0-9_][A-Za-z0-9._-]{0,127}$`)

func validateName(name string) error {
	if !nameRE.MatchString(name) {
		return fmt.Errorf("%w: %q", ErrInvalidName, name)
	}
	return nil
}

func validKey(k string) bool {
	if len(k) != 64 {
		return false
	}
	for i := 0; i < len(k); i++ {
		c := k[i]
		if (c < '0' || c > '9') && (c < 'a' || c > 'f') {
			return false
		}
	}
	return true
}

// validPath accepts a clean, relative, slash-separated path without "..".
func validPath(p string) bool {
	if p == "" || p == "." || strings.HasPrefix(p, "/") || path.Clean(p) != p {
		return false
	}
	for _, e := range strings.Split(p, "/") {
		if e == ".." || e == "." || e == "" {
			return false
		}
	}
	return !strings.ContainsRune(p, 0)
}

// validate checks what Get relies on: manifests are read back from disk and
// may have been tampered with, and Get must not write outside its
// destination nor trust sizes that do not add up.
func (m *manifest) validate(name string) error {
	bad := func(format string, a ...any) error {
		return fmt.Errorf("%w: snapshot %q: %s", ErrBadManifest, name, fmt.Sprintf(format, a...))
	}
	if m.Version != manifestVersion {
		return bad("version %d", m.Version)
	}
	if m.Name != name {
		return bad("names itself %q", m.Name)
	}
	seen := make(map[string]string, len(m.Files))
	for i := range m.Files {
		f := &m.Files[i]
		if !validPath(f.Path) {
			return bad("invalid path %q", f.Path)
		}
		if _, dup := seen[f.Path]; dup {
			return bad("path %q listed twice", f.Path)
		}
		// A parent must be a listed directory (or the root), so nothing is
		// ever created through a symlink.
		if dir := path.Dir(f.Path); dir != "." && seen[dir] != typeDir {
			return bad("parent of %q is not a directory listed before it", f.Path)
		}
		seen[f.Path] = f.Type
		if f.Mode&^uint32(fs.ModePerm|fs.ModeSetuid|fs.ModeSetgid|fs.ModeSticky) != 0 {
			return bad("mode %o of %q", f.Mode, f.Path)
		}
		switch f.Type {
		case typeDir:
		case typeSymlink:
			if f.Target == "" || strings.ContainsRune(f.Target, 0) {
				return bad("symlink %q has no target", f.Path)
			}
		case typeFile:
			if err := f.validateChunks(); err != nil {
				return bad("file %q: %v", f.Path, err)
			}
		default:
			return bad("file %q has type %q", f.Path, f.Type)
		}
	}
	return nil
}

func (f *fileEntry) validateChunks() error {
	if f.Size < 0 {
		return fmt.Errorf("size %d", f.Size)
	}
	for _, k := range f.Chunks {
		if !validKey(k) {
			return fmt.Errorf("chunk key %q", k)
		}
	}
	if f.ChunkSize > 0 {
		if len(f.Sizes) != 0 || f.ChunkSize > cdcMax {
			return fmt.Errorf("chunk size %d with listed sizes", f.ChunkSize)
		}
		want := (f.Size + int64(f.ChunkSize) - 1) / int64(f.ChunkSize)
		if int64(len(f.Chunks)) != want {
			return fmt.Errorf("%d chunks for %d bytes of %d", len(f.Chunks), f.Size, f.ChunkSize)
		}
		return nil
	}
	if len(f.Sizes) != len(f.Chunks) {
		return fmt.Errorf("%d sizes for %d chunks", len(f.Sizes), len(f.Chunks))
	}
	var sum int64
	for _, n := range f.Sizes {
		if n <= 0 || n > cdcMax {
			return fmt.Errorf("chunk size %d", n)
		}
		sum += n
	}
	if sum != f.Size {
		return fmt.Errorf("chunk sizes add up to %d, not %d", sum, f.Size)
	}
	return nil
}

func encodeManifest(m *manifest) ([]byte, error) {
	for i := range m.Files {
		f := &m.Files[i]
		raw := make([]byte, 0, 32*len(f.Chunks))
		for _, k := range f.Chunks {
			b, err := hex.DecodeString(k)
			if err != nil || len(b) != 32 {
				return nil, fmt.Errorf("chunk key %q", k)
			}
			raw = append(raw, b...)
		}
		f.Keys = base64.RawStdEncoding.EncodeToString(raw)
	}
	return json.Marshal(m)
}

func decodeManifest(name string, b []byte) (*manifest, error) {
	var m manifest
	if err := json.Unmarshal(b, &m); err != nil {
		return nil, fmt.Errorf("%w: snapshot %q: %v", ErrBadManifest, name, err)
	}
	for i := range m.Files {
		f := &m.Files[i]
		raw, err := base64.RawStdEncoding.DecodeString(f.Keys)
		if err != nil || len(raw)%32 != 0 {
			return nil, fmt.Errorf("%w: snapshot %q: file %q: bad keys", ErrBadManifest, name, f.Path)
		}
		f.Chunks = make([]string, len(raw)/32)
		for j := range f.Chunks {
			f.Chunks[j] = hex.EncodeToString(raw[32*j : 32*j+32])
		}
		f.Keys = ""
	}
	if err := m.validate(name); err != nil {
		return nil, err
	}
	return &m, nil
}

// keyHex is the chunk key of raw bytes as stored in manifests and paths.
func keyHex(sum [32]byte) string { return hex.EncodeToString(sum[:]) }
