package rootfs

import (
	"errors"
	"fmt"
	"os"
	"path"
	"path/filepath"
	"sort"
	"strings"

	"github.com/moby/sys/mountinfo"
	"golang.org/x/sys/unix"
)

// cgroupDefaultFlags are always set on cgroup mounts, as runc does.
const cgroupDefaultFlags = unix.MS_NOSUID | unix.MS_NODEV | unix.MS_NOEXEC

// hierarchy is one host cgroup hierarchy the container's cgroup lives in.
type hierarchy struct {
	name     string // directory under the container's cgroup mount: base of the host mount point
	hostPath string // the container's cgroup on the host
	fstype   string // cgroup or cgroup2
	data     string // options to mount the hierarchy again (e.g. "cpu,cpuacct", "name=systemd")
}

// isUnifiedHost reports whether the host runs cgroup v2 only.
func isUnifiedHost() bool {
	var st unix.Statfs_t
	return unix.Statfs("/sys/fs/cgroup", &st) == nil && st.Type == unix.CGROUP2_SUPER_MAGIC
}

// cgroupHierarchies maps the container's cgroup paths onto the host's cgroup
// mounts. Several controllers sharing a hierarchy (cpu and cpuacct in
// cpu,cpuacct) give one entry.
func cgroupHierarchies(paths map[string]string) ([]hierarchy, error) {
	mounts, err := mountinfo.GetMounts(func(i *mountinfo.Info) (bool, bool) {
		return i.FSType != "cgroup" && i.FSType != "cgroup2", false
	})
	if err != nil {
		return nil, fmt.Errorf("read mountinfo: %w", err)
	}
	seen := map[string]bool{}
	var out []hierarchy
	for ctrl, hostPath := range paths {
		hostPath = filepath.Clean(hostPath)
		if _, err := os.Stat(hostPath); errors.Is(err, os.ErrNotExist) {
			// A controller the manager knows of but did not create (not
			// mounted on this host): nothing to show.
			continue
		}
		var best *mountinfo.Info
		for _, m := range mounts {
			if (hostPath == m.Mountpoint || strings.HasPrefix(hostPath, m.Mountpoint+"/")) &&
				(best == nil || len(m.Mountpoint) > len(best.Mountpoint)) {
				best = m
			}
		}
		if best == nil {
			return nil, fmt.Errorf("cgroup %q path %s: not on a cgroup mount", ctrl, hostPath)
		}
		if seen[best.Mountpoint] {
			continue
		}
		seen[best.Mountpoint] = true
		var data []string
		if best.FSType == "cgroup" {
			for _, opt := range strings.Split(best.VFSOptions, ",") {
				if opt != "rw" && opt != "ro" && opt != "" {
					data = append(data, opt)
				}
			}
		}
		out = append(out, hierarchy{
			name:     filepath.Base(best.Mountpoint),
			hostPath: hostPath,
			fstype:   best.FSType,
			data:     strings.Join(data, ","),
		})
	}
	sort.Slice(out, func(i, j int) bool { return out[i].name < out[j].name })
	return out, nil
}

// cgroup performs a `cgroup` mount. On a v2 host it is a cgroup2 mount (or a
// bind of the container's unified cgroup without a cgroup namespace). On a v1
// host it is a tmpfs holding one mount per hierarchy that shows the
// container's own cgroup, read-only unless the spec says "rw", plus
// symlinks for merged hierarchies (cpu -> cpu,cpuacct) as in runc.
func (p *preparer) cgroup(dest string, o *mountOptions) error {
	if isUnifiedHost() {
		return p.cgroup2(dest, o)
	}
	ro := o.cleared&unix.MS_RDONLY == 0
	tmpfs := &mountOptions{
		flags:       cgroupDefaultFlags,
		data:        []string{"mode=755"},
		propagation: o.propagation,
	}
	if err := p.mountFS(dest, "tmpfs", "tmpfs", tmpfs); err != nil {
		return err
	}
	hier, err := cgroupHierarchies(p.opts.CgroupPaths)
	if err != nil {
		return err
	}
	sub := &mountOptions{flags: cgroupDefaultFlags}
	if ro {
		sub.flags |= unix.MS_RDONLY
	}
	for _, h := range hier {
		d := path.Join(dest, h.name)
		if p.opts.CgroupNS {
			// In its own cgroup namespace a fresh mount of the hierarchy
			// shows the namespace root: the container's cgroup.
			if err := p.mountFS(d, h.fstype, h.fstype, &mountOptions{flags: sub.flags, data: nonEmpty(h.data)}); err != nil {
				return err
			}
			continue
		}
		b := *sub
		b.flags |= unix.MS_BIND | unix.MS_REC
		if err := p.bind(d, h.hostPath, &b); err != nil {
			return err
		}
	}
	if err := p.cgroupSymlinks(dest, hier); err != nil {
		return err
	}
	if ro {
		f, err := p.root.open(dest)
		if err != nil {
			return err
		}
		defer f.Close()
		target, err := p.root.target(f, dest)
		if err != nil {
			return err
		}
		return remount(target, unix.MS_RDONLY, 0)
	}
	return nil
}

func nonEmpty(s string) []string {
	if s == "" {
		return nil
	}
	return []string{s}
}

// cgroupSymlinks adds cpu -> cpu,cpuacct style links for merged hierarchies.
func (p *preparer) cgroupSymlinks(dest string, hier []hierarchy) error {
	dir, err := p.root.open(dest)
	if err != nil {
		return err
	}
	defer dir.Close()
	for _, h := range hier {
		if !strings.Contains(h.name, ",") {
			continue
		}
		for _, ss := range strings.Split(h.name, ",") {
			if err := unix.Symlinkat(h.name, int(dir.Fd()), ss); err != nil && !errors.Is(err, unix.EEXIST) {
				return fmt.Errorf("symlink %s/%s -> %s: %w", dest, ss, h.name, err)
			}
		}
	}
	return nil
}

// cgroup2 mounts cgroup2 in a cgroup namespace, or binds the container's
// unified cgroup from the host otherwise (a fresh cgroup2 mount would show
// the host's whole tree). Read-only unless "rw".
func (p *preparer) cgroup2(dest string, o *mountOptions) error {
	c := *o
	c.flags |= cgroupDefaultFlags
	if o.cleared&unix.MS_RDONLY == 0 {
		c.flags |= unix.MS_RDONLY
	}
	c.data = nil
	if p.opts.CgroupNS {
		err := p.mountFS(dest, "cgroup2", "cgroup2", &c)
		if err == nil || !(errors.Is(err, unix.EPERM) || errors.Is(err, unix.EBUSY)) {
			return err
		}
		// Fall back to a bind, as runc does when cgroup2 cannot be mounted.
	}
	hostPath, ok := p.opts.CgroupPaths[""]
	if !ok || hostPath == "" {
		return fmt.Errorf("%w: cgroup2 mount needs the container's unified cgroup path (CgroupPaths[\"\"])", ErrInvalidMount)
	}
	c.flags |= unix.MS_BIND | unix.MS_REC
	return p.bind(dest, hostPath, &c)
}
