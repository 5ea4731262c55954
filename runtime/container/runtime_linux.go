package container

import (
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"sync"
	"time"

	specs "github.com/opencontainers/runtime-spec/specs-go"
	"golang.org/x/sys/unix"

	"github.com/migratehq/migrate/runtime/cgroups"
)

// Runtime manages the containers whose state lives under one root directory.
type Runtime struct {
	root string
}

// New opens (creating if needed) a state root. The root is 0700: state files
// name host paths and pids that containers must not read.
func New(root string) (*Runtime, error) {
	abs, err := filepath.Abs(root)
	if err != nil {
		return nil, err
	}
	if err := os.MkdirAll(abs, 0o700); err != nil {
		return nil, fmt.Errorf("state root %s: %w", abs, err)
	}
	if err := os.Chmod(abs, 0o700); err != nil {
		return nil, fmt.Errorf("state root %s: %w", abs, err)
	}
	return &Runtime{root: abs}, nil
}

// Root is the state directory.
func (r *Runtime) Root() string { return r.root }

// Container is one container under a Runtime.
type Container struct {
	dir string
	st  *persisted
	cg  *cgroups.Manager

	mu sync.Mutex
	// child is set when the init is our child (we created or restored it
	// here): we may wait for it and must reap it. guarded by mu
	child bool
	// init is the exec'd process when we created the container; after an
	// nsenter fork it is the (already reaped) intermediate. guarded by mu
	init *exec.Cmd
}

// Get loads a container by id.
func (r *Runtime) Get(id string) (*Container, error) {
	if err := ValidateID(id); err != nil {
		return nil, err
	}
	dir := filepath.Join(r.root, id)
	st, err := loadPersisted(dir)
	if err != nil {
		if errors.Is(err, os.ErrNotExist) {
			return nil, fmt.Errorf("%w: %s", ErrNotExist, id)
		}
		return nil, fmt.Errorf("load %s: %w", id, err)
	}
	cg, err := cgroups.Load(st.Cgroup)
	if err != nil {
		return nil, fmt.Errorf("load %s: cgroup: %w", id, err)
	}
	return &Container{dir: dir, st: st, cg: cg}, nil
}

// List returns every container under the root, sorted by id. Directories
// without a state file (a create in progress or interrupted) are skipped.
func (r *Runtime) List() ([]*Container, error) {
	entries, err := os.ReadDir(r.root)
	if err != nil {
		return nil, err
	}
	var out []*Container
	for _, e := range entries {
		if !e.IsDir() || ValidateID(e.Name()) != nil {
			continue
		}
		c, err := r.Get(e.Name())
		if err != nil {
			if errors.Is(err, ErrNotExist) {
				continue
			}
			return nil, err
		}
		out = append(out, c)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].ID() < out[j].ID() })
	return out, nil
}

func (c *Container) ID() string               { return c.st.ID }
func (c *Container) Bundle() string           { return c.st.Bundle }
func (c *Container) Rootfs() string           { return c.st.Rootfs }
func (c *Container) Spec() *specs.Spec        { return c.st.Spec }
func (c *Container) InitPid() int             { return c.st.InitPid }
func (c *Container) Created() time.Time       { return c.st.Created }
func (c *Container) Cgroup() *cgroups.Manager { return c.cg }

// Status computes the OCI status from the process and the cgroup freezer.
func (c *Container) Status() specs.ContainerState {
	if !alive(c.st.InitPid, c.st.InitStartTime) {
		return specs.StateStopped
	}
	if _, err := os.Lstat(filepath.Join(c.dir, fifoName)); err == nil {
		return specs.StateCreated
	}
	if fs, err := c.cg.FreezerState(); err == nil && fs == "FROZEN" {
		return "paused"
	}
	return specs.StateRunning
}

// State returns the OCI state document.
func (c *Container) State() (*specs.State, error) {
	st := &specs.State{
		Version:     specs.Version,
		ID:          c.st.ID,
		Status:      c.Status(),
		Bundle:      c.st.Bundle,
		Annotations: c.st.Annotations,
	}
	if st.Status != specs.StateStopped {
		st.Pid = c.st.InitPid
	}
	return st, nil
}

func (c *Container) ociState(status specs.ContainerState) *specs.State {
	return &specs.State{Version: specs.Version, ID: c.st.ID, Status: status, Pid: c.st.InitPid, Bundle: c.st.Bundle, Annotations: c.st.Annotations}
}

// Processes lists the host pids in the container's cgroup.
func (c *Container) Processes() ([]int, error) {
	pids, err := c.cg.Pids()
	if err != nil {
		return nil, fmt.Errorf("ps %s: %w", c.ID(), err)
	}
	return pids, nil
}

// Signal sends sig to the init, or with all to every process in the cgroup.
func (c *Container) Signal(sig unix.Signal, all bool) error {
	status := c.Status()
	if status == specs.StateStopped {
		return fmt.Errorf("kill %s: %w", c.ID(), ErrNotRunning)
	}
	if all {
		pids, err := c.cg.Pids()
		if err != nil {
			return fmt.Errorf("kill %s: %w", c.ID(), err)
		}
		for _, p := range pids {
			if err := unix.Kill(p, sig); err != nil && !errors.Is(err, unix.ESRCH) {
				return fmt.Errorf("kill %s: pid %d: %w", c.ID(), p, err)
			}
		}
	} else if err := signalProcess(c.st.InitPid, c.st.InitStartTime, sig); err != nil {
		return fmt.Errorf("kill %s: %w", c.ID(), err)
	}
	// A frozen task only acts on SIGKILL once thawed.
	if sig == unix.SIGKILL && status == "paused" {
		_ = c.cg.Thaw()
	}
	return nil
}

// Pause freezes every process of the container.
func (c *Container) Pause() error {
	if s := c.Status(); s != specs.StateRunning {
		return fmt.Errorf("pause %s: %w (%s)", c.ID(), ErrInvalidState, s)
	}
	if err := c.cg.Freeze(); err != nil {
		return fmt.Errorf("pause %s: %w", c.ID(), err)
	}
	return nil
}

// Resume thaws a paused container.
func (c *Container) Resume() error {
	if s := c.Status(); s != "paused" {
		return fmt.Errorf("resume %s: %w (%s)", c.ID(), ErrInvalidState, s)
	}
	if err := c.cg.Thaw(); err != nil {
		return fmt.Errorf("resume %s: %w", c.ID(), err)
	}
	return nil
}
