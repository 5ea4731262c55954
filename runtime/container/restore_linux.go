package container

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"time"

	specs "github.com/opencontainers/runtime-spec/specs-go"

	"github.com/migratehq/migrate/runtime/cgroups"
	"github.com/migratehq/migrate/runtime/spec"
)

// Restoring is a container whose processes are being recreated by someone
// else (CRIU): its state directory and cgroup exist, its processes not yet.
// It becomes a Container with Commit, or disappears without a trace with
// Abort. Until Commit it is invisible to List and Get.
type Restoring struct {
	c    *Container
	done bool
}

// RestoreOptions describe the container being restored.
type RestoreOptions struct {
	Bundle string      // recorded for the OCI state
	Rootfs string      // the host path CRIU restores the mount namespace's root onto
	Spec   *specs.Spec // the container's configuration
	// Child: the restored init will be a child of this process (CRIU's
	// restore-sibling mode), so Wait works and we must reap it.
	Child bool
}

// PrepareRestore makes the state directory and a fresh cgroup with the
// spec's limits for id.
func (r *Runtime) PrepareRestore(id string, o RestoreOptions) (_ *Restoring, retErr error) {
	if err := ValidateID(id); err != nil {
		return nil, err
	}
	if o.Spec == nil || o.Spec.Linux == nil {
		return nil, fmt.Errorf("restore %s: %w: no linux section", id, spec.ErrInvalid)
	}
	res := effectiveResources(o.Spec)
	cg, err := cgroups.New(cgroups.Config{ID: id, CgroupsPath: o.Spec.Linux.CgroupsPath, Resources: res})
	if err != nil {
		return nil, fmt.Errorf("restore %s: %w", id, err)
	}
	dir := filepath.Join(r.root, id)
	if err := os.Mkdir(dir, 0o700); err != nil {
		if errors.Is(err, os.ErrExist) {
			return nil, fmt.Errorf("restore %s: %w", id, ErrExist)
		}
		return nil, fmt.Errorf("restore %s: %w", id, err)
	}
	c := &Container{dir: dir, cg: cg, st: &persisted{
		ID: id, Bundle: o.Bundle, Rootfs: o.Rootfs, Spec: o.Spec, Annotations: o.Spec.Annotations,
		Created: time.Now().UTC(),
	}}
	x := &Restoring{c: c}
	defer func() {
		if retErr != nil {
			x.Abort()
		}
	}()
	if err := cg.Apply(-1); err != nil {
		return nil, fmt.Errorf("restore %s: cgroup: %w", id, err)
	}
	if err := cg.Set(res); err != nil {
		return nil, fmt.Errorf("restore %s: cgroup: %w", id, err)
	}
	c.st.Cgroup = cg.State()
	c.child = o.Child
	return x, nil
}

// CgroupPath is the cgroup (relative to each hierarchy's root) the restored
// processes must be placed in.
func (x *Restoring) CgroupPath() string { return x.c.cg.CgroupPath() }

// Cgroup is the restored container's cgroup.
func (x *Restoring) Cgroup() *cgroups.Manager { return x.c.cg }

// Commit records the restored init and makes the container visible.
func (x *Restoring) Commit(pid int) (*Container, error) {
	c := x.c
	_, start, err := procStat(pid)
	if err != nil {
		return nil, fmt.Errorf("restore %s: restored init %d: %w", c.ID(), pid, err)
	}
	c.st.InitPid, c.st.InitStartTime = pid, start
	if err := c.st.save(c.dir); err != nil {
		return nil, fmt.Errorf("restore %s: save state: %w", c.ID(), err)
	}
	x.done = true
	return c, nil
}

// Abort kills anything already placed in the cgroup and removes the cgroup
// and the state directory. It is a no-op after Commit.
func (x *Restoring) Abort() {
	if x.done {
		return
	}
	x.done = true
	c := x.c
	if pids, err := c.cg.Pids(); err == nil && len(pids) > 0 {
		_ = c.killAll()
	}
	_ = c.cg.Destroy()
	_ = os.RemoveAll(c.dir)
}
