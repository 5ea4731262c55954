package agent

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/durationpb"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/migratehq/migrate/agent/checkpoint"
	"github.com/migratehq/migrate/agent/layers"
	"github.com/migratehq/migrate/agent/logs"
	"github.com/migratehq/migrate/agent/ops"
	"github.com/migratehq/migrate/agent/shim"
	migratev1 "github.com/migratehq/migrate/api/migrate/v1"
	shimv1 "github.com/migratehq/migrate/api/shim/v1"
	"github.com/migratehq/migrate/metrics"
	"github.com/migratehq/migrate/runtime/container"
	"github.com/migratehq/migrate/transfer"
	"github.com/migratehq/migrate/transfer/layer"
)

// Bounds of the steps of a move that talk to the target.
const (
	movePrepareTimeout = 10 * time.Second
	moveRestoreTimeout = 5 * time.Minute
	moveAbortTimeout   = 30 * time.Second
	// moveResendWindow bounds how long a broken transfer is retried (each retry
	// resumes where the last stopped) while the container is frozen.
	moveResendWindow = 15 * time.Second
	// moveCleanupWindow bounds the background clean-up of a target after a move
	// failed before the target was asked to restore.
	moveCleanupWindow = 10 * time.Minute
)

// Move starts the move operation and streams its events. Everything that can be
// refused is checked here, before the container is touched.
func (s *Service) Move(ctx context.Context, r *migratev1.MoveRequest, send func(*migratev1.OperationEvent) error) error {
	e, err := s.lookup(r.Id)
	if err != nil {
		return fmt.Errorf("move: %w", err)
	}
	mode, err := moveMode(r.Mode)
	if err != nil {
		return fmt.Errorf("move %s: %w", r.Id, err)
	}
	if s.moves.lazy.receiving(r.Id) {
		return fmt.Errorf("move %s: %w: its memory is still arriving from its previous node", r.Id, ErrInvalidState)
	}
	switch {
	case r.To == "":
		return fmt.Errorf("move %s: %w: no target node", r.Id, ErrInvalid)
	case r.To == s.cfg.Node:
		return fmt.Errorf("move %s: %w: %s is this node", r.Id, ErrInvalid, r.To)
	}
	if _, ok := s.cfg.Peers[r.To]; !ok {
		return fmt.Errorf("move %s: node %q %w among the peers of %s", r.Id, r.To, ErrNotFound, s.cfg.Node)
	}
	c, st, err := e.quickState(ctx, "move")
	if err != nil {
		return err
	}
	if st.Exited || st.Status != "running" {
		return fmt.Errorf("move %s: %w (it is %s)", r.Id, container.ErrNotRunning, st.Status)
	}
	digest := ""
	if l, err := layers.Load(e.dir); err == nil {
		digest = l.BaseDigest
	}
	pc, err := s.peers.client(r.To)
	if err != nil {
		return fmt.Errorf("move %s: %w", r.Id, err)
	}
	pctx, cancel := context.WithTimeout(ctx, movePrepareTimeout)
	prep, err := pc.PrepareMove(pctx, &migratev1.PrepareMoveRequest{ContainerId: r.Id, BaseDigest: digest})
	cancel()
	if err != nil {
		return fmt.Errorf("move %s: node %s: %w", r.Id, r.To, peerErr(err))
	}
	choice, err := pickMode(mode, r.GetMaxDowntime().AsDuration(), s.moveFeatures(ctx), prep.GetFeatures(), r.To, s.containerMemory(r.Id))
	if err != nil {
		return fmt.Errorf("move %s: %w", r.Id, err)
	}
	if !s.moves.reserveOutgoing(r.Id) {
		return fmt.Errorf("move %s: %w: a move of it is running", r.Id, ErrInvalidState)
	}
	plan := movePlan{id: r.Id, to: r.To, mode: choice.mode, reason: choice.reason, digest: digest, sendBase: digest != "" && !prep.HasBase,
		logsAfter: prep.GetFeatures().GetLogsAfterRestore(), shim: c}
	op := s.ops.Start(s.bg, "move", r.Id, func(ctx context.Context, report func(ops.Progress)) (any, error) {
		defer s.moves.releaseOutgoing(r.Id)
		defer s.rec.Begin(metrics.OpMove)()
		rep := func(p progress) {
			report(ops.Progress{Phase: p.phase, Message: p.message, Done: p.done, Total: p.total, Unit: p.unit})
		}
		rep(progress{phase: "mode", message: plan.mode + ": " + plan.reason})
		var res *migratev1.MoveResult
		var err error
		if plan.mode == modePostcopy {
			res, err = s.movePostcopy(ctx, plan, rep)
		} else {
			res, err = s.move(ctx, plan, rep)
		}
		if res != nil {
			res.ModeReason = plan.reason
		}
		m := metrics.Move{Mode: metricsMode(plan.mode)}
		if errors.Is(err, errPagesLost) {
			m.Result, m.Reason = metrics.ResultFailure, metrics.ReasonPagesLost
		} else if err != nil {
			m.Result, m.Reason = resultOf(err, moveFailure(err))
		} else {
			m.Result, m.Reason = metrics.ResultSuccess, metrics.ReasonNone
		}
		if res != nil {
			m.Downtime = res.GetDowntime().AsDuration()
			m.Phases = map[metrics.Phase]time.Duration{
				metrics.PhaseDump: res.GetDump().AsDuration(), metrics.PhaseTransfer: res.GetTransfer().AsDuration(),
				metrics.PhaseRestore: res.GetRestore().AsDuration(),
			}
			if res.GetLazyPages() != nil {
				m.Phases[metrics.PhaseLazyPages] = res.GetLazyPages().AsDuration()
			}
			m.RawBytes, m.WireBytes = res.GetRawBytes(), res.GetWireBytes()
		}
		s.rec.ObserveMove(m)
		return res, err
	})
	return s.watch(ctx, op, send)
}

// peerErr keeps a peer's own refusals (their codes) and makes a failed connection
// ErrUnavailable with a readable reason.
func peerErr(err error) error {
	switch status.Code(err) {
	case codes.Unavailable, codes.DeadlineExceeded:
		return fmt.Errorf("%w: %s", ErrUnavailable, peerError(err))
	}
	return err
}

type movePlan struct {
	id, to, mode string
	reason       string // why this mode (pickMode)
	digest       string // rootfs base; "" for a container without a layered root
	sendBase     bool   // the target lacks the base
	// logsAfter: the target takes the container's log after the restore
	// (AdoptLogs), so the checkpoint leaves it out of the downtime.
	logsAfter bool
	shim      *shim.Client
}

// move is the body of a cold move (docs/move.md):
//
//	prepare  serialise the base if the target lacks it (container still running)
//	pause    freeze the container: from here it runs nowhere
//	dump     CRIU dump, leave-running: the container stays frozen
//	send     checkpoint (and base) to the target's receiver
//	restore  the target restores; it replies once the container runs there
//	cleanup  delete the frozen source container
//
// Any failure before the target's reply resumes the container here, but only once
// the target confirmed it holds nothing of the move: the container must never run
// on both nodes.
func (s *Service) move(ctx context.Context, p movePlan, report func(progress)) (*migratev1.MoveResult, error) {
	moveID, work, err := s.newMove(p)
	if err != nil {
		return nil, err
	}
	defer os.RemoveAll(work)
	res := &migratev1.MoveResult{ContainerId: p.id, From: s.cfg.Node, To: p.to, Mode: p.mode}

	if err := s.prepareBase(p, work, res, report); err != nil {
		return nil, err
	}

	ct, paused, err := s.pauseForMove(p, report)
	if err != nil {
		return nil, err
	}
	// resume undoes the pause after a failure the target has no part in (yet).
	resume := func(cause error) error {
		if err := ct.Resume(); err != nil {
			return fmt.Errorf("%w; resuming it on %s failed too: %v", cause, s.cfg.Node, err)
		}
		report(progress{phase: "resumed", message: "the container runs on " + s.cfg.Node + " again"})
		return cause
	}
	// abort asks the target to drop what it has of the move, then resumes; if the
	// target cannot confirm, the container stays frozen here.
	abort := func(cause error) error {
		actx, cancel := context.WithTimeout(s.bg, moveAbortTimeout)
		defer cancel()
		if err := s.abortOnTarget(actx, p, moveID); err != nil {
			s.log.Error("move: target did not confirm the abort; the container stays paused", "id", p.id, "to", p.to, "err", err)
			return fmt.Errorf("%w; node %s did not confirm it dropped the move (%v): the container is left paused on %s so it cannot run twice: resolve by hand", cause, p.to, cleanMessage(err), s.cfg.Node)
		}
		return resume(cause)
	}

	report(progress{phase: "dump", message: "checkpointing with CRIU (the container stays frozen)"})
	t0 := time.Now()
	ckpt := filepath.Join(work, moveCheckpointDir)
	if _, err := p.shim.Checkpoint(ctx, &shimv1.CheckpointRequest{Dir: ckpt, Id: moveID, LeaveRunning: true, NoLogs: p.logsAfter}); err != nil {
		return nil, resume(shimErr("move", p.id, err))
	}
	res.Dump = durationpb.New(time.Since(t0))
	files, sums, conn, err := s.moveSendPlan(p, work, ckpt)
	if err != nil {
		return nil, resume(err)
	}
	report(progress{phase: "transfer", message: fmt.Sprintf("sending %d files to %s", len(files), p.to)})
	t0 = time.Now()
	stats, err := s.sendMove(ctx, conn, p, moveID, work, files, sums, report)
	res.Transfer = durationpb.New(time.Since(t0))
	res.RawBytes, res.WireBytes = stats.RawBytes, stats.WireBytes
	if err != nil {
		// The target is only ever asked to restore after a complete transfer, so it
		// cannot run the container: resume at once, and clear the target's partial
		// transfer in the background (it may be unreachable for a while).
		go s.cleanTarget(p, moveID)
		return nil, resume(fmt.Errorf("move %s: transfer to %s: %w", p.id, p.to, peerErr(err)))
	}

	report(progress{phase: "restore", message: "restoring on " + p.to})
	t0 = time.Now()
	pc, err := s.peers.client(p.to)
	if err != nil {
		go s.cleanTarget(p, moveID)
		return nil, resume(fmt.Errorf("move %s: %w", p.id, err))
	}
	rctx, cancel := context.WithTimeout(ctx, moveRestoreTimeout)
	rr, err := pc.RestoreMoved(rctx, &migratev1.RestoreMovedRequest{TransferId: moveID, ContainerId: p.id, From: s.cfg.Node})
	cancel()
	if err != nil {
		return nil, abort(fmt.Errorf("move %s: restore on %s: %w", p.id, p.to, peerErr(err)))
	}
	// The container runs on the target: from here on it must never be resumed.
	res.Restore = durationpb.New(time.Since(t0))
	res.Downtime = durationpb.New(time.Since(paused))
	res.Container = rr.Container
	report(progress{phase: "moved", message: fmt.Sprintf("running on %s after %s of downtime", p.to, res.Downtime.AsDuration().Round(time.Millisecond))})
	s.sendLogs(ctx, p, moveID, report)

	report(progress{phase: "cleanup", message: "removing the source container"})
	if _, err := s.Delete(s.bg, &migratev1.DeleteRequest{Id: p.id, Force: true}); err != nil {
		// The copy here is frozen and stays so; it is not a second running copy.
		s.log.Error("move: removing the frozen source container failed", "id", p.id, "err", err)
		report(progress{phase: "cleanup", message: "removing the frozen source container failed: " + cleanMessage(err)})
	}
	s.events.publish(&migratev1.Event{Time: timestamppb.Now(), Type: "moved", ContainerId: p.id})
	return res, nil
}

// sendLogs sends the container's log of before the move to the target, which
// makes it the start of the restored container's log (AdoptLogs). It runs
// once the container runs there, so a large log costs no downtime. A failure
// loses that history, not the container: it is reported, not returned.
func (s *Service) sendLogs(ctx context.Context, p movePlan, moveID string, report func(progress)) {
	if !p.logsAfter {
		return // the checkpoint carried it
	}
	dir := filepath.Join(s.cfg.ContainersDir(), p.id)
	names := logs.Files(dir)
	if len(names) == 0 {
		return
	}
	err := func() error {
		conn, err := s.peers.conn(p.to)
		if err != nil {
			return err
		}
		pc, err := s.peers.client(p.to)
		if err != nil {
			return err
		}
		st, err := transfer.Send(ctx, conn, logsTransfer(moveID), dir, names, transfer.SendOptions{})
		if err != nil {
			return peerErr(err)
		}
		actx, cancel := context.WithTimeout(ctx, moveRestoreTimeout)
		defer cancel()
		if _, err := pc.AdoptLogs(actx, &migratev1.AdoptLogsRequest{TransferId: moveID, ContainerId: p.id}); err != nil {
			return peerErr(err)
		}
		report(progress{phase: "logs", message: fmt.Sprintf("the log of before the move went to %s (%d files, %d bytes)", p.to, len(names), st.RawBytes+st.Resumed)})
		return nil
	}()
	if err != nil {
		s.log.Warn("move: the log of before the move did not reach the target", "id", p.id, "to", p.to, "err", err)
		report(progress{phase: "logs", message: fmt.Sprintf("the log of before the move did not reach %s (%s): it is lost with the source container", p.to, cleanMessage(err))})
	}
}

// newMove names a move and makes its work directory under moves/.
func (s *Service) newMove(p movePlan) (moveID, work string, err error) {
	b := make([]byte, 8)
	_, _ = rand.Read(b)
	moveID = "move-" + hex.EncodeToString(b)
	work = filepath.Join(movesDir(s.cfg.DataDir), moveID)
	if err := os.MkdirAll(work, 0o700); err != nil {
		return "", "", fmt.Errorf("move %s: %w", p.id, err)
	}
	return moveID, work, nil
}

// prepareBase serialises the rootfs base into work when the target lacks it;
// the container still runs meanwhile.
func (s *Service) prepareBase(p movePlan, work string, res *migratev1.MoveResult, report func(progress)) error {
	if !p.sendBase {
		return nil
	}
	report(progress{phase: "prepare", message: fmt.Sprintf("node %s lacks the base %s: serialising it", p.to, p.digest)})
	n, err := s.writeBase(p.digest, filepath.Join(work, moveBaseFile))
	if err != nil {
		return fmt.Errorf("move %s: base %s: %w", p.id, p.digest, err)
	}
	res.BaseSent, res.BaseBytes = true, n
	return nil
}

// moveContainer is the runtime's handle of the container a move takes.
func (s *Service) moveContainer(p movePlan) (*container.Container, error) {
	rt, err := container.New(s.cfg.RuntimeDir())
	if err != nil {
		return nil, fmt.Errorf("move %s: %w", p.id, err)
	}
	ct, err := rt.Get(p.id)
	if err != nil {
		return nil, fmt.Errorf("move %s: %w", p.id, err)
	}
	return ct, nil
}

// pauseForMove freezes the container: from here it runs nowhere until the move
// ends. It returns the container and when it was frozen (downtime starts).
func (s *Service) pauseForMove(p movePlan, report func(progress)) (*container.Container, time.Time, error) {
	ct, err := s.moveContainer(p)
	if err != nil {
		return nil, time.Time{}, err
	}
	report(progress{phase: "pause", message: "freezing the container"})
	if err := ct.Pause(); err != nil {
		return nil, time.Time{}, fmt.Errorf("move %s: %w", p.id, err)
	}
	return ct, time.Now(), nil
}

// moveSendPlan lists what a move sends from work (the checkpoint in ckpt, and
// the base if serialised), with the digests the manifest has, and the
// connection to the target.
func (s *Service) moveSendPlan(p movePlan, work, ckpt string) ([]string, map[string]string, *grpc.ClientConn, error) {
	m, err := checkpoint.Read(ckpt)
	if err != nil {
		return nil, nil, nil, fmt.Errorf("move %s: %w", p.id, err)
	}
	files, sums, err := moveFiles(work, m)
	if err != nil {
		return nil, nil, nil, fmt.Errorf("move %s: %w", p.id, err)
	}
	conn, err := s.peers.conn(p.to)
	if err != nil {
		return nil, nil, nil, fmt.Errorf("move %s: %w", p.id, err)
	}
	return files, sums, conn, nil
}

// sendMove sends the move's files, retrying a broken transfer within
// moveResendWindow: each retry resumes from what the receiver already holds.
func (s *Service) sendMove(ctx context.Context, conn grpc.ClientConnInterface, p movePlan, moveID, work string, files []string, sums map[string]string, report func(progress)) (transfer.Stats, error) {
	var (
		total     transfer.Stats
		shown     time.Time
		lastError string
		deadline  = time.Now().Add(moveResendWindow)
	)
	for attempt := 0; ; attempt++ {
		first := true
		stats, err := transfer.Send(ctx, conn, moveID, work, files, transfer.SendOptions{SHA256: sums, Progress: func(tp transfer.Progress) {
			if first && attempt > 0 {
				report(progress{phase: "transfer", message: fmt.Sprintf("resumed: %d of %d bytes were on %s already", tp.ResumedBytes, tp.TotalBytes, p.to)})
			}
			first = false
			// A checkpoint has many small files: a line per chunk would be noise.
			done := tp.ResumedBytes + tp.RawBytes
			if done < tp.TotalBytes && time.Since(shown) < 250*time.Millisecond {
				return
			}
			shown = time.Now()
			report(progress{phase: "transfer", done: done, total: tp.TotalBytes, unit: "bytes"})
		}})
		total.RawBytes += stats.RawBytes
		total.WireBytes += stats.WireBytes
		if err == nil || !resendable(err) || ctx.Err() != nil || time.Now().After(deadline) {
			return total, err
		}
		if msg := cleanMessage(peerErr(err)); msg != lastError {
			report(progress{phase: "transfer", message: "transfer interrupted (" + msg + "): retrying"})
			lastError = msg
		}
		select {
		case <-ctx.Done():
			return total, err
		case <-time.After(time.Second):
		}
	}
}

// resendable reports whether a failed transfer may succeed when resumed: the
// connection broke or the receiver was still closing the broken attempt. Data
// errors (checksums, digests) are not retried.
func resendable(err error) bool {
	if errors.Is(err, transfer.ErrIncomplete) || errors.Is(err, transfer.ErrBusy) {
		return true
	}
	switch status.Code(err) {
	case codes.Unavailable, codes.DeadlineExceeded, codes.Canceled:
		return !errors.Is(err, context.Canceled)
	}
	return false
}

// cleanTarget asks the target, for up to moveCleanupWindow, to drop what it holds
// of a move that failed before the target was asked to restore. A target that
// restarted meanwhile has dropped it already; one that stays unreachable removes
// stale transfers itself (Service.expireIncoming).
func (s *Service) cleanTarget(p movePlan, moveID string) {
	ctx, cancel := context.WithTimeout(s.bg, moveCleanupWindow)
	defer cancel()
	if err := s.abortOnTarget(ctx, p, moveID); err != nil {
		s.log.Warn("move: target not cleaned; it expires the transfer itself", "id", p.id, "to", p.to, "transfer", moveID, "err", err)
		return
	}
	s.log.Info("move: target dropped the failed move's transfer", "id", p.id, "to", p.to, "transfer", moveID)
}

// abortOnTarget retries AbortMove until the target answers or ctx ends.
func (s *Service) abortOnTarget(ctx context.Context, p movePlan, moveID string) error {
	pc, err := s.peers.client(p.to)
	if err != nil {
		return err
	}
	for {
		_, err := pc.AbortMove(ctx, &migratev1.AbortMoveRequest{TransferId: moveID, ContainerId: p.id})
		if err == nil {
			return nil
		}
		select {
		case <-ctx.Done():
			return err
		case <-time.After(500 * time.Millisecond):
		}
	}
}

// writeBase serialises the base digest into path as one tar stream.
func (s *Service) writeBase(digest, path string) (int64, error) {
	base, err := s.bases.BasePath(digest)
	if err != nil {
		return 0, err
	}
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
	if err != nil {
		return 0, err
	}
	n, err := layer.WriteDiff(base, f)
	if err != nil {
		f.Close()
		return 0, err
	}
	return n, f.Close()
}

// moveFiles lists the files of a move's directory for transfer.Send, with the
// digests the checkpoint manifest already has.
// lazyWorkSuffix names the work directory a lazy dump keeps beside its
// checkpoint (checkpoint.Options.Lazy).
const lazyWorkSuffix = ".lazy-work"

func moveFiles(work string, m *checkpoint.Manifest) ([]string, map[string]string, error) {
	sums := map[string]string{}
	for _, f := range m.Files {
		sums[filepath.Join(moveCheckpointDir, f.Path)] = f.SHA256
	}
	var files []string
	err := filepath.WalkDir(work, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if d.IsDir() && strings.HasSuffix(d.Name(), lazyWorkSuffix) {
			// CRIU's log of a lazy dump, still being written: not part of the
			// checkpoint, and the target has no use for it.
			return filepath.SkipDir
		}
		if !d.Type().IsRegular() {
			return nil
		}
		rel, err := filepath.Rel(work, p)
		if err != nil {
			return err
		}
		files = append(files, rel)
		return nil
	})
	return files, sums, err
}
