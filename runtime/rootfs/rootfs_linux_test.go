package rootfs

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"

	specs "github.com/opencontainers/runtime-spec/specs-go"
	"golang.org/x/sys/unix"
)

func u32(v uint32) *uint32 { return &v }

const baseClone = unix.CLONE_NEWNS | unix.CLONE_NEWPID | unix.CLONE_NEWUTS

// baseMounts is what a typical OCI spec (runc spec) lists.
func baseMounts() []specs.Mount {
	return []specs.Mount{
		{Destination: "/proc", Type: "proc", Source: "proc", Options: []string{"nosuid", "noexec", "nodev"}},
		{Destination: "/dev", Type: "tmpfs", Source: "tmpfs", Options: []string{"nosuid", "strictatime", "mode=755", "size=65536k"}},
		{Destination: "/dev/pts", Type: "devpts", Source: "devpts", Options: []string{"nosuid", "noexec", "newinstance", "ptmxmode=0666", "mode=0620", "gid=5"}},
		{Destination: "/dev/shm", Type: "tmpfs", Source: "shm", Options: []string{"nosuid", "noexec", "nodev", "mode=1777", "size=1m"}},
		{Destination: "/dev/mqueue", Type: "mqueue", Source: "mqueue", Options: []string{"nosuid", "noexec", "nodev"}},
	}
}

func namespaces(types ...specs.LinuxNamespaceType) []specs.LinuxNamespace {
	var out []specs.LinuxNamespace
	for _, t := range types {
		out = append(out, specs.LinuxNamespace{Type: t})
	}
	return out
}

// TestFullSpec runs a runc-like spec with extra bind, propagation and
// device entries, pivot_root, sysctls and a console.
func TestFullSpec(t *testing.T) {
	requireRoot(t)
	t.Parallel()
	tmp := t.TempDir()
	rootfs := filepath.Join(tmp, "rootfs")
	busyboxRootfs(t, rootfs)

	// A symlink in the image pointing at the host's /etc: a mount through it
	// must land in the rootfs' own /etc.
	if err := os.Symlink("/etc", filepath.Join(rootfs, "evil")); err != nil {
		t.Fatal(err)
	}
	escapeName := fmt.Sprintf("migrate-rootfs-escape-%d-%s", os.Getpid(), strings.ReplaceAll(t.Name(), "/", "_"))
	hostEscape := filepath.Join("/etc", escapeName)
	t.Cleanup(func() { _ = os.Remove(hostEscape) })

	data := filepath.Join(tmp, "data")
	if err := os.MkdirAll(data, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(data, "hello"), []byte("data"), 0o644); err != nil {
		t.Fatal(err)
	}
	hostsFile := filepath.Join(tmp, "hosts")
	if err := os.WriteFile(hostsFile, []byte("127.0.0.1 box\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	// A host volume that is shared: with the default rslave root
	// propagation it shows up in the container as a slave (master:N).
	vol := filepath.Join(tmp, "vol")
	hostTmpfs(t, vol, 0, true)
	// rro must reach a submount of the source too.
	rro := filepath.Join(tmp, "rro")
	if err := os.MkdirAll(filepath.Join(rro, "sub"), 0o755); err != nil {
		t.Fatal(err)
	}

	before := hostMountsUnder(t, tmp, "/etc", "/proc", "/sys", "/dev")
	spec := &specs.Spec{
		Root: &specs.Root{Path: rootfs},
		Mounts: append(baseMounts(),
			specs.Mount{Destination: "/sys", Type: "sysfs", Source: "sysfs", Options: []string{"nosuid", "noexec", "nodev", "ro"}},
			specs.Mount{Destination: "/sys/fs/cgroup", Type: "cgroup", Source: "cgroup", Options: []string{"nosuid", "noexec", "nodev", "relatime", "ro"}},
			specs.Mount{Destination: "/data", Type: "bind", Source: "data", Options: []string{"rbind", "ro", "nosuid"}},
			specs.Mount{Destination: "/etc/hosts", Type: "bind", Source: hostsFile, Options: []string{"bind", "ro"}},
			specs.Mount{Destination: "/evil/" + escapeName, Type: "tmpfs", Source: "tmpfs", Options: []string{"size=1m"}},
			specs.Mount{Destination: "/shared-tmp", Type: "tmpfs", Source: "tmpfs", Options: []string{"shared"}},
			specs.Mount{Destination: "/vol", Type: "bind", Source: vol, Options: []string{"rbind", "rslave"}},
			specs.Mount{Destination: "/rro", Type: "bind", Source: rro, Options: []string{"rbind", "rro"}},
		),
		Linux: &specs.Linux{
			Namespaces: namespaces(specs.PIDNamespace, specs.UTSNamespace, specs.IPCNamespace, specs.NetworkNamespace, specs.MountNamespace),
			Devices: []specs.LinuxDevice{
				{Path: "/dev/testfull", Type: "c", Major: 1, Minor: 7, FileMode: mode(0o640), UID: u32(1234), GID: u32(5678)},
				{Path: "/dev/sub/fifo", Type: "p", FileMode: mode(0o600)},
			},
			MaskedPaths:   []string{"/proc/kcore", "/proc/timer_list", "/sys/firmware", "/proc/does-not-exist"},
			ReadonlyPaths: []string{"/proc/sys", "/proc/sysrq-trigger", "/proc/missing"},
			Sysctl:        map[string]string{"kernel.shm_rmid_forced": "1", "net.ipv4.ip_forward": "1"},
		},
	}
	if err := ValidateSysctls(spec); err != nil {
		t.Fatal(err)
	}
	req := childRequest{
		Spec: spec,
		Options: Options{
			Bundle: tmp, Rootfs: rootfs,
			CgroupPaths: currentCgroupPaths(t),
		},
		PreTmpfs: []string{filepath.Join(rro, "sub")},
		Console:  true,
		Sysctls:  true,
		Probes: []probe{
			{Op: "statfs", Path: "/proc"},
			{Op: "statfs", Path: "/dev/shm"},
			{Op: "stat", Path: "/dev/null"},
			{Op: "stat", Path: "/dev/zero"},
			{Op: "stat", Path: "/dev/tty"},
			{Op: "stat", Path: "/dev/testfull"},
			{Op: "stat", Path: "/dev/sub/fifo"},
			{Op: "stat", Path: "/dev/console"},
			{Op: "readlink", Path: "/dev/ptmx"},
			{Op: "readlink", Path: "/dev/fd"},
			{Op: "readlink", Path: "/dev/stdin"},
			{Op: "readlink", Path: "/dev/stdout"},
			{Op: "readlink", Path: "/dev/stderr"},
			{Op: "read", Path: "/proc/timer_list"},
			{Op: "readdir", Path: "/sys/firmware"},
			{Op: "write", Path: "/sys/firmware/x"},
			{Op: "write", Path: "/proc/sys/kernel/shm_rmid_forced"},
			{Op: "read", Path: "/proc/sys/kernel/shm_rmid_forced"},
			{Op: "read", Path: "/proc/sys/net/ipv4/ip_forward"},
			{Op: "read", Path: "/data/hello"},
			{Op: "write", Path: "/data/new"},
			{Op: "write", Path: "/rro/new"},
			{Op: "write", Path: "/rro/sub/new"},
			{Op: "write", Path: "/dev/shm/new"},
			{Op: "write", Path: "/newfile"},
			{Op: "readdir", Path: "/sys/fs/cgroup"},
			{Op: "exec", Path: "/bin/sh", Args: []string{"-c", "cat /etc/hosts"}},
		},
	}
	r := runChild(t, req, baseClone|unix.CLONE_NEWIPC|unix.CLONE_NEWNET, false)
	if r.Err != "" {
		t.Fatalf("child failed at %s: %s", r.Stage, r.Err)
	}

	// Filesystems and their options.
	expectMount(t, r, "/proc", "proc")
	if got := r.result("statfs", "/proc"); got.FSType != unix.PROC_SUPER_MAGIC {
		t.Errorf("/proc is not procfs: %+v", got)
	}
	expectMount(t, r, "/dev", "tmpfs", "nosuid")
	if m := expectMount(t, r, "/dev/pts", "devpts", "nosuid", "noexec"); m != nil {
		for _, o := range []string{"ptmxmode=666", "mode=620", "gid=5"} {
			if !hasOpt(m.VFSOptions, o) {
				t.Errorf("/dev/pts super options %q lack %s", m.VFSOptions, o)
			}
		}
	}
	expectMount(t, r, "/dev/shm", "tmpfs", "nosuid", "nodev", "noexec")
	if got := r.result("statfs", "/dev/shm"); got.Size != 1<<20 {
		t.Errorf("/dev/shm size %d, want 1MiB", got.Size)
	}
	expectMount(t, r, "/dev/mqueue", "mqueue", "nosuid", "nodev", "noexec")
	expectMount(t, r, "/sys", "sysfs", "ro", "nosuid")
	expectMount(t, r, "/sys/fs/cgroup", "tmpfs", "ro", "nosuid", "nodev", "noexec")
	for ctrl, hostPath := range req.Options.CgroupPaths {
		fstype := "cgroup"
		if ctrl == "" {
			fstype = "cgroup2" // the hybrid host's unified hierarchy
		}
		dir, sub, _ := strings.Cut(strings.TrimPrefix(hostPath, "/sys/fs/cgroup/"), "/")
		sub = "/" + sub
		m := expectMount(t, r, "/sys/fs/cgroup/"+dir, fstype, "ro", "nosuid", "nodev", "noexec")
		if m == nil {
			continue
		}
		// A bind of the container's own cgroup: its root is that cgroup.
		if m.Root != sub {
			t.Errorf("/sys/fs/cgroup/%s root %q, want %q", dir, m.Root, sub)
		}
	}
	expectMount(t, r, "/data", "", "ro", "nosuid")
	expectErr(t, r, "write", "/data/new", "EROFS")
	if got := r.result("read", "/data/hello"); got.Data != "data" {
		t.Errorf("/data/hello = %+v", got)
	}
	expectMount(t, r, "/etc/hosts", "", "ro")
	if got := r.result("exec", "/bin/sh"); got.Err != "" || got.Data != "127.0.0.1 box\n" {
		t.Errorf("busybox in the container: %+v", got)
	}
	expectErr(t, r, "write", "/rro/new", "EROFS")
	expectErr(t, r, "write", "/rro/sub/new", "EROFS")
	expectMount(t, r, "/rro/sub", "tmpfs", "ro")
	expectErr(t, r, "write", "/dev/shm/new", "")
	expectErr(t, r, "write", "/newfile", "") // root not read-only here

	// Propagation.
	if m := r.mount("/shared-tmp"); m == nil || !strings.Contains(m.Optional, "shared:") {
		t.Errorf("/shared-tmp not shared: %+v", m)
	}
	if m := r.mount("/vol"); m == nil || !strings.Contains(m.Optional, "master:") {
		t.Errorf("/vol not a slave of the host volume: %+v", m)
	}
	if m := r.mount("/"); m == nil || m.Optional != "" {
		t.Errorf("/ should be private after the default rslave of a private host: %+v", m)
	}

	// The symlink escape landed inside the rootfs.
	if _, err := os.Lstat(hostEscape); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("mount through /evil touched the host: %s exists (%v)", hostEscape, err)
	}
	if fi, err := os.Stat(filepath.Join(rootfs, "etc", escapeName)); err != nil || !fi.IsDir() {
		t.Errorf("mount point not created inside the rootfs: %v", err)
	}
	expectMount(t, r, "/etc/"+escapeName, "tmpfs")

	// Devices, links, console.
	expectDevice(t, r, "/dev/null", unix.S_IFCHR, 1, 3, 0o666, 0, 0)
	expectDevice(t, r, "/dev/zero", unix.S_IFCHR, 1, 5, 0o666, 0, 0)
	expectDevice(t, r, "/dev/tty", unix.S_IFCHR, 5, 0, 0o666, 0, 0)
	expectDevice(t, r, "/dev/testfull", unix.S_IFCHR, 1, 7, 0o640, 1234, 5678)
	expectDevice(t, r, "/dev/sub/fifo", unix.S_IFIFO, 0, 0, 0o600, 0, 0)
	for path, want := range map[string]string{
		"/dev/ptmx": "pts/ptmx", "/dev/fd": "/proc/self/fd", "/dev/stdin": "/proc/self/fd/0",
		"/dev/stdout": "/proc/self/fd/1", "/dev/stderr": "/proc/self/fd/2",
	} {
		if got := r.result("readlink", path); got.Data != want {
			t.Errorf("readlink %s = %+v, want %s", path, got, want)
		}
	}
	if got := r.result("stat", "/dev/console"); got.Mode&unix.S_IFMT != unix.S_IFCHR || got.Major != 136 || int(got.Minor) != r.PtsN {
		t.Errorf("/dev/console = %+v, want pty slave 136:%d", got, r.PtsN)
	}
	expectMount(t, r, "/dev/console", "devpts")

	// Masked and read-only paths, sysctls.
	if got := r.result("read", "/proc/timer_list"); got.Err != "" || got.Data != "" {
		t.Errorf("masked /proc/timer_list = %+v", got)
	}
	if got := r.result("readdir", "/sys/firmware"); got.Err != "" || len(got.Names) != 0 {
		t.Errorf("masked /sys/firmware = %+v", got)
	}
	expectErr(t, r, "write", "/sys/firmware/x", "EROFS")
	expectMount(t, r, "/proc/sys", "proc", "ro", "nosuid", "nodev", "noexec")
	expectErr(t, r, "write", "/proc/sys/kernel/shm_rmid_forced", "EROFS")
	if got := r.result("read", "/proc/sys/kernel/shm_rmid_forced"); got.Data != "1\n" {
		t.Errorf("sysctl kernel.shm_rmid_forced = %+v", got)
	}
	if got := r.result("read", "/proc/sys/net/ipv4/ip_forward"); got.Data != "1\n" {
		t.Errorf("sysctl net.ipv4.ip_forward = %+v", got)
	}

	// The host is untouched.
	if after := hostMountsUnder(t, tmp, "/etc", "/proc", "/sys", "/dev"); !reflect.DeepEqual(before, after) {
		t.Errorf("host mounts changed:\nbefore %q\nafter  %q", before, after)
	}
}

// TestReadonlyRoot runs root.readonly, a read-only /dev (made read-only only
// after its devices exist) and rshared root propagation, with pivot_root and
// with MS_MOVE+chroot.
func TestReadonlyRoot(t *testing.T) {
	requireRoot(t)
	for _, noPivot := range []bool{false, true} {
		t.Run(fmt.Sprintf("noPivot=%v", noPivot), func(t *testing.T) {
			t.Parallel()
			testReadonlyRoot(t, noPivot)
		})
	}
}

func testReadonlyRoot(t *testing.T, noPivot bool) {
	tmp := t.TempDir()
	rootfs := filepath.Join(tmp, "rootfs")
	busyboxRootfs(t, rootfs)
	before := hostMountsUnder(t, tmp, "/etc", "/proc", "/sys", "/dev")
	mounts := baseMounts()
	mounts[1].Options = append(mounts[1].Options, "ro")
	spec := &specs.Spec{
		Root:   &specs.Root{Path: rootfs, Readonly: true},
		Mounts: mounts,
		Linux: &specs.Linux{
			RootfsPropagation: "rshared",
			Namespaces:        namespaces(specs.PIDNamespace, specs.IPCNamespace, specs.MountNamespace),
			MaskedPaths:       []string{"/proc/kcore", "/proc/timer_list"},
		},
	}
	r := runChild(t, childRequest{
		Spec:    spec,
		Options: Options{Bundle: tmp, Rootfs: rootfs, NoPivot: noPivot},
		Probes: []probe{
			{Op: "write", Path: "/newfile"},
			{Op: "write", Path: "/dev/newfile"},
			{Op: "write", Path: "/dev/shm/newfile"},
			{Op: "stat", Path: "/dev/null"},
			{Op: "read", Path: "/proc/timer_list"},
			{Op: "exec", Path: "/bin/ls", Args: []string{"/"}},
		},
	}, baseClone|unix.CLONE_NEWIPC, false)
	if r.Err != "" {
		t.Fatalf("child failed at %s: %s", r.Stage, r.Err)
	}
	expectErr(t, r, "write", "/newfile", "EROFS")
	expectErr(t, r, "write", "/dev/newfile", "EROFS")
	expectErr(t, r, "write", "/dev/shm/newfile", "")
	expectDevice(t, r, "/dev/null", unix.S_IFCHR, 1, 3, 0o666, 0, 0)
	expectMount(t, r, "/dev", "tmpfs", "ro")
	if got := r.result("read", "/proc/timer_list"); got.Err != "" || got.Data != "" {
		t.Errorf("masked /proc/timer_list = %+v", got)
	}
	if got := r.result("exec", "/bin/ls"); got.Err != "" || !strings.Contains(got.Data, "bin") || strings.Contains(got.Data, "tmp") {
		t.Errorf("ls / in the container: %+v", got)
	}
	root := r.mount("/")
	if root == nil || !hasOpt(root.Options, "ro") || !strings.Contains(root.Optional, "shared:") {
		t.Errorf("/ = %+v, want ro and shared", root)
	}
	if after := hostMountsUnder(t, tmp, "/etc", "/proc", "/sys", "/dev"); !reflect.DeepEqual(before, after) {
		t.Errorf("host mounts changed:\nbefore %q\nafter  %q", before, after)
	}
}

// TestUserNamespace: devices are bind mounts of the host's, sysfs falls back
// to an rbind of /sys, and a read-only bind of a nosuid/nodev/noexec host
// mount keeps those locked flags.
func TestUserNamespace(t *testing.T) {
	requireRoot(t)
	t.Parallel()
	tmp := t.TempDir()
	rootfs := filepath.Join(tmp, "rootfs")
	busyboxRootfs(t, rootfs)
	locked := filepath.Join(tmp, "locked")
	hostTmpfs(t, locked, unix.MS_NOSUID|unix.MS_NODEV|unix.MS_NOEXEC, false)
	before := hostMountsUnder(t, tmp, "/etc", "/proc", "/sys", "/dev")
	spec := &specs.Spec{
		Root: &specs.Root{Path: rootfs},
		Mounts: append(baseMounts(),
			specs.Mount{Destination: "/sys", Type: "sysfs", Source: "sysfs", Options: []string{"nosuid", "noexec", "nodev", "ro"}},
			specs.Mount{Destination: "/locked", Type: "bind", Source: locked, Options: []string{"rbind", "ro"}},
		),
		Linux: &specs.Linux{
			Namespaces:    namespaces(specs.UserNamespace, specs.PIDNamespace, specs.IPCNamespace, specs.UTSNamespace, specs.MountNamespace),
			Devices:       []specs.LinuxDevice{{Path: "/dev/full", Type: "c", Major: 1, Minor: 7}},
			MaskedPaths:   []string{"/proc/kcore", "/proc/timer_list"},
			ReadonlyPaths: []string{"/proc/sys"},
		},
	}
	r := runChild(t, childRequest{
		Spec:    spec,
		Options: Options{Bundle: tmp, Rootfs: rootfs, UserNS: true},
		Probes: []probe{
			{Op: "stat", Path: "/dev/null"},
			{Op: "stat", Path: "/dev/full"},
			{Op: "read", Path: "/proc/timer_list"},
			{Op: "write", Path: "/locked/x"},
			{Op: "write", Path: "/dev/shm/x"},
			{Op: "statfs", Path: "/sys"},
		},
	}, baseClone|unix.CLONE_NEWIPC, true)
	if r.Err != "" {
		t.Fatalf("child failed at %s: %s", r.Stage, r.Err)
	}
	// Bind mounts of the host nodes: same owner and mode as on the host.
	for _, d := range []string{"/dev/null", "/dev/full"} {
		var st unix.Stat_t
		if err := unix.Stat(d, &st); err != nil {
			t.Fatal(err)
		}
		expectDevice(t, r, d, unix.S_IFCHR, unix.Major(st.Rdev), unix.Minor(st.Rdev), st.Mode&0o7777, st.Uid, st.Gid)
		expectMount(t, r, d, "devtmpfs")
	}
	expectMount(t, r, "/locked", "tmpfs", "ro", "nosuid", "nodev", "noexec")
	expectErr(t, r, "write", "/locked/x", "EROFS")
	expectErr(t, r, "write", "/dev/shm/x", "")
	if m := expectMount(t, r, "/sys", "sysfs", "ro"); m != nil && m.Root != "/" {
		t.Errorf("/sys root %q", m.Root)
	}
	if got := r.result("read", "/proc/timer_list"); got.Err != "" || got.Data != "" {
		t.Errorf("masked /proc/timer_list = %+v", got)
	}
	expectMount(t, r, "/proc/sys", "proc", "ro")
	if after := hostMountsUnder(t, tmp, "/etc", "/proc", "/sys", "/dev"); !reflect.DeepEqual(before, after) {
		t.Errorf("host mounts changed:\nbefore %q\nafter  %q", before, after)
	}
}

// TestUserNamespaceLockedFlag: clearing a locked flag is refused with a
// clear error, not silently ignored.
func TestUserNamespaceLockedFlag(t *testing.T) {
	requireRoot(t)
	t.Parallel()
	tmp := t.TempDir()
	rootfs := filepath.Join(tmp, "rootfs")
	busyboxRootfs(t, rootfs)
	locked := filepath.Join(tmp, "locked")
	hostTmpfs(t, locked, unix.MS_NOSUID|unix.MS_RDONLY, false)
	spec := &specs.Spec{
		Root:   &specs.Root{Path: rootfs},
		Mounts: []specs.Mount{{Destination: "/locked", Type: "bind", Source: locked, Options: []string{"rbind", "rw"}}},
		Linux:  &specs.Linux{Namespaces: namespaces(specs.UserNamespace, specs.MountNamespace)},
	}
	r := runChild(t, childRequest{Spec: spec, Options: Options{Bundle: tmp, Rootfs: rootfs, UserNS: true}},
		unix.CLONE_NEWNS, true)
	if r.Stage != "prepare" || !strings.Contains(r.Err, "mount[0] /locked") || !strings.Contains(r.Err, "EPERM") &&
		!strings.Contains(r.Err, "operation not permitted") {
		t.Fatalf("want a prepare error on mount[0], got stage %q err %q", r.Stage, r.Err)
	}
}

// TestCgroupNamespace: with its own cgroup namespace the container gets
// fresh cgroup mounts rooted at its own cgroup.
func TestCgroupNamespace(t *testing.T) {
	requireRoot(t)
	t.Parallel()
	tmp := t.TempDir()
	rootfs := filepath.Join(tmp, "rootfs")
	busyboxRootfs(t, rootfs)
	paths := currentCgroupPaths(t)
	spec := &specs.Spec{
		Root: &specs.Root{Path: rootfs},
		Mounts: []specs.Mount{
			{Destination: "/proc", Type: "proc", Source: "proc"},
			{Destination: "/sys/fs/cgroup", Type: "cgroup", Source: "cgroup", Options: []string{"nosuid", "noexec", "nodev"}},
		},
		Linux: &specs.Linux{Namespaces: namespaces(specs.PIDNamespace, specs.CgroupNamespace, specs.MountNamespace)},
	}
	r := runChild(t, childRequest{
		Spec:    spec,
		Options: Options{Bundle: tmp, Rootfs: rootfs, CgroupPaths: paths, CgroupNS: true},
		Probes:  []probe{{Op: "read", Path: "/proc/self/cgroup"}},
	}, baseClone|unix.CLONE_NEWCGROUP, false)
	if r.Err != "" {
		t.Fatalf("child failed at %s: %s", r.Stage, r.Err)
	}
	if isUnifiedHost() {
		expectMount(t, r, "/sys/fs/cgroup", "cgroup2", "ro")
		return
	}
	expectMount(t, r, "/sys/fs/cgroup", "tmpfs", "ro")
	n := 0
	for _, m := range r.Mounts {
		if !strings.HasPrefix(m.Mountpoint, "/sys/fs/cgroup/") {
			continue
		}
		n++
		if m.FSType != "cgroup" && m.FSType != "cgroup2" {
			t.Errorf("%s: fstype %s", m.Mountpoint, m.FSType)
		}
		if m.Root != "/" || !hasOpt(m.Options, "ro") {
			t.Errorf("%s: root %q options %q, want the namespace root, ro", m.Mountpoint, m.Root, m.Options)
		}
	}
	if n == 0 {
		t.Error("no cgroup hierarchy mounted")
	}
}
