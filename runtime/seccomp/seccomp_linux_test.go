//go:build cgo

package seccomp

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"syscall"
	"testing"
	"time"
	"unsafe"

	"github.com/moby/sys/capability"
	specs "github.com/opencontainers/runtime-spec/specs-go"
	"golang.org/x/sys/unix"
)

// The integration tests re-exec the test binary as a stand-in for the
// container init: TestMain runs helperMain instead of the tests when
// helperEnv is set. The helper loads a profile, runs probes and prints one
// JSON line with the results; a filter cannot be removed, so every case
// needs its own process.
const (
	helperEnv     = "MIGRATE_SECCOMP_TEST_HELPER"
	helperTimeout = 60 * time.Second
)

type probe struct {
	Op   string   // mkdirat, personality, getpid, nnp, unfiltered-threads, exec
	Path string   `json:",omitempty"`
	Mode uint32   `json:",omitempty"`
	Arg  uint64   `json:",omitempty"`
	Argv []string `json:",omitempty"`
}

type helperConfig struct {
	Profile *specs.LinuxSeccomp
	// DropSysAdmin removes CAP_SYS_ADMIN from the effective set before Load.
	DropSysAdmin bool
	// NoNewPrivs sets no_new_privs before Load, as the init does when
	// process.noNewPrivileges is true.
	NoNewPrivs bool
	Probes     []probe
}

type helperResult struct {
	LoadErr       string `json:",omitempty"`
	LoadPrivilege bool   `json:",omitempty"` // LoadErr wraps ErrPrivilegeRequired
	// Results holds one value per probe: an errno (0 for success), or for
	// nnp the flag, for unfiltered-threads a count.
	Results []int
}

func TestMain(m *testing.M) {
	if cfg := os.Getenv(helperEnv); cfg != "" {
		os.Exit(helperMain(cfg))
	}
	os.Exit(m.Run())
}

func helperMain(raw string) int {
	runtime.LockOSThread()
	// A SIGSYS kill must not leave a core file behind.
	_ = unix.Setrlimit(unix.RLIMIT_CORE, &unix.Rlimit{})
	var cfg helperConfig
	if err := json.Unmarshal([]byte(raw), &cfg); err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 3
	}
	var res helperResult
	report := func() {
		b, _ := json.Marshal(res)
		_, _ = os.Stdout.Write(append(b, '\n'))
	}
	if cfg.DropSysAdmin {
		c, err := capability.NewPid2(0)
		if err == nil {
			err = c.Load()
		}
		if err == nil {
			c.Unset(capability.EFFECTIVE, capability.CAP_SYS_ADMIN)
			err = c.Apply(capability.CAPS)
		}
		if err != nil {
			fmt.Fprintln(os.Stderr, err)
			return 3
		}
	}
	if cfg.NoNewPrivs {
		if err := unix.Prctl(unix.PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0); err != nil {
			fmt.Fprintln(os.Stderr, err)
			return 3
		}
	}
	if err := Load(cfg.Profile); err != nil {
		res.LoadErr = err.Error()
		res.LoadPrivilege = errors.Is(err, ErrPrivilegeRequired)
		report()
		return 0
	}
	for _, p := range cfg.Probes {
		res.Results = append(res.Results, runProbe(p, &res, report))
	}
	report()
	return 0
}

func errnoOf(e syscall.Errno) int { return int(e) }

func runProbe(p probe, res *helperResult, report func()) int {
	switch p.Op {
	case "mkdirat":
		path, err := unix.BytePtrFromString(p.Path)
		if err != nil {
			return -1
		}
		dirfd := unix.AT_FDCWD
		_, _, e := unix.RawSyscall(unix.SYS_MKDIRAT, uintptr(dirfd), uintptr(unsafe.Pointer(path)), uintptr(p.Mode))
		return errnoOf(e)
	case "personality":
		_, _, e := unix.RawSyscall(unix.SYS_PERSONALITY, uintptr(p.Arg), 0, 0)
		return errnoOf(e)
	case "getpid":
		_, _, e := unix.RawSyscall(unix.SYS_GETPID, 0, 0, 0)
		return errnoOf(e)
	case "nnp":
		v, err := unix.PrctlRetInt(unix.PR_GET_NO_NEW_PRIVS, 0, 0, 0, 0)
		if err != nil {
			return -1
		}
		return v
	case "unfiltered-threads":
		// Every thread must be in seccomp mode 2 (filter): TSYNC.
		tasks, err := filepath.Glob("/proc/self/task/*/status")
		if err != nil || len(tasks) < 2 {
			return -1
		}
		n := 0
		for _, s := range tasks {
			b, err := os.ReadFile(s)
			if err != nil || !strings.Contains(string(b), "\nSeccomp:\t2\n") {
				n++
			}
		}
		return n
	case "exec":
		// The results so far go first, then the program owns stdout.
		res.Results = append(res.Results, 0)
		report()
		err := unix.Exec(p.Argv[0], p.Argv, os.Environ())
		fmt.Fprintf(os.Stderr, "helper exec: %v\n", err)
		os.Exit(4)
	}
	return -1
}

func requireRoot(t *testing.T) {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("needs root (CAP_SYS_ADMIN to load a filter without no_new_privs)")
	}
}

type run struct {
	res    helperResult
	stdout string // what follows the result line (an exec'd program's output)
	stderr string
	state  *os.ProcessState
}

// runHelper runs a helper process with cfg. A helper killed by the filter
// is not a test failure here; callers inspect run.state.
func runHelper(t *testing.T, cfg helperConfig) run {
	t.Helper()
	b, err := json.Marshal(cfg)
	if err != nil {
		t.Fatal(err)
	}
	// A helper whose filter kills only one thread could hang; the context
	// kills the whole process.
	ctx, cancel := context.WithTimeout(context.Background(), helperTimeout)
	defer cancel()
	cmd := exec.CommandContext(ctx, os.Args[0])
	cmd.Env = append(os.Environ(), helperEnv+"="+string(b))
	var stdout, stderr strings.Builder
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	err = cmd.Run()
	var exitErr *exec.ExitError
	if err != nil && !errors.As(err, &exitErr) {
		t.Fatalf("run helper: %v", err)
	}
	r := run{stderr: stderr.String(), state: cmd.ProcessState}
	rd := bufio.NewReader(strings.NewReader(stdout.String()))
	line, _ := rd.ReadString('\n')
	if line != "" {
		if err := json.Unmarshal([]byte(line), &r.res); err != nil {
			t.Fatalf("helper output %q: %v (stderr %q)", line, err, r.stderr)
		}
	}
	rest, _ := rd.ReadString(0)
	r.stdout = rest
	return r
}

func (r run) mustLoad(t *testing.T, n int) []int {
	t.Helper()
	if r.res.LoadErr != "" {
		t.Fatalf("Load: %s", r.res.LoadErr)
	}
	if !r.state.Success() || len(r.res.Results) != n {
		t.Fatalf("helper %v, results %v, stderr %q", r.state, r.res.Results, r.stderr)
	}
	return r.res.Results
}

func denyMkdir(errnoRet *uint) specs.LinuxSyscall {
	return specs.LinuxSyscall{Names: []string{"mkdir", "mkdirat"}, Action: specs.ActErrno, ErrnoRet: errnoRet}
}

func TestLoadDeniesWithErrno(t *testing.T) {
	requireRoot(t)
	t.Parallel()
	dir := t.TempDir()
	prof := &specs.LinuxSeccomp{
		DefaultAction: specs.ActAllow,
		Architectures: []specs.Arch{specs.ArchX86_64, specs.ArchX86, specs.ArchX32},
		Flags:         []specs.LinuxSeccompFlag{"SECCOMP_FILTER_FLAG_TSYNC"},
		Syscalls: []specs.LinuxSyscall{
			denyMkdir(nil),
			{Names: []string{"no_such_syscall_anywhere"}, Action: specs.ActKillProcess},
		},
	}
	got := runHelper(t, helperConfig{Profile: prof, Probes: []probe{
		{Op: "mkdirat", Path: filepath.Join(dir, "a"), Mode: 0o755},
		{Op: "getpid"},
		{Op: "nnp"},
		{Op: "unfiltered-threads"},
	}}).mustLoad(t, 4)
	if got[0] != int(unix.EPERM) {
		t.Errorf("mkdirat errno = %d, want EPERM (default errnoRet)", got[0])
	}
	if got[1] != 0 {
		t.Errorf("getpid errno = %d, want allowed", got[1])
	}
	if got[2] != 0 {
		t.Errorf("no_new_privs = %d after Load, want 0: Load must not set it", got[2])
	}
	if got[3] != 0 {
		t.Errorf("%d threads without the filter, want 0 (TSYNC)", got[3])
	}
	if _, err := os.Stat(filepath.Join(dir, "a")); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("directory exists after denied mkdirat: %v", err)
	}
}

func TestLoadErrnoRet(t *testing.T) {
	requireRoot(t)
	t.Parallel()
	prof := &specs.LinuxSeccomp{
		DefaultAction: specs.ActAllow,
		Syscalls:      []specs.LinuxSyscall{denyMkdir(uptr(uint(unix.EROFS)))},
	}
	got := runHelper(t, helperConfig{Profile: prof, Probes: []probe{
		{Op: "mkdirat", Path: filepath.Join(t.TempDir(), "a"), Mode: 0o755},
	}}).mustLoad(t, 1)
	if got[0] != int(unix.EROFS) {
		t.Fatalf("mkdirat errno = %d, want EROFS", got[0])
	}
}

// goRuntimeAllow is what the Go runtime of the helper and a static busybox
// need; everything else gets the default action. clone3: the cgo runtime starts
// threads with glibc's pthread_create, which falls back to clone only on ENOSYS.
var goRuntimeAllow = []string{
	"futex", "nanosleep", "clock_nanosleep", "sched_yield", "mmap", "munmap", "mprotect", "madvise", "brk",
	"rt_sigaction", "rt_sigprocmask", "rt_sigreturn", "sigaltstack", "gettid", "getpid", "tgkill", "tkill",
	"exit", "exit_group", "write", "read", "close", "fcntl", "clone", "clone3", "epoll_pwait", "epoll_ctl",
	"epoll_create1", "pipe2", "getrlimit", "prlimit64", "sched_getaffinity", "execve", "arch_prctl",
	"set_tid_address", "set_robust_list", "rseq", "uname", "getuid", "geteuid", "getgid", "getegid",
	"ioctl", "prctl", "personality",
}

// TestLoadDefaultErrnoAllowList uses an allow list with a default ERRNO and
// checks the default errno, the allowed calls, and that execve of the next
// program still works under the filter.
func TestLoadDefaultErrnoAllowList(t *testing.T) {
	requireRoot(t)
	t.Parallel()
	dir := t.TempDir()
	prof := &specs.LinuxSeccomp{
		DefaultAction:   specs.ActErrno,
		DefaultErrnoRet: uptr(uint(unix.EROFS)),
		Syscalls:        []specs.LinuxSyscall{{Names: goRuntimeAllow, Action: specs.ActAllow}},
	}
	r := runHelper(t, helperConfig{Profile: prof, Probes: []probe{
		{Op: "mkdirat", Path: filepath.Join(dir, "a"), Mode: 0o755},
		{Op: "getpid"},
		{Op: "personality", Arg: 0xffffffff},
		{Op: "exec", Argv: []string{"/bin/busybox", "mkdir", filepath.Join(dir, "b")}},
	}})
	if r.res.LoadErr != "" {
		t.Fatalf("Load: %s", r.res.LoadErr)
	}
	if got := r.res.Results; len(got) != 4 || got[0] != int(unix.EROFS) || got[1] != 0 || got[2] != 0 {
		t.Fatalf("results %v, want [EROFS 0 0 0]; stderr %q", got, r.stderr)
	}
	// busybox ran (execve allowed) and its mkdir got the default errno.
	if code := r.state.ExitCode(); code != 1 || !strings.Contains(r.stderr, "can't create directory") ||
		!strings.Contains(r.stderr, "Read-only file system") {
		t.Fatalf("busybox exit %d, stderr %q", code, r.stderr)
	}
}

// TestLoadSurvivesExec checks that execve right after Load works and the
// filter stays in force in the new program, and a control run without the
// rule.
func TestLoadSurvivesExec(t *testing.T) {
	requireRoot(t)
	t.Parallel()
	for _, deny := range []bool{true, false} {
		t.Run(fmt.Sprint("deny=", deny), func(t *testing.T) {
			t.Parallel()
			dir := t.TempDir()
			rule := denyMkdir(nil)
			if !deny {
				rule.Names = []string{"acct"}
			}
			prof := &specs.LinuxSeccomp{DefaultAction: specs.ActAllow, Syscalls: []specs.LinuxSyscall{rule}}
			target := filepath.Join(dir, "made")
			r := runHelper(t, helperConfig{Profile: prof, Probes: []probe{
				{Op: "exec", Argv: []string{"/bin/busybox", "mkdir", target}},
			}})
			if r.res.LoadErr != "" {
				t.Fatalf("Load: %s", r.res.LoadErr)
			}
			_, statErr := os.Stat(target)
			if deny {
				if r.state.ExitCode() != 1 || !strings.Contains(r.stderr, "Operation not permitted") {
					t.Fatalf("busybox exit %d, stderr %q", r.state.ExitCode(), r.stderr)
				}
				if statErr == nil {
					t.Fatal("directory created despite the filter")
				}
			} else if !r.state.Success() || statErr != nil {
				t.Fatalf("busybox exit %d, stderr %q, stat %v", r.state.ExitCode(), r.stderr, statErr)
			}
		})
	}
}

func TestLoadArgumentFilter(t *testing.T) {
	requireRoot(t)
	t.Parallel()
	dir := t.TempDir()
	// The kernel sees the dirfd register sign-extended to 64 bits.
	atFdcwd := int64(unix.AT_FDCWD)
	prof := &specs.LinuxSeccomp{
		DefaultAction: specs.ActAllow,
		Syscalls: []specs.LinuxSyscall{
			{
				Names: []string{"personality"}, Action: specs.ActErrno,
				Args: []specs.LinuxSeccompArg{{Index: 0, Value: 0xffffffff, Op: specs.OpEqualTo}},
			},
			{
				// (mode & 01100) == 01000: value is the mask, valueTwo the
				// datum; no sticky directory without owner search.
				Names: []string{"mkdirat"}, Action: specs.ActErrno, ErrnoRet: uptr(uint(unix.EACCES)),
				Args: []specs.LinuxSeccompArg{{Index: 2, Value: 0o1100, ValueTwo: 0o1000, Op: specs.OpMaskedEqual}},
			},
			{
				// Two conditions on one index are ORed (runc compatible).
				Names: []string{"mkdirat"}, Action: specs.ActErrno, ErrnoRet: uptr(uint(unix.EROFS)),
				Args: []specs.LinuxSeccompArg{
					{Index: 2, Value: 0o700, Op: specs.OpEqualTo},
					{Index: 2, Value: 0o711, Op: specs.OpEqualTo},
				},
			},
			{
				// Conditions on different indexes are ANDed.
				Names: []string{"mkdirat"}, Action: specs.ActErrno, ErrnoRet: uptr(uint(unix.ENOSPC)),
				Args: []specs.LinuxSeccompArg{
					{Index: 0, Value: uint64(atFdcwd), Op: specs.OpEqualTo},
					{Index: 2, Value: 0o600, Op: specs.OpLessThan},
				},
			},
		},
	}
	p := func(name string) string { return filepath.Join(dir, name) }
	got := runHelper(t, helperConfig{Profile: prof, Probes: []probe{
		{Op: "personality", Arg: 0xffffffff},
		{Op: "personality", Arg: 0},
		{Op: "mkdirat", Path: p("sticky"), Mode: 0o1655},
		{Op: "mkdirat", Path: p("sticky-x"), Mode: 0o1755},
		{Op: "mkdirat", Path: p("plain"), Mode: 0o755},
		{Op: "mkdirat", Path: p("m700"), Mode: 0o700},
		{Op: "mkdirat", Path: p("m711"), Mode: 0o711},
		{Op: "mkdirat", Path: p("m500"), Mode: 0o500},
	}}).mustLoad(t, 8)
	want := []int{int(unix.EPERM), 0, int(unix.EACCES), 0, 0, int(unix.EROFS), int(unix.EROFS), int(unix.ENOSPC)}
	for i := range want {
		if got[i] != want[i] {
			t.Errorf("probe %d: errno %d, want %d", i, got[i], want[i])
		}
	}
}

func TestLoadActions(t *testing.T) {
	requireRoot(t)
	t.Parallel()
	killedBySIGSYS := func(t *testing.T, r run) {
		ws := r.state.Sys().(syscall.WaitStatus)
		if !ws.Signaled() || ws.Signal() != unix.SIGSYS {
			t.Fatalf("process %v, stderr %q; want killed by SIGSYS", r.state, r.stderr)
		}
	}
	cases := []struct {
		action specs.LinuxSeccompAction
		flags  []specs.LinuxSeccompFlag
		// execIt runs the denied call in an exec'd single-threaded busybox:
		// killing one thread of the Go helper would leave it hanging.
		execIt bool
		check  func(t *testing.T, r run)
	}{
		{specs.ActKillProcess, nil, false, killedBySIGSYS},
		{specs.ActKill, nil, true, killedBySIGSYS},
		{specs.ActKillThread, nil, true, killedBySIGSYS},
		{specs.ActTrap, nil, false, func(t *testing.T, r run) {
			// SIGSYS reaches the Go runtime, which dies on it.
			if r.state.Success() || !strings.Contains(r.stderr, "SIGSYS") {
				t.Fatalf("helper %v, stderr %q; want a SIGSYS crash", r.state, r.stderr)
			}
		}},
		{specs.ActTrace, nil, false, func(t *testing.T, r run) {
			// With no tracer attached the kernel fails the call with ENOSYS.
			if got := r.mustLoad(t, 1); got[0] != int(unix.ENOSYS) {
				t.Fatalf("errno %d, want ENOSYS", got[0])
			}
		}},
		{specs.ActLog, []specs.LinuxSeccompFlag{specs.LinuxSeccompFlagLog, specs.LinuxSeccompFlagSpecAllow}, false, func(t *testing.T, r run) {
			if got := r.mustLoad(t, 1); got[0] != 0 {
				t.Fatalf("errno %d, want the logged call allowed", got[0])
			}
		}},
	}
	for _, tc := range cases {
		t.Run(string(tc.action), func(t *testing.T) {
			t.Parallel()
			prof := &specs.LinuxSeccomp{
				DefaultAction: specs.ActAllow,
				Flags:         tc.flags,
				Syscalls:      []specs.LinuxSyscall{{Names: []string{"mkdir", "mkdirat"}, Action: tc.action}},
			}
			target := filepath.Join(t.TempDir(), "a")
			pr := probe{Op: "mkdirat", Path: target, Mode: 0o755}
			if tc.execIt {
				pr = probe{Op: "exec", Argv: []string{"/bin/busybox", "mkdir", target}}
			}
			r := runHelper(t, helperConfig{Profile: prof, Probes: []probe{pr}})
			if r.res.LoadErr != "" {
				t.Fatalf("Load: %s", r.res.LoadErr)
			}
			tc.check(t, r)
		})
	}
}

// TestLoadPrivilege checks the rule the init's order depends on: without
// no_new_privs, a thread lacking CAP_SYS_ADMIN cannot load a filter.
func TestLoadPrivilege(t *testing.T) {
	requireRoot(t)
	t.Parallel()
	prof := &specs.LinuxSeccomp{DefaultAction: specs.ActAllow, Syscalls: []specs.LinuxSyscall{denyMkdir(nil)}}
	probes := []probe{{Op: "mkdirat", Path: filepath.Join(t.TempDir(), "a"), Mode: 0o755}, {Op: "nnp"}}

	r := runHelper(t, helperConfig{Profile: prof, DropSysAdmin: true, Probes: probes})
	if !r.res.LoadPrivilege {
		t.Fatalf("Load without CAP_SYS_ADMIN and no_new_privs: err %q, want ErrPrivilegeRequired", r.res.LoadErr)
	}

	got := runHelper(t, helperConfig{Profile: prof, DropSysAdmin: true, NoNewPrivs: true, Probes: probes}).mustLoad(t, 2)
	if got[0] != int(unix.EPERM) || got[1] != 1 {
		t.Fatalf("results %v, want [EPERM 1]", got)
	}
}

func TestLoadRefusesInvalid(t *testing.T) {
	requireRoot(t)
	t.Parallel()
	prof := &specs.LinuxSeccomp{DefaultAction: specs.ActNotify}
	r := runHelper(t, helperConfig{Profile: prof, Probes: []probe{{Op: "getpid"}}})
	if !strings.Contains(r.res.LoadErr, "not supported") {
		t.Fatalf("Load(notify) err %q, want not supported", r.res.LoadErr)
	}
}
