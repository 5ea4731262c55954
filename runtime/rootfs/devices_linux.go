package rootfs

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"

	specs "github.com/opencontainers/runtime-spec/specs-go"
	"golang.org/x/sys/unix"
)

// defaultDevices are the OCI runtime spec's default devices, created in
// every container whose /dev is a fresh filesystem. A spec entry with the
// same path replaces the default.
var defaultDevices = []specs.LinuxDevice{
	{Path: "/dev/null", Type: "c", Major: 1, Minor: 3},
	{Path: "/dev/zero", Type: "c", Major: 1, Minor: 5},
	{Path: "/dev/full", Type: "c", Major: 1, Minor: 7},
	{Path: "/dev/random", Type: "c", Major: 1, Minor: 8},
	{Path: "/dev/urandom", Type: "c", Major: 1, Minor: 9},
	{Path: "/dev/tty", Type: "c", Major: 5, Minor: 0},
}

// defaultDeviceMode is used when a device has no fileMode.
const defaultDeviceMode = 0o666

// needsDevSetup reports whether /dev is a new filesystem (not a bind of the
// host's), the only case where devices are created, as in runc.
func needsDevSetup(spec *specs.Spec) bool {
	for _, m := range spec.Mounts {
		if m.Destination != "/dev" {
			continue
		}
		o, err := parseMountOptions(m.Type, m.Options)
		return err == nil && !o.isBind()
	}
	return false
}

// devices is the default list merged with spec.Linux.Devices.
func devices(spec *specs.Spec) []specs.LinuxDevice {
	var listed []specs.LinuxDevice
	if spec.Linux != nil {
		listed = spec.Linux.Devices
	}
	out := make([]specs.LinuxDevice, 0, len(defaultDevices)+len(listed))
	for _, d := range defaultDevices {
		overridden := false
		for _, l := range listed {
			if l.Path == d.Path {
				overridden = true
				break
			}
		}
		if !overridden {
			out = append(out, d)
		}
	}
	return append(out, listed...)
}

func (p *preparer) setupDev() error {
	// mknod modes must not be trimmed by the init's umask.
	old := unix.Umask(0)
	defer unix.Umask(old)
	for _, d := range devices(p.spec) {
		if err := p.createDevice(d); err != nil {
			return fmt.Errorf("device %s: %w", d.Path, err)
		}
	}
	dev, err := p.root.open("/dev")
	if err != nil {
		return err
	}
	defer dev.Close()
	// /dev/ptmx must be the devpts instance's ptmx so that ptys opened in
	// the container live in its own devpts.
	if err := unix.Unlinkat(int(dev.Fd()), "ptmx", 0); err != nil && !errors.Is(err, unix.ENOENT) {
		return fmt.Errorf("remove /dev/ptmx: %w", err)
	}
	if err := unix.Symlinkat("pts/ptmx", int(dev.Fd()), "ptmx"); err != nil {
		return fmt.Errorf("symlink /dev/ptmx: %w", err)
	}
	links := [][2]string{
		{"/proc/self/fd", "fd"},
		{"/proc/self/fd/0", "stdin"},
		{"/proc/self/fd/1", "stdout"},
		{"/proc/self/fd/2", "stderr"},
	}
	// kcore is optional (CONFIG_PROC_KCORE); link it only if the kernel has it.
	if _, err := os.Lstat("/proc/kcore"); err == nil {
		links = append(links, [2]string{"/proc/kcore", "core"})
	}
	for _, l := range links {
		if err := unix.Symlinkat(l[0], int(dev.Fd()), l[1]); err != nil && !errors.Is(err, unix.EEXIST) {
			return fmt.Errorf("symlink /dev/%s: %w", l[1], err)
		}
	}
	return nil
}

func deviceTypeBits(t string) uint32 {
	switch t {
	case "b":
		return unix.S_IFBLK
	case "p":
		return unix.S_IFIFO
	default: // "c", "u"
		return unix.S_IFCHR
	}
}

func (p *preparer) createDevice(d specs.LinuxDevice) error {
	rel, err := p.root.resolve(d.Path)
	if err != nil {
		return err
	}
	dir, err := p.root.ensure(filepath.Dir(rel), true)
	if err != nil {
		return err
	}
	defer dir.Close()
	base := filepath.Base(rel)
	if p.opts.UserNS && d.Type != "p" {
		return p.bindDevice(dir, base, d)
	}
	mode := uint32(defaultDeviceMode)
	if d.FileMode != nil {
		mode = uint32(*d.FileMode) & 0o777
	}
	dev := unix.Mkdev(uint32(d.Major), uint32(d.Minor))
	err = unix.Mknodat(int(dir.Fd()), base, deviceTypeBits(d.Type)|mode, int(dev))
	switch {
	case errors.Is(err, unix.EEXIST):
		return nil
	case errors.Is(err, unix.EPERM) && d.Type != "p":
		// No CAP_MKNOD (e.g. dropped by a supervisor): bind instead.
		return p.bindDevice(dir, base, d)
	case err != nil:
		return fmt.Errorf("mknod: %w", err)
	}
	var uid, gid int
	if d.UID != nil {
		uid = int(*d.UID)
	}
	if d.GID != nil {
		gid = int(*d.GID)
	}
	if err := unix.Fchownat(int(dir.Fd()), base, uid, gid, unix.AT_SYMLINK_NOFOLLOW); err != nil {
		return fmt.Errorf("chown %d:%d: %w", uid, gid, err)
	}
	return nil
}

// bindDevice binds the host's node at the same path onto an empty file, for
// user namespaces where mknod is not allowed. The host node must be the
// device the spec asks for.
func (p *preparer) bindDevice(dir *os.File, base string, d specs.LinuxDevice) error {
	host, err := os.OpenFile(d.Path, unix.O_PATH|unix.O_CLOEXEC, 0)
	if err != nil {
		return fmt.Errorf("open host device: %w", err)
	}
	defer host.Close()
	var st unix.Stat_t
	if err := unix.Fstat(int(host.Fd()), &st); err != nil {
		return fmt.Errorf("stat host device: %w", err)
	}
	want := unix.Mkdev(uint32(d.Major), uint32(d.Minor))
	if st.Mode&unix.S_IFMT != deviceTypeBits(d.Type) || st.Rdev != want {
		return fmt.Errorf("%w: host %s is not %s %d:%d", ErrInvalidDevice, d.Path, d.Type, d.Major, d.Minor)
	}
	fd, err := unix.Openat(int(dir.Fd()), base, unix.O_CREAT|unix.O_EXCL|unix.O_NOFOLLOW|unix.O_RDONLY|unix.O_CLOEXEC, 0)
	if err != nil && !errors.Is(err, unix.EEXIST) {
		return fmt.Errorf("create mount point: %w", err)
	}
	if err == nil {
		_ = unix.Close(fd)
	}
	// O_NOFOLLOW|O_PATH opens a symlink itself; refuse it rather than follow.
	dfd, err := unix.Openat(int(dir.Fd()), base, unix.O_PATH|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0)
	if err != nil {
		return fmt.Errorf("open mount point: %w", err)
	}
	dst := os.NewFile(uintptr(dfd), d.Path)
	defer dst.Close()
	var dstat unix.Stat_t
	if err := unix.Fstat(dfd, &dstat); err != nil {
		return fmt.Errorf("stat mount point: %w", err)
	}
	if dstat.Mode&unix.S_IFMT == unix.S_IFLNK || dstat.Mode&unix.S_IFMT == unix.S_IFDIR {
		return fmt.Errorf("%w: %s exists and is not a file", ErrUnsafeMount, d.Path)
	}
	target, err := p.root.target(dst, d.Path)
	if err != nil {
		return err
	}
	if err := unix.Mount(fdPath(host), target, "", unix.MS_BIND, ""); err != nil {
		return fmt.Errorf("bind host device: %w", err)
	}
	return nil
}
