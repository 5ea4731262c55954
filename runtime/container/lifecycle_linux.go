package container

import (
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"time"

	specs "github.com/opencontainers/runtime-spec/specs-go"
	"golang.org/x/sys/unix"

	"github.com/migratehq/migrate/runtime/hooks"
)

// PoststartError reports failed poststart hooks: the container runs anyway,
// as the OCI spec asks, and the caller decides whether to warn.
type PoststartError struct{ Err error }

func (e *PoststartError) Error() string { return e.Err.Error() }
func (e *PoststartError) Unwrap() error { return e.Err }

// Start lets a created container's init exec the user's program.
func (c *Container) Start() error {
	if s := c.Status(); s != specs.StateCreated {
		return fmt.Errorf("start %s: %w (%s)", c.ID(), ErrInvalidState, s)
	}
	fifo := filepath.Join(c.dir, fifoName)
	// Opening for reading blocks until the init opens the other end; watch the
	// init meanwhile so a dead init cannot hang us.
	type result struct {
		f   *os.File
		err error
	}
	ch := make(chan result, 1)
	go func() {
		f, err := os.OpenFile(fifo, os.O_RDONLY, 0)
		ch <- result{f, err}
	}()
	var r result
	for waiting := true; waiting; {
		select {
		case r = <-ch:
			waiting = false
		case <-time.After(20 * time.Millisecond):
			if alive(c.st.InitPid, c.st.InitStartTime) {
				continue
			}
			// The init is gone: either it never reached the fifo, or it
			// wrote its byte and the program already ran and exited. Open the
			// write end ourselves so our open returns either way; the byte in
			// the fifo then tells which.
			if w, err := os.OpenFile(fifo, os.O_WRONLY|unix.O_NONBLOCK, 0); err == nil {
				w.Close()
			}
		}
	}
	if r.err != nil {
		return fmt.Errorf("start %s: exec fifo: %w", c.ID(), r.err)
	}
	f := r.f
	data, err := io.ReadAll(f)
	f.Close()
	if err != nil {
		return fmt.Errorf("start %s: exec fifo: %w", c.ID(), err)
	}
	if len(data) == 0 {
		return fmt.Errorf("start %s: init exited before start: %w", c.ID(), ErrNotRunning)
	}
	if err := os.Remove(fifo); err != nil {
		return fmt.Errorf("start %s: %w", c.ID(), err)
	}
	if err := hooks.Run(hooks.Poststart, hooks.Of(c.st.Spec.Hooks, hooks.Poststart), c.ociState(specs.StateRunning)); err != nil {
		return &PoststartError{fmt.Errorf("start %s: %w", c.ID(), err)}
	}
	return nil
}

// Delete removes a stopped (or created) container: its cgroup and state, after
// running the poststop hooks. A running one is refused unless force, which
// kills every process of it first.
func (c *Container) Delete(force bool) error {
	switch s := c.Status(); s {
	case specs.StateStopped, specs.StateCreated:
	default:
		if !force {
			return fmt.Errorf("delete %s: container is %s: stop it first or use --force: %w", c.ID(), s, ErrInvalidState)
		}
	}
	if err := c.killAll(); err != nil {
		return fmt.Errorf("delete %s: %w", c.ID(), err)
	}
	if err := c.cg.Destroy(); err != nil {
		return fmt.Errorf("delete %s: %w", c.ID(), err)
	}
	hookErr := hooks.Run(hooks.Poststop, hooks.Of(c.st.Spec.Hooks, hooks.Poststop), c.ociState(specs.StateStopped))
	if err := os.RemoveAll(c.dir); err != nil {
		return fmt.Errorf("delete %s: %w", c.ID(), err)
	}
	if hookErr != nil {
		return fmt.Errorf("delete %s: %w", c.ID(), hookErr)
	}
	return nil
}

// killAll SIGKILLs every process in the cgroup and the init, and waits until
// they are gone (reaping our own children).
func (c *Container) killAll() error {
	_ = c.Signal(unix.SIGKILL, true)
	_ = signalProcess(c.st.InitPid, c.st.InitStartTime, unix.SIGKILL)
	_ = c.cg.Thaw()
	deadline := time.Now().Add(10 * time.Second)
	for {
		c.reap()
		pids, err := c.cg.Pids()
		if (err != nil || len(pids) == 0) && !alive(c.st.InitPid, c.st.InitStartTime) {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("processes %v still alive 10s after SIGKILL", pids)
		}
		for _, p := range pids {
			_ = unix.Kill(p, unix.SIGKILL)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// reap collects the init if it is our child and has exited.
func (c *Container) reap() {
	c.mu.Lock()
	defer c.mu.Unlock()
	if !c.child || c.st.InitPid <= 0 {
		return
	}
	if n, _ := unix.Wait4(c.st.InitPid, nil, unix.WNOHANG, nil); n == c.st.InitPid {
		c.child = false
	}
}

// Wait waits for the init to exit and returns its exit code (128+signal when
// killed). Only a container whose init is our child can be waited for.
func (c *Container) Wait() (int, error) {
	c.mu.Lock()
	child := c.child
	c.mu.Unlock()
	if !child {
		return -1, fmt.Errorf("wait %s: not a child of this process", c.ID())
	}
	var ws unix.WaitStatus
	for {
		_, err := unix.Wait4(c.st.InitPid, &ws, 0, nil)
		if errors.Is(err, unix.EINTR) {
			continue
		}
		if err != nil {
			return -1, fmt.Errorf("wait %s: %w", c.ID(), err)
		}
		break
	}
	c.mu.Lock()
	c.child = false
	c.mu.Unlock()
	return exitCode(ws), nil
}

func exitCode(ws unix.WaitStatus) int {
	if ws.Signaled() {
		return 128 + int(ws.Signal())
	}
	return ws.ExitStatus()
}

// destroy undoes a failed create.
func (c *Container) destroy() {
	c.mu.Lock()
	cmd, child := c.init, c.child
	c.child = false
	c.mu.Unlock()
	if c.st.InitPid > 0 {
		_ = unix.Kill(c.st.InitPid, unix.SIGKILL)
		if child {
			_, _ = unix.Wait4(c.st.InitPid, nil, 0, nil)
		}
	}
	if cmd != nil && cmd.ProcessState == nil {
		_ = cmd.Process.Kill()
		_ = cmd.Wait()
	}
	for i := 0; i < 100; i++ {
		if pids, err := c.cg.Pids(); err != nil || len(pids) == 0 {
			break
		}
		time.Sleep(10 * time.Millisecond)
	}
	_ = c.cg.Destroy()
	_ = os.RemoveAll(c.dir)
}
