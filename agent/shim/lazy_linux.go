package shim

import (
	"fmt"
	"net"
	"path/filepath"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/migratehq/migrate/agent/checkpoint"
	"github.com/migratehq/migrate/agent/layers"
	shimv1 "github.com/migratehq/migrate/api/shim/v1"
	"github.com/migratehq/migrate/runtime/container"
)

// LazyCheckpoint dumps the paused container, or freezes it itself with
// r.Pause, for a postcopy move (shim.proto).
// The dump is always leave-running: CRIU leaves the frozen cgroup frozen, so
// the tasks stay paused here whatever happens, and only the agent decides
// whether they are deleted (the target runs them) or resumed (it does not).
func (s *server) LazyCheckpoint(r *shimv1.CheckpointRequest, stream grpc.ServerStreamingServer[shimv1.LazyCheckpointEvent]) error {
	ctx := stream.Context()
	if !filepath.IsAbs(r.Dir) {
		return status.Errorf(codes.InvalidArgument, "checkpoint %s: directory %q must be absolute", s.o.ID, r.Dir)
	}
	if !s.ckptBusy.CompareAndSwap(false, true) {
		return status.Errorf(codes.FailedPrecondition, "checkpoint %s: another checkpoint of this container is running", s.o.ID)
	}
	defer s.ckptBusy.Store(false)
	select {
	case <-s.exited:
		return status.Errorf(codes.FailedPrecondition, "checkpoint %s: container is %s: %v", s.o.ID, s.exitedStatus(), container.ErrNotRunning)
	default:
	}
	port, err := freeLoopbackPort()
	if err != nil {
		return status.Errorf(codes.Internal, "checkpoint %s: page server port: %v", s.o.ID, err)
	}
	run := &ckptRun{id: r.Id, leaveRunning: true, done: make(chan struct{})}
	s.mu.Lock()
	s.ckpt = run
	s.mu.Unlock()
	cp := s.o.checkpointer(s.rt)
	lazy := &checkpoint.Lazy{Port: port, Pause: r.Pause}
	lazy.Ready = func(m *checkpoint.Manifest) error {
		var size int64
		for _, f := range m.Files {
			size += f.Size
		}
		ev := &shimv1.LazyCheckpointEvent{Ready: true, Port: int32(port), DowntimeNs: int64(m.Downtime), Bytes: size}
		if !lazy.Paused.IsZero() {
			ev.PausedAtUnixNs = lazy.Paused.UnixNano()
		}
		return stream.Send(ev)
	}
	opts := checkpoint.Options{ID: r.Id, LeaveRunning: true, Lazy: lazy}
	if !r.NoLogs {
		opts.Files = func(copy func(dst, src string) error) error { return s.copyLogs(copy, false) }
	}
	if l, err := layers.Load(s.o.Dir); err == nil {
		opts.Layer = &checkpoint.Layer{BaseDigest: l.BaseDigest, WriteDiff: l.WriteDiff}
	}
	_, err = cp.Checkpoint(ctx, s.c, r.Dir, opts)
	run.err = err
	s.mu.Lock()
	s.ckpt = nil
	s.mu.Unlock()
	close(run.done)
	if err != nil {
		return toStatus(err)
	}
	return nil
}

// freeLoopbackPort returns a TCP port of 127.0.0.1 that was free a moment ago,
// for CRIU's page server (which binds it itself). Another process may take it
// meanwhile: the dump then fails before the page server serves anything, and
// the container stays paused for the caller to resume.
func freeLoopbackPort() (int, error) {
	l, err := net.Listen("tcp4", "127.0.0.1:0")
	if err != nil {
		return 0, fmt.Errorf("listen: %w", err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port, nil
}
