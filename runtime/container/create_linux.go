package container

import (
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"

	specs "github.com/opencontainers/runtime-spec/specs-go"
	"golang.org/x/sys/unix"

	"github.com/migratehq/migrate/runtime/atomicfile"
	"github.com/migratehq/migrate/runtime/caps"
	"github.com/migratehq/migrate/runtime/cgroups"
	"github.com/migratehq/migrate/runtime/hooks"
	"github.com/migratehq/migrate/runtime/rootfs"
	"github.com/migratehq/migrate/runtime/seccomp"
	"github.com/migratehq/migrate/runtime/spec"
)

// CreateOptions are the caller's choices beyond config.json.
type CreateOptions struct {
	Bundle        string
	ConsoleSocket string // unix socket that receives the pty master when process.terminal
	PidFile       string
	NoPivot       bool
	// Stdio of the init when process.terminal is false; nil means /dev/null.
	Stdin, Stdout, Stderr *os.File
}

// Env keys of the init re-exec; the child drops them before exec'ing the user's program.
const (
	envInit        = "_MIGRATE_INIT"
	envNsenter     = "_MIGRATE_NSENTER"
	envNsenterFd   = "_MIGRATE_NSENTER_FD"
	envNsenterFork = "_MIGRATE_NSENTER_FORK"
	syncFd         = 3
	fifoFd         = 4
	consoleFd      = 5
)

var cloneFlags = map[specs.LinuxNamespaceType]uintptr{
	specs.PIDNamespace: unix.CLONE_NEWPID, specs.NetworkNamespace: unix.CLONE_NEWNET,
	specs.MountNamespace: unix.CLONE_NEWNS, specs.IPCNamespace: unix.CLONE_NEWIPC,
	specs.UTSNamespace: unix.CLONE_NEWUTS, specs.UserNamespace: unix.CLONE_NEWUSER,
}

// Create sets up a container from a bundle and leaves its init waiting for
// Start. On any error nothing is left behind: no process, cgroup or state.
func (r *Runtime) Create(id string, o CreateOptions) (_ *Container, retErr error) {
	if err := ValidateID(id); err != nil {
		return nil, err
	}
	bundle, err := filepath.Abs(o.Bundle)
	if err != nil {
		return nil, fmt.Errorf("create %s: %w", id, err)
	}
	s, err := spec.Load(bundle)
	if err != nil {
		return nil, fmt.Errorf("create %s: %w", id, err)
	}
	if err := validateForCreate(s); err != nil {
		return nil, fmt.Errorf("create %s: %w", id, err)
	}
	if s.Process.Terminal && o.ConsoleSocket == "" {
		return nil, fmt.Errorf("create %s: process.terminal is set but no console socket was given", id)
	}
	res := effectiveResources(s)
	cg, err := cgroups.New(cgroups.Config{ID: id, CgroupsPath: s.Linux.CgroupsPath, Resources: res})
	if err != nil {
		return nil, fmt.Errorf("create %s: %w", id, err)
	}

	dir := filepath.Join(r.root, id)
	if err := os.Mkdir(dir, 0o700); err != nil {
		if errors.Is(err, os.ErrExist) {
			return nil, fmt.Errorf("create %s: %w", id, ErrExist)
		}
		return nil, fmt.Errorf("create %s: %w", id, err)
	}
	c := &Container{dir: dir, cg: cg, st: &persisted{
		ID: id, Bundle: bundle, Rootfs: spec.RootfsPath(s, bundle), Spec: s,
		Annotations: s.Annotations, Created: time.Now().UTC(),
	}}
	defer func() {
		if retErr != nil {
			c.destroy()
		}
	}()

	// 0622 despite the umask: the init opens it for writing after switching
	// to the process's user.
	if err := unix.Mkfifo(filepath.Join(dir, fifoName), 0o622); err != nil {
		return nil, fmt.Errorf("create %s: exec fifo: %w", id, err)
	}
	if err := os.Chmod(filepath.Join(dir, fifoName), 0o622); err != nil {
		return nil, fmt.Errorf("create %s: exec fifo: %w", id, err)
	}
	// The init reopens the fifo through /proc/self/fd as the container's root,
	// which in a user namespace is an unprivileged host uid.
	if uid, gid := hostID(s.Linux.UIDMappings), hostID(s.Linux.GIDMappings); uid != 0 || gid != 0 {
		if err := os.Chown(filepath.Join(dir, fifoName), uid, gid); err != nil {
			return nil, fmt.Errorf("create %s: exec fifo: %w", id, err)
		}
	}
	fifo, err := os.OpenFile(filepath.Join(dir, fifoName), unix.O_PATH|unix.O_CLOEXEC, 0)
	if err != nil {
		return nil, fmt.Errorf("create %s: exec fifo: %w", id, err)
	}
	defer fifo.Close()

	var console *os.File
	if s.Process.Terminal {
		console, err = dialConsole(o.ConsoleSocket)
		if err != nil {
			return nil, fmt.Errorf("create %s: %w", id, err)
		}
		defer console.Close()
	}

	cfg := &initConfig{
		Mode: "create", ID: id, Spec: s, Process: s.Process, Bundle: bundle, Rootfs: c.st.Rootfs,
		NoPivot: o.NoPivot, Console: console != nil,
	}
	var flags uintptr
	var joins []string
	for _, ns := range s.Linux.Namespaces {
		switch {
		case ns.Path != "":
			joins = append(joins, string(ns.Type)+":"+ns.Path)
		case ns.Type == specs.CgroupNamespace:
			cfg.NewCgroupNS = true // unshared by init once inside its cgroup
		case ns.Type == specs.TimeNamespace:
			cfg.NewTimeNS = true
		default:
			flags |= cloneFlags[ns.Type]
		}
		if ns.Type == specs.UserNamespace {
			cfg.UserNS = true
		}
	}
	forkPid := false
	for _, j := range joins {
		if strings.HasPrefix(j, string(specs.PIDNamespace)+":") {
			forkPid = true
		}
	}

	files := []*os.File{nil, fifo}
	if console != nil {
		files = append(files, console)
	}
	p, err := startInit(initStart{
		mode: "create", flags: flags, joins: joins, fork: forkPid, spec: s, extra: files,
		stdin: o.Stdin, stdout: o.Stdout, stderr: o.Stderr, cg: cg, resources: res,
	})
	if err != nil {
		return nil, fmt.Errorf("create %s: %w", id, err)
	}
	defer p.sync.f.Close()
	c.init, c.child = p.cmd, true
	c.st.InitPid = p.pid
	if _, c.st.InitStartTime, err = procStat(p.pid); err != nil {
		return nil, fmt.Errorf("create %s: init exited early: %w", id, err)
	}
	c.st.Cgroup = cg.State()
	cfg.InitPid = p.pid
	cfg.CgroupPaths = cg.Paths()
	if err := p.sync.send(message{Type: msgConfig, Config: cfg}); err != nil {
		return nil, fmt.Errorf("create %s: send config: %w", id, err)
	}
	if _, err := p.sync.expect(msgHooks); err != nil {
		return nil, fmt.Errorf("create %s: %w", id, err)
	}
	st := c.ociState(specs.StateCreating)
	for _, k := range []hooks.Kind{hooks.Prestart, hooks.CreateRuntime} {
		if err := hooks.Run(k, hooks.Of(s.Hooks, k), st); err != nil {
			return nil, fmt.Errorf("create %s: %w", id, err)
		}
	}
	if err := p.sync.send(message{Type: msgHooksDone}); err != nil {
		return nil, fmt.Errorf("create %s: %w", id, err)
	}
	if _, err := p.sync.expect(msgReady); err != nil {
		return nil, fmt.Errorf("create %s: %w", id, err)
	}
	if err := c.st.save(dir); err != nil {
		return nil, fmt.Errorf("create %s: save state: %w", id, err)
	}
	if o.PidFile != "" {
		if err := writePidFile(o.PidFile, p.pid); err != nil {
			return nil, fmt.Errorf("create %s: %w", id, err)
		}
	}
	return c, nil
}

func validateForCreate(s *specs.Spec) error {
	if s.Process == nil {
		return fmt.Errorf("%w: process is required", spec.ErrInvalid)
	}
	if err := rootfs.Validate(s); err != nil {
		return err
	}
	if err := rootfs.ValidateSysctls(s); err != nil {
		return err
	}
	if s.Process.Capabilities != nil {
		if err := caps.Validate(s.Process.Capabilities); err != nil {
			return err
		}
	}
	if s.Linux.Seccomp != nil {
		if err := seccomp.Validate(s.Linux.Seccomp); err != nil {
			return err
		}
	}
	// Refused rather than ignored: running unconfined when a profile was
	// asked for would be a silent security downgrade.
	if s.Process.ApparmorProfile != "" {
		return fmt.Errorf("%w: process.apparmorProfile %q: AppArmor profiles are not supported", spec.ErrInvalid, s.Process.ApparmorProfile)
	}
	if s.Process.Terminal && s.Process.ConsoleSize != nil && (s.Process.ConsoleSize.Height == 0 || s.Process.ConsoleSize.Width == 0) {
		return fmt.Errorf("%w: consoleSize must be non-zero", spec.ErrInvalid)
	}
	return nil
}

type initStart struct {
	mode                  string
	flags                 uintptr
	joins                 []string
	fork                  bool
	spec                  *specs.Spec
	extra                 []*os.File // extra[0] is replaced by the sync socket
	stdin, stdout, stderr *os.File
	cg                    *cgroups.Manager
	resources             *specs.LinuxResources // set on the cgroup after Apply (create only)
}

type startedInit struct {
	cmd    *exec.Cmd
	pid    int
	forked bool
	sync   *syncConn
}

// startInit starts the re-exec'd init, places it in the cgroup and, when
// namespaces are joined by path, lets its C constructor run.
func startInit(a initStart) (*startedInit, error) {
	self, err := sealedSelf()
	if err != nil {
		return nil, err
	}
	fds, err := unix.Socketpair(unix.AF_UNIX, unix.SOCK_STREAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return nil, fmt.Errorf("socketpair: %w", err)
	}
	parent := os.NewFile(uintptr(fds[0]), "sync-parent")
	child := os.NewFile(uintptr(fds[1]), "sync-child")
	defer child.Close()

	cmd := exec.Command(self, "init")
	cmd.Args[0] = "migrated-init"
	cmd.Env = []string{envInit + "=" + a.mode, "PATH=/usr/sbin:/usr/bin:/sbin:/bin"}
	if len(a.joins) > 0 {
		cmd.Env = append(cmd.Env, envNsenter+"="+strings.Join(a.joins, ","), envNsenterFd+"="+strconv.Itoa(syncFd))
		if a.fork {
			cmd.Env = append(cmd.Env, envNsenterFork+"=1")
		}
	}
	cmd.Stdin, cmd.Stdout, cmd.Stderr = a.stdin, a.stdout, a.stderr
	cmd.ExtraFiles = append([]*os.File{child}, a.extra[1:]...)
	cmd.SysProcAttr = &syscall.SysProcAttr{Cloneflags: a.flags}
	if a.flags&unix.CLONE_NEWUSER != 0 {
		cmd.SysProcAttr.UidMappings = idMap(a.spec.Linux.UIDMappings)
		cmd.SysProcAttr.GidMappings = idMap(a.spec.Linux.GIDMappings)
		cmd.SysProcAttr.GidMappingsEnableSetgroups = true
		// Become the namespace's root before execve: an unmapped euid would
		// exec without capabilities in the new namespace.
		cmd.SysProcAttr.Credential = &syscall.Credential{Uid: 0, Gid: 0}
	}
	if err := cmd.Start(); err != nil {
		parent.Close()
		return nil, fmt.Errorf("start init: %w", err)
	}
	p := &startedInit{cmd: cmd, pid: cmd.Process.Pid, sync: newSyncConn(parent)}
	fail := func(err error) (*startedInit, error) {
		_ = cmd.Process.Kill()
		_ = cmd.Wait()
		if p.forked && p.pid != cmd.Process.Pid {
			_ = unix.Kill(p.pid, unix.SIGKILL)
			_, _ = unix.Wait4(p.pid, nil, 0, nil)
		}
		parent.Close()
		return nil, err
	}
	join := a.cg.Apply
	if a.mode == "exec" {
		join = a.cg.Join // the container's cgroup and device policy exist
	}
	if err := join(cmd.Process.Pid); err != nil {
		return fail(fmt.Errorf("cgroup: %w", err))
	}
	if a.resources != nil {
		if err := a.cg.Set(a.resources); err != nil {
			return fail(fmt.Errorf("cgroup: %w", err))
		}
	}
	if len(a.joins) > 0 {
		if _, err := parent.Write([]byte{0}); err != nil {
			return fail(fmt.Errorf("start nsenter: %w", err))
		}
		if a.fork {
			m, err := p.sync.expect(msgPid)
			if err != nil {
				return fail(err)
			}
			p.pid, p.forked = m.Pid, true
			// The intermediate exits at once; its child is reparented to us
			// (we are a subreaper) or to the host's init.
			if err := cmd.Wait(); err != nil {
				return fail(fmt.Errorf("nsenter: %w", err))
			}
		}
	}
	return p, nil
}

func idMap(m []specs.LinuxIDMapping) []syscall.SysProcIDMap {
	out := make([]syscall.SysProcIDMap, len(m))
	for i, e := range m {
		out[i] = syscall.SysProcIDMap{ContainerID: int(e.ContainerID), HostID: int(e.HostID), Size: int(e.Size)}
	}
	return out
}

// hostID is the host id that container id 0 maps to (0 without a mapping).
func hostID(m []specs.LinuxIDMapping) int {
	for _, e := range m {
		if e.ContainerID == 0 {
			return int(e.HostID)
		}
	}
	return 0
}

func dialConsole(path string) (*os.File, error) {
	conn, err := net.DialUnix("unix", nil, &net.UnixAddr{Name: path, Net: "unix"})
	if err != nil {
		return nil, fmt.Errorf("console socket %s: %w", path, err)
	}
	defer conn.Close()
	f, err := conn.File() // a CLOEXEC dup
	if err != nil {
		return nil, fmt.Errorf("console socket %s: %w", path, err)
	}
	return f, nil
}

func writePidFile(path string, pid int) error {
	abs, err := filepath.Abs(path)
	if err != nil {
		return err
	}
	if err := atomicfile.WriteFile(abs, []byte(strconv.Itoa(pid)), 0o644); err != nil {
		return fmt.Errorf("pid file %s: %w", path, err)
	}
	return nil
}
