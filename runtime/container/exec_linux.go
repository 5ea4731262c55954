package container

import (
	"errors"
	"fmt"
	"os"

	specs "github.com/opencontainers/runtime-spec/specs-go"
	"golang.org/x/sys/unix"

	"github.com/migratehq/migrate/runtime/caps"
	"github.com/migratehq/migrate/runtime/spec"
)

// ExecOptions are the caller's choices for an extra process.
type ExecOptions struct {
	ConsoleSocket         string
	PidFile               string
	Stdin, Stdout, Stderr *os.File
}

// Process is a process started by Exec.
type Process struct {
	Pid int
}

// Wait waits for the process and returns its exit code (128+signal if killed).
func (p *Process) Wait() (int, error) {
	var ws unix.WaitStatus
	for {
		_, err := unix.Wait4(p.Pid, &ws, 0, nil)
		if errors.Is(err, unix.EINTR) {
			continue
		}
		if err != nil {
			return -1, err
		}
		return exitCode(ws), nil
	}
}

var nsOrder = []specs.LinuxNamespaceType{
	specs.UserNamespace, specs.IPCNamespace, specs.UTSNamespace, specs.NetworkNamespace,
	specs.PIDNamespace, specs.CgroupNamespace, specs.TimeNamespace, specs.MountNamespace,
}

var procNSName = map[specs.LinuxNamespaceType]string{
	specs.UserNamespace: "user", specs.IPCNamespace: "ipc", specs.UTSNamespace: "uts",
	specs.NetworkNamespace: "net", specs.PIDNamespace: "pid", specs.CgroupNamespace: "cgroup",
	specs.TimeNamespace: "time", specs.MountNamespace: "mnt",
}

// Exec starts p inside the running container: all its namespaces, its cgroup,
// and p's own user, capabilities, rlimits; the container's seccomp profile.
// The caller should be a child subreaper (Runtime does not set it) to Wait for
// a process that had to be forked into the container's pid namespace.
func (c *Container) Exec(p *specs.Process, o ExecOptions) (*Process, error) {
	if s := c.Status(); s != specs.StateRunning {
		return nil, fmt.Errorf("exec in %s: %w (%s)", c.ID(), ErrNotRunning, s)
	}
	if err := spec.ValidateProcess(p); err != nil {
		return nil, fmt.Errorf("exec in %s: %w", c.ID(), err)
	}
	if p.Capabilities != nil {
		if err := caps.Validate(p.Capabilities); err != nil {
			return nil, fmt.Errorf("exec in %s: %w", c.ID(), err)
		}
	}
	if p.Terminal && o.ConsoleSocket == "" {
		return nil, fmt.Errorf("exec in %s: terminal requested but no console socket given", c.ID())
	}
	var joins []string
	fork := false
	pid := c.st.InitPid
	for _, t := range nsOrder {
		name := procNSName[t]
		path := fmt.Sprintf("/proc/%d/ns/%s", pid, name)
		same, err := sameNS(path, "/proc/self/ns/"+name)
		if err != nil {
			if errors.Is(err, os.ErrNotExist) {
				continue // kernel without this namespace type
			}
			return nil, fmt.Errorf("exec in %s: %w", c.ID(), err)
		}
		if same {
			continue
		}
		joins = append(joins, string(t)+":"+path)
		if t == specs.PIDNamespace {
			fork = true
		}
	}
	// The pid may have been recycled between Status and opening its ns files.
	if !alive(pid, c.st.InitStartTime) {
		return nil, fmt.Errorf("exec in %s: %w", c.ID(), ErrNotRunning)
	}
	var console *os.File
	var err error
	if p.Terminal {
		if console, err = dialConsole(o.ConsoleSocket); err != nil {
			return nil, fmt.Errorf("exec in %s: %w", c.ID(), err)
		}
		defer console.Close()
	}
	extra := []*os.File{nil, nil}
	if console != nil {
		extra = append(extra, console)
	} else {
		extra = append(extra, nil)
	}
	st, err := startInit(initStart{
		mode: "exec", joins: joins, fork: fork, spec: c.st.Spec, extra: extra,
		stdin: o.Stdin, stdout: o.Stdout, stderr: o.Stderr, cg: c.cg,
	})
	if err != nil {
		return nil, fmt.Errorf("exec in %s: %w", c.ID(), err)
	}
	defer st.sync.f.Close()
	cfg := &initConfig{Mode: "exec", ID: c.ID(), Spec: c.st.Spec, Process: p, Bundle: c.st.Bundle, InitPid: pid, Console: console != nil}
	if err := st.sync.send(message{Type: msgConfig, Config: cfg}); err != nil {
		return nil, fmt.Errorf("exec in %s: %w", c.ID(), err)
	}
	// EOF means execve succeeded and closed the child's CLOEXEC end.
	if _, err := st.sync.recv(); !errors.Is(err, errInitGone) {
		_ = unix.Kill(st.pid, unix.SIGKILL)
		_, _ = unix.Wait4(st.pid, nil, 0, nil)
		if err == nil {
			err = errors.New("unexpected message from exec init")
		}
		return nil, fmt.Errorf("exec in %s: %w", c.ID(), err)
	}
	if o.PidFile != "" {
		if err := writePidFile(o.PidFile, st.pid); err != nil {
			return nil, fmt.Errorf("exec in %s: %w", c.ID(), err)
		}
	}
	return &Process{Pid: st.pid}, nil
}

func sameNS(a, b string) (bool, error) {
	sa, err := os.Stat(a)
	if err != nil {
		return false, err
	}
	sb, err := os.Stat(b)
	if err != nil {
		return false, err
	}
	return os.SameFile(sa, sb), nil
}
