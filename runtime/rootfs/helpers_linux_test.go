package rootfs

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"sort"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/moby/sys/mountinfo"
	specs "github.com/opencontainers/runtime-spec/specs-go"
	"golang.org/x/sys/unix"
)

// The integration tests re-exec the test binary as a container init: the
// child starts in fresh namespaces, runs Prepare/Pivot/.../Finalize on a
// busybox rootfs, probes the result from inside and prints a JSON report.

const childEnv = "MIGRATE_ROOTFS_TEST_CHILD"

func TestMain(m *testing.M) {
	if os.Getenv(childEnv) == "1" {
		os.Exit(childMain())
	}
	os.Exit(m.Run())
}

type childRequest struct {
	Spec      *specs.Spec
	Options   Options
	Console   bool     // open a pty in the container's devpts and BindConsole it
	Sysctls   bool     // call WriteSysctls
	PreTmpfs  []string // host paths the child covers with a tmpfs (in its namespace) before Prepare
	Probes    []probe
	SkipFinal bool // stop after Pivot (no Finalize)
}

type probe struct {
	Op   string // stat, read, write, readdir, statfs, readlink, exec
	Path string
	Args []string // exec arguments
}

type probeResult struct {
	Op, Path string
	Err      string // errno name (EROFS...) or message
	Mode     uint32 // st_mode
	UID, GID uint32
	Major    uint32
	Minor    uint32
	FSType   int64
	Size     uint64 // statfs: blocks * bsize
	Data     string // read, readlink, exec output
	Names    []string
}

type childReport struct {
	Stage   string // where it failed
	Err     string
	PtsN    int
	Mounts  []*mountinfo.Info
	Results []probeResult
}

func childMain() int {
	runtime.LockOSThread()
	var req childRequest
	rep := childReport{PtsN: -1}
	emit := func() int {
		if err := json.NewEncoder(os.Stdout).Encode(&rep); err != nil {
			return 3
		}
		return 0
	}
	fail := func(stage string, err error) int {
		rep.Stage, rep.Err = stage, err.Error()
		return emit()
	}
	if err := json.NewDecoder(os.Stdin).Decode(&req); err != nil {
		return fail("decode", err)
	}
	for _, p := range req.PreTmpfs {
		if err := unix.Mount("tmpfs", p, "tmpfs", 0, "size=1m"); err != nil {
			return fail("pre-tmpfs", err)
		}
	}
	if err := Prepare(req.Spec, req.Options); err != nil {
		return fail("prepare", err)
	}
	if err := Pivot(req.Options.Rootfs, req.Options.NoPivot); err != nil {
		return fail("pivot", err)
	}
	if req.Console {
		n, err := openPty()
		if err != nil {
			return fail("console", err)
		}
		rep.PtsN = n
		if err := BindConsole(fmt.Sprintf("/dev/pts/%d", n)); err != nil {
			return fail("console", err)
		}
	}
	if req.Sysctls {
		if err := WriteSysctls(req.Spec); err != nil {
			return fail("sysctl", err)
		}
	}
	if !req.SkipFinal {
		if err := Finalize(req.Spec); err != nil {
			return fail("finalize", err)
		}
	}
	mounts, err := mountinfo.GetMounts(nil)
	if err != nil {
		return fail("mountinfo", err)
	}
	rep.Mounts = mounts
	for _, p := range req.Probes {
		rep.Results = append(rep.Results, runProbe(p))
	}
	return emit()
}

// openPty opens a pty master in the container's devpts (through /dev/ptmx)
// and returns the slave number; the master stays open for the process life.
func openPty() (int, error) {
	fd, err := unix.Open("/dev/ptmx", unix.O_RDWR|unix.O_NOCTTY|unix.O_CLOEXEC, 0)
	if err != nil {
		return 0, err
	}
	if err := unix.IoctlSetPointerInt(fd, unix.TIOCSPTLCK, 0); err != nil {
		return 0, err
	}
	return unix.IoctlGetInt(fd, unix.TIOCGPTN)
}

func errName(err error) string {
	var errno unix.Errno
	if errors.As(err, &errno) {
		return unix.ErrnoName(errno)
	}
	return err.Error()
}

func runProbe(p probe) probeResult {
	r := probeResult{Op: p.Op, Path: p.Path}
	var err error
	switch p.Op {
	case "stat":
		var st unix.Stat_t
		if err = unix.Lstat(p.Path, &st); err == nil {
			r.Mode, r.UID, r.GID = st.Mode, st.Uid, st.Gid
			r.Major, r.Minor = unix.Major(st.Rdev), unix.Minor(st.Rdev)
		}
	case "read":
		var b []byte
		if b, err = os.ReadFile(p.Path); err == nil {
			r.Data = string(b)
		}
	case "write":
		err = os.WriteFile(p.Path, []byte("x"), 0o644)
	case "readdir":
		var ents []os.DirEntry
		if ents, err = os.ReadDir(p.Path); err == nil {
			for _, e := range ents {
				r.Names = append(r.Names, e.Name())
			}
		}
	case "statfs":
		var st unix.Statfs_t
		if err = unix.Statfs(p.Path, &st); err == nil {
			r.FSType, r.Size = st.Type, st.Blocks*uint64(st.Bsize)
		}
	case "readlink":
		r.Data, err = os.Readlink(p.Path)
	case "exec":
		var out []byte
		out, err = exec.Command(p.Path, p.Args...).CombinedOutput()
		r.Data = string(out)
	default:
		err = fmt.Errorf("unknown probe %q", p.Op)
	}
	if err != nil {
		r.Err = errName(err)
	}
	return r
}

// runChild starts the child with the given clone flags and returns its report.
func runChild(t *testing.T, req childRequest, cloneflags uintptr, userns bool) *childReport {
	t.Helper()
	in, err := json.Marshal(&req)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	self, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.CommandContext(ctx, self)
	cmd.Env = append(os.Environ(), childEnv+"=1")
	cmd.Stdin = bytes.NewReader(in)
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	cmd.SysProcAttr = &syscall.SysProcAttr{Cloneflags: cloneflags}
	if userns {
		cmd.SysProcAttr.Cloneflags |= unix.CLONE_NEWUSER
		// Identity mapping: the child is root only inside its user
		// namespace, so mknod and non-namespaced mounts are refused, and
		// the host mounts it inherits are locked.
		cmd.SysProcAttr.UidMappings = []syscall.SysProcIDMap{{ContainerID: 0, HostID: 0, Size: 65536}}
		cmd.SysProcAttr.GidMappings = []syscall.SysProcIDMap{{ContainerID: 0, HostID: 0, Size: 65536}}
	}
	if err := cmd.Run(); err != nil {
		t.Fatalf("child: %v\nstdout: %s\nstderr: %s", err, stdout.String(), stderr.String())
	}
	var rep childReport
	if err := json.Unmarshal(stdout.Bytes(), &rep); err != nil {
		t.Fatalf("child report: %v\nstdout: %s\nstderr: %s", err, stdout.String(), stderr.String())
	}
	return &rep
}

func requireRoot(t *testing.T) {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("needs root")
	}
}

// busyboxRootfs builds a minimal rootfs with a static busybox in dir.
func busyboxRootfs(t *testing.T, dir string) {
	t.Helper()
	bb, err := exec.LookPath("busybox")
	if err != nil {
		t.Skip("busybox not installed")
	}
	for _, cand := range []string{"/bin/busybox", bb} {
		if out, err := exec.Command("file", "-L", cand).Output(); err == nil && bytes.Contains(out, []byte("statically linked")) {
			bb = cand
			break
		}
	}
	if err := os.MkdirAll(filepath.Join(dir, "bin"), 0o755); err != nil {
		t.Fatal(err)
	}
	src, err := os.Open(bb)
	if err != nil {
		t.Fatal(err)
	}
	defer src.Close()
	dst, err := os.OpenFile(filepath.Join(dir, "bin/busybox"), os.O_CREATE|os.O_WRONLY|os.O_EXCL, 0o755)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := io.Copy(dst, src); err != nil {
		t.Fatal(err)
	}
	if err := dst.Close(); err != nil {
		t.Fatal(err)
	}
	for _, applet := range []string{"sh", "ls", "cat", "mount", "echo", "stat", "touch"} {
		if err := os.Symlink("busybox", filepath.Join(dir, "bin", applet)); err != nil {
			t.Fatal(err)
		}
	}
}

// hostMountsUnder lists host mounts at or below dir, as comparable strings.
func hostMountsUnder(t *testing.T, dirs ...string) []string {
	t.Helper()
	infos, err := mountinfo.GetMounts(nil)
	if err != nil {
		t.Fatal(err)
	}
	var out []string
	for _, i := range infos {
		for _, d := range dirs {
			if i.Mountpoint == d || strings.HasPrefix(i.Mountpoint, d+"/") {
				out = append(out, fmt.Sprintf("%d %s %s %s %s %s", i.ID, i.Mountpoint, i.FSType, i.Source, i.Root, i.Options))
			}
		}
	}
	sort.Strings(out)
	return out
}

// hostTmpfs mounts a tmpfs on the host for the duration of the test.
func hostTmpfs(t *testing.T, dir string, flags uintptr, shared bool) {
	t.Helper()
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := unix.Mount("tmpfs", dir, "tmpfs", flags, "size=1m"); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := unix.Unmount(dir, unix.MNT_DETACH); err != nil {
			t.Errorf("unmount %s: %v", dir, err)
		}
	})
	if shared {
		if err := unix.Mount("", dir, "", unix.MS_SHARED, ""); err != nil {
			t.Fatal(err)
		}
	}
}

// currentCgroupPaths maps each controller line of /proc/self/cgroup to the
// host path of this process's cgroup ("" for the unified hierarchy).
func currentCgroupPaths(t *testing.T) map[string]string {
	t.Helper()
	infos, err := mountinfo.GetMounts(func(i *mountinfo.Info) (bool, bool) {
		return i.FSType != "cgroup" && i.FSType != "cgroup2", false
	})
	if err != nil {
		t.Fatal(err)
	}
	f, err := os.Open("/proc/self/cgroup")
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	out := map[string]string{}
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		parts := strings.SplitN(sc.Text(), ":", 3)
		if len(parts) != 3 {
			continue
		}
		ctrl, p := parts[1], parts[2]
		for _, i := range infos {
			if ctrl == "" && i.FSType == "cgroup2" {
				out[""] = filepath.Join(i.Mountpoint, p)
				break
			}
			if ctrl != "" && i.FSType == "cgroup" && hasAllOpts(i.VFSOptions, strings.Split(ctrl, ",")) {
				out[ctrl] = filepath.Join(i.Mountpoint, p)
				break
			}
		}
	}
	return out
}

func hasAllOpts(opts string, want []string) bool {
	have := map[string]bool{}
	for _, o := range strings.Split(opts, ",") {
		have[o] = true
	}
	for _, w := range want {
		if !have[w] {
			return false
		}
	}
	return true
}

// report helpers

func (r *childReport) mount(mp string) *mountinfo.Info {
	var found *mountinfo.Info
	for _, m := range r.Mounts {
		if m.Mountpoint == mp {
			found = m // the last one is on top
		}
	}
	return found
}

func (r *childReport) result(op, path string) probeResult {
	for _, x := range r.Results {
		if x.Op == op && x.Path == path {
			return x
		}
	}
	return probeResult{Err: "no such probe"}
}

func hasOpt(list, opt string) bool {
	for _, o := range strings.Split(list, ",") {
		if o == opt {
			return true
		}
	}
	return false
}

// expectMount checks that mp is mounted with fstype and every per-mount option.
func expectMount(t *testing.T, r *childReport, mp, fstype string, opts ...string) *mountinfo.Info {
	t.Helper()
	m := r.mount(mp)
	if m == nil {
		t.Errorf("%s: not mounted", mp)
		return nil
	}
	if fstype != "" && m.FSType != fstype {
		t.Errorf("%s: fstype %s, want %s", mp, m.FSType, fstype)
	}
	for _, o := range opts {
		if !hasOpt(m.Options, o) {
			t.Errorf("%s: options %q lack %q", mp, m.Options, o)
		}
	}
	return m
}

func expectErr(t *testing.T, r *childReport, op, path, want string) {
	t.Helper()
	if got := r.result(op, path); got.Err != want {
		t.Errorf("%s %s: err %q, want %q", op, path, got.Err, want)
	}
}

func expectDevice(t *testing.T, r *childReport, path string, typ uint32, major, minor, perm, uid, gid uint32) {
	t.Helper()
	got := r.result("stat", path)
	if got.Err != "" {
		t.Errorf("stat %s: %s", path, got.Err)
		return
	}
	if got.Mode&unix.S_IFMT != typ || got.Mode&0o7777 != perm || got.Major != major || got.Minor != minor || got.UID != uid || got.GID != gid {
		t.Errorf("%s: mode %o %d:%d owner %d:%d; want type %o perm %o %d:%d owner %d:%d",
			path, got.Mode, got.Major, got.Minor, got.UID, got.GID, typ, perm, major, minor, uid, gid)
	}
}
