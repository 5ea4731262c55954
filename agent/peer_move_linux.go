package agent

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path"
	"path/filepath"
	"strings"
	"sync"
	"time"

	"golang.org/x/sys/unix"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/migratehq/migrate/agent/checkpoint"
	migratev1 "github.com/migratehq/migrate/api/migrate/v1"
	shimv1 "github.com/migratehq/migrate/api/shim/v1"
	"github.com/migratehq/migrate/runtime/atomicfile"
	"github.com/migratehq/migrate/runtime/cgroups"
	"github.com/migratehq/migrate/runtime/container"
	"github.com/migratehq/migrate/transfer"
	"github.com/migratehq/migrate/transfer/layer"
)

// Names inside a move's transfer (docs/move.md).
const (
	moveCheckpointDir = "checkpoint"
	moveBaseFile      = "base.tar"
)

// moveTable tracks the moves this node takes part in: as the source, which
// containers are being moved away; as the target, what each incoming transfer
// has become, so AbortMove can undo a restore whose reply the source never got.
type moveTable struct {
	mu       sync.Mutex
	outgoing map[string]bool          // guarded by mu; container id -> a move is running
	incoming map[string]*incomingMove // guarded by mu; transfer id -> its state
	lazy     tunnels                  // postcopy moves to this node (tunnel_linux.go)
}

// incomingMove is the target's record of one move. mu serialises RestoreMoved and
// AbortMove of the same transfer.
type incomingMove struct {
	mu       sync.Mutex
	restored string // guarded by mu; id of the container restored from it
	aborted  bool   // guarded by mu
}

func newMoveTable() *moveTable {
	return &moveTable{outgoing: map[string]bool{}, incoming: map[string]*incomingMove{}}
}

func (t *moveTable) reserveOutgoing(id string) bool {
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.outgoing[id] {
		return false
	}
	t.outgoing[id] = true
	return true
}

func (t *moveTable) releaseOutgoing(id string) {
	t.mu.Lock()
	defer t.mu.Unlock()
	delete(t.outgoing, id)
}

func (t *moveTable) in(transferID string) *incomingMove {
	t.mu.Lock()
	defer t.mu.Unlock()
	m, ok := t.incoming[transferID]
	if !ok {
		m = &incomingMove{}
		t.incoming[transferID] = m
	}
	return m
}

// incomingDir holds the transfers peers send to this node.
func incomingDir(dataDir string) string { return filepath.Join(dataDir, "incoming") }

// movesDir holds the checkpoints of moves leaving this node, one per move.
func movesDir(dataDir string) string { return filepath.Join(dataDir, "moves") }

// PrepareMove tells a source whether this node can take the container.
func (s *Service) PrepareMove(ctx context.Context, r *migratev1.PrepareMoveRequest) (*migratev1.PrepareMoveResponse, error) {
	if err := container.ValidateID(r.ContainerId); err != nil {
		return nil, fmt.Errorf("prepare move: %w: %w", ErrInvalid, err)
	}
	if _, err := s.lookup(r.ContainerId); err == nil {
		return nil, fmt.Errorf("move %s: node %s already has a container %w", r.ContainerId, s.cfg.Node, ErrExists)
	}
	out := &migratev1.PrepareMoveResponse{Features: s.moveFeatures(ctx)}
	if r.BaseDigest != "" {
		p, err := s.bases.BasePath(r.BaseDigest)
		if err != nil {
			return nil, fmt.Errorf("prepare move %s: %w: %w", r.ContainerId, ErrInvalid, err)
		}
		_, err = os.Stat(p)
		out.HasBase = err == nil
	}
	return out, nil
}

// RestoreMoved restores a moved container from a completed transfer. Whatever
// happens, the transfer's files are removed: a failed restore leaves nothing.
func (s *Service) RestoreMoved(ctx context.Context, r *migratev1.RestoreMovedRequest) (*migratev1.RestoreMovedResponse, error) {
	if err := transfer.ValidateID(r.TransferId); err != nil {
		return nil, fmt.Errorf("restore moved: %w: %w", ErrInvalid, err)
	}
	if err := container.ValidateID(r.ContainerId); err != nil {
		return nil, fmt.Errorf("restore moved: %w: %w", ErrInvalid, err)
	}
	tm := newSteps()
	in := s.moves.in(r.TransferId)
	in.mu.Lock()
	defer in.mu.Unlock()
	if in.aborted {
		return nil, fmt.Errorf("restore moved %s: %w: the move was aborted", r.ContainerId, ErrInvalidState)
	}
	if in.restored != "" {
		// A retried call after a lost reply: the container runs already.
		e, err := s.lookup(in.restored)
		if err != nil {
			return nil, fmt.Errorf("restore moved %s: %w", r.ContainerId, err)
		}
		c, err := s.describe(ctx, e)
		return &migratev1.RestoreMovedResponse{Container: c}, err
	}
	// Removed after the reply: the restored container needs none of it (a
	// lazy-pages daemon keeps the images it opened). After a lazy restore a
	// little later: the container's first page faults come first.
	defer func() {
		remove := func() {
			if err := s.incoming.Remove(r.TransferId); err != nil {
				s.log.Warn("remove incoming transfer", "transfer", r.TransferId, "err", err)
			}
		}
		if r.LazyPages {
			time.AfterFunc(lazyRestoreGrace, remove)
		} else {
			go remove()
		}
	}()
	var lazy *lazyStart
	if r.LazyPages {
		// First: its start then overlaps the checks and the shim's work.
		var err error
		if lazy, err = s.startLazyPages(ctx, r); err != nil {
			return nil, err
		}
		defer lazy.stopUnused()
		tm.mark("launch-lazy-pages")
	}
	if err := s.writeMovedIn(r.TransferId, movedIn{Container: r.ContainerId, From: r.From, State: movedInRestoring}); err != nil {
		return nil, fmt.Errorf("restore moved %s: %w", r.ContainerId, err)
	}
	tm.mark("record")
	c, err := s.restoreMoved(ctx, r, tm, lazy)
	if err != nil {
		s.removeMovedIn(r.TransferId)
		s.log.Warn("moved container not restored", "id", r.ContainerId, "from", r.From, "err", err)
		return nil, err
	}
	in.restored = r.ContainerId
	if err := s.writeMovedIn(r.TransferId, movedIn{Container: r.ContainerId, From: r.From, State: movedInRestored}); err != nil {
		// The "restoring" record stays: after a restart the container would be
		// removed, as if the reply had been lost.
		s.log.Error("record of a restored move not updated", "id", r.ContainerId, "transfer", r.TransferId, "err", err)
	}
	s.log.Info("moved container restored", "id", r.ContainerId, "from", r.From)
	return &migratev1.RestoreMovedResponse{Container: c}, nil
}

func (s *Service) restoreMoved(ctx context.Context, r *migratev1.RestoreMovedRequest, tm *steps, lazy *lazyStart) (*migratev1.Container, error) {
	done, err := s.incoming.Complete(r.TransferId)
	if err != nil {
		return nil, fmt.Errorf("restore moved %s: %w", r.ContainerId, err)
	}
	if !done {
		return nil, fmt.Errorf("restore moved %s: %w: transfer %s is not complete", r.ContainerId, ErrInvalidState, r.TransferId)
	}
	dir := s.incoming.Dir(r.TransferId)
	ckpt := filepath.Join(dir, moveCheckpointDir)
	// The receiver verified every file against the digest the source sent; the
	// manifest must name the same digests, and then nothing is hashed again.
	sums, err := s.incoming.Verified(r.TransferId)
	if err != nil {
		return nil, fmt.Errorf("restore moved %s: %w", r.ContainerId, err)
	}
	known := map[string]string{}
	for name, sum := range sums {
		if rel, ok := strings.CutPrefix(name, moveCheckpointDir+"/"); ok {
			known[rel] = sum
		}
	}
	m, err := checkpoint.VerifyKnown(ckpt, known)
	if err != nil {
		return nil, fmt.Errorf("restore moved %s: %w", r.ContainerId, err)
	}
	if m.Rootfs.BaseDigest != "" {
		if _, err := os.Stat(filepath.Join(dir, moveBaseFile)); err == nil {
			if err := s.importBase(filepath.Join(dir, moveBaseFile), m.Rootfs.BaseDigest); err != nil {
				return nil, fmt.Errorf("restore moved %s: %w", r.ContainerId, err)
			}
		}
	}
	if err := s.ownCgroup(ckpt, m, r.ContainerId); err != nil {
		return nil, fmt.Errorf("restore moved %s: %w", r.ContainerId, err)
	}
	tm.mark("verify")
	if lazy != nil {
		return s.restoreMovedLazy(ctx, r, ckpt, tm, lazy)
	}
	return s.restore(ctx, restoreSource{dir: ckpt, verified: true, consume: true}, r.ContainerId, func(p progress) {
		s.log.Debug("restore moved", "id", r.ContainerId, "phase", p.phase, "message", p.message)
	})
}

// ownCgroup makes sure the restored container gets a cgroup of its own. The
// checkpoint names the source's cgroup; if that cgroup exists on this host, it is
// not this container's to join (agents sharing a kernel, as in tests and on
// hosts running several agents, or a stale cgroup): the restore then uses
// <parent>/<node>/<id>. The manifest is not covered by its own checksums, so the
// incoming copy can be rewritten.
func (s *Service) ownCgroup(ckpt string, m *checkpoint.Manifest, id string) error {
	if !cgroupInUse(resolveCgroup(m.Spec.Linux.CgroupsPath, id)) {
		return nil
	}
	alt := s.cfg.Node + "/" + id
	if cgroupInUse(resolveCgroup(alt, id)) {
		return fmt.Errorf("cgroup of %s: %w on this host, as is %s", id, ErrExists, alt)
	}
	m.Spec.Linux.CgroupsPath = alt
	data, err := json.MarshalIndent(m, "", "  ")
	if err != nil {
		return err
	}
	// Atomic, not durable: the incoming copy is discarded after a crash.
	return atomicfile.WriteFileNoSync(filepath.Join(ckpt, checkpoint.ManifestName), data, 0o600)
}

// resolveCgroup is the cgroup path (relative to a hierarchy root) the runtime
// gives a spec's cgroupsPath, as runtime/cgroups resolves it.
func resolveCgroup(cgroupsPath, id string) string {
	switch {
	case cgroupsPath == "":
		return cgroups.DefaultParent + "/" + id
	case strings.HasPrefix(cgroupsPath, "/"):
		return path.Clean(cgroupsPath)
	}
	return path.Join(cgroups.DefaultParent, path.Clean("/"+cgroupsPath))
}

// cgroupInUse reports whether cgroup p exists in any hierarchy (v1 or v2).
func cgroupInUse(p string) bool {
	if _, err := os.Stat(filepath.Join("/sys/fs/cgroup", p)); err == nil {
		return true
	}
	m, _ := filepath.Glob(filepath.Join("/sys/fs/cgroup", "*", p))
	return len(m) > 0
}

// importBase makes the base tree serialised in tarPath the base digest: it is
// extracted into a temporary directory of the store, digested, and renamed into
// place only if the digest is the one claimed, so a base in the store is always
// what its name says.
func (s *Service) importBase(tarPath, digest string) error {
	dst, err := s.bases.BasePath(digest)
	if err != nil {
		return fmt.Errorf("%w: %w", checkpoint.ErrCorrupt, err)
	}
	if _, err := os.Stat(dst); err == nil {
		return nil
	}
	if err := os.MkdirAll(s.cfg.BasesDir(), 0o700); err != nil {
		return err
	}
	tmp, err := os.MkdirTemp(s.cfg.BasesDir(), ".import-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(tmp)
	root := filepath.Join(tmp, "rootfs")
	if err := os.Mkdir(root, 0o755); err != nil {
		return err
	}
	f, err := os.Open(tarPath)
	if err != nil {
		return err
	}
	defer f.Close()
	// Devices are allowed: a base is a whole root filesystem (as `cp -a` copies
	// it on import), and the digest check below refuses anything else.
	if _, err := layer.ApplyDiff(bufio.NewReaderSize(f, 256<<10), root, layer.ApplyOptions{AllowDevices: true}); err != nil {
		return fmt.Errorf("base %s: %w", digest, err)
	}
	got, err := layer.Digest(root)
	if err != nil {
		return fmt.Errorf("base %s: %w", digest, err)
	}
	if got != digest {
		return fmt.Errorf("%w: base sent as %s digests to %s", checkpoint.ErrCorrupt, digest, got)
	}
	// Durable before it is adopted: the transfer it came in is not, and a
	// base is used by every later container on it.
	if err := syncFS(root); err != nil {
		return fmt.Errorf("base %s: %w", digest, err)
	}
	if err := os.Rename(root, dst); err != nil {
		if _, serr := os.Stat(dst); serr == nil {
			return nil // another move brought the same base meanwhile
		}
		return fmt.Errorf("base %s: %w", digest, err)
	}
	return nil
}

// AbortMove undoes what this node holds of a move, waiting for a RestoreMoved of
// the same transfer to finish first.
func (s *Service) AbortMove(ctx context.Context, r *migratev1.AbortMoveRequest) (*migratev1.AbortMoveResponse, error) {
	if err := transfer.ValidateID(r.TransferId); err != nil {
		return nil, fmt.Errorf("abort move: %w: %w", ErrInvalid, err)
	}
	in := s.moves.in(r.TransferId)
	in.mu.Lock()
	defer in.mu.Unlock()
	in.aborted = true
	out := &migratev1.AbortMoveResponse{}
	if in.restored != "" {
		if _, err := s.Delete(ctx, &migratev1.DeleteRequest{Id: in.restored, Force: true}); err != nil && !errors.Is(err, ErrNotFound) {
			return nil, fmt.Errorf("abort move of %s: %w", in.restored, err)
		}
		s.events.publish(&migratev1.Event{Time: timestamppb.Now(), Type: "move-aborted", ContainerId: in.restored})
		in.restored, out.RemovedContainer = "", true
	}
	s.removeMovedIn(r.TransferId)
	// The source may have cancelled its send a moment ago: the receiver is still
	// flushing and the transfer is busy. Retry briefly.
	deadline := time.Now().Add(10 * time.Second)
	for {
		err := s.incoming.Remove(r.TransferId)
		if err == nil {
			break
		}
		if !errors.Is(err, transfer.ErrBusy) || time.Now().After(deadline) {
			return nil, fmt.Errorf("abort move %s: %w", r.TransferId, err)
		}
		select {
		case <-ctx.Done():
			return nil, fmt.Errorf("abort move %s: %w", r.TransferId, ctx.Err())
		case <-time.After(200 * time.Millisecond):
		}
	}
	return out, nil
}

// removeStaleMoves deletes what an earlier agent left of outgoing moves and of
// post-copy work: a move does not survive its source's restart (docs/move.md).
// Incoming transfers stay: the source resumes a broken transfer after this
// agent's restart, or drops it with AbortMove; stale ones expire
// (expireIncoming).
func (s *Service) removeStaleMoves() {
	for _, root := range []string{movesDir(s.cfg.DataDir), lazyDir(s.cfg.DataDir)} {
		des, _ := os.ReadDir(root)
		for _, de := range des {
			s.log.Warn("removing an interrupted move", "dir", filepath.Join(root, de.Name()))
			os.RemoveAll(filepath.Join(root, de.Name()))
		}
	}
	// A base import interrupted by the restart (importBase renames only a
	// complete, verified tree into place).
	imports, _ := filepath.Glob(filepath.Join(s.cfg.BasesDir(), ".import-*"))
	for _, d := range imports {
		s.log.Warn("removing an interrupted base import", "dir", d)
		os.RemoveAll(d)
	}
}

// incomingExpiry is how long an incoming transfer may sit without a write before
// it is removed: its source gave up on it (a move fails within minutes) and could
// not reach this node to say so.
const incomingExpiry = 15 * time.Minute

// expireIncoming removes stale incoming transfers every minute until ctx ends.
func (s *Service) expireIncoming(ctx context.Context) {
	t := time.NewTicker(time.Minute)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
			s.expireIncomingOnce(time.Now().Add(-incomingExpiry))
			s.expireMovedIn()
		}
	}
}

// expireIncomingOnce removes the incoming transfers not written since before and
// not being restored.
func (s *Service) expireIncomingOnce(before time.Time) {
	des, _ := os.ReadDir(incomingDir(s.cfg.DataDir))
	for _, de := range des {
		id := de.Name()
		if newestMtime(filepath.Join(incomingDir(s.cfg.DataDir), id)).After(before) {
			continue
		}
		in := s.moves.in(id)
		if !in.mu.TryLock() {
			continue // RestoreMoved or AbortMove works on it
		}
		if in.restored == "" {
			if err := s.incoming.Remove(id); err == nil {
				in.aborted = true
				s.log.Warn("removed a stale incoming transfer", "transfer", id)
			}
		}
		in.mu.Unlock()
	}
}

// newestMtime is the latest modification time of dir and its direct entries.
func newestMtime(dir string) time.Time {
	var t time.Time
	if fi, err := os.Stat(dir); err == nil {
		t = fi.ModTime()
	}
	des, _ := os.ReadDir(dir)
	for _, de := range des {
		if fi, err := de.Info(); err == nil && fi.ModTime().After(t) {
			t = fi.ModTime()
		}
	}
	return t
}

// syncFS flushes the file system holding dir to disk.
func syncFS(dir string) error {
	fd, err := unix.Open(dir, unix.O_RDONLY|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
	if err != nil {
		return err
	}
	defer unix.Close(fd)
	return unix.Syncfs(fd)
}

// logsTransfer is the transfer a move's log files come in, after the restore.
func logsTransfer(moveID string) string { return moveID + ".logs" }

// AdoptLogs gives the container a move restored here its log of before the
// move (docs/move.md), then removes the transfer that brought it.
func (s *Service) AdoptLogs(ctx context.Context, r *migratev1.AdoptLogsRequest) (*migratev1.AdoptLogsResponse, error) {
	id := logsTransfer(r.TransferId)
	if err := transfer.ValidateID(id); err != nil {
		return nil, fmt.Errorf("adopt logs: %w: %w", ErrInvalid, err)
	}
	defer func() {
		if err := s.incoming.Remove(id); err != nil {
			s.log.Warn("remove incoming transfer", "transfer", id, "err", err)
		}
	}()
	in := s.moves.in(r.TransferId)
	in.mu.Lock()
	restored := in.restored
	in.mu.Unlock()
	if restored == "" || restored != r.ContainerId {
		return nil, fmt.Errorf("adopt logs of %s: %w: move %s restored no such container here", r.ContainerId, ErrInvalidState, r.TransferId)
	}
	if done, err := s.incoming.Complete(id); err != nil || !done {
		return nil, fmt.Errorf("adopt logs of %s: %w: transfer %s is not complete (%v)", r.ContainerId, ErrInvalidState, id, err)
	}
	e, err := s.lookup(r.ContainerId)
	if err != nil {
		return nil, fmt.Errorf("adopt logs: %w", err)
	}
	client, err := e.shimClient(ctx)
	if err != nil {
		return nil, fmt.Errorf("adopt logs of %s: %w: %w", r.ContainerId, ErrUnavailable, err)
	}
	_, err = client.AdoptLogs(ctx, &shimv1.AdoptLogsRequest{Dir: s.incoming.Dir(id)})
	e.dropClient(client, err)
	if err != nil {
		return nil, shimErr("adopt logs of", r.ContainerId, err)
	}
	return &migratev1.AdoptLogsResponse{}, nil
}
