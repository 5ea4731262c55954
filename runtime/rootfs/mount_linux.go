package rootfs

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"

	specs "github.com/opencontainers/runtime-spec/specs-go"
	"golang.org/x/sys/unix"
)

// Options are the facts about the container the spec alone does not give.
type Options struct {
	Bundle      string            // absolute bundle dir; relative bind sources are relative to it
	Rootfs      string            // absolute host path of the rootfs (already resolved from spec.Root.Path)
	NoPivot     bool              // use MS_MOVE + chroot instead of pivot_root (needed on ramfs/initramfs)
	UserNS      bool              // container has a user namespace: mknod is impossible, bind host devices instead
	CgroupPaths map[string]string // controller -> host path of the container's cgroup ("" key = v2 unified); for `cgroup` mounts
	CgroupNS    bool              // container has its own cgroup namespace
}

// preparer carries the state of one Prepare call.
type preparer struct {
	spec *specs.Spec
	opts Options
	root *root
}

// Prepare sets up the rootfs from the host side of the container's new mount
// namespace: propagation of "/" (linux.rootfsPropagation, default rslave so
// nothing propagates back to the host), a recursive bind of the rootfs onto
// itself (pivot_root needs a mount point), every spec.Mounts entry in order,
// and, when /dev is a fresh filesystem, the default and listed devices, the
// /dev symlinks and /dev/ptmx. It must run in the init, in its own mount
// namespace, before Pivot.
func Prepare(spec *specs.Spec, o Options) error {
	if err := Validate(spec); err != nil {
		return err
	}
	if !filepath.IsAbs(o.Rootfs) {
		return fmt.Errorf("prepare rootfs: %w: rootfs %q is not absolute", ErrInvalidPath, o.Rootfs)
	}
	o.Rootfs = filepath.Clean(o.Rootfs)
	var prop uintptr
	if spec.Linux != nil {
		prop, _ = parseRootfsPropagation(spec.Linux.RootfsPropagation) // checked by Validate
	}
	flag := uintptr(unix.MS_SLAVE | unix.MS_REC)
	if prop != 0 {
		flag = prop
	}
	if err := unix.Mount("", "/", "", flag, ""); err != nil {
		return fmt.Errorf("prepare rootfs: set / propagation %#x: %w", flag, err)
	}
	if err := makeParentPrivate(o.Rootfs); err != nil {
		return fmt.Errorf("prepare rootfs: %w", err)
	}
	if err := unix.Mount(o.Rootfs, o.Rootfs, "", unix.MS_BIND|unix.MS_REC, ""); err != nil {
		return fmt.Errorf("prepare rootfs: bind %s onto itself: %w", o.Rootfs, err)
	}
	r, err := openRoot(o.Rootfs)
	if err != nil {
		return fmt.Errorf("prepare rootfs: %w", err)
	}
	defer r.close()
	p := &preparer{spec: spec, opts: o, root: r}
	for i, m := range spec.Mounts {
		if err := p.mount(m); err != nil {
			var me *MountError
			if errors.As(err, &me) {
				return err
			}
			return &MountError{Index: i, Destination: m.Destination, Err: err}
		}
	}
	if needsDevSetup(spec) {
		if err := p.setupDev(); err != nil {
			return fmt.Errorf("prepare rootfs: %w", err)
		}
	}
	return nil
}

// makeParentPrivate makes the mount holding rootfs private. pivot_root and
// MS_MOVE refuse a shared parent, and a private parent keeps the bind below
// from propagating to other namespaces. MS_PRIVATE fails with EINVAL on a
// path that is not a mount point, so walk up until one is found.
func makeParentPrivate(rootfs string) error {
	for p := rootfs; ; p = filepath.Dir(p) {
		err := unix.Mount("", p, "", unix.MS_PRIVATE, "")
		if err == nil {
			return nil
		}
		if !errors.Is(err, unix.EINVAL) || p == "/" {
			return fmt.Errorf("make parent mount of %s private: %w", rootfs, err)
		}
	}
}

// hasNamespace reports whether the spec asks for a namespace of type t.
func hasNamespace(spec *specs.Spec, t specs.LinuxNamespaceType) bool {
	if spec.Linux == nil {
		return false
	}
	for _, ns := range spec.Linux.Namespaces {
		if ns.Type == t {
			return true
		}
	}
	return false
}

func (p *preparer) mount(m specs.Mount) error {
	o, err := parseMountOptions(m.Type, m.Options)
	if err != nil {
		return err
	}
	switch {
	case o.isBind():
		return p.bind(m.Destination, m.Source, o)
	case m.Type == "proc":
		return p.proc(m.Destination, m.Source, o)
	case m.Type == "sysfs":
		return p.sysfs(m.Destination, m.Source, o)
	case m.Type == "cgroup":
		return p.cgroup(m.Destination, o)
	case m.Type == "cgroup2":
		return p.cgroup2(m.Destination, o)
	default:
		src := m.Source
		if src == "" {
			src = m.Type
		}
		return p.mountFS(m.Destination, src, m.Type, o)
	}
}

// checkProc applies the /proc rule to where dest really resolves in the root,
// so a symlink cannot smuggle a mount into /proc.
func (p *preparer) checkProc(dest string, isProc, isBind bool) error {
	rel, err := p.root.resolve(dest)
	if err != nil {
		return err
	}
	return checkProcDestination(rel, isProc, isBind)
}

// mountFS mounts a new filesystem instance at dest (a directory in the root).
func (p *preparer) mountFS(dest, source, fstype string, o *mountOptions) error {
	if err := p.checkProc(dest, fstype == "proc", false); err != nil {
		return err
	}
	flags := o.flags
	if dest == "/dev" {
		// Devices and symlinks are created in /dev after this; Finalize
		// applies "ro" later.
		flags &^= unix.MS_RDONLY
	}
	f, err := p.root.ensure(dest, true)
	if err != nil {
		return err
	}
	defer f.Close()
	target, err := p.root.target(f, dest)
	if err != nil {
		return err
	}
	if err := unix.Mount(source, target, fstype, flags, o.dataString()); err != nil {
		return fmt.Errorf("mount %s (%s) on %s: %w", source, fstype, dest, err)
	}
	return p.afterMount(dest, o, false)
}

// afterMount applies, on the new mount, what mount(2) itself cannot: the
// read-only and other per-mount flags of a bind (remount), recursive
// attributes (mount_setattr AT_RECURSIVE) and propagation.
func (p *preparer) afterMount(dest string, o *mountOptions, isBind bool) error {
	// Re-open: the handle used for mounting points below the new mount.
	f, err := p.root.open(dest)
	if err != nil {
		return err
	}
	defer f.Close()
	target, err := p.root.target(f, dest)
	if err != nil {
		return err
	}
	if isBind && (o.flags|o.cleared)&^(unix.MS_BIND|unix.MS_REC|unix.MS_REMOUNT)&perMountFlags != 0 {
		if err := remount(target, o.flags, o.cleared); err != nil {
			return err
		}
	}
	if o.recSet != 0 || o.recClr != 0 {
		attr := &unix.MountAttr{Attr_set: o.recSet, Attr_clr: o.recClr}
		if err := unix.MountSetattr(int(f.Fd()), "", unix.AT_EMPTY_PATH|unix.AT_RECURSIVE, attr); err != nil {
			return fmt.Errorf("mount_setattr %s (set %#x clear %#x): %w", dest, o.recSet, o.recClr, err)
		}
	}
	for _, prop := range o.propagation {
		if err := unix.Mount("", target, "", prop, ""); err != nil {
			return fmt.Errorf("set propagation %#x on %s: %w", prop, dest, err)
		}
	}
	return nil
}

// bind bind-mounts a host path. Symlinks in source are followed on the host
// (the spec author chose the source); dest is resolved inside the root.
func (p *preparer) bind(dest, source string, o *mountOptions) error {
	if !filepath.IsAbs(source) {
		source = filepath.Join(p.opts.Bundle, source)
	}
	src, err := os.OpenFile(source, unix.O_PATH|unix.O_CLOEXEC, 0)
	if err != nil {
		return fmt.Errorf("open bind source: %w", err)
	}
	defer src.Close()
	var st unix.Stat_t
	if err := unix.Fstat(int(src.Fd()), &st); err != nil {
		return fmt.Errorf("stat bind source %s: %w", source, err)
	}
	isDir := st.Mode&unix.S_IFMT == unix.S_IFDIR
	if err := p.checkProc(dest, false, true); err != nil {
		return err
	}
	if rel, _ := p.root.resolve(dest); rel == "/proc" {
		// Only the root of a procfs may be bound over /proc: anything else
		// could hide the real one (CVE-2019-19921 class).
		var sfs unix.Statfs_t
		if err := unix.Fstatfs(int(src.Fd()), &sfs); err != nil || sfs.Type != unix.PROC_SUPER_MAGIC || st.Ino != 1 {
			return fmt.Errorf("%w: %s is not the root of a procfs", ErrUnsafeMount, source)
		}
	}
	f, err := p.root.ensure(dest, isDir)
	if err != nil {
		return err
	}
	defer f.Close()
	target, err := p.root.target(f, dest)
	if err != nil {
		return err
	}
	if err := unix.Mount(fdPath(src), target, "", unix.MS_BIND|(o.flags&unix.MS_REC), ""); err != nil {
		return fmt.Errorf("bind %s on %s: %w", source, dest, err)
	}
	return p.afterMount(dest, o, true)
}

// proc mounts a fresh procfs on a directory and checks the result really is
// procfs, so nothing stacked or raced in between can fake /proc.
func (p *preparer) proc(dest, source string, o *mountOptions) error {
	if f, err := p.root.open(dest); err == nil {
		var st unix.Stat_t
		err := unix.Fstat(int(f.Fd()), &st)
		_ = f.Close()
		if err != nil {
			return fmt.Errorf("stat %s: %w", dest, err)
		}
		if st.Mode&unix.S_IFMT != unix.S_IFDIR {
			return fmt.Errorf("%w: proc destination %s is not a directory", ErrInvalidMount, dest)
		}
	}
	if source == "" {
		source = "proc"
	}
	if err := p.mountFS(dest, source, "proc", o); err != nil {
		return err
	}
	return p.expectFS(dest, unix.PROC_SUPER_MAGIC, "procfs")
}

// expectFS checks the filesystem now visible at dest.
func (p *preparer) expectFS(dest string, magic int64, name string) error {
	f, err := p.root.open(dest)
	if err != nil {
		return err
	}
	defer f.Close()
	var sfs unix.Statfs_t
	if err := unix.Fstatfs(int(f.Fd()), &sfs); err != nil {
		return fmt.Errorf("statfs %s: %w", dest, err)
	}
	if sfs.Type != magic {
		return fmt.Errorf("%w: %s is not %s after mounting (magic %#x)", ErrUnsafeMount, dest, name, sfs.Type)
	}
	return nil
}

// sysfs mounts sysfs, or binds the host's /sys in a user namespace without
// its own network namespace, where the kernel refuses a sysfs mount (as runc).
func (p *preparer) sysfs(dest, source string, o *mountOptions) error {
	if p.opts.UserNS && !hasNamespace(p.spec, specs.NetworkNamespace) {
		return p.bindSys(dest, o)
	}
	if source == "" {
		source = "sysfs"
	}
	err := p.mountFS(dest, source, "sysfs", o)
	if err != nil && p.opts.UserNS && errors.Is(err, unix.EPERM) {
		return p.bindSys(dest, o)
	}
	if err != nil {
		return err
	}
	return p.expectFS(dest, unix.SYSFS_MAGIC, "sysfs")
}

func (p *preparer) bindSys(dest string, o *mountOptions) error {
	b := *o
	b.flags |= unix.MS_BIND | unix.MS_REC
	b.data = nil
	return p.bind(dest, "/sys", &b)
}
