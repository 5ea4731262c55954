package rootfs

import (
	"errors"
	"fmt"
	"path/filepath"
	"strings"

	"github.com/moby/sys/mountinfo"
	"golang.org/x/sys/unix"
)

// Pivot makes rootfs the root of the mount namespace and chdirs to "/".
// With noPivot it moves the rootfs mount onto "/" and chroots instead, for
// roots pivot_root cannot leave (ramfs/initramfs).
func Pivot(rootfs string, noPivot bool) error {
	rootfs = filepath.Clean(rootfs)
	if noPivot {
		if err := msMoveRoot(rootfs); err != nil {
			return fmt.Errorf("move root to %s: %w", rootfs, err)
		}
		return nil
	}
	if err := pivotRoot(rootfs); err != nil {
		return fmt.Errorf("pivot_root to %s: %w", rootfs, err)
	}
	return nil
}

// pivotRoot uses pivot_root(".", "."): the old root ends up stacked on top
// of the new one at "/", from where it is detached. No directory for the old
// root is needed in the (possibly read-only) rootfs.
func pivotRoot(rootfs string) error {
	oldroot, err := unix.Open("/", unix.O_DIRECTORY|unix.O_RDONLY|unix.O_CLOEXEC, 0)
	if err != nil {
		return fmt.Errorf("open /: %w", err)
	}
	defer unix.Close(oldroot)
	newroot, err := unix.Open(rootfs, unix.O_DIRECTORY|unix.O_RDONLY|unix.O_CLOEXEC, 0)
	if err != nil {
		return fmt.Errorf("open %s: %w", rootfs, err)
	}
	defer unix.Close(newroot)
	if err := unix.Fchdir(newroot); err != nil {
		return fmt.Errorf("fchdir rootfs: %w", err)
	}
	if err := unix.PivotRoot(".", "."); err != nil {
		return fmt.Errorf("pivot_root: %w", err)
	}
	// The kernel leaves "." on the old root, but do not rely on it.
	if err := unix.Fchdir(oldroot); err != nil {
		return fmt.Errorf("fchdir old root: %w", err)
	}
	// rslave, not rprivate: our unmount must not propagate to the host, and
	// private would break host mounts still referenced here.
	if err := unix.Mount("", ".", "", unix.MS_SLAVE|unix.MS_REC, ""); err != nil {
		return fmt.Errorf("make old root rslave: %w", err)
	}
	if err := unix.Unmount(".", unix.MNT_DETACH); err != nil {
		return fmt.Errorf("detach old root: %w", err)
	}
	if err := unix.Chdir("/"); err != nil {
		return fmt.Errorf("chdir /: %w", err)
	}
	return nil
}

// msMoveRoot moves the rootfs onto "/" and chroots. The host's procfs and
// sysfs mounts stay reachable in the mount namespace under chroot, and the
// kernel lets a new procfs/sysfs be mounted when a full one is visible; so
// every full host proc/sys mount outside the rootfs is detached (or covered
// by an empty tmpfs when it cannot be), as runc does.
func msMoveRoot(rootfs string) error {
	infos, err := mountinfo.GetMounts(func(i *mountinfo.Info) (bool, bool) {
		skip := i.Root != "/" || (i.FSType != "proc" && i.FSType != "sysfs") ||
			i.Mountpoint == rootfs || strings.HasPrefix(i.Mountpoint, rootfs+"/")
		return skip, false
	})
	if err != nil {
		return fmt.Errorf("read mountinfo: %w", err)
	}
	for _, i := range infos {
		p := i.Mountpoint
		if err := unix.Mount("", p, "", unix.MS_SLAVE|unix.MS_REC, ""); err != nil {
			if errors.Is(err, unix.ENOENT) {
				continue // a parent was already detached
			}
			return fmt.Errorf("make %s rslave: %w", p, err)
		}
		if err := unix.Unmount(p, unix.MNT_DETACH); err != nil {
			if !errors.Is(err, unix.EINVAL) && !errors.Is(err, unix.EPERM) {
				return fmt.Errorf("detach %s: %w", p, err)
			}
			if err := unix.Mount("tmpfs", p, "tmpfs", unix.MS_RDONLY|unix.MS_NOSUID|unix.MS_NODEV|unix.MS_NOEXEC, ""); err != nil {
				return fmt.Errorf("cover %s: %w", p, err)
			}
		}
	}
	if err := unix.Chdir(rootfs); err != nil {
		return fmt.Errorf("chdir: %w", err)
	}
	if err := unix.Mount(rootfs, "/", "", unix.MS_MOVE, ""); err != nil {
		return fmt.Errorf("move mount: %w", err)
	}
	if err := unix.Chroot("."); err != nil {
		return fmt.Errorf("chroot: %w", err)
	}
	if err := unix.Chdir("/"); err != nil {
		return fmt.Errorf("chdir /: %w", err)
	}
	return nil
}
