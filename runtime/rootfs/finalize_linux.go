package rootfs

import (
	"errors"
	"fmt"
	"os"

	specs "github.com/opencontainers/runtime-spec/specs-go"
	"golang.org/x/sys/unix"
)

// Finalize runs after Pivot, inside the container root: it makes /dev
// read-only if its mount asked for it (delayed so devices could be created),
// applies linux.readonlyPaths and linux.maskedPaths, makes the root
// read-only for root.readonly, and finally sets the root's propagation for
// shared/slave linux.rootfsPropagation values.
//
// Call WriteSysctls and BindConsole before Finalize: /proc/sys is usually a
// read-only path.
func Finalize(spec *specs.Spec) error {
	r, err := openRoot("/")
	if err != nil {
		return fmt.Errorf("finalize rootfs: %w", err)
	}
	defer r.close()
	if err := devReadonly(r, spec); err != nil {
		return fmt.Errorf("finalize rootfs: %w", err)
	}
	if spec.Linux != nil {
		for _, p := range spec.Linux.ReadonlyPaths {
			if err := readonlyPath(r, p); err != nil {
				return fmt.Errorf("finalize rootfs: readonly path %s: %w", p, err)
			}
		}
		if err := maskPaths(r, spec.Linux.MaskedPaths); err != nil {
			return fmt.Errorf("finalize rootfs: %w", err)
		}
	}
	if spec.Root != nil && spec.Root.Readonly {
		if err := remount("/", unix.MS_RDONLY, 0); err != nil {
			return fmt.Errorf("finalize rootfs: read-only root: %w", err)
		}
	}
	if spec.Linux != nil {
		prop, err := parseRootfsPropagation(spec.Linux.RootfsPropagation)
		if err != nil {
			return fmt.Errorf("finalize rootfs: %w", err)
		}
		// Done after the pivot so that it applies to the container's "/",
		// not to a host mount. Private was already applied by Prepare.
		if prop != 0 && prop&unix.MS_PRIVATE == 0 {
			if err := unix.Mount("", "/", "", prop, ""); err != nil {
				return fmt.Errorf("finalize rootfs: set / propagation %#x: %w", prop, err)
			}
		}
	}
	return nil
}

func devReadonly(r *root, spec *specs.Spec) error {
	for _, m := range spec.Mounts {
		if m.Destination != "/dev" {
			continue
		}
		o, err := parseMountOptions(m.Type, m.Options)
		if err != nil || o.isBind() || o.flags&unix.MS_RDONLY == 0 {
			return err
		}
		return remountPath(r, "/dev", unix.MS_RDONLY)
	}
	return nil
}

// remountPath applies per-mount flags to the mount at p.
func remountPath(r *root, p string, set uintptr) error {
	f, err := r.open(p)
	if err != nil {
		return err
	}
	defer f.Close()
	target, err := r.target(f, p)
	if err != nil {
		return err
	}
	return remount(target, set, 0)
}

// readonlyPath binds p onto itself and remounts the bind read-only, keeping
// its nosuid/nodev/noexec and atime flags. Missing paths are ignored.
func readonlyPath(r *root, p string) error {
	f, err := r.open(p)
	if errors.Is(err, os.ErrNotExist) {
		return nil
	} else if err != nil {
		return err
	}
	target, err := r.target(f, p)
	if err == nil {
		err = unix.Mount(target, target, "", unix.MS_BIND|unix.MS_REC, "")
	}
	_ = f.Close()
	if err != nil {
		return fmt.Errorf("bind onto itself: %w", err)
	}
	return remountPath(r, p, unix.MS_RDONLY)
}

// maskPaths hides files behind /dev/null and directories behind an empty
// read-only tmpfs. Missing paths are ignored.
func maskPaths(r *root, paths []string) error {
	var null *os.File
	defer func() {
		if null != nil {
			_ = null.Close()
		}
	}()
	for _, p := range paths {
		f, err := r.open(p)
		if errors.Is(err, os.ErrNotExist) {
			continue
		} else if err != nil {
			return fmt.Errorf("masked path %s: %w", p, err)
		}
		err = maskPath(r, f, p, &null)
		_ = f.Close()
		if err != nil {
			return fmt.Errorf("masked path %s: %w", p, err)
		}
	}
	return nil
}

func maskPath(r *root, f *os.File, p string, null **os.File) error {
	var st unix.Stat_t
	if err := unix.Fstat(int(f.Fd()), &st); err != nil {
		return fmt.Errorf("stat: %w", err)
	}
	target, err := r.target(f, p)
	if err != nil {
		return err
	}
	if st.Mode&unix.S_IFMT == unix.S_IFDIR {
		return unix.Mount("tmpfs", target, "tmpfs", unix.MS_RDONLY|unix.MS_NOSUID|unix.MS_NODEV|unix.MS_NOEXEC, "")
	}
	if *null == nil {
		n, err := openDevNull(r)
		if err != nil {
			return err
		}
		*null = n
	}
	src, err := r.target(*null, "/dev/null")
	if err != nil {
		return err
	}
	return unix.Mount(src, target, "", unix.MS_BIND, "")
}

// openDevNull opens the container's /dev/null and checks it is the null
// device: masking with a regular file the image planted there would expose
// the masked path's replacement to the container (CVE-2025-31133).
func openDevNull(r *root) (*os.File, error) {
	f, err := r.open("/dev/null")
	if err != nil {
		return nil, err
	}
	var st unix.Stat_t
	if err := unix.Fstat(int(f.Fd()), &st); err != nil {
		_ = f.Close()
		return nil, fmt.Errorf("stat /dev/null: %w", err)
	}
	if st.Mode&unix.S_IFMT != unix.S_IFCHR || st.Rdev != unix.Mkdev(1, 3) {
		_ = f.Close()
		return nil, fmt.Errorf("%w: /dev/null is not the 1:3 character device", ErrUnsafeMount)
	}
	return f, nil
}

// BindConsole binds the pty slave at slavePath (a path in the container,
// e.g. /dev/pts/0) onto /dev/console, creating the mount point if missing.
// Call it after Pivot. Both ends are resolved inside the root and checked,
// so an image cannot turn /dev/console into a link to somewhere else
// (CVE-2025-52565).
func BindConsole(slavePath string) error {
	r, err := openRoot("/")
	if err != nil {
		return fmt.Errorf("bind console: %w", err)
	}
	defer r.close()
	src, err := r.open(slavePath)
	if err != nil {
		return fmt.Errorf("bind console: %w", err)
	}
	defer src.Close()
	var st unix.Stat_t
	if err := unix.Fstat(int(src.Fd()), &st); err != nil {
		return fmt.Errorf("bind console: stat %s: %w", slavePath, err)
	}
	if st.Mode&unix.S_IFMT != unix.S_IFCHR {
		return fmt.Errorf("bind console: %w: %s is not a character device", ErrUnsafeMount, slavePath)
	}
	dst, err := r.ensure("/dev/console", false)
	if err != nil {
		return fmt.Errorf("bind console: %w", err)
	}
	defer dst.Close()
	if err := unix.Fstat(int(dst.Fd()), &st); err != nil {
		return fmt.Errorf("bind console: stat /dev/console: %w", err)
	}
	if t := st.Mode & unix.S_IFMT; t != unix.S_IFREG && t != unix.S_IFCHR {
		return fmt.Errorf("bind console: %w: /dev/console is neither a file nor a character device", ErrUnsafeMount)
	}
	from, err := r.target(src, slavePath)
	if err != nil {
		return fmt.Errorf("bind console: %w", err)
	}
	to, err := r.target(dst, "/dev/console")
	if err != nil {
		return fmt.Errorf("bind console: %w", err)
	}
	if err := unix.Mount(from, to, "", unix.MS_BIND, ""); err != nil {
		return fmt.Errorf("bind console %s: %w", slavePath, err)
	}
	return nil
}
