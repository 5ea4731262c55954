package shim

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"os"
	"os/signal"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/migratehq/migrate/agent/checkpoint"
	"github.com/migratehq/migrate/agent/logs"
	"github.com/migratehq/migrate/agent/peercred"
	shimv1 "github.com/migratehq/migrate/api/shim/v1"
	"github.com/migratehq/migrate/criu"
	"github.com/migratehq/migrate/runtime/container"
)

// readyFd is the fd the shim reports its start-up result on (Spawn's ExtraFiles[0]).
const readyFd = 3

// Options are the shim's command-line parameters.
type Options struct {
	ID          string
	Bundle      string
	Dir         string // container directory
	RuntimeRoot string
	LogMaxBytes int64
	LogMaxFiles int
	// Restore, when set, is a checkpoint directory: the shim restores the container
	// from it (running at once) instead of creating it from the bundle.
	Restore string
	// Verified: the agent checked the checkpoint's files against its manifest
	// already; the restore does not hash them again.
	Verified bool
	// Consume: the checkpoint is removed after the restore (a move's incoming
	// copy), so its log files are linked into the container directory, not
	// copied.
	Consume bool
	// NetworkLock is CRIU's network lock backend for checkpoints and restores
	// (criu.NetworkLock*), as the agent probed it; "" lets CRIU choose.
	NetworkLock string
	// CRIUPath is the CRIU binary ("" for criu.DefaultPath).
	CRIUPath string
	// CRIUVersion is CRIU's version as the agent probed it ("" to ask CRIU).
	CRIUVersion string
	// Rootfs is where a restored container's root is (a layered root the
	// agent mounted); "" means the path the checkpoint recorded.
	Rootfs string
	// NetNS is the network namespace file a restored container goes into
	// when its checkpoint's namespace was external (the agent prepared it).
	NetNS string
	// LazyPagesDir, with Restore, restores a postcopy checkpoint whose pages a
	// `criu lazy-pages` daemon listening in this directory provides.
	LazyPagesDir string
}

// readyMsg is written on the ready pipe.
type readyMsg struct {
	OK    bool       `json:"ok,omitempty"`
	Code  codes.Code `json:"code,omitempty"`
	Error string     `json:"error,omitempty"`
}

// Main runs the shim until its container is deleted. It returns an error only for
// failures before the container exists; those are also reported on the ready pipe.
func Main(o Options) error { return mainWith(o, nil) }

// mainWith is Main with what a standby shim made ahead (k may be nil).
func mainWith(o Options, k *kit) error {
	ready := os.NewFile(readyFd, "ready")
	// Our children must not inherit the ready pipe, which Spawn reads to EOF, nor
	// anything else we inherited.
	CloexecInherited()
	s, err := start(o, k)
	if err != nil {
		k.close()
		msg := readyMsg{Code: codeOf(err), Error: err.Error()}
		b, _ := json.Marshal(msg)
		ready.Write(append(b, '\n'))
		ready.Close()
		return err
	}
	b, _ := json.Marshal(readyMsg{OK: true})
	ready.Write(append(b, '\n'))
	ready.Close()
	k.close() // what the container did not take
	return s.run()
}

// server is a running shim.
type server struct {
	shimv1.UnimplementedShimServer

	o    Options
	rt   *container.Runtime
	c    *container.Container
	log  *logs.Writer
	lis  net.Listener
	grpc *grpc.Server

	copies  sync.WaitGroup // stdout/stderr copiers
	drained chan struct{}  // closed once both copiers reached EOF
	exited  chan struct{}  // closed once exit is set
	exit    Exit           // written before exited is closed
	done    chan struct{}  // closed by Delete: the shim exits

	ckptBusy atomic.Bool // one checkpoint at a time

	mu    sync.Mutex
	state State    // guarded by mu
	ckpt  *ckptRun // guarded by mu; the checkpoint that may end the init
}

var _ shimv1.ShimServer = (*server)(nil)

func start(o Options, k *kit) (_ *server, retErr error) {
	if err := container.ValidateID(o.ID); err != nil {
		return nil, err
	}
	// Signals a terminal or session would send must not end the shim: the container's
	// stdio and exit status depend on it.
	signal.Ignore(syscall.SIGHUP, syscall.SIGINT, syscall.SIGPIPE)
	if err := unix.Prctl(unix.PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0); err != nil {
		return nil, fmt.Errorf("shim %s: set child subreaper: %w", o.ID, err)
	}
	// The shim's own cgroup (~10 ms on cgroup v1) is made while the container is
	// created or restored: the container's processes go to theirs regardless.
	type joined struct {
		dirs []string
		err  error
	}
	joinc := make(chan joined, 1)
	go func() {
		dirs, err := joinOwnCgroup(o.ID + "-" + strconv.Itoa(os.Getpid()))
		joinc <- joined{dirs, err}
	}()
	var cgs []string
	var cgErr error
	cgWaited := false
	waitCgroup := func() error {
		if !cgWaited {
			j := <-joinc
			cgs, cgErr, cgWaited = j.dirs, j.err, true
		}
		return cgErr
	}
	defer func() {
		if retErr != nil {
			_ = waitCgroup()
			leaveOwnCgroup(cgs)
		}
	}()
	startTime, err := procStartTime(os.Getpid())
	if err != nil {
		return nil, fmt.Errorf("shim %s: %w", o.ID, err)
	}
	if o.Restore != "" {
		// The log goes on from where the checkpoint left it.
		if err := restoreLogs(o.Restore, o.Dir, o.LogMaxFiles, o.Consume); err != nil {
			return nil, fmt.Errorf("shim %s: %w", o.ID, err)
		}
	}
	lw, err := logs.NewWriter(o.Dir, o.LogMaxBytes, o.LogMaxFiles)
	if err != nil {
		return nil, fmt.Errorf("shim %s: %w", o.ID, err)
	}
	pipes, err := k.takeStdio()
	if err != nil {
		lw.Close(true)
		return nil, fmt.Errorf("shim %s: %w", o.ID, err)
	}
	inR, outR, outW, errR, errW := pipes.inR, pipes.outR, pipes.outW, pipes.errR, pipes.errW
	rt, err := container.New(o.RuntimeRoot)
	if err != nil {
		return nil, fmt.Errorf("shim %s: %w", o.ID, err)
	}
	var c *container.Container
	if o.Restore == "" {
		c, err = rt.Create(o.ID, container.CreateOptions{Bundle: o.Bundle, Stdin: inR, Stdout: outW, Stderr: errW})
	} else {
		// The restored init becomes our child (CRIU's restore-sibling mode), so we reap
		// it like a created one.
		cp := o.checkpointer(rt)
		ro := checkpoint.RestoreOptions{
			Bundle: o.Bundle, Rootfs: o.Rootfs, Stdio: [3]*os.File{inR, outW, errW}, NetNS: o.NetNS, Verified: o.Verified,
			LazyPagesDir: o.LazyPagesDir,
		}
		if k != nil && k.criuPath == cp.CRIU.Path {
			// Restore takes both (and closes what it does not use).
			ro.Prepared, ro.FreshNetNS = k.criu, k.netns
			k.criu, k.netns = nil, nil
		}
		c, err = cp.Restore(context.Background(), o.Restore, o.ID, ro)
	}
	// Only the container holds the write ends now: EOF on the read ends means every
	// process of the container has closed its stdio.
	stdinIno := inode(inR)
	inR.Close()
	outW.Close()
	errW.Close()
	if err != nil {
		outR.Close()
		errR.Close()
		lw.Close(true)
		return nil, err
	}
	s := &server{o: o, rt: rt, c: c, log: lw, drained: make(chan struct{}), exited: make(chan struct{}), done: make(chan struct{})}
	defer func() {
		if retErr != nil {
			_ = c.Signal(unix.SIGKILL, true)
			_, _ = c.Wait()
			_ = c.Delete(true)
		}
	}()
	if err := waitCgroup(); err != nil {
		outR.Close()
		errR.Close()
		lw.Close(true)
		return nil, fmt.Errorf("shim %s: %w", o.ID, err)
	}
	s.state = State{
		ID: o.ID, Bundle: c.Bundle(), ShimPid: os.Getpid(), ShimStartTime: startTime,
		InitPid: c.InitPid(), Cgroups: cgs, StdoutPipe: inode(outR), StderrPipe: inode(errR),
		StdinPipe: stdinIno,
	}
	if o.Restore != "" {
		s.state.StartedAt = time.Now().UTC() // running from the moment CRIU resumed it
	}
	for _, p := range []struct {
		name string
		r    *os.File
	}{{logs.Stdout, outR}, {logs.Stderr, errR}} {
		s.copies.Add(1)
		go func() {
			defer s.copies.Done()
			defer p.r.Close()
			_ = lw.Copy(p.name, p.r) // a write error leaves the rest of the output unlogged
		}()
	}
	go func() { s.copies.Wait(); close(s.drained) }()
	go s.wait()

	sock := filepath.Join(o.Dir, SocketFile)
	lis, err := peercred.Listen(sock)
	if err != nil {
		return nil, fmt.Errorf("shim %s: %w", o.ID, err)
	}
	s.lis = lis
	s.grpc = grpc.NewServer(peercred.ServerOptions()...)
	shimv1.RegisterShimServer(s.grpc, s)
	if err := writeState(o.Dir, s.state); err != nil {
		lis.Close()
		return nil, fmt.Errorf("shim %s: write state: %w", o.ID, err)
	}
	return s, nil
}

// run serves until Delete, then exits the gRPC server after the reply went out.
func (s *server) run() error {
	errc := make(chan error, 1)
	go func() { errc <- s.grpc.Serve(s.lis) }()
	select {
	case <-s.done:
		// Let Delete's reply reach the agent, then stop.
		t := time.AfterFunc(5*time.Second, s.grpc.Stop)
		s.grpc.GracefulStop()
		t.Stop()
		os.Remove(filepath.Join(s.o.Dir, SocketFile))
		criu.WaitReaped() // CRIU may share our cgroup, which the agent removes next
		return nil
	case err := <-errc:
		return fmt.Errorf("shim %s: serve: %w", s.o.ID, err)
	}
}

// wait reaps the init, records its exit, and closes the log once the container's
// stdio has drained.
func (s *server) wait() {
	code, err := s.c.Wait()
	if err != nil {
		code = -1 // not our child any more: nothing to report but that it is gone
	}
	ex := Exit{Code: code, At: time.Now().UTC()}
	s.mu.Lock()
	run := s.ckpt
	s.mu.Unlock()
	if run != nil {
		// A checkpoint was under way when the init died: it was CRIU that ended it if
		// the dump succeeded without leave-running, otherwise it is an ordinary exit.
		<-run.done
		if run.err == nil && !run.leaveRunning {
			ex.Checkpoint = run.id
		}
	}
	s.exit = ex
	_ = WriteJSON(s.o.Dir, ExitFile, s.exit) // the in-memory copy still serves State
	close(s.exited)
	// Processes that escaped the container's pid namespace could keep the pipes open;
	// do not hold the log open for them forever.
	select {
	case <-s.drained:
	case <-time.After(2 * time.Second):
	}
	s.log.Close(true)
}

func (s *server) State(context.Context, *shimv1.StateRequest) (*shimv1.StateResponse, error) {
	s.mu.Lock()
	st := s.state
	s.mu.Unlock()
	r := &shimv1.StateResponse{Id: st.ID, Bundle: st.Bundle, ShimPid: int32(st.ShimPid)}
	if !st.StartedAt.IsZero() {
		r.StartedAt = timestamp(st.StartedAt)
	}
	exited := func() {
		r.Status, r.Pid = "stopped", 0
		r.Exited, r.ExitCode, r.ExitedAt = true, int32(s.exit.Code), timestamp(s.exit.At)
		if s.exit.Checkpoint != "" {
			r.Status, r.Checkpoint = "checkpointed", s.exit.Checkpoint
		}
	}
	select {
	case <-s.exited:
		exited()
		return r, nil
	default:
	}
	ost, err := s.c.State()
	if err != nil {
		return nil, toStatus(err)
	}
	r.Status, r.Pid = string(ost.Status), int32(ost.Pid)
	if ost.Status == "stopped" {
		// The init is dead but wait() may not have reaped it yet: never report
		// "stopped" without its exit code.
		select {
		case <-s.exited:
			exited()
		case <-time.After(2 * time.Second):
		}
	}
	return r, nil
}

func (s *server) Start(context.Context, *shimv1.StartRequest) (*shimv1.StartResponse, error) {
	if err := s.c.Start(); err != nil {
		return nil, toStatus(err)
	}
	s.mu.Lock()
	s.state.StartedAt = time.Now().UTC()
	st := s.state
	s.mu.Unlock()
	if err := writeState(s.o.Dir, st); err != nil {
		return nil, status.Errorf(codes.Internal, "start %s: record start: %v", s.o.ID, err)
	}
	return &shimv1.StartResponse{Pid: int32(s.c.InitPid())}, nil
}

func (s *server) Kill(_ context.Context, r *shimv1.KillRequest) (*shimv1.KillResponse, error) {
	select {
	case <-s.exited:
		return nil, status.Errorf(codes.FailedPrecondition, "kill %s: %v", s.o.ID, container.ErrNotRunning)
	default:
	}
	sig := unix.Signal(r.Signal)
	if sig == 0 {
		sig = unix.SIGKILL
	}
	if err := s.c.Signal(sig, r.All); err != nil {
		return nil, toStatus(err)
	}
	return &shimv1.KillResponse{}, nil
}

func (s *server) Wait(ctx context.Context, _ *shimv1.WaitRequest) (*shimv1.WaitResponse, error) {
	select {
	case <-s.exited:
		return &shimv1.WaitResponse{ExitCode: int32(s.exit.Code), ExitedAt: timestamp(s.exit.At)}, nil
	case <-ctx.Done():
		return nil, status.FromContextError(ctx.Err()).Err()
	}
}

func (s *server) Delete(ctx context.Context, r *shimv1.DeleteRequest) (*shimv1.DeleteResponse, error) {
	select {
	case <-s.exited:
	default:
		ost, err := s.c.State()
		if err != nil {
			return nil, toStatus(err)
		}
		if ost.Status != "created" && !r.Force {
			return nil, status.Errorf(codes.FailedPrecondition, "delete %s: container is %s: stop it first or use --force", s.o.ID, ost.Status)
		}
		// Kill here and let wait() reap, so the exit status is recorded and the
		// runtime's Delete finds nothing left to reap.
		_ = s.c.Signal(unix.SIGKILL, true)
		_ = s.c.Signal(unix.SIGKILL, false)
		select {
		case <-s.exited:
		case <-time.After(10 * time.Second):
			return nil, status.Errorf(codes.DeadlineExceeded, "delete %s: init still alive 10s after SIGKILL", s.o.ID)
		case <-ctx.Done():
			return nil, status.FromContextError(ctx.Err()).Err()
		}
	}
	if err := s.c.Delete(true); err != nil {
		return nil, toStatus(err)
	}
	s.log.Close(true)
	// run() stops the server: GracefulStop lets this reply go out first.
	select {
	case <-s.done:
	default:
		close(s.done)
	}
	return &shimv1.DeleteResponse{}, nil
}

// toStatus maps runtime errors to gRPC status errors for the agent.
func toStatus(err error) error {
	return status.Error(codeOf(err), err.Error())
}

func codeOf(err error) codes.Code {
	switch {
	case errors.Is(err, container.ErrNotExist):
		return codes.NotFound
	case errors.Is(err, container.ErrExist):
		return codes.AlreadyExists
	case errors.Is(err, container.ErrInvalidID):
		return codes.InvalidArgument
	case errors.Is(err, container.ErrNotRunning), errors.Is(err, container.ErrInvalidState),
		errors.Is(err, checkpoint.ErrNotCheckable), errors.Is(err, checkpoint.ErrNewerFormat),
		errors.Is(err, criu.ErrNotFound):
		return codes.FailedPrecondition
	case errors.Is(err, checkpoint.ErrCorrupt):
		return codes.InvalidArgument
	case errors.Is(err, context.Canceled):
		return codes.Canceled
	case errors.Is(err, os.ErrNotExist):
		return codes.InvalidArgument // a missing bundle or config.json
	}
	return codes.Unknown
}

func inode(f *os.File) uint64 {
	var st unix.Stat_t
	if err := unix.Fstat(int(f.Fd()), &st); err != nil {
		return 0
	}
	return st.Ino
}

// procStartTime returns field 22 of /proc/<pid>/stat (start time in clock ticks),
// which with the pid identifies a process across pid reuse.
func procStartTime(pid int) (uint64, error) {
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		return 0, err
	}
	// The command name may contain spaces and parentheses: split after the last ')'.
	i := strings.LastIndexByte(string(b), ')')
	if i < 0 {
		return 0, fmt.Errorf("parse /proc/%d/stat", pid)
	}
	f := strings.Fields(string(b[i+1:]))
	if len(f) < 20 {
		return 0, fmt.Errorf("parse /proc/%d/stat", pid)
	}
	return strconv.ParseUint(f[19], 10, 64)
}

// ProcStartTime is procStartTime for the agent, which checks a shim's identity.
func ProcStartTime(pid int) (uint64, error) { return procStartTime(pid) }
