package shim

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/migratehq/migrate/agent/checkpoint"
	"github.com/migratehq/migrate/agent/layers"
	"github.com/migratehq/migrate/agent/logs"
	shimv1 "github.com/migratehq/migrate/api/shim/v1"
	"github.com/migratehq/migrate/criu"
	"github.com/migratehq/migrate/runtime/container"
)

// logsDir is where a checkpoint keeps the container's log files.
const logsDir = "logs"

// ckptRun is a checkpoint in progress. wait() consults it when the init dies, to
// tell an exit caused by the dump from a crash.
type ckptRun struct {
	id           string
	leaveRunning bool
	done         chan struct{} // closed when the dump has ended
	err          error         // written before done is closed
}

// Checkpoint dumps the container into r.Dir with its logs. It must be the shim
// that does it: after a dump without leave-running CRIU kills the init, and only
// its parent, the shim, can reap it and record why it ended.
func (s *server) Checkpoint(ctx context.Context, r *shimv1.CheckpointRequest) (*shimv1.CheckpointResponse, error) {
	if !filepath.IsAbs(r.Dir) {
		return nil, status.Errorf(codes.InvalidArgument, "checkpoint %s: directory %q must be absolute", s.o.ID, r.Dir)
	}
	if !s.ckptBusy.CompareAndSwap(false, true) {
		return nil, status.Errorf(codes.FailedPrecondition, "checkpoint %s: another checkpoint of this container is running", s.o.ID)
	}
	defer s.ckptBusy.Store(false)
	select {
	case <-s.exited:
		return nil, status.Errorf(codes.FailedPrecondition, "checkpoint %s: container is %s: %v", s.o.ID, s.exitedStatus(), container.ErrNotRunning)
	default:
	}
	before, _ := s.c.State()
	run := &ckptRun{id: r.Id, leaveRunning: r.LeaveRunning, done: make(chan struct{})}
	s.mu.Lock()
	s.ckpt = run
	s.mu.Unlock()
	cp := s.o.checkpointer(s.rt)
	opts := checkpoint.Options{ID: r.Id, LeaveRunning: r.LeaveRunning}
	if !r.NoLogs {
		opts.Files = func(copy func(dst, src string) error) error { return s.copyLogs(copy, !r.LeaveRunning) }
	}
	// A layered root travels as its base's digest plus the container's changes.
	if l, err := layers.Load(s.o.Dir); err == nil {
		opts.Layer = &checkpoint.Layer{BaseDigest: l.BaseDigest, WriteDiff: l.WriteDiff}
	}
	m, err := cp.Checkpoint(ctx, s.c, r.Dir, opts)
	run.err = err
	s.mu.Lock()
	if err != nil || r.LeaveRunning {
		s.ckpt = nil
	}
	s.mu.Unlock()
	close(run.done)
	if err != nil {
		// A cancelled dump can leave the freezer cgroup frozen (CRIU thaws only when
		// it gets to); a container that was running must run again.
		if after, serr := s.c.State(); serr == nil && before != nil && before.Status == "running" && after.Status == "paused" {
			_ = s.c.Resume()
		}
		return nil, toStatus(err)
	}
	if !r.LeaveRunning {
		// CRIU has killed the tree: let wait() record the exit as the checkpoint's
		// before answering, so the agent's next State says "checkpointed".
		select {
		case <-s.exited:
		case <-time.After(10 * time.Second):
		}
	}
	var size int64
	for _, f := range m.Files {
		size += f.Size
	}
	return &shimv1.CheckpointResponse{DowntimeNs: int64(m.Downtime), Bytes: size}, nil
}

// exitedStatus names how the init ended, for messages.
func (s *server) exitedStatus() string {
	if s.exit.Checkpoint != "" {
		return "checkpointed"
	}
	return "stopped"
}

// copyLogs copies the container's log files into a checkpoint. After a dump
// without leave-running the processes are dead: wait until their last output
// (still in the pipes) is logged. The copy runs with the log writer held, so no
// rotation moves a file away mid-copy.
func (s *server) copyLogs(copy func(dst, src string) error, drain bool) error {
	if drain {
		select {
		case <-s.drained:
		case <-time.After(2 * time.Second):
		}
	}
	return s.log.Hold(func() error {
		for _, name := range logs.Files(s.o.Dir) {
			if err := copy(logsDir+"/"+name, filepath.Join(s.o.Dir, name)); err != nil {
				return err
			}
		}
		return nil
	})
}

// AdoptLogs makes the log files in r.Dir the oldest part of the container's
// log (a moved container's log of before the move).
func (s *server) AdoptLogs(_ context.Context, r *shimv1.AdoptLogsRequest) (*shimv1.AdoptLogsResponse, error) {
	if !filepath.IsAbs(r.Dir) {
		return nil, status.Errorf(codes.InvalidArgument, "adopt logs of %s: directory %q must be absolute", s.o.ID, r.Dir)
	}
	if err := s.log.Adopt(r.Dir); err != nil {
		return nil, status.Errorf(codes.Internal, "adopt logs of %s: %v", s.o.ID, err)
	}
	return &shimv1.AdoptLogsResponse{}, nil
}

// restoreLogs copies a checkpoint's log files into the container directory, so the
// restored container's log starts with what it wrote before the checkpoint.
// Rotated files the writer would not keep (maxFiles) are left out.
func restoreLogs(ckpt, dir string, maxFiles int, link bool) error {
	src := filepath.Join(ckpt, logsDir)
	for _, name := range logs.Files(src) {
		if n, ok := strings.CutPrefix(name, logs.FileName+"."); ok {
			if i, err := strconv.Atoi(n); err != nil || i >= maxFiles {
				continue
			}
		}
		dst, from := filepath.Join(dir, name), filepath.Join(src, name)
		if link && os.Link(from, dst) == nil {
			continue // the log writer appends to it: the checkpoint goes anyway
		}
		if err := logs.CopyFile(dst, from); err != nil {
			return fmt.Errorf("restore logs: %w", err)
		}
	}
	return nil
}

// checkpointer is the container's CRIU front end with what the agent probed.
func (o Options) checkpointer(rt *container.Runtime) *checkpoint.Checkpointer {
	cp := &checkpoint.Checkpointer{Runtime: rt, CRIU: &criu.Client{Path: o.CRIUPath}, NetworkLock: o.NetworkLock}
	if v, err := criu.ParseVersion(o.CRIUVersion); err == nil {
		cp.Version = v
	}
	return cp
}
