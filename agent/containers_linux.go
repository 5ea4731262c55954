package agent

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/migratehq/migrate/agent/layers"
	"github.com/migratehq/migrate/agent/logs"
	"github.com/migratehq/migrate/agent/network"
	"github.com/migratehq/migrate/agent/shim"
	migratev1 "github.com/migratehq/migrate/api/migrate/v1"
	shimv1 "github.com/migratehq/migrate/api/shim/v1"
	"github.com/migratehq/migrate/runtime/container"
	"github.com/migratehq/migrate/runtime/spec"
)

// entry is one container the agent knows of.
type entry struct {
	id   string
	dir  string
	meta shim.Meta

	mu       sync.Mutex
	client   *shim.Client // guarded by mu; nil while the shim is unreachable
	state    shim.State   // guarded by mu; the shim's shim.json
	creating bool         // guarded by mu; reserved by Create, shim not ready yet
	deleting bool         // guarded by mu
}

// shimClient returns a connection to the entry's shim, reconnecting if needed.
func (e *entry) shimClient(ctx context.Context) (*shim.Client, error) {
	e.mu.Lock()
	defer e.mu.Unlock()
	if e.creating {
		return nil, fmt.Errorf("container %s: %w: being created", e.id, ErrInvalidState)
	}
	if e.client != nil {
		return e.client, nil
	}
	c, _, err := shim.Connect(ctx, e.dir)
	if err != nil {
		return nil, fmt.Errorf("container %s: shim: %w: %w", e.id, ErrUnavailable, err)
	}
	_ = shim.ReadJSON(e.dir, shim.StateFile, &e.state)
	e.client = c
	return c, nil
}

// quickState asks the entry's shim for the container's state, bounded to a few
// seconds so a request on a wedged shim fails rather than hangs.
func (e *entry) quickState(ctx context.Context, op string) (*shim.Client, *shimv1.StateResponse, error) {
	c, err := e.shimClient(ctx)
	if err != nil {
		return nil, nil, fmt.Errorf("%s: %w", op, err)
	}
	sctx, cancel := context.WithTimeout(ctx, 3*time.Second)
	st, err := c.State(sctx, &shimv1.StateRequest{})
	cancel()
	e.dropClient(c, err)
	if err != nil {
		return nil, nil, shimErr(op, e.id, err)
	}
	return c, st, nil
}

// shimErr adds op and id to a shim's error unless its message already says them
// (the runtime's errors do).
func shimErr(op, id string, err error) error {
	if st, ok := status.FromError(err); ok && strings.Contains(st.Message(), op+" "+id+":") {
		return err
	}
	return fmt.Errorf("%s %s: %w", op, id, err)
}

// dropClient forgets a connection whose shim stopped answering; the next call
// reconnects (or learns the shim is gone).
func (e *entry) dropClient(c *shim.Client, err error) {
	if status.Code(err) != codes.Unavailable {
		return
	}
	e.mu.Lock()
	defer e.mu.Unlock()
	if e.client == c {
		c.Close()
		e.client = nil
	}
}

func (s *Service) lookup(id string) (*entry, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	e, ok := s.containers[id]
	if !ok {
		return nil, fmt.Errorf("container %q: %w", id, ErrNotFound)
	}
	return e, nil
}

// recover adopts the containers of a previous agent: their shims keep running across
// agent restarts, so a container is re-attached by connecting to its shim's socket.
func (s *Service) recover(ctx context.Context) error {
	des, err := os.ReadDir(s.cfg.ContainersDir())
	if err != nil {
		return fmt.Errorf("recover: %w", err)
	}
	for _, de := range des {
		if !de.IsDir() {
			continue
		}
		id, dir := de.Name(), filepath.Join(s.cfg.ContainersDir(), de.Name())
		var meta shim.Meta
		if err := shim.ReadJSON(dir, shim.MetaFile, &meta); err != nil || meta.ID != id {
			// A create interrupted before it was recorded: nothing to adopt.
			s.log.Warn("removing incomplete container directory", "id", id, "err", err)
			s.cleanupRuntime(id)
			_ = s.net.detach(id, dir)
			_ = layers.Remove(dir)
			os.RemoveAll(dir)
			continue
		}
		e := &entry{id: id, dir: dir, meta: meta}
		s.net.adopt(id, dir)
		_ = shim.ReadJSON(dir, shim.StateFile, &e.state)
		if c, _, err := shim.Connect(ctx, dir); err == nil {
			e.client = c
			s.log.Info("adopted container", "id", id, "shim", e.state.ShimPid)
		} else {
			s.log.Warn("container shim unreachable", "id", id, "err", err)
		}
		s.containers[id] = e
		s.events.publish(&migratev1.Event{Time: timestamppb.Now(), Type: "adopted", ContainerId: id})
	}
	s.net.sweep(s.cfg)
	return nil
}

// cleanupRuntime removes a container's runtime state when no shim owns it.
func (s *Service) cleanupRuntime(id string) {
	rt, err := container.New(s.cfg.RuntimeDir())
	if err != nil {
		return
	}
	if c, err := rt.Get(id); err == nil {
		_ = c.Delete(true)
	}
}

// Create creates (and with Start starts) a container from a bundle.
func (s *Service) Create(ctx context.Context, r *migratev1.CreateRequest) (*migratev1.CreateResponse, error) {
	if err := container.ValidateID(r.Id); err != nil {
		return nil, fmt.Errorf("create: %w: %w", ErrInvalid, err)
	}
	bundle := r.Bundle
	if !filepath.IsAbs(bundle) {
		return nil, fmt.Errorf("create %s: %w: bundle path %q must be absolute", r.Id, ErrInvalid, bundle)
	}
	if st, err := os.Stat(bundle); err != nil || !st.IsDir() {
		return nil, fmt.Errorf("create %s: %w: bundle %s is not a directory", r.Id, ErrInvalid, bundle)
	}
	if _, err := os.Stat(filepath.Join(bundle, "config.json")); err != nil {
		return nil, fmt.Errorf("create %s: %w: bundle %s has no config.json", r.Id, ErrInvalid, bundle)
	}
	addr, err := s.net.parse(r.Address)
	if err != nil {
		return nil, fmt.Errorf("create %s: %w", r.Id, err)
	}

	e := &entry{id: r.Id, dir: filepath.Join(s.cfg.ContainersDir(), r.Id), creating: true,
		meta: shim.Meta{ID: r.Id, Bundle: bundle, Created: time.Now().UTC()}}
	s.mu.Lock()
	if _, ok := s.containers[r.Id]; ok {
		s.mu.Unlock()
		return nil, fmt.Errorf("create %s: container %w", r.Id, ErrExists)
	}
	s.containers[r.Id] = e
	s.mu.Unlock()
	fail := func(err error) (*migratev1.CreateResponse, error) {
		_ = s.net.detach(r.Id, e.dir)
		_ = layers.Remove(e.dir)
		os.RemoveAll(e.dir)
		s.mu.Lock()
		delete(s.containers, r.Id)
		s.mu.Unlock()
		return nil, err
	}
	if err := os.Mkdir(e.dir, 0o700); err != nil {
		if errors.Is(err, os.ErrExist) {
			s.mu.Lock()
			delete(s.containers, r.Id)
			s.mu.Unlock()
			return nil, fmt.Errorf("create %s: container directory %w", r.Id, ErrExists)
		}
		return fail(fmt.Errorf("create %s: %w", r.Id, err))
	}
	if err := shim.WriteJSON(e.dir, shim.MetaFile, e.meta); err != nil {
		return fail(fmt.Errorf("create %s: %w", r.Id, err))
	}
	ep, err := s.net.attach(r.Id, e.dir, addr)
	if err != nil {
		return fail(fmt.Errorf("create %s: %w", r.Id, err))
	}
	runBundle, err := s.layerRootfs(e.dir, bundle, ep)
	if err != nil {
		return fail(fmt.Errorf("create %s: %w", r.Id, err))
	}
	cmd, err := s.shims.spawn(shim.SpawnOptions{Exe: s.exe, Options: shim.Options{
		ID: r.Id, Bundle: runBundle, Dir: e.dir, RuntimeRoot: s.cfg.RuntimeDir(),
		LogMaxBytes: s.cfg.Logs.MaxFileBytes, LogMaxFiles: s.cfg.Logs.MaxFiles,
		NetworkLock: s.node.networkLock(ctx), CRIUVersion: s.node.criuVersion(ctx), CRIUPath: s.cfg.CRIU,
	}})
	if err != nil {
		return fail(fmt.Errorf("create %s: %w", r.Id, err))
	}
	// Reap the shim if it exits while we run; after an agent restart it is not ours.
	go func() { _ = cmd.Wait() }()
	c, _, err := shim.Connect(ctx, e.dir)
	if err != nil {
		_ = cmd.Process.Kill()
		s.cleanupRuntime(r.Id)
		return fail(fmt.Errorf("create %s: %w: %w", r.Id, ErrUnavailable, err))
	}
	e.mu.Lock()
	e.client, e.creating = c, false
	_ = shim.ReadJSON(e.dir, shim.StateFile, &e.state)
	e.mu.Unlock()
	s.events.publish(&migratev1.Event{Time: timestamppb.Now(), Type: "created", ContainerId: r.Id})
	if r.Start {
		if _, err := s.Start(ctx, &migratev1.StartRequest{Id: r.Id}); err != nil {
			// The container exists; report the start failure, leave it for inspection.
			return nil, err
		}
	}
	ctr, err := s.describe(ctx, e)
	if err != nil {
		return nil, err
	}
	return &migratev1.CreateResponse{Container: ctr}, nil
}

// Start starts a created container.
func (s *Service) Start(ctx context.Context, r *migratev1.StartRequest) (*migratev1.StartResponse, error) {
	e, err := s.lookup(r.Id)
	if err != nil {
		return nil, fmt.Errorf("start: %w", err)
	}
	c, err := e.shimClient(ctx)
	if err != nil {
		return nil, fmt.Errorf("start: %w", err)
	}
	if _, err := c.Start(ctx, &shimv1.StartRequest{}); err != nil {
		return nil, shimErr("start", r.Id, err)
	}
	s.events.publish(&migratev1.Event{Time: timestamppb.Now(), Type: "started", ContainerId: r.Id})
	ctr, err := s.describe(ctx, e)
	if err != nil {
		return nil, err
	}
	return &migratev1.StartResponse{Container: ctr}, nil
}

// Kill signals a container.
func (s *Service) Kill(ctx context.Context, r *migratev1.KillRequest) (*migratev1.KillResponse, error) {
	e, err := s.lookup(r.Id)
	if err != nil {
		return nil, fmt.Errorf("kill: %w", err)
	}
	c, err := e.shimClient(ctx)
	if err != nil {
		return nil, fmt.Errorf("kill: %w", err)
	}
	if _, err := c.Kill(ctx, &shimv1.KillRequest{Signal: r.Signal, All: r.All}); err != nil {
		return nil, shimErr("kill", r.Id, err)
	}
	s.events.publish(&migratev1.Event{Time: timestamppb.Now(), Type: "killed", ContainerId: r.Id})
	return &migratev1.KillResponse{}, nil
}

// stop is the body of the stop operation: signal, wait up to timeout, SIGKILL.
func (s *Service) stop(ctx context.Context, r *migratev1.StopRequest, report func(progress)) (*migratev1.Container, error) {
	e, err := s.lookup(r.Id)
	if err != nil {
		return nil, fmt.Errorf("stop: %w", err)
	}
	c, err := e.shimClient(ctx)
	if err != nil {
		return nil, fmt.Errorf("stop: %w", err)
	}
	sig := r.Signal
	if sig == 0 {
		sig = 15
	}
	timeout := time.Duration(r.TimeoutSeconds) * time.Second
	if r.TimeoutSeconds == 0 {
		timeout = time.Duration(s.cfg.StopTimeout)
	}
	stopped := func() (*migratev1.Container, error) {
		report(progress{phase: "stopped", message: "container stopped"})
		s.events.publish(&migratev1.Event{Time: timestamppb.Now(), Type: "stopped", ContainerId: r.Id})
		return s.describe(ctx, e)
	}
	report(progress{phase: "signal", message: fmt.Sprintf("sending signal %d", sig)})
	if _, err := c.Kill(ctx, &shimv1.KillRequest{Signal: sig}); err != nil {
		if status.Code(err) == codes.FailedPrecondition {
			return stopped() // not running: nothing to stop
		}
		return nil, fmt.Errorf("stop %s: %w", r.Id, err)
	}
	deadline := time.Now().Add(timeout)
	for {
		left := time.Until(deadline)
		if left <= 0 {
			break
		}
		step := min(left, time.Second)
		wctx, cancel := context.WithTimeout(ctx, step)
		_, err := c.Wait(wctx, &shimv1.WaitRequest{})
		cancel()
		if err == nil {
			return stopped()
		}
		if ctx.Err() != nil {
			return nil, ctx.Err()
		}
		if status.Code(err) != codes.DeadlineExceeded {
			return nil, fmt.Errorf("stop %s: wait: %w", r.Id, err)
		}
		waited := timeout - time.Until(deadline)
		report(progress{phase: "waiting", message: "waiting for the container to exit",
			done: int64(waited.Round(time.Second).Seconds()), total: int64(timeout.Seconds()), unit: "seconds"})
	}
	report(progress{phase: "kill", message: fmt.Sprintf("still running after %s: sending SIGKILL", timeout)})
	if _, err := c.Kill(ctx, &shimv1.KillRequest{Signal: 9, All: true}); err != nil && status.Code(err) != codes.FailedPrecondition {
		return nil, fmt.Errorf("stop %s: %w", r.Id, err)
	}
	wctx, cancel := context.WithTimeout(ctx, 15*time.Second)
	defer cancel()
	if _, err := c.Wait(wctx, &shimv1.WaitRequest{}); err != nil {
		return nil, fmt.Errorf("stop %s: wait after SIGKILL: %w", r.Id, err)
	}
	return stopped()
}

// Delete deletes a container, its shim and its directory.
func (s *Service) Delete(ctx context.Context, r *migratev1.DeleteRequest) (*migratev1.DeleteResponse, error) {
	e, err := s.lookup(r.Id)
	if err != nil {
		return nil, fmt.Errorf("delete: %w", err)
	}
	e.mu.Lock()
	if e.creating || e.deleting {
		e.mu.Unlock()
		return nil, fmt.Errorf("delete %s: %w: being created or deleted", r.Id, ErrInvalidState)
	}
	e.deleting = true
	e.mu.Unlock()
	defer func() {
		e.mu.Lock()
		e.deleting = false
		e.mu.Unlock()
	}()
	shimDeleted := false
	if c, cerr := e.shimClient(ctx); cerr == nil {
		_, err := c.Delete(ctx, &shimv1.DeleteRequest{Force: r.Force})
		e.dropClient(c, err)
		if err != nil && status.Code(err) != codes.Unavailable {
			return nil, shimErr("delete", r.Id, err)
		}
		if err == nil {
			c.Close()
			e.mu.Lock()
			e.client = nil
			st := e.state
			e.mu.Unlock()
			waitGone(st.ShimPid, st.ShimStartTime, 10*time.Second)
			shimDeleted = true
		}
	}
	if !shimDeleted {
		// The shim is gone (crashed, or the host rebooted): clean up what it owned.
		rt, err := container.New(s.cfg.RuntimeDir())
		if err != nil {
			return nil, fmt.Errorf("delete %s: %w", r.Id, err)
		}
		if c, err := rt.Get(r.Id); err == nil {
			if err := c.Delete(r.Force); err != nil {
				return nil, fmt.Errorf("delete %s: %w", r.Id, err)
			}
		}
	}
	e.mu.Lock()
	cgs := e.state.Cgroups
	e.mu.Unlock()
	if err := shim.RemoveCgroups(cgs, 5*time.Second); err != nil {
		s.log.Warn("remove shim cgroups", "id", r.Id, "err", err)
	}
	if err := s.net.detach(r.Id, e.dir); err != nil {
		return nil, fmt.Errorf("delete %s: %w", r.Id, err)
	}
	if err := layers.Remove(e.dir); err != nil {
		return nil, fmt.Errorf("delete %s: %w", r.Id, err)
	}
	if err := os.RemoveAll(e.dir); err != nil {
		return nil, fmt.Errorf("delete %s: %w", r.Id, err)
	}
	s.mu.Lock()
	delete(s.containers, r.Id)
	s.mu.Unlock()
	s.events.publish(&migratev1.Event{Time: timestamppb.Now(), Type: "deleted", ContainerId: r.Id})
	return &migratev1.DeleteResponse{}, nil
}

// waitGone waits until the process pid started at start has exited (or is a zombie).
func waitGone(pid int, start uint64, timeout time.Duration) {
	if pid <= 0 {
		return
	}
	deadline := time.Now().Add(timeout)
	for time.Now().Before(deadline) {
		st, err := shim.ProcStartTime(pid)
		if err != nil || st != start {
			return
		}
		if b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid)); err == nil {
			if i := strings.LastIndexByte(string(b), ')'); i >= 0 && len(b) > i+2 && b[i+2] == 'Z' {
				return
			}
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// List lists the node's containers.
func (s *Service) List(ctx context.Context, _ *migratev1.ListRequest) (*migratev1.ListResponse, error) {
	s.mu.Lock()
	es := make([]*entry, 0, len(s.containers))
	for _, e := range s.containers {
		es = append(es, e)
	}
	s.mu.Unlock()
	sort.Slice(es, func(i, j int) bool { return es[i].id < es[j].id })
	out := &migratev1.ListResponse{}
	for _, e := range es {
		e.mu.Lock()
		creating := e.creating
		e.mu.Unlock()
		if creating {
			continue
		}
		c, err := s.describe(ctx, e)
		if err != nil {
			continue // deleted meanwhile
		}
		out.Containers = append(out.Containers, c)
	}
	return out, nil
}

// Inspect describes one container with its spec.
func (s *Service) Inspect(ctx context.Context, r *migratev1.InspectRequest) (*migratev1.InspectResponse, error) {
	e, err := s.lookup(r.Id)
	if err != nil {
		return nil, fmt.Errorf("inspect: %w", err)
	}
	c, err := s.describe(ctx, e)
	if err != nil {
		return nil, err
	}
	spec, _ := os.ReadFile(filepath.Join(e.meta.Bundle, "config.json"))
	return &migratev1.InspectResponse{Container: c, SpecJson: spec, LogPath: e.dir}, nil
}

// describe builds the API view of a container, asking its shim for the live state.
func (s *Service) describe(ctx context.Context, e *entry) (*migratev1.Container, error) {
	c := s.describeRecorded(e)
	client, err := e.shimClient(ctx)
	if err == nil {
		sctx, cancel := context.WithTimeout(ctx, 3*time.Second)
		defer cancel()
		var r *shimv1.StateResponse
		r, err = client.State(sctx, &shimv1.StateRequest{})
		e.dropClient(client, err)
		if err == nil {
			c.Status = statusOf(r.Status)
			c.Pid = r.Pid
			c.Checkpoint = r.Checkpoint
			if r.StartedAt != nil {
				c.StartedAt = r.StartedAt
			}
			if r.Exited {
				c.ExitCode, c.ExitedAt = r.ExitCode, r.ExitedAt
			}
			return c, nil
		}
	}
	// No shim: its exit record still tells how the container ended.
	var ex shim.Exit
	if rerr := shim.ReadJSON(e.dir, shim.ExitFile, &ex); rerr == nil {
		c.Status, c.ExitCode, c.ExitedAt = migratev1.ContainerStatus_CONTAINER_STATUS_STOPPED, int32(ex.Code), timestamppb.New(ex.At)
		if ex.Checkpoint != "" {
			c.Status, c.Checkpoint = migratev1.ContainerStatus_CONTAINER_STATUS_CHECKPOINTED, ex.Checkpoint
		}
		return c, nil
	}
	if _, serr := os.Stat(e.dir); errors.Is(serr, os.ErrNotExist) {
		return nil, fmt.Errorf("container %q: %w", e.id, ErrNotFound)
	}
	c.Status = migratev1.ContainerStatus_CONTAINER_STATUS_UNKNOWN
	return c, nil
}

// describeRecorded describes e from what the agent and the shim's state file
// recorded, without asking the shim (no status, pid or exit).
func (s *Service) describeRecorded(e *entry) *migratev1.Container {
	c := &migratev1.Container{Id: e.id, Bundle: e.meta.Bundle, CreatedAt: timestamppb.New(e.meta.Created), Node: s.cfg.Node, Address: s.net.address(e.id)}
	if b, err := os.ReadFile(filepath.Join(e.meta.Bundle, "config.json")); err == nil {
		c.Args = specArgs(b)
	}
	e.mu.Lock()
	st := e.state
	e.mu.Unlock()
	c.ShimPid = int32(st.ShimPid)
	if !st.StartedAt.IsZero() {
		c.StartedAt = timestamppb.New(st.StartedAt)
	}
	return c
}

func statusOf(s string) migratev1.ContainerStatus {
	switch s {
	case "created", "creating":
		return migratev1.ContainerStatus_CONTAINER_STATUS_CREATED
	case "running":
		return migratev1.ContainerStatus_CONTAINER_STATUS_RUNNING
	case "paused":
		return migratev1.ContainerStatus_CONTAINER_STATUS_PAUSED
	case "stopped":
		return migratev1.ContainerStatus_CONTAINER_STATUS_STOPPED
	case "checkpointed":
		return migratev1.ContainerStatus_CONTAINER_STATUS_CHECKPOINTED
	}
	return migratev1.ContainerStatus_CONTAINER_STATUS_UNKNOWN
}

// Logs streams a container's log.
func (s *Service) Logs(ctx context.Context, r *migratev1.LogsRequest, send func(*migratev1.LogEntry) error) error {
	e, err := s.lookup(r.Id)
	if err != nil {
		return fmt.Errorf("logs: %w", err)
	}
	o := logs.ReadOptions{Tail: int(r.Tail), Follow: r.Follow}
	if r.Since != nil {
		o.Since = r.Since.AsTime()
	}
	err = logs.Read(ctx, e.dir, o, func(le logs.Entry) error {
		st := migratev1.LogStream_LOG_STREAM_STDOUT
		if le.Stream == logs.Stderr {
			st = migratev1.LogStream_LOG_STREAM_STDERR
		}
		return send(&migratev1.LogEntry{Time: timestamppb.New(le.Time), Stream: st, Line: le.Line, Partial: le.Partial})
	})
	if err != nil && ctx.Err() == nil {
		return fmt.Errorf("logs %s: %w", r.Id, err)
	}
	return nil
}

// Exec runs a process in a container, streaming its output.
func (s *Service) Exec(ctx context.Context, r *migratev1.ExecRequest, send func(*migratev1.ExecOutput) error) error {
	if len(r.Args) == 0 {
		return fmt.Errorf("exec %s: %w: no command given", r.Id, ErrInvalid)
	}
	e, err := s.lookup(r.Id)
	if err != nil {
		return fmt.Errorf("exec: %w", err)
	}
	c, err := e.shimClient(ctx)
	if err != nil {
		return fmt.Errorf("exec: %w", err)
	}
	stream, err := c.Exec(ctx, &shimv1.ExecRequest{Args: r.Args, Env: r.Env, Cwd: r.Cwd, Stdin: r.Stdin})
	if err != nil {
		return shimErr("exec", r.Id, err)
	}
	for {
		m, err := stream.Recv()
		if errors.Is(err, io.EOF) {
			return fmt.Errorf("exec %s: %w: output ended without exit status", r.Id, ErrUnavailable)
		}
		if err != nil {
			return shimErr("exec", r.Id, err)
		}
		out := &migratev1.ExecOutput{Stream: migratev1.LogStream(m.Stream), Data: m.Data, Exited: m.Exited, ExitCode: m.ExitCode}
		if err := send(out); err != nil {
			return err
		}
		if m.Exited {
			return nil
		}
	}
}

// progress is an operation's progress report in the service's terms.
type progress struct {
	phase, message string
	done, total    int64
	unit           string
}

// layerRootfs puts the container on a layered root: the bundle's rootfs
// becomes (or already is) a base in the store, the container gets its own
// overlay upper layer, and a bundle whose root is that overlay. A checkpoint
// then carries only the container's changes.
func (s *Service) layerRootfs(dir, bundle string, ep *network.Endpoint) (string, error) {
	sp, err := spec.Load(bundle)
	if err != nil {
		return "", fmt.Errorf("%w: %w", ErrInvalid, err)
	}
	joinNetwork(sp, ep)
	digest, err := s.bases.Import(spec.RootfsPath(sp, bundle))
	if err != nil {
		return "", err
	}
	l, err := s.bases.Mount(dir, digest, nil)
	if err != nil {
		return "", err
	}
	return layers.WriteBundle(dir, bundle, sp, l.Merged)
}
