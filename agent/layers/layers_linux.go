package layers

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"

	specs "github.com/opencontainers/runtime-spec/specs-go"
	"golang.org/x/sys/unix"

	"github.com/migratehq/migrate/runtime/spec"
	"github.com/migratehq/migrate/transfer/layer"
)

// ErrNoBase is returned when a diff's base is not on this node.
var ErrNoBase = errors.New("rootfs base not on this node")

const stateFile = "layer.json"

// Store holds the bases of one node.
type Store struct {
	Dir string // <data>/bases
}

// Layer is a container's mounted root filesystem.
type Layer struct {
	BaseDigest string `json:"baseDigest"`
	Base       string `json:"base"`
	Upper      string `json:"upper"`
	Work       string `json:"work"`
	Merged     string `json:"merged"`
}

func hexOf(digest string) (string, error) {
	h, ok := strings.CutPrefix(digest, "sha256:")
	if !ok || len(h) != 64 || strings.Trim(h, "0123456789abcdef") != "" {
		return "", fmt.Errorf("bad base digest %q", digest)
	}
	return h, nil
}

// BasePath is where the base with digest lives, whether present or not.
func (s *Store) BasePath(digest string) (string, error) {
	h, err := hexOf(digest)
	if err != nil {
		return "", err
	}
	return filepath.Join(s.Dir, h), nil
}

// Import makes rootfs a base: it is digested and, unless a base with that
// digest exists, copied into the store (atomically: copy, then rename).
func (s *Store) Import(rootfs string) (string, error) {
	digest, err := layer.Digest(rootfs)
	if err != nil {
		return "", fmt.Errorf("digest rootfs %s: %w", rootfs, err)
	}
	dst, err := s.BasePath(digest)
	if err != nil {
		return "", err
	}
	if _, err := os.Stat(dst); err == nil {
		return digest, nil
	}
	if err := os.MkdirAll(s.Dir, 0o700); err != nil {
		return "", err
	}
	tmp, err := os.MkdirTemp(s.Dir, ".import-")
	if err != nil {
		return "", err
	}
	defer os.RemoveAll(tmp)
	// cp keeps owners, modes, xattrs, hard links and device nodes, and
	// reflinks where the filesystem can.
	if out, err := exec.Command("cp", "-a", "--reflink=auto", rootfs, filepath.Join(tmp, "rootfs")).CombinedOutput(); err != nil {
		return "", fmt.Errorf("copy rootfs %s into the base store: %w: %s", rootfs, err, strings.TrimSpace(string(out)))
	}
	if err := os.Rename(filepath.Join(tmp, "rootfs"), dst); err != nil && !errors.Is(err, os.ErrExist) {
		if _, serr := os.Stat(dst); serr != nil {
			return "", err
		}
	}
	return digest, nil
}

// Mount creates dir/rootfs/{upper,work,merged}, fills upper from diff when
// given, and mounts the overlay. On error nothing is left mounted or made.
func (s *Store) Mount(dir, digest string, diff io.Reader) (_ *Layer, retErr error) {
	base, err := s.BasePath(digest)
	if err != nil {
		return nil, err
	}
	if _, err := os.Stat(base); err != nil {
		return nil, fmt.Errorf("%w: %s", ErrNoBase, digest)
	}
	root := filepath.Join(dir, "rootfs")
	l := &Layer{BaseDigest: digest, Base: base, Upper: filepath.Join(root, "upper"), Work: filepath.Join(root, "work"), Merged: filepath.Join(root, "merged")}
	defer func() {
		if retErr != nil {
			os.RemoveAll(root)
		}
	}()
	for _, d := range []string{l.Upper, l.Work, l.Merged} {
		if err := os.MkdirAll(d, 0o755); err != nil {
			return nil, err
		}
	}
	if diff != nil {
		if _, err := layer.ApplyDiff(diff, l.Upper, layer.ApplyOptions{}); err != nil {
			return nil, fmt.Errorf("apply rootfs diff: %w", err)
		}
	}
	// redirect_dir and metacopy stay off: a diff of the upper layer must be
	// self-contained (see docs/rootfs-layers.md).
	opts := fmt.Sprintf("lowerdir=%s,upperdir=%s,workdir=%s,redirect_dir=off,metacopy=off", l.Base, l.Upper, l.Work)
	if err := unix.Mount("overlay", l.Merged, "overlay", 0, opts); err != nil {
		return nil, fmt.Errorf("mount overlay on %s: %w", l.Merged, err)
	}
	data, err := json.Marshal(l)
	if err == nil {
		err = os.WriteFile(filepath.Join(dir, stateFile), data, 0o600)
	}
	if err != nil {
		unix.Unmount(l.Merged, unix.MNT_DETACH)
		return nil, err
	}
	return l, nil
}

// Load returns the layer mounted for dir, or os.ErrNotExist.
func Load(dir string) (*Layer, error) {
	data, err := os.ReadFile(filepath.Join(dir, stateFile))
	if err != nil {
		return nil, err
	}
	var l Layer
	if err := json.Unmarshal(data, &l); err != nil {
		return nil, fmt.Errorf("%s: %w", filepath.Join(dir, stateFile), err)
	}
	return &l, nil
}

// WriteDiff writes the container's changes to path.
func (l *Layer) WriteDiff(path string) error {
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
	if err != nil {
		return err
	}
	if _, err := layer.WriteDiff(l.Upper, f); err != nil {
		f.Close()
		return err
	}
	if err := f.Sync(); err != nil {
		f.Close()
		return err
	}
	return f.Close()
}

// Remove unmounts dir's layer (if any) and deletes its directories.
func Remove(dir string) error {
	merged := filepath.Join(dir, "rootfs", "merged")
	if err := unix.Unmount(merged, unix.MNT_DETACH); err != nil && !errors.Is(err, unix.EINVAL) && !errors.Is(err, unix.ENOENT) {
		return fmt.Errorf("unmount %s: %w", merged, err)
	}
	os.Remove(filepath.Join(dir, stateFile))
	return os.RemoveAll(filepath.Join(dir, "rootfs"))
}

// WriteBundle writes dir/bundle/config.json: s, the original bundle's
// config, with its root at merged and relative bind sources made absolute
// against the original bundle. It returns the new bundle's path.
func WriteBundle(dir, orig string, s *specs.Spec, merged string) (string, error) {
	s.Root.Path = merged
	for i, m := range s.Mounts {
		if m.Source != "" && !filepath.IsAbs(m.Source) && spec.IsBind(m) {
			s.Mounts[i].Source = filepath.Join(orig, m.Source)
		}
	}
	b := filepath.Join(dir, "bundle")
	if err := os.MkdirAll(b, 0o700); err != nil {
		return "", err
	}
	data, err := json.MarshalIndent(s, "", "\t")
	if err != nil {
		return "", err
	}
	if err := os.WriteFile(filepath.Join(b, spec.ConfigName), data, 0o600); err != nil {
		return "", err
	}
	return b, nil
}
