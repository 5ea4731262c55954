package container

import (
	"errors"
	"fmt"
	"os"
	goruntime "runtime"
	"strconv"
	"strings"

	specs "github.com/opencontainers/runtime-spec/specs-go"
	"golang.org/x/sys/unix"

	"github.com/migratehq/migrate/runtime/caps"
	"github.com/migratehq/migrate/runtime/hooks"
	"github.com/migratehq/migrate/runtime/rootfs"
	"github.com/migratehq/migrate/runtime/seccomp"
	"github.com/migratehq/migrate/runtime/spec"
)

// IsInit reports whether this process was started as a container init; the
// binary's main must then call InitMain before doing anything else.
func IsInit() bool { return os.Getenv(envInit) != "" }

func init() {
	// unshare(2), setns(2) and the final execve act on the calling thread:
	// keep the init's main goroutine on the main thread from the start.
	if IsInit() {
		goruntime.LockOSThread()
	}
}

// InitMain runs the container side of create or exec. It never returns: it
// execs the user's program or exits non-zero after telling the parent why.
func InitMain() {
	sync := newSyncConn(os.NewFile(syncFd, "sync"))
	err := runInit(sync)
	// Only reached on failure. Once ready was sent nobody reads the sync
	// channel: the container's stderr is the one place left to say why.
	var late *afterReady
	if errors.As(err, &late) || sync.send(message{Type: msgError, Message: err.Error()}) != nil {
		fmt.Fprintln(os.Stderr, "container init: "+err.Error())
	}
	os.Exit(1)
}

func runInit(sync *syncConn) error {
	mode := os.Getenv(envInit)
	for _, k := range []string{envInit, envNsenter, envNsenterFd, envNsenterFork} {
		os.Unsetenv(k)
	}
	m, err := sync.expect(msgConfig)
	if err != nil {
		return err
	}
	cfg := m.Config
	if cfg == nil || cfg.Mode != mode {
		return errors.New("init: bad config")
	}
	if mode == "exec" {
		path, env, err := prepareProcess(cfg)
		if err != nil {
			return err
		}
		if err := finalizeProcess(cfg); err != nil {
			return err
		}
		return execve(path, cfg.Process, env)
	}
	return initContainer(cfg, sync)
}

func initContainer(cfg *initConfig, sync *syncConn) error {
	s := cfg.Spec
	if cfg.NewCgroupNS {
		// After the parent moved us into the container's cgroup, so that
		// cgroup is the namespace's root.
		if err := unix.Unshare(unix.CLONE_NEWCGROUP); err != nil {
			return fmt.Errorf("unshare cgroup namespace: %w", err)
		}
	}
	if cfg.NewTimeNS {
		if err := unix.Unshare(unix.CLONE_NEWTIME); err != nil {
			return fmt.Errorf("unshare time namespace: %w", err)
		}
		if err := writeTimeOffsets(s.Linux.TimeOffsets); err != nil {
			return err
		}
	}
	if _, err := unix.Setsid(); err != nil {
		return fmt.Errorf("setsid: %w", err)
	}
	if err := rootfs.Prepare(s, rootfs.Options{
		Bundle: cfg.Bundle, Rootfs: cfg.Rootfs, NoPivot: cfg.NoPivot, UserNS: cfg.UserNS,
		CgroupPaths: cfg.CgroupPaths, CgroupNS: cfg.NewCgroupNS || hasNSPath(s, specs.CgroupNamespace),
	}); err != nil {
		return err
	}
	if err := sync.send(message{Type: msgHooks}); err != nil {
		return err
	}
	if _, err := sync.expect(msgHooksDone); err != nil {
		return err
	}
	state := &specs.State{Version: specs.Version, ID: cfg.ID, Status: specs.StateCreating, Pid: cfg.InitPid, Bundle: cfg.Bundle, Annotations: s.Annotations}
	if err := hooks.Run(hooks.CreateContainer, hooks.Of(s.Hooks, hooks.CreateContainer), state); err != nil {
		return err
	}
	if ok, path := spec.HasNamespace(s, specs.NetworkNamespace); ok && path == "" {
		if err := loopbackUp(); err != nil {
			return err
		}
	}
	if s.Hostname != "" {
		if err := unix.Sethostname([]byte(s.Hostname)); err != nil {
			return fmt.Errorf("sethostname: %w", err)
		}
	}
	if s.Domainname != "" {
		if err := unix.Setdomainname([]byte(s.Domainname)); err != nil {
			return fmt.Errorf("setdomainname: %w", err)
		}
	}
	if err := rootfs.Pivot(cfg.Rootfs, cfg.NoPivot); err != nil {
		return err
	}
	if cfg.Console {
		slave, err := setupConsole(os.NewFile(consoleFd, "console"), s.Process.ConsoleSize)
		if err != nil {
			return err
		}
		if err := rootfs.BindConsole(slave); err != nil {
			return err
		}
	}
	if err := rootfs.WriteSysctls(s); err != nil {
		return err
	}
	if err := rootfs.Finalize(s); err != nil {
		return err
	}
	path, env, err := prepareProcess(cfg)
	if err != nil {
		return err
	}
	if err := finalizeProcess(cfg); err != nil {
		return err
	}
	if err := sync.send(message{Type: msgReady}); err != nil {
		return err
	}
	if err := waitStart(s, state); err != nil {
		return &afterReady{err}
	}
	return &afterReady{execve(path, cfg.Process, env)}
}

// afterReady marks an init failure after the parent stopped listening.
type afterReady struct{ err error }

func (e *afterReady) Error() string { return e.err.Error() }
func (e *afterReady) Unwrap() error { return e.err }

// waitStart blocks until `start` opens the exec fifo for reading, then runs
// the startContainer hooks (in the container, as its process).
func waitStart(s *specs.Spec, state *specs.State) error {
	fifo, err := os.OpenFile("/proc/self/fd/"+strconv.Itoa(fifoFd), os.O_WRONLY|unix.O_CLOEXEC, 0)
	if err != nil {
		return fmt.Errorf("open exec fifo: %w", err)
	}
	if _, err := fifo.Write([]byte{'0'}); err != nil {
		return fmt.Errorf("write exec fifo: %w", err)
	}
	fifo.Close()
	state.Status = specs.StateCreated
	return hooks.Run(hooks.StartContainer, hooks.Of(s.Hooks, hooks.StartContainer), state)
}

func hasNSPath(s *specs.Spec, t specs.LinuxNamespaceType) bool {
	ok, p := spec.HasNamespace(s, t)
	return ok && p != ""
}

// prepareProcess does everything of the user process that can fail on bad
// input while the parent still listens: console (exec), rlimits, oom score,
// working directory and the program's path, which is resolved inside the
// container's root. It returns the path and environment for execve.
func prepareProcess(cfg *initConfig) (string, []string, error) {
	p := cfg.Process
	if cfg.Mode == "exec" && p.Terminal {
		if _, err := unix.Setsid(); err != nil {
			return "", nil, fmt.Errorf("setsid: %w", err)
		}
		if _, err := setupConsole(os.NewFile(consoleFd, "console"), p.ConsoleSize); err != nil {
			return "", nil, err
		}
	}
	for _, r := range p.Rlimits {
		lim := &unix.Rlimit{Cur: r.Soft, Max: r.Hard}
		if err := unix.Setrlimit(spec.Rlimits[r.Type], lim); err != nil {
			return "", nil, fmt.Errorf("setrlimit %s: %w", r.Type, err)
		}
	}
	if p.OOMScoreAdj != nil {
		if err := os.WriteFile("/proc/self/oom_score_adj", []byte(strconv.Itoa(*p.OOMScoreAdj)), 0); err != nil {
			return "", nil, fmt.Errorf("oom_score_adj: %w", err)
		}
	}
	env := p.Env
	if !hasEnv(env, "PATH") {
		env = append(env, "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin")
	}
	if !hasEnv(env, "HOME") {
		env = append(env, "HOME=/")
	}
	if err := unix.Chdir(p.Cwd); err != nil {
		return "", nil, fmt.Errorf("chdir %s: %w", p.Cwd, err)
	}
	// CVE-2024-21626: a leaked host directory fd used as cwd would leave the
	// process outside its root; getcwd then reports "(unreachable)".
	if wd, err := unix.Getwd(); err != nil || !strings.HasPrefix(wd, "/") {
		return "", nil, fmt.Errorf("working directory %q is outside the container root", wd)
	}
	path, err := lookPath(p.Args[0], env)
	if err != nil {
		return "", nil, err
	}
	return path, env, nil
}

// finalizeProcess takes on the process's identity: nothing but stdio left
// to inherit, seccomp, user and groups, capabilities, no_new_privs. It runs
// before the init reports ready, so a failure here fails create, as with runc.
func finalizeProcess(cfg *initConfig) error {
	p := cfg.Process
	// CVE-2024-21626: nothing but stdio crosses into the user's program.
	// Before seccomp, so the profile need not allow close_range.
	if err := unix.CloseRange(3, ^uint(0), unix.CLOSE_RANGE_CLOEXEC); err != nil {
		return fmt.Errorf("close_range: %w", err)
	}
	// Installing a filter needs no_new_privs or CAP_SYS_ADMIN. Without
	// no_new_privs the filter goes in while we still hold every capability
	// (as runc does); with it, after the user switch so the profile need not
	// allow setuid and capset.
	sc := cfg.Spec.Linux.Seccomp
	if sc != nil && !p.NoNewPrivileges {
		if err := seccomp.Load(sc); err != nil {
			return err
		}
	}
	if err := setUser(p); err != nil {
		return err
	}
	// A uid change made us non-dumpable, which hands /proc/self/fd to root:
	// the create init could no longer reopen its exec fifo. execve resets
	// this from the program's own file anyway.
	if err := unix.Prctl(unix.PR_SET_DUMPABLE, 1, 0, 0, 0); err != nil {
		return fmt.Errorf("set dumpable: %w", err)
	}
	if p.NoNewPrivileges {
		if err := unix.Prctl(unix.PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0); err != nil {
			return fmt.Errorf("no_new_privs: %w", err)
		}
		if sc != nil {
			if err := seccomp.Load(sc); err != nil {
				return err
			}
		}
	}
	return nil
}

func execve(path string, p *specs.Process, env []string) error {
	if err := unix.Exec(path, p.Args, env); err != nil {
		return fmt.Errorf("exec %s: %w", p.Args[0], err)
	}
	return nil
}

func setUser(p *specs.Process) error {
	c := p.Capabilities
	if c != nil {
		if err := caps.DropBounding(c); err != nil {
			return err
		}
	}
	u := p.User
	if p.User.Umask != nil {
		unix.Umask(int(*u.Umask))
	}
	if u.UID != 0 && c != nil {
		if err := caps.KeepCapsForUserSwitch(); err != nil {
			return err
		}
	}
	groups := make([]int, len(u.AdditionalGids))
	for i, g := range u.AdditionalGids {
		groups[i] = int(g)
	}
	// setgroups is denied in a user namespace whose setgroups file says deny;
	// an empty list there is what the process has anyway.
	if err := unix.Setgroups(groups); err != nil && !(len(groups) == 0 && errors.Is(err, unix.EPERM)) {
		return fmt.Errorf("setgroups: %w", err)
	}
	// Raw syscalls on purpose: only this thread runs the program after execve,
	// and Go's all-thread setuid would need every thread in our namespaces.
	if _, _, e := unix.RawSyscall(unix.SYS_SETRESGID, uintptr(u.GID), uintptr(u.GID), uintptr(u.GID)); e != 0 {
		return fmt.Errorf("setgid %d: %w", u.GID, e)
	}
	if _, _, e := unix.RawSyscall(unix.SYS_SETRESUID, uintptr(u.UID), uintptr(u.UID), uintptr(u.UID)); e != 0 {
		return fmt.Errorf("setuid %d: %w", u.UID, e)
	}
	if c != nil {
		if err := caps.Apply(c); err != nil {
			return err
		}
	}
	return nil
}

func hasEnv(env []string, key string) bool {
	for _, e := range env {
		if strings.HasPrefix(e, key+"=") {
			return true
		}
	}
	return false
}

// lookPath resolves name in the container's PATH (the process env's, not ours).
func lookPath(name string, env []string) (string, error) {
	if strings.Contains(name, "/") {
		if err := executable(name); err != nil {
			return "", fmt.Errorf("exec %s: %w", name, err)
		}
		return name, nil
	}
	path := ""
	for _, e := range env {
		if strings.HasPrefix(e, "PATH=") {
			path = e[5:]
		}
	}
	for _, dir := range strings.Split(path, ":") {
		if dir == "" {
			dir = "."
		}
		cand := dir + "/" + name
		if executable(cand) == nil {
			return cand, nil
		}
	}
	return "", fmt.Errorf("exec %s: executable file not found in $PATH", name)
}

func executable(path string) error {
	var st unix.Stat_t
	if err := unix.Stat(path, &st); err != nil {
		return err
	}
	if st.Mode&unix.S_IFMT == unix.S_IFDIR {
		return unix.EISDIR
	}
	return unix.Access(path, unix.X_OK)
}

func writeTimeOffsets(off map[string]specs.LinuxTimeOffset) error {
	if len(off) == 0 {
		return nil
	}
	var b strings.Builder
	for clock, o := range off {
		fmt.Fprintf(&b, "%s %d %d\n", clock, o.Secs, o.Nanosecs)
	}
	if err := os.WriteFile("/proc/self/timens_offsets", []byte(b.String()), 0); err != nil {
		return fmt.Errorf("time namespace offsets: %w", err)
	}
	return nil
}
