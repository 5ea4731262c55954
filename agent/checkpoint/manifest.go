package checkpoint

import (
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"time"

	specs "github.com/opencontainers/runtime-spec/specs-go"
)

// FormatVersion is the manifest format this code writes and reads.
const FormatVersion = 1

// ManifestName is the manifest's file name inside a checkpoint directory.
const ManifestName = "manifest.json"

// Errors callers branch on.
var (
	ErrCorrupt      = errors.New("checkpoint is corrupt")
	ErrNewerFormat  = errors.New("checkpoint format is newer than this agent")
	ErrNotCheckable = errors.New("container cannot be checkpointed")
)

// File is one file of the checkpoint, relative to its directory.
type File struct {
	Path   string `json:"path"`
	Size   int64  `json:"size"`
	SHA256 string `json:"sha256"`
}

// Rootfs describes the container's root filesystem in the checkpoint.
type Rootfs struct {
	// BaseDigest identifies the read-only base when the root is layered;
	// Diff then names the file holding the writable changes.
	BaseDigest string `json:"baseDigest,omitempty"`
	Diff       string `json:"diff,omitempty"`
	// Path is the host path the container's root was at when dumped.
	Path string `json:"path"`
}

// Network is a network namespace external to the checkpoint.
type Network struct {
	// NetNSKey is the key CRIU's images name the namespace by; a restore
	// passes the new namespace under it (--inherit-fd).
	NetNSKey string `json:"netnsKey"`
	// Address is the container's address on the nodes' shared network
	// ("10.88.0.10/24"), from its spec's AddressAnnotation; "" when the
	// namespace was the user's own.
	Address string `json:"address,omitempty"`
	// Loopback is set when the namespace was the container's own and held
	// only its loopback: a restore makes a fresh one.
	Loopback *Loopback `json:"loopback,omitempty"`
}

// Tmpfs is one of the container's tmpfs mounts whose content the checkpoint
// carries itself, as a tar, instead of CRIU's images.
type Tmpfs struct {
	// Mountpoint is where it is in the container.
	Mountpoint string `json:"mountpoint"`
	// Key is the name CRIU's images give it as an external mount.
	Key string `json:"key"`
	// Options are its file system's options (size=, mode=...) but rw/ro.
	Options string `json:"options,omitempty"`
	// ReadOnly: the file system itself was read-only.
	ReadOnly bool `json:"readOnly,omitempty"`
	// File is the tar of its content, a checkpoint file.
	File string `json:"file"`
}

// Loopback is the state of a loopback-only namespace's loopback.
type Loopback struct {
	Up bool `json:"up"`
}

// AddressAnnotation is the spec annotation the agent records a container's
// address in.
const AddressAnnotation = "org.migratehq.network.address"

// RuntimeState is what the runtime knew of the container at dump time.
type RuntimeState struct {
	InitPid    int    `json:"initPid"`
	CgroupPath string `json:"cgroupPath"`
	Bundle     string `json:"bundle"`
	Status     string `json:"status"`
}

// Manifest describes a checkpoint.
type Manifest struct {
	FormatVersion int          `json:"formatVersion"`
	ID            string       `json:"id"`
	ContainerID   string       `json:"containerId"`
	Created       time.Time    `json:"created"`
	Spec          *specs.Spec  `json:"spec"`
	Runtime       RuntimeState `json:"runtime"`
	CRIUVersion   string       `json:"criuVersion"`
	Kernel        string       `json:"kernel"`
	// Stdio names the external objects the init's fds 0-2 were ("pipe:[N]"),
	// so a restore can hand in replacements; "" for an fd CRIU dumped itself.
	Stdio        [3]string     `json:"stdio"`
	LeaveRunning bool          `json:"leaveRunning"`
	Downtime     time.Duration `json:"downtimeNs"`
	Rootfs       Rootfs        `json:"rootfs"`
	// Network is set when CRIU left the container's network namespace out of
	// the images: a restore hands one in (given by path at dump) or makes a
	// fresh one (Network.Loopback).
	Network *Network `json:"network,omitempty"`
	// Tmpfs are the tmpfs mounts the checkpoint carries outside CRIU's images.
	Tmpfs []Tmpfs `json:"tmpfs,omitempty"`
	// NetworkInImages says why the container's own network namespace is in
	// CRIU's images instead of being made anew at restore.
	NetworkInImages string `json:"networkInImages,omitempty"`
	Files           []File `json:"files"`

	// LazyPages: the memory pages are not in the images; a restore needs the
	// dumping CRIU's page server (post-copy move).
	LazyPages bool `json:"lazyPages,omitempty"`
}

// hashFile returns the size and sha256 of path.
func hashFile(path string) (int64, string, error) {
	f, err := os.Open(path)
	if err != nil {
		return 0, "", err
	}
	defer f.Close()
	h := sha256.New()
	n, err := io.Copy(h, f)
	if err != nil {
		return 0, "", err
	}
	return n, hex.EncodeToString(h.Sum(nil)), nil
}

// listFiles records every regular file under dir except the manifest.
func listFiles(dir string) ([]File, error) {
	paths, err := walkFiles(dir)
	if err != nil {
		return nil, err
	}
	out := make([]File, 0, len(paths))
	for _, rel := range paths {
		size, sum, err := hashFile(filepath.Join(dir, filepath.FromSlash(rel)))
		if err != nil {
			return nil, err
		}
		out = append(out, File{Path: rel, Size: size, SHA256: sum})
	}
	return out, nil
}

// walkFiles lists the regular files under dir except the manifest, sorted,
// slash-separated and relative; anything else (symlink, device) is an error.
func walkFiles(dir string) ([]string, error) {
	var out []string
	err := filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(dir, p)
		if d.IsDir() || rel == ManifestName {
			return nil
		}
		if !d.Type().IsRegular() {
			return fmt.Errorf("%s: not a regular file", rel)
		}
		out = append(out, filepath.ToSlash(rel))
		return nil
	})
	sort.Strings(out)
	return out, err
}

// Read parses dir's manifest without checking the files.
func Read(dir string) (*Manifest, error) {
	data, err := os.ReadFile(filepath.Join(dir, ManifestName))
	if err != nil {
		if errors.Is(err, os.ErrNotExist) {
			return nil, fmt.Errorf("%s: no %s: %w", dir, ManifestName, ErrCorrupt)
		}
		return nil, err
	}
	var m Manifest
	if err := json.Unmarshal(data, &m); err != nil {
		return nil, fmt.Errorf("%s: %w: manifest: %v", dir, ErrCorrupt, err)
	}
	if m.FormatVersion > FormatVersion {
		return nil, fmt.Errorf("%s: format version %d, this agent reads up to %d: %w", dir, m.FormatVersion, FormatVersion, ErrNewerFormat)
	}
	if m.FormatVersion < 1 || m.Spec == nil || m.Spec.Linux == nil || m.Spec.Process == nil {
		return nil, fmt.Errorf("%s: %w: manifest lacks version or spec", dir, ErrCorrupt)
	}
	return &m, nil
}

// Verify reads the manifest and checks that every listed file is present,
// inside the directory, of the listed size and checksum, and that nothing
// else is.
func Verify(dir string) (*Manifest, error) { return VerifyKnown(dir, nil) }

// VerifyKnown is Verify for a checkpoint whose files were checked against known
// digests (path -> hex SHA-256) on the way in, as a transfer receiver does: a
// listed file whose manifest digest is its known digest is checked for presence
// and size only, the others are hashed.
func VerifyKnown(dir string, known map[string]string) (*Manifest, error) {
	m, err := Read(dir)
	if err != nil {
		return nil, err
	}
	listed := map[string]bool{}
	for _, f := range m.Files {
		clean, err := verifyFile(dir, f, known[f.Path])
		if err != nil {
			return nil, err
		}
		listed[clean] = true
	}
	// Names only: every listed file was just hashed, unlisted ones need not be.
	present, err := walkFiles(dir)
	if err != nil {
		return nil, fmt.Errorf("%s: %w: %v", dir, ErrCorrupt, err)
	}
	for _, p := range present {
		if !listed[p] {
			return nil, fmt.Errorf("%s: %w: unlisted file %s", dir, ErrCorrupt, p)
		}
	}
	return m, nil
}

// VerifyFile checks one file of the checkpoint against the manifest: for a
// caller that needs that file before the full Verify (the rootfs diff).
func VerifyFile(dir string, m *Manifest, path string) error {
	for _, f := range m.Files {
		if f.Path == path {
			_, err := verifyFile(dir, f, "")
			return err
		}
	}
	return fmt.Errorf("%s: %w: %s is not in the manifest", dir, ErrCorrupt, path)
}

// verifyFile checks that f is inside dir and of its listed size and sha256,
// and returns its clean slash-separated path. A file whose listed sha256 is
// known (verified already) is not hashed again.
func verifyFile(dir string, f File, known string) (string, error) {
	clean := filepath.Clean(filepath.FromSlash(f.Path))
	if filepath.IsAbs(clean) || clean == ".." || strings.HasPrefix(clean, ".."+string(filepath.Separator)) {
		return "", fmt.Errorf("%s: %w: file %q escapes the checkpoint", dir, ErrCorrupt, f.Path)
	}
	var (
		size int64
		sum  string
		err  error
	)
	if known != "" && known == f.SHA256 {
		var fi os.FileInfo
		if fi, err = os.Lstat(filepath.Join(dir, clean)); err == nil && !fi.Mode().IsRegular() {
			err = fmt.Errorf("not a regular file")
		} else if err == nil {
			size, sum = fi.Size(), known
		}
	} else {
		size, sum, err = hashFile(filepath.Join(dir, clean))
	}
	switch {
	case err != nil:
		return "", fmt.Errorf("%s: %w: %s: %v", dir, ErrCorrupt, f.Path, err)
	case size != f.Size:
		return "", fmt.Errorf("%s: %w: %s is %d bytes, manifest says %d (truncated?)", dir, ErrCorrupt, f.Path, size, f.Size)
	case sum != f.SHA256:
		return "", fmt.Errorf("%s: %w: %s checksum mismatch", dir, ErrCorrupt, f.Path)
	}
	return filepath.ToSlash(clean), nil
}

// writeManifest writes dir's manifest, made durable if sync (a lazy dump's
// is worthless after a crash, its pages went with CRIU's page server).
func writeManifest(dir string, m *Manifest, sync bool) error {
	data, err := json.MarshalIndent(m, "", "  ")
	if err != nil {
		return err
	}
	f, err := os.OpenFile(filepath.Join(dir, ManifestName), os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
	if err != nil {
		return err
	}
	if _, err := f.Write(data); err != nil {
		f.Close()
		return err
	}
	if sync {
		if err := f.Sync(); err != nil {
			f.Close()
			return err
		}
	}
	return f.Close()
}
