package agent

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"time"

	"golang.org/x/sys/unix"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/durationpb"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/migratehq/migrate/agent/shim"
	migratev1 "github.com/migratehq/migrate/api/migrate/v1"
	shimv1 "github.com/migratehq/migrate/api/shim/v1"
	"github.com/migratehq/migrate/criu"
	"github.com/migratehq/migrate/metrics"
	"github.com/migratehq/migrate/runtime/container"
)

// Move modes (docs/move.md, docs/postcopy.md).
const (
	modeAuto     = "auto"
	modeCold     = "cold"
	modePostcopy = "postcopy"
	modePrecopy  = "precopy"
)

// Downtime model for --max-downtime and auto (docs/postcopy.md): fitted to
// BenchmarkPostcopy on the development VMs (cold 1.3-1.4 s at 64 MiB, 14.9 s
// at 1 GiB; postcopy 0.45-0.6 s from 64 MiB to 1 GiB), rounded up for a busy
// node. A cold move's downtime grows with the memory it dumps, sends and
// restores; a postcopy move's hardly does.
const (
	coldFixedDowntime     = 500 * time.Millisecond
	coldBytesPerSecond    = 70 << 20
	postcopyFixedDowntime = 700 * time.Millisecond
)

// moveLazyTimeout bounds the lazy phase of a postcopy move: the target must
// hold every page by then (a stalled tunnel is a failed move).
const moveLazyTimeout = 30 * time.Minute

// lazyRestoreGrace is how long after a postcopy restore the work that can
// wait does (the log's transfer, the incoming checkpoint's removal): the
// resumed container's first page faults, which it waits on, go first.
const lazyRestoreGrace = 250 * time.Millisecond

// errPagesLost marks a postcopy move whose page transfer broke after the
// target had resumed the container: that copy cannot go on.
var errPagesLost = errors.New("pages lost")

// steps times the consecutive steps of a move for the log line that explains
// its downtime (docs/postcopy.md, "Downtime budget").
type steps struct {
	last  time.Time
	attrs []any
}

func newSteps() *steps { return &steps{last: time.Now()} }

// mark ends the step called name.
func (t *steps) mark(name string) {
	now := time.Now()
	t.attrs = append(t.attrs, name, now.Sub(t.last).Round(100*time.Microsecond).String())
	t.last = now
}

// moveMode checks a requested mode.
func moveMode(m string) (string, error) {
	switch m {
	case "", modeAuto:
		return modeAuto, nil
	case modeCold, modePostcopy, modePrecopy:
		return m, nil
	}
	return "", fmt.Errorf("%w: move mode %q: use auto, cold, postcopy or precopy", ErrInvalid, m)
}

// metricsMode is a move mode's label value.
func metricsMode(mode string) string {
	switch mode {
	case modePostcopy:
		return metrics.ModeLazy
	case modePrecopy:
		return metrics.ModePreCopy
	}
	return metrics.ModeCold
}

// moveFeatures is what this node offers for moves, from its CRIU probe.
func (s *Service) moveFeatures(ctx context.Context) *migratev1.MoveFeatures {
	info := s.node.get(ctx).GetCriu()
	f := &migratev1.MoveFeatures{LazyPages: info.GetFeatures()["lazy_pages"], MemTrack: info.GetFeatures()["mem_track"], LogsAfterRestore: true}
	if info.GetVersion() == "" {
		f.LazyPages, f.MemTrack = false, false
		f.Missing = append(f.Missing, "CRIU does not work: "+info.GetError())
		return f
	}
	if !f.LazyPages {
		f.Missing = append(f.Missing, "lazy pages (the kernel lacks userfaultfd with non-cooperative events)")
	}
	if !f.MemTrack {
		f.Missing = append(f.Missing, "soft-dirty memory tracking (the kernel lacks CONFIG_MEM_SOFT_DIRTY)")
	}
	return f
}

// modeChoice is the outcome of pickMode.
type modeChoice struct {
	mode, reason string
}

// pickMode chooses the mode of a move from the request, what both nodes
// support and the container's memory; it refuses (ErrInvalid, ErrInvalidState)
// before anything is touched.
func pickMode(requested string, maxDowntime time.Duration, local, remote *migratev1.MoveFeatures, target string, memBytes int64) (modeChoice, error) {
	lazy := local.GetLazyPages() && remote.GetLazyPages()
	track := local.GetMemTrack() && remote.GetMemTrack()
	cold := estimateCold(memBytes)
	missing := func(what string, l, r bool) string {
		var where []string
		if !l {
			where = append(where, "this node")
		}
		if !r {
			where = append(where, "node "+target)
		}
		return fmt.Sprintf("%s on %s", what, strings.Join(where, " and "))
	}
	fits := func(d time.Duration) bool { return maxDowntime <= 0 || d <= maxDowntime }
	switch requested {
	case modePrecopy:
		// Pre-copy is only worth anything with dirty-page tracking: without it
		// every round copies all memory again.
		if !track {
			return modeChoice{}, fmt.Errorf("%w: precopy needs %s", ErrInvalidState, missing("soft-dirty memory tracking (CRIU mem_track; kernel CONFIG_MEM_SOFT_DIRTY)", local.GetMemTrack(), remote.GetMemTrack()))
		}
		return modeChoice{}, fmt.Errorf("%w: precopy is not implemented yet", ErrInvalidState)
	case modePostcopy:
		if !lazy {
			return modeChoice{}, fmt.Errorf("%w: postcopy needs %s", ErrInvalidState, missing("lazy pages (userfaultfd)", local.GetLazyPages(), remote.GetLazyPages()))
		}
		if !fits(postcopyFixedDowntime) {
			return modeChoice{}, fmt.Errorf("%w: postcopy is expected to take about %s of downtime, more than --max-downtime %s", ErrInvalid, postcopyFixedDowntime, maxDowntime)
		}
		return modeChoice{modePostcopy, "requested"}, nil
	case modeCold:
		if !fits(cold) {
			return modeChoice{}, fmt.Errorf("%w: a cold move of %s of memory is expected to take about %s of downtime, more than --max-downtime %s", ErrInvalid, mib(memBytes), cold.Round(time.Millisecond), maxDowntime)
		}
		return modeChoice{modeCold, "requested"}, nil
	}
	// auto: the mode with the least expected downtime that both nodes support.
	var why []string
	if !track {
		why = append(why, "precopy skipped: no "+missing("soft-dirty tracking", local.GetMemTrack(), remote.GetMemTrack()))
	}
	if lazy && postcopyFixedDowntime < cold {
		if fits(postcopyFixedDowntime) {
			return modeChoice{modePostcopy, strings.Join(append(why, fmt.Sprintf("postcopy: expected downtime %s, cold %s for %s", postcopyFixedDowntime, cold.Round(time.Millisecond), mib(memBytes))), "; ")}, nil
		}
	}
	if !lazy {
		why = append(why, "postcopy skipped: no "+missing("lazy pages", local.GetLazyPages(), remote.GetLazyPages()))
	}
	if fits(cold) {
		return modeChoice{modeCold, strings.Join(append(why, fmt.Sprintf("cold: expected downtime %s for %s", cold.Round(time.Millisecond), mib(memBytes))), "; ")}, nil
	}
	best := cold
	if lazy && postcopyFixedDowntime < best {
		best = postcopyFixedDowntime
	}
	return modeChoice{}, fmt.Errorf("%w: no mode meets --max-downtime %s: the best expected is %s (%s)", ErrInvalid, maxDowntime, best.Round(time.Millisecond), strings.Join(why, "; "))
}

// estimateCold is a cold move's expected downtime for memBytes of memory.
func estimateCold(memBytes int64) time.Duration {
	return coldFixedDowntime + time.Duration(float64(memBytes)/coldBytesPerSecond*float64(time.Second))
}

func mib(b int64) string { return fmt.Sprintf("%d MiB", b>>20) }

// containerMemory is the memory the container's cgroup uses now (v2
// memory.current, v1 memory.usage_in_bytes); 0 when unknown.
func (s *Service) containerMemory(id string) int64 {
	rt, err := container.New(s.cfg.RuntimeDir())
	if err != nil {
		return 0
	}
	ct, err := rt.Get(id)
	if err != nil {
		return 0
	}
	for _, p := range []string{
		filepath.Join(ct.Cgroup().Path("memory"), "memory.usage_in_bytes"),
		filepath.Join(ct.Cgroup().Path(""), "memory.current"),
	} {
		var n int64
		if b, err := os.ReadFile(p); err == nil {
			if _, err := fmt.Sscan(string(b), &n); err == nil && n > 0 {
				return n
			}
		}
	}
	return 0
}

// movePostcopy is the body of a postcopy move (docs/postcopy.md):
//
//	pause    freeze the container
//	dump     CRIU dumps all but the memory pages; its page server keeps them
//	send     checkpoint (and base) to the target
//	tunnel   open the page tunnel to the target
//	restore  the target restores with lazy pages: the container runs there
//	lazy     the target fetches every page through the tunnel
//	cleanup  delete the frozen source container
//
// Before the target's reply every failure resumes the container here once the
// target confirmed it holds nothing; after it, the source never resumes: a
// broken page transfer is a lost container (errPagesLost), stopped on the
// target and left paused here.
func (s *Service) movePostcopy(ctx context.Context, p movePlan, report func(progress)) (*migratev1.MoveResult, error) {
	moveID, work, err := s.newMove(p)
	if err != nil {
		return nil, err
	}
	defer os.RemoveAll(work)
	res := &migratev1.MoveResult{ContainerId: p.id, From: s.cfg.Node, To: p.to, Mode: modePostcopy, ModeReason: p.reason}
	if changed, old, err := criu.EnsurePipeMaxSize(criu.LazyPagesPipeMaxSize); err != nil {
		return nil, fmt.Errorf("move %s: %w", p.id, err)
	} else if changed {
		s.log.Info("raised fs.pipe-max-size for lazy pages", "from", old, "to", criu.LazyPagesPipeMaxSize)
	}
	if err := s.prepareBase(p, work, res, report); err != nil {
		return nil, err
	}
	ct, err := s.moveContainer(p)
	if err != nil {
		return nil, err
	}
	// The dump outlives the operation's context: once the target runs the
	// container, only the end of the page transfer may stop CRIU.
	lctx, lcancel := context.WithCancel(s.bg)
	defer lcancel()
	report(progress{phase: "pause", message: "freezing the container once CRIU is started"})
	report(progress{phase: "dump", message: "checkpointing with CRIU, memory pages left for the target to fetch"})
	ckpt := filepath.Join(work, moveCheckpointDir)
	// The shim freezes the container itself once CRIU's process runs, so
	// CRIU's start is not downtime.
	lazy, ready, err := startLazyDump(lctx, p.shim, &shimv1.CheckpointRequest{Dir: ckpt, Id: moveID, LeaveRunning: true, Pause: true, NoLogs: p.logsAfter})
	paused := time.Now()
	if err != nil && status.Code(err) == codes.FailedPrecondition && strings.Contains(err.Error(), "needs the container paused") {
		// A shim from before the agent's upgrade does not pause: do it here.
		if err = ct.Pause(); err == nil {
			paused = time.Now()
			lazy, ready, err = startLazyDump(lctx, p.shim, &shimv1.CheckpointRequest{Dir: ckpt, Id: moveID, LeaveRunning: true, NoLogs: p.logsAfter})
		}
	}
	if ns := ready.GetPausedAtUnixNs(); ns > 0 {
		paused = time.Unix(0, ns)
	}
	tm := &steps{last: paused}
	// stopDump kills CRIU (pages not served yet are lost) and waits for it.
	stopDump := func() {
		lcancel()
		if lazy != nil {
			for {
				if _, err := lazy.Recv(); err != nil {
					break
				}
			}
		}
	}
	resume := func(cause error) error {
		stopDump()
		// CRIU thaws the cgroup itself when it stops on a signal it can handle.
		if st, err := ct.State(); err == nil && st.Status == "running" {
			report(progress{phase: "resumed", message: "the container runs on " + s.cfg.Node + " again"})
			return cause
		}
		if err := ct.Resume(); err != nil {
			return fmt.Errorf("%w; resuming it on %s failed too: %v", cause, s.cfg.Node, err)
		}
		report(progress{phase: "resumed", message: "the container runs on " + s.cfg.Node + " again"})
		return cause
	}
	var tun *sourceTunnel
	abort := func(cause error) error {
		// The target first drops the move (and a container it restored), then
		// the tunnel goes: in this order it does not take the break for a lost
		// source.
		actx, cancel := context.WithTimeout(s.bg, moveAbortTimeout)
		defer cancel()
		err := s.abortOnTarget(actx, p, moveID)
		if tun != nil {
			tun.close()
		}
		if err != nil {
			stopDump()
			s.log.Error("move: target did not confirm the abort; the container stays paused", "id", p.id, "to", p.to, "err", err)
			return fmt.Errorf("%w; node %s did not confirm it dropped the move (%v): the container is left paused on %s so it cannot run twice: resolve by hand", cause, p.to, cleanMessage(err), s.cfg.Node)
		}
		return resume(cause)
	}
	if err != nil {
		return nil, resume(shimErr("move", p.id, err))
	}
	res.Dump = durationpb.New(time.Since(paused))
	tm.mark("dump")
	// Of which CRIU until its page server listened, and the rootfs diff.
	tm.attrs = append(tm.attrs, "dump-criu-and-diff", time.Duration(ready.GetDowntimeNs()).Round(100*time.Microsecond).String())
	files, sums, conn, err := s.moveSendPlan(p, work, ckpt)
	if err != nil {
		return nil, resume(err)
	}
	tm.mark("files")
	report(progress{phase: "transfer", message: fmt.Sprintf("sending %d files (no memory pages) to %s", len(files), p.to)})
	t0 := time.Now()
	stats, err := s.sendMove(ctx, conn, p, moveID, work, files, sums, report)
	res.Transfer = durationpb.New(time.Since(t0))
	res.RawBytes, res.WireBytes = stats.RawBytes, stats.WireBytes
	// Until RestoreMoved is asked the target cannot run the container: resume at
	// once and clear the target's partial transfer in the background, as a cold
	// move does.
	early := func(cause error) error {
		if tun != nil {
			tun.close()
		}
		go s.cleanTarget(p, moveID)
		return resume(cause)
	}
	if err != nil {
		return nil, early(fmt.Errorf("move %s: transfer to %s: %w", p.id, p.to, peerErr(err)))
	}
	tm.mark("transfer")
	tm.attrs = append(tm.attrs, "files", len(files), "bytes", stats.RawBytes)
	tun, err = s.openTunnel(lctx, p.to, moveID, int(ready.GetPort()))
	if err != nil {
		return nil, early(fmt.Errorf("move %s: transfer to %s: page tunnel: %w", p.id, p.to, err))
	}
	pc, err := s.peers.client(p.to)
	if err != nil {
		return nil, early(fmt.Errorf("move %s: %w", p.id, err))
	}
	tm.mark("tunnel")
	report(progress{phase: "restore", message: "restoring on " + p.to + " with lazy pages"})
	t0 = time.Now()
	rctx, cancel := context.WithTimeout(ctx, moveRestoreTimeout)
	rr, err := pc.RestoreMoved(rctx, &migratev1.RestoreMovedRequest{TransferId: moveID, ContainerId: p.id, From: s.cfg.Node, LazyPages: true})
	cancel()
	if err != nil {
		return nil, abort(fmt.Errorf("move %s: restore on %s: %w", p.id, p.to, peerErr(err)))
	}
	// The container runs on the target: from here on it is never resumed here,
	// and the page server must run until the target has every page.
	res.Restore = durationpb.New(time.Since(t0))
	res.Downtime = durationpb.New(time.Since(paused))
	tm.mark("restore")
	s.log.Info("postcopy move: downtime steps on the source", append([]any{"id", p.id, "to", p.to, "downtime", res.Downtime.AsDuration().Round(time.Millisecond).String()}, tm.attrs...)...)
	res.Container = rr.Container
	report(progress{phase: "moved", message: fmt.Sprintf("running on %s after %s of downtime; its memory follows", p.to, res.Downtime.AsDuration().Round(time.Millisecond))})
	// The log follows a little later: the resumed container's first page
	// faults, which it waits on, go first through the same connection and CPUs.
	logsSent := make(chan struct{})
	go func() {
		defer close(logsSent)
		select {
		case <-time.After(lazyRestoreGrace):
		case <-tun.done:
		}
		s.sendLogs(ctx, p, moveID, report)
	}()

	t0 = time.Now()
	lerr := s.waitLazy(lazy, tun, report)
	res.LazyPages = durationpb.New(time.Since(t0))
	<-logsSent
	res.LazyBytes = tun.bytes.Load()
	// The pages went to the target too, uncompressed.
	res.RawBytes += res.LazyBytes
	res.WireBytes += res.LazyBytes
	tun.close()
	if lerr != nil {
		stopDump()
		// The target ran past this copy's state: it must not run again here.
		// CRIU may have thawed the cgroup when it failed.
		if st, err := ct.State(); err == nil && st.Status == "running" {
			if err := ct.Pause(); err != nil {
				s.log.Error("move: pausing the source copy after lost pages failed", "id", p.id, "err", err)
			}
		}
		s.log.Error("move: page transfer broke after the target resumed", "id", p.id, "to", p.to, "err", lerr)
		s.events.publish(&migratev1.Event{Time: timestamppb.Now(), Type: "move-failed", ContainerId: p.id})
		return res, fmt.Errorf("move %s: %w: the page transfer to %s broke after the container resumed there (%v); node %s stops its copy, which cannot go on without them; the copy here stays paused", p.id, errPagesLost, p.to, cleanMessage(lerr), p.to)
	}
	report(progress{phase: "cleanup", message: fmt.Sprintf("%s has every page (%s in %s): removing the source container", p.to, mib(res.LazyBytes), res.LazyPages.AsDuration().Round(time.Millisecond))})
	if _, err := s.Delete(s.bg, &migratev1.DeleteRequest{Id: p.id, Force: true}); err != nil {
		s.log.Error("move: removing the frozen source container failed", "id", p.id, "err", err)
		report(progress{phase: "cleanup", message: "removing the frozen source container failed: " + cleanMessage(err)})
	}
	s.events.publish(&migratev1.Event{Time: timestamppb.Now(), Type: "moved", ContainerId: p.id})
	return res, nil
}

// startLazyDump starts the shim's lazy checkpoint and waits for its ready
// event.
func startLazyDump(ctx context.Context, sc *shim.Client, r *shimv1.CheckpointRequest) (grpc.ServerStreamingClient[shimv1.LazyCheckpointEvent], *shimv1.LazyCheckpointEvent, error) {
	lazy, err := sc.LazyCheckpoint(ctx, r)
	if err != nil {
		return nil, nil, err
	}
	ready, err := lazy.Recv()
	if err == nil && !ready.GetReady() {
		err = errors.New("shim: lazy checkpoint sent no ready event")
	}
	return lazy, ready, err
}

// waitLazy waits until CRIU's page server on this node has served every page
// (the shim's lazy checkpoint ends without error) or the transfer broke.
func (s *Service) waitLazy(lazy grpc.ServerStreamingClient[shimv1.LazyCheckpointEvent], tun *sourceTunnel, report func(progress)) error {
	done := make(chan error, 1)
	go func() {
		for {
			_, err := lazy.Recv()
			if errors.Is(err, io.EOF) {
				done <- nil
				return
			}
			if err != nil {
				done <- err
				return
			}
		}
	}()
	tick := time.NewTicker(time.Second)
	defer tick.Stop()
	timeout := time.After(moveLazyTimeout)
	tunDone := tun.done
	for {
		select {
		case err := <-done:
			return err
		case <-tunDone:
			if tun.err != nil {
				// The page server cannot serve the rest: stop it.
				return tun.err
			}
			tunDone = nil // ended cleanly: the page server is finishing
		case <-tick.C:
			report(progress{phase: "lazy-pages", done: tun.bytes.Load(), unit: "bytes", message: "the target fetches the memory pages"})
		case <-timeout:
			return fmt.Errorf("%w: pages still missing after %s", context.DeadlineExceeded, moveLazyTimeout)
		}
	}
}

// lazyStart is a postcopy restore's lazy-pages daemon, launched before the
// checks of the request (startLazyPages).
type lazyStart struct {
	end  *tunnelEnd
	dir  string // the daemon's work directory
	lp   *criu.LazyPages
	used bool // restoreMovedLazy took it
}

// startLazyPages launches the daemon that serves a postcopy restore's memory
// from the source's page server through the move's tunnel, which the source
// opened before asking. The daemon reads the images at its start; a restore
// that does not happen stops it (stopUnused).
func (s *Service) startLazyPages(ctx context.Context, r *migratev1.RestoreMovedRequest) (*lazyStart, error) {
	end := s.moves.lazy.get(r.TransferId)
	select {
	case <-end.ready:
	case <-ctx.Done():
		return nil, ctx.Err()
	case <-time.After(10 * time.Second):
		return nil, fmt.Errorf("restore moved %s: %w: the page tunnel of %s is not open", r.ContainerId, ErrInvalidState, r.TransferId)
	}
	if changed, old, err := criu.EnsurePipeMaxSize(criu.LazyPagesPipeMaxSize); err != nil {
		return nil, fmt.Errorf("restore moved %s: %w", r.ContainerId, err)
	} else if changed {
		s.log.Info("raised fs.pipe-max-size for lazy pages", "from", old, "to", criu.LazyPagesPipeMaxSize)
	}
	dir := filepath.Join(lazyDir(s.cfg.DataDir), r.TransferId)
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, fmt.Errorf("restore moved %s: %w", r.ContainerId, err)
	}
	// The daemon outlives this call: it serves the container until it has every
	// page. CRIU's restore waits for it to listen.
	images := filepath.Join(s.incoming.Dir(r.TransferId), moveCheckpointDir, "images")
	lp, err := (&criu.Client{Path: s.cfg.CRIU}).LaunchLazyPages(s.bg, criu.LazyPagesOptions{
		ImagesDir: images, WorkDir: dir, Address: "127.0.0.1", Port: end.port,
	})
	if err != nil {
		os.RemoveAll(dir)
		return nil, fmt.Errorf("restore moved %s: %w", r.ContainerId, err)
	}
	return &lazyStart{end: end, dir: dir, lp: lp}, nil
}

// stopUnused stops the daemon if no restore took it.
func (l *lazyStart) stopUnused() {
	if l.used {
		return
	}
	l.lp.Kill()
	<-l.lp.Done()
	os.RemoveAll(l.dir)
}

// restoreMovedLazy restores a postcopy checkpoint with the daemon of l.
func (s *Service) restoreMovedLazy(ctx context.Context, r *migratev1.RestoreMovedRequest, ckpt string, tm *steps, l *lazyStart) (*migratev1.Container, error) {
	end, dir, lp := l.end, l.dir, l.lp
	end.mu.Lock()
	end.container = r.ContainerId
	end.mu.Unlock()
	c, err := s.restore(ctx, restoreSource{dir: ckpt, lazyDir: dir, verified: true, consume: true}, r.ContainerId, func(p progress) {
		// Each phase reported ends the step before it.
		if step, ok := map[string]string{"network": "container-dir", "rootfs": "network", "restore": "rootfs", "restored": "shim-and-criu-restore"}[p.phase]; ok {
			tm.mark(step)
		}
		s.log.Debug("restore moved", "id", r.ContainerId, "phase", p.phase, "message", p.message)
	})
	tm.mark("status")
	if err != nil {
		s.log.Warn("lazy restore failed", "id", r.ContainerId, "lazy-pages log", lp.LogFile())
		return nil, err // stopUnused stops the daemon
	}
	l.used = true
	s.log.Info("postcopy move: restore steps on the target", append([]any{"id", r.ContainerId, "from", r.From}, tm.attrs...)...)
	go s.watchLazy(r, end, lp, dir)
	return c, nil
}

// lazyDir holds the work directories of the lazy-pages daemons of postcopy
// moves to this node.
func lazyDir(dataDir string) string { return filepath.Join(dataDir, "lazy") }

// watchLazy follows a restored postcopy container until it has every page.
// If the source is lost first (the tunnel broke, the daemon failed), the
// container is killed: it cannot run without its memory, and a killed
// container is better than one reading zeros where its pages should be.
func (s *Service) watchLazy(r *migratev1.RestoreMovedRequest, end *tunnelEnd, lp *criu.LazyPages, dir string) {
	defer s.moves.lazy.drop(r.TransferId)
	lost := make(chan error, 1)
	end.setOnBroken(func(err error) {
		select {
		case <-lp.Done():
			if lp.Err() == nil {
				return // every page arrived; the tunnel's end does not matter
			}
		default:
		}
		// Runs before the daemon's connection is closed: stop the tasks first.
		s.killLost(r.ContainerId)
		select {
		case lost <- err:
		default:
		}
	})
	var cause error
	select {
	case <-lp.Done():
		if lp.Err() == nil {
			s.log.Info("postcopy move complete: every page arrived", "id", r.ContainerId, "from", r.From)
			os.RemoveAll(dir)
			s.events.publish(&migratev1.Event{Time: timestamppb.Now(), Type: "lazy-pages-done", ContainerId: r.ContainerId})
			return
		}
		cause = lp.Err()
	case cause = <-lost:
		lp.Kill()
		<-lp.Done()
	}
	in := s.moves.in(r.TransferId)
	in.mu.Lock()
	aborted := in.aborted
	in.mu.Unlock()
	if aborted {
		os.RemoveAll(dir)
		return // the source called the move off; AbortMove removed the container
	}
	s.killLost(r.ContainerId)
	s.log.Error("postcopy move failed: pages missing, the container was killed", "id", r.ContainerId, "from", r.From, "err", cause, "lazy-pages log", lp.LogFile())
	if b, err := os.ReadFile(lp.LogFile()); err == nil {
		lines := strings.Split(strings.TrimSpace(string(b)), "\n")
		s.log.Warn("lazy-pages log tail", "lines", strings.Join(lines[max(0, len(lines)-40):], "\n"))
	}
	s.events.publish(&migratev1.Event{Time: timestamppb.Now(), Type: "move-failed", ContainerId: r.ContainerId})
	s.rec.ObserveMove(metrics.Move{Mode: metrics.ModeLazy, Result: metrics.ResultFailure, Reason: metrics.ReasonPagesLost})
	os.RemoveAll(dir)
}

// killLost kills every process of a container whose memory source is gone;
// the container stays listed, stopped, for an operator to see.
func (s *Service) killLost(id string) {
	ctx, cancel := context.WithTimeout(s.bg, 10*time.Second)
	defer cancel()
	if _, err := s.Kill(ctx, &migratev1.KillRequest{Id: id, Signal: int32(unix.SIGKILL), All: true}); err != nil && !errors.Is(err, ErrNotFound) {
		s.log.Warn("kill a container that lost its pages", "id", id, "err", err)
	}
}
