package rootfs

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"

	securejoin "github.com/cyphar/filepath-securejoin"
	pathrs "github.com/cyphar/filepath-securejoin/pathrs-lite"
	"golang.org/x/sys/unix"
)

// root is the container root every lookup is confined to. Before the pivot it
// is the host path of the rootfs; after it, "/".
type root struct {
	path   string   // absolute, clean
	dir    *os.File // O_PATH|O_DIRECTORY handle on path
	procfd bool     // /proc/self/fd/N is usable as a mount target
}

func openRoot(path string) (*root, error) {
	path = filepath.Clean(path)
	dir, err := os.OpenFile(path, unix.O_PATH|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
	if err != nil {
		return nil, fmt.Errorf("open root %s: %w", path, err)
	}
	var st unix.Statfs_t
	procfd := unix.Statfs("/proc/self/fd", &st) == nil && st.Type == unix.PROC_SUPER_MAGIC
	return &root{path: path, dir: dir, procfd: procfd}, nil
}

func (r *root) close() { _ = r.dir.Close() }

// open resolves unsafePath inside the root and returns an O_PATH handle.
func (r *root) open(unsafePath string) (*os.File, error) {
	f, err := pathrs.OpenatInRoot(r.dir, unsafePath)
	if err != nil {
		return nil, fmt.Errorf("open %s in %s: %w", unsafePath, r.path, err)
	}
	return f, nil
}

// resolve returns unsafePath with every symlink resolved inside the root, as
// a path relative to the root ("/x/y"). It is used for policy checks (is it
// under /proc?) and to create missing components of paths whose last
// existing part is a symlink.
func (r *root) resolve(unsafePath string) (string, error) {
	full, err := securejoin.SecureJoin(r.path, unsafePath)
	if err != nil {
		return "", fmt.Errorf("resolve %s in %s: %w", unsafePath, r.path, err)
	}
	rel, err := filepath.Rel(r.path, full)
	if err != nil || rel == ".." || strings.HasPrefix(rel, "../") {
		return "", fmt.Errorf("resolve %s in %s: %w: escapes the root", unsafePath, r.path, ErrUnsafeMount)
	}
	return filepath.Join("/", rel), nil
}

// ensure makes unsafePath exist inside the root, as a directory or an empty
// regular file, and returns an O_PATH handle to it. Nothing is created
// outside the root: creation goes through pathrs (openat2/RESOLVE_IN_ROOT or
// its emulation) and O_NOFOLLOW on the last component.
func (r *root) ensure(unsafePath string, dir bool) (*os.File, error) {
	if f, err := pathrs.OpenatInRoot(r.dir, unsafePath); err == nil {
		return f, nil
	} else if !errors.Is(err, os.ErrNotExist) {
		return nil, fmt.Errorf("open %s in %s: %w", unsafePath, r.path, err)
	}
	// Follow symlinks inside the root first, so that a dangling link such as
	// /etc -> /host-etc creates /host-etc inside the root.
	rel, err := r.resolve(unsafePath)
	if err != nil {
		return nil, err
	}
	if dir {
		f, err := pathrs.MkdirAllHandle(r.dir, rel, 0o755)
		if err != nil {
			return nil, fmt.Errorf("mkdir %s in %s: %w", unsafePath, r.path, err)
		}
		_ = f.Close()
	} else {
		parent, err := pathrs.MkdirAllHandle(r.dir, filepath.Dir(rel), 0o755)
		if err != nil {
			return nil, fmt.Errorf("mkdir %s in %s: %w", filepath.Dir(unsafePath), r.path, err)
		}
		fd, err := unix.Openat(int(parent.Fd()), filepath.Base(rel),
			unix.O_CREAT|unix.O_EXCL|unix.O_NOFOLLOW|unix.O_RDONLY|unix.O_CLOEXEC, 0o644)
		_ = parent.Close()
		if err != nil && !errors.Is(err, unix.EEXIST) {
			return nil, fmt.Errorf("create %s in %s: %w", unsafePath, r.path, err)
		}
		if err == nil {
			_ = unix.Close(fd)
		}
	}
	return r.open(rel)
}

// target returns the path to hand to mount(2) for handle f. With procfs it is
// /proc/self/fd/N: the kernel then mounts on exactly the inode we resolved,
// closing the window between resolution and mount (the symlink-exchange
// races of runc's 2019-2025 advisories). Before the pivot the magic link is
// also checked to point inside the root. Without procfs (after a pivot into
// a rootfs that has no /proc) it falls back to the securely joined path.
func (r *root) target(f *os.File, unsafePath string) (string, error) {
	if r.procfd {
		p := "/proc/self/fd/" + strconv.Itoa(int(f.Fd()))
		if r.path != "/" {
			link, err := os.Readlink(p)
			if err != nil {
				return "", fmt.Errorf("readlink %s: %w", p, err)
			}
			if link != r.path && !strings.HasPrefix(link, r.path+"/") {
				return "", fmt.Errorf("mount target %s resolved to %s: %w", unsafePath, link, ErrUnsafeMount)
			}
		}
		return p, nil
	}
	full, err := securejoin.SecureJoin(r.path, unsafePath)
	if err != nil {
		return "", fmt.Errorf("resolve %s in %s: %w", unsafePath, r.path, err)
	}
	return full, nil
}

// fdPath is /proc/self/fd/N of a host-side handle (a bind source).
func fdPath(f *os.File) string { return "/proc/self/fd/" + strconv.Itoa(int(f.Fd())) }

// Statfs f_flags bits (ST_* in statvfs.h); x/sys does not export them.
const (
	stRdonly     = 0x1
	stNosuid     = 0x2
	stNodev      = 0x4
	stNoexec     = 0x8
	stNoatime    = 0x400
	stNodiratime = 0x800
	stRelatime   = 0x1000
)

// currentMountFlags reads the per-mount flags of the mount at target.
func currentMountFlags(target string) (uintptr, error) {
	var st unix.Statfs_t
	if err := unix.Statfs(target, &st); err != nil {
		return 0, fmt.Errorf("statfs %s: %w", target, err)
	}
	var fl uintptr
	for bit, ms := range map[int64]uintptr{
		stRdonly: unix.MS_RDONLY, stNosuid: unix.MS_NOSUID, stNodev: unix.MS_NODEV,
		stNoexec: unix.MS_NOEXEC, stNodiratime: unix.MS_NODIRATIME,
	} {
		if st.Flags&bit != 0 {
			fl |= ms
		}
	}
	switch {
	case st.Flags&stNoatime != 0:
		fl |= unix.MS_NOATIME
	case st.Flags&stRelatime != 0:
		fl |= unix.MS_RELATIME
	default:
		fl |= unix.MS_STRICTATIME
	}
	return fl, nil
}

// remount changes the per-mount flags of the mount at target with
// MS_BIND|MS_REMOUNT. A bind remount resets every flag not given, so flags
// the spec says nothing about are carried over from the current mount: a
// bind of a nosuid source stays nosuid when "ro" is added, and in a user
// namespace the flags the kernel locked (ro, nosuid, nodev, noexec, atime)
// are kept instead of failing with EPERM.
func remount(target string, set, cleared uintptr) error {
	cur, err := currentMountFlags(target)
	if err != nil {
		return err
	}
	want := set & perMountFlags
	mentioned := set | cleared
	want |= cur & (perMountFlags &^ atimeModes) &^ mentioned
	if mentioned&atimeModes == 0 {
		want |= cur & atimeModes
	}
	if err := unix.Mount("", target, "", unix.MS_BIND|unix.MS_REMOUNT|want, ""); err != nil {
		if errors.Is(err, unix.EPERM) {
			return fmt.Errorf("remount %s (flags %#x): %w (a flag locked by the user namespace was cleared?)", target, want, err)
		}
		return fmt.Errorf("remount %s (flags %#x): %w", target, want, err)
	}
	return nil
}
