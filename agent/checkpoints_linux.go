package agent

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"time"

	"golang.org/x/sys/unix"
	"google.golang.org/protobuf/types/known/durationpb"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/migratehq/migrate/agent/checkpoint"
	"github.com/migratehq/migrate/agent/layers"
	"github.com/migratehq/migrate/agent/ops"
	"github.com/migratehq/migrate/agent/shim"
	migratev1 "github.com/migratehq/migrate/api/migrate/v1"
	shimv1 "github.com/migratehq/migrate/api/shim/v1"
	"github.com/migratehq/migrate/metrics"
	"github.com/migratehq/migrate/runtime/container"
)

// importPrefix names the temporary directories archives are extracted into, under
// the checkpoints directory; they never outlive the restore (or the agent start).
const importPrefix = ".import-"

// validCheckpointName applies the container id rules (a safe directory name) and
// keeps clear of the names of the checkpoint package's own directories beside a
// checkpoint (<name>.partial, <name>.restore-<id>).
func validCheckpointName(name string) error {
	if container.ValidateID(name) != nil || strings.HasSuffix(name, ".partial") || strings.Contains(name, ".restore-") {
		return fmt.Errorf("%w: invalid checkpoint name %q: use 1-128 characters of [A-Za-z0-9_.+-], starting with a letter or digit (not ending in .partial, no .restore-)", ErrInvalid, name)
	}
	return nil
}

func (s *Service) checkpointDir(name string) string {
	return filepath.Join(s.cfg.CheckpointsDir(), name)
}

// reserveCheckpoint marks name as being written (exclusive) or read by a restore;
// DeleteCheckpoint refuses busy names and Checkpoint refuses any existing one.
func (s *Service) reserveCheckpoint(name string, write bool) error {
	s.ckptMu.Lock()
	defer s.ckptMu.Unlock()
	if write {
		if s.ckptBusy[name] > 0 {
			return fmt.Errorf("checkpoint %q %w", name, ErrExists)
		}
		if _, err := os.Lstat(s.checkpointDir(name)); err == nil {
			return fmt.Errorf("checkpoint %q %w", name, ErrExists)
		}
	}
	s.ckptBusy[name]++
	return nil
}

func (s *Service) releaseCheckpoint(name string) {
	s.ckptMu.Lock()
	defer s.ckptMu.Unlock()
	if s.ckptBusy[name]--; s.ckptBusy[name] <= 0 {
		delete(s.ckptBusy, name)
	}
}

// defaultCheckpointName is "<container>-<UTC time>", with a counter if that is taken
// (two checkpoints within a second).
func (s *Service) defaultCheckpointName(id string) string {
	base := id + "-" + time.Now().UTC().Format("20060102T150405Z")
	name := base
	for i := 2; i < 100; i++ {
		if _, err := os.Lstat(s.checkpointDir(name)); err != nil {
			break
		}
		name = fmt.Sprintf("%s-%d", base, i)
	}
	return name
}

// Checkpoint starts the checkpoint operation and streams its events.
func (s *Service) Checkpoint(ctx context.Context, r *migratev1.CheckpointRequest, send func(*migratev1.OperationEvent) error) error {
	e, err := s.lookup(r.Id)
	if err != nil {
		return fmt.Errorf("checkpoint: %w", err)
	}
	name := r.Name
	if name == "" {
		name = s.defaultCheckpointName(r.Id)
	}
	if err := validCheckpointName(name); err != nil {
		return fmt.Errorf("checkpoint %s: %w", r.Id, err)
	}
	if r.ExportPath != "" {
		if err := checkExportPath(r.ExportPath); err != nil {
			return fmt.Errorf("checkpoint %s: %w", r.Id, err)
		}
	}
	// A container that is not running gets its answer at once, not as a failed
	// operation.
	c, st, err := e.quickState(ctx, "checkpoint")
	if err != nil {
		return err
	}
	if st.Exited || st.Status == "created" {
		return fmt.Errorf("checkpoint %s: %w (it is %s)", r.Id, container.ErrNotRunning, st.Status)
	}
	if err := s.reserveCheckpoint(name, true); err != nil {
		return fmt.Errorf("checkpoint %s: %w", r.Id, err)
	}
	op := s.ops.Start(s.bg, "checkpoint", r.Id, func(ctx context.Context, report func(ops.Progress)) (any, error) {
		defer s.releaseCheckpoint(name)
		defer s.rec.Begin(metrics.OpCheckpoint)()
		start := time.Now()
		ck, err := s.checkpoint(ctx, c, r, name, func(p progress) {
			report(ops.Progress{Phase: p.phase, Message: p.message, Done: p.done, Total: p.total, Unit: p.unit})
		})
		m := metrics.Checkpoint{Duration: time.Since(start)}
		m.Result, m.Reason = resultOf(err, metrics.ReasonDump)
		if ck != nil {
			m.Downtime, m.Size = ck.GetDowntime().AsDuration(), int64(ck.GetSizeBytes())
		}
		s.rec.ObserveCheckpoint(m)
		return ck, err
	})
	return s.watch(ctx, op, send)
}

// checkpoint is the body of the checkpoint operation. The shim does the dump: it is
// the init's parent and must reap it when CRIU kills it.
func (s *Service) checkpoint(ctx context.Context, c *shim.Client, r *migratev1.CheckpointRequest, name string, report func(progress)) (*migratev1.Checkpoint, error) {
	dir := s.checkpointDir(name)
	mode := "the container stops after the dump"
	if r.LeaveRunning {
		mode = "the container keeps running"
	}
	report(progress{phase: "dump", message: fmt.Sprintf("checkpointing as %s with CRIU (%s)", name, mode)})
	res, err := c.Checkpoint(ctx, &shimv1.CheckpointRequest{Dir: dir, Id: name, LeaveRunning: r.LeaveRunning})
	s.net.clearLocks(r.Id, filepath.Join(s.cfg.ContainersDir(), r.Id))
	if err != nil {
		return nil, shimErr("checkpoint", r.Id, err)
	}
	report(progress{phase: "dumped", message: fmt.Sprintf("downtime %s, %s", time.Duration(res.DowntimeNs).Round(time.Millisecond), humanBytes(res.Bytes))})
	s.events.publish(&migratev1.Event{Time: timestamppb.Now(), Type: "checkpointed", ContainerId: r.Id})
	if r.ExportPath != "" {
		report(progress{phase: "export", message: "writing " + r.ExportPath})
		if err := exportCheckpoint(dir, r.ExportPath); err != nil {
			return nil, fmt.Errorf("checkpoint %s: saved as %s, but the export failed: %w", r.Id, name, err)
		}
	}
	m, err := checkpoint.Read(dir)
	if err != nil {
		return nil, fmt.Errorf("checkpoint %s: %w", r.Id, err)
	}
	out := s.checkpointProto(name, dir, m)
	out.ExportPath = r.ExportPath
	return out, nil
}

// checkExportPath refuses what would fail only after the dump.
func checkExportPath(p string) error {
	if !filepath.IsAbs(p) {
		return fmt.Errorf("%w: export path %q must be absolute", ErrInvalid, p)
	}
	if _, err := os.Lstat(p); err == nil {
		return fmt.Errorf("export file %s %w", p, ErrExists)
	}
	if st, err := os.Stat(filepath.Dir(p)); err != nil || !st.IsDir() {
		return fmt.Errorf("%w: export path %s: %s is not a directory", ErrInvalid, p, filepath.Dir(p))
	}
	return nil
}

// exportCheckpoint writes dir's archive to path: a temporary file beside it, synced,
// then renamed into place without replacing anything, so path is complete or absent.
func exportCheckpoint(dir, path string) (retErr error) {
	f, err := os.CreateTemp(filepath.Dir(path), "."+filepath.Base(path)+".tmp*")
	if err != nil {
		return err
	}
	defer func() {
		if retErr != nil {
			os.Remove(f.Name())
		}
	}()
	if err := checkpoint.Export(dir, f); err != nil {
		f.Close()
		return err
	}
	if err := f.Sync(); err != nil {
		f.Close()
		return err
	}
	if err := f.Close(); err != nil {
		return err
	}
	if err := unix.Renameat2(unix.AT_FDCWD, f.Name(), unix.AT_FDCWD, path, unix.RENAME_NOREPLACE); err != nil {
		if errors.Is(err, unix.EEXIST) {
			return fmt.Errorf("export file %s %w", path, ErrExists)
		}
		return fmt.Errorf("export %s: %w", path, err)
	}
	return nil
}

// restoreSource is where a restore reads its checkpoint from.
type restoreSource struct {
	name    string // a checkpoint of this node, reserved while the restore reads it
	dir     string // checkpoint directory (a name's, or a path given)
	archive string // an exported archive to import first
	lazyDir string // postcopy: the lazy-pages daemon's directory (restoreMovedLazy)
	// verified: the caller checked every file of dir against the manifest, so
	// neither the diff nor the shim hashes them again.
	verified bool
	// consume: dir is removed after the restore (a move's incoming copy).
	consume bool
}

func (s *Service) resolveCheckpoint(ref string) (restoreSource, error) {
	if ref == "" {
		return restoreSource{}, fmt.Errorf("%w: no checkpoint given", ErrInvalid)
	}
	if strings.Contains(ref, "/") {
		if !filepath.IsAbs(ref) {
			return restoreSource{}, fmt.Errorf("%w: checkpoint path %q must be absolute", ErrInvalid, ref)
		}
		st, err := os.Stat(ref)
		switch {
		case errors.Is(err, os.ErrNotExist):
			return restoreSource{}, fmt.Errorf("checkpoint %s: %w", ref, ErrNotFound)
		case err != nil:
			return restoreSource{}, fmt.Errorf("checkpoint %s: %w", ref, err)
		case st.IsDir():
			return restoreSource{dir: filepath.Clean(ref)}, nil
		case st.Mode().IsRegular():
			return restoreSource{archive: ref}, nil
		}
		return restoreSource{}, fmt.Errorf("%w: checkpoint %s is neither a directory nor an archive file", ErrInvalid, ref)
	}
	if err := validCheckpointName(ref); err != nil {
		return restoreSource{}, err
	}
	dir := s.checkpointDir(ref)
	if _, err := os.Stat(dir); err != nil {
		return restoreSource{}, fmt.Errorf("checkpoint %q: %w", ref, ErrNotFound)
	}
	return restoreSource{name: ref, dir: dir}, nil
}

// Restore starts the restore operation and streams its events.
func (s *Service) Restore(ctx context.Context, r *migratev1.RestoreRequest, send func(*migratev1.OperationEvent) error) error {
	src, err := s.resolveCheckpoint(r.Checkpoint)
	if err != nil {
		return fmt.Errorf("restore: %w", err)
	}
	id := r.Name
	if id == "" && src.dir != "" {
		m, err := checkpoint.Read(src.dir)
		if err != nil {
			return fmt.Errorf("restore %s: %w", r.Checkpoint, err)
		}
		id = m.ContainerID
	}
	if id != "" {
		if err := container.ValidateID(id); err != nil {
			return fmt.Errorf("restore: %w: %w", ErrInvalid, err)
		}
		if _, err := s.lookup(id); err == nil {
			return fmt.Errorf("restore %s: container %w", id, ErrExists)
		}
	}
	if src.name != "" {
		if err := s.reserveCheckpoint(src.name, false); err != nil {
			return fmt.Errorf("restore: %w", err)
		}
	}
	target := id
	if target == "" {
		target = r.Checkpoint
	}
	op := s.ops.Start(s.bg, "restore", target, func(ctx context.Context, report func(ops.Progress)) (any, error) {
		if src.name != "" {
			defer s.releaseCheckpoint(src.name)
		}
		defer s.rec.Begin(metrics.OpRestore)()
		start := time.Now()
		ctr, err := s.restore(ctx, src, id, func(p progress) {
			report(ops.Progress{Phase: p.phase, Message: p.message, Done: p.done, Total: p.total, Unit: p.unit})
		})
		m := metrics.Restore{Duration: time.Since(start)}
		m.Result, m.Reason = resultOf(err, metrics.ReasonRestore)
		s.rec.ObserveRestore(m)
		return ctr, err
	})
	return s.watch(ctx, op, send)
}

// restore is the body of the restore operation. A new shim restores the container,
// so the restored init is the shim's child. On failure nothing is left: no entry,
// container directory, shim, cgroup or imported files.
func (s *Service) restore(ctx context.Context, src restoreSource, id string, report func(progress)) (*migratev1.Container, error) {
	dir := src.dir
	if src.archive != "" {
		tmp, err := os.MkdirTemp(s.cfg.CheckpointsDir(), importPrefix)
		if err != nil {
			return nil, fmt.Errorf("restore: %w", err)
		}
		// The extracted copy serves this restore only; CRIU's restore log goes beside
		// it, inside tmp, and goes with it.
		defer os.RemoveAll(tmp)
		dir = filepath.Join(tmp, "checkpoint")
		report(progress{phase: "import", message: "extracting " + src.archive})
		f, err := os.Open(src.archive)
		if err != nil {
			return nil, fmt.Errorf("restore: %w", err)
		}
		err = checkpoint.Import(f, dir)
		f.Close()
		if err != nil {
			return nil, fmt.Errorf("restore from %s: %w", src.archive, err)
		}
		report(progress{phase: "verify", message: "checking the manifest and checksums"})
		m, err := checkpoint.Verify(dir)
		if err != nil {
			return nil, fmt.Errorf("restore from %s: %w", src.archive, err)
		}
		src.verified = true
		if id == "" {
			id = m.ContainerID
			if err := container.ValidateID(id); err != nil {
				return nil, fmt.Errorf("restore from %s: %w: %w", src.archive, checkpoint.ErrCorrupt, err)
			}
		}
	}
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	m, err := checkpoint.Read(dir)
	if err != nil {
		return nil, fmt.Errorf("restore %s: %w", id, err)
	}
	e := &entry{id: id, dir: filepath.Join(s.cfg.ContainersDir(), id), creating: true,
		meta: shim.Meta{ID: id, Bundle: m.Runtime.Bundle, Created: time.Now().UTC()}}
	s.mu.Lock()
	if _, ok := s.containers[id]; ok {
		s.mu.Unlock()
		return nil, fmt.Errorf("restore %s: container %w", id, ErrExists)
	}
	s.containers[id] = e
	s.mu.Unlock()
	fail := func(err error) (*migratev1.Container, error) {
		s.cleanupRuntime(id)
		_ = s.net.detach(id, e.dir)
		_ = layers.Remove(e.dir)
		os.RemoveAll(e.dir)
		s.mu.Lock()
		delete(s.containers, id)
		s.mu.Unlock()
		return nil, err
	}
	if err := os.Mkdir(e.dir, 0o700); err != nil {
		s.mu.Lock()
		delete(s.containers, id)
		s.mu.Unlock()
		if errors.Is(err, os.ErrExist) {
			return nil, fmt.Errorf("restore %s: container directory %w", id, ErrExists)
		}
		return nil, fmt.Errorf("restore %s: %w", id, err)
	}
	if err := shim.WriteJSON(e.dir, shim.MetaFile, e.meta); err != nil {
		return fail(fmt.Errorf("restore %s: %w", id, err))
	}
	// The network first: a node that cannot give the address refuses before
	// mounting anything.
	ep, err := s.net.restoreNetwork(id, e.dir, m)
	if err != nil {
		return fail(fmt.Errorf("restore %s: %w", id, err))
	}
	if ep != nil {
		report(progress{phase: "network", message: fmt.Sprintf("address %s on bridge %s", ep.Address, s.cfg.Network.Bridge)})
	}
	rootfs := ""
	if m.Rootfs.BaseDigest != "" {
		report(progress{phase: "rootfs", message: "mounting the base " + m.Rootfs.BaseDigest + " under the checkpoint's changes"})
		if rootfs, err = s.restoreRootfs(e.dir, dir, m, src.verified); err != nil {
			return fail(fmt.Errorf("restore %s: %w", id, err))
		}
	}
	report(progress{phase: "restore", message: fmt.Sprintf("restoring %s with CRIU (checkpoint of %s taken %s)", id, m.ContainerID, m.Created.Format(time.RFC3339))})
	cmd, err := s.shims.spawn(shim.SpawnOptions{Exe: s.exe, Timeout: 5 * time.Minute, Options: shim.Options{
		ID: id, Bundle: m.Runtime.Bundle, Dir: e.dir, RuntimeRoot: s.cfg.RuntimeDir(), Rootfs: rootfs,
		LogMaxBytes: s.cfg.Logs.MaxFileBytes, LogMaxFiles: s.cfg.Logs.MaxFiles,
		Restore: dir, Verified: src.verified, Consume: src.consume, NetworkLock: s.node.networkLock(ctx), CRIUVersion: s.node.criuVersion(ctx), CRIUPath: s.cfg.CRIU,
		NetNS: ep.Path(), LazyPagesDir: src.lazyDir,
	}})
	if err != nil {
		return fail(shimErr("restore", id, err))
	}
	go func() { _ = cmd.Wait() }()
	// The shim listens before it says ready, and says ready once CRIU resumed
	// the container: the reply needs no round trip to it (a new connection's
	// first call is ~10 ms of a move's downtime). The client connects on first
	// use.
	e.mu.Lock()
	e.creating = false
	_ = shim.ReadJSON(e.dir, shim.StateFile, &e.state)
	e.mu.Unlock()
	s.net.clearLocks(id, e.dir)
	s.net.announce(id, ep)
	s.events.publish(&migratev1.Event{Time: timestamppb.Now(), Type: "restored", ContainerId: id})
	report(progress{phase: "restored", message: "container running"})
	c := s.describeRecorded(e)
	c.Status = migratev1.ContainerStatus_CONTAINER_STATUS_RUNNING
	e.mu.Lock()
	c.Pid = int32(e.state.InitPid)
	e.mu.Unlock()
	return c, nil
}

// checkpointProto summarises a checkpoint's manifest.
func (s *Service) checkpointProto(name, dir string, m *checkpoint.Manifest) *migratev1.Checkpoint {
	out := &migratev1.Checkpoint{
		Name: name, Id: m.ID, ContainerId: m.ContainerID, CreatedAt: timestamppb.New(m.Created),
		CriuVersion: m.CRIUVersion, Kernel: m.Kernel, Downtime: durationpb.New(m.Downtime),
		LeaveRunning: m.LeaveRunning, Files: int32(len(m.Files)), Path: dir, Node: s.cfg.Node,
	}
	for _, f := range m.Files {
		out.SizeBytes += uint64(f.Size)
	}
	if st, err := os.Stat(filepath.Join(dir, checkpoint.ManifestName)); err == nil {
		out.SizeBytes += uint64(st.Size())
	}
	return out
}

// ListCheckpoints lists the checkpoints of this node, oldest first. An unreadable one
// is listed with its error rather than hidden.
func (s *Service) ListCheckpoints(context.Context, *migratev1.ListCheckpointsRequest) (*migratev1.ListCheckpointsResponse, error) {
	des, err := os.ReadDir(s.cfg.CheckpointsDir())
	if err != nil {
		return nil, fmt.Errorf("list checkpoints: %w", err)
	}
	out := &migratev1.ListCheckpointsResponse{}
	for _, de := range des {
		name := de.Name()
		if !de.IsDir() || validCheckpointName(name) != nil {
			continue // partial dumps, restore logs, imports in progress
		}
		dir := s.checkpointDir(name)
		m, err := checkpoint.Read(dir)
		if err != nil {
			out.Checkpoints = append(out.Checkpoints, &migratev1.Checkpoint{Name: name, Path: dir, Node: s.cfg.Node, Error: err.Error()})
			continue
		}
		out.Checkpoints = append(out.Checkpoints, s.checkpointProto(name, dir, m))
	}
	sort.SliceStable(out.Checkpoints, func(i, j int) bool {
		a, b := out.Checkpoints[i].CreatedAt.AsTime(), out.Checkpoints[j].CreatedAt.AsTime()
		if a.Equal(b) {
			return out.Checkpoints[i].Name < out.Checkpoints[j].Name
		}
		return a.Before(b)
	})
	return out, nil
}

// InspectCheckpoint describes one checkpoint with its files and spec.
func (s *Service) InspectCheckpoint(_ context.Context, r *migratev1.InspectCheckpointRequest) (*migratev1.InspectCheckpointResponse, error) {
	if err := validCheckpointName(r.Name); err != nil {
		return nil, fmt.Errorf("inspect checkpoint: %w", err)
	}
	dir := s.checkpointDir(r.Name)
	if _, err := os.Stat(dir); err != nil {
		return nil, fmt.Errorf("checkpoint %q: %w", r.Name, ErrNotFound)
	}
	m, err := checkpoint.Read(dir)
	if err != nil {
		return nil, fmt.Errorf("inspect checkpoint %s: %w", r.Name, err)
	}
	out := &migratev1.InspectCheckpointResponse{Checkpoint: s.checkpointProto(r.Name, dir, m)}
	for _, f := range m.Files {
		out.Files = append(out.Files, &migratev1.CheckpointFile{Path: f.Path, Size: f.Size, Sha256: f.SHA256})
	}
	out.SpecJson, _ = json.Marshal(m.Spec)
	return out, nil
}

// DeleteCheckpoint removes a checkpoint and the restore logs beside it. Corrupt
// checkpoints can be deleted too; one being written or restored from cannot.
func (s *Service) DeleteCheckpoint(_ context.Context, r *migratev1.DeleteCheckpointRequest) (*migratev1.DeleteCheckpointResponse, error) {
	if err := validCheckpointName(r.Name); err != nil {
		return nil, fmt.Errorf("delete checkpoint: %w", err)
	}
	dir := s.checkpointDir(r.Name)
	s.ckptMu.Lock()
	defer s.ckptMu.Unlock()
	if s.ckptBusy[r.Name] > 0 {
		return nil, fmt.Errorf("delete checkpoint %s: %w: a checkpoint or restore is using it", r.Name, ErrInvalidState)
	}
	if _, err := os.Lstat(dir); err != nil {
		return nil, fmt.Errorf("checkpoint %q: %w", r.Name, ErrNotFound)
	}
	logs, _ := filepath.Glob(dir + ".restore-*")
	for _, l := range logs {
		if err := os.RemoveAll(l); err != nil {
			return nil, fmt.Errorf("delete checkpoint %s: %w", r.Name, err)
		}
	}
	if err := os.RemoveAll(dir); err != nil {
		return nil, fmt.Errorf("delete checkpoint %s: %w", r.Name, err)
	}
	return &migratev1.DeleteCheckpointResponse{}, nil
}

// removeStaleImports deletes archive extractions a previous agent left behind.
func (s *Service) removeStaleImports() {
	stale, _ := filepath.Glob(filepath.Join(s.cfg.CheckpointsDir(), importPrefix+"*"))
	for _, d := range stale {
		s.log.Warn("removing an interrupted checkpoint import", "dir", d)
		os.RemoveAll(d)
	}
}

func humanBytes(n int64) string {
	const unit = 1024
	if n < unit {
		return fmt.Sprintf("%d B", n)
	}
	div, exp := int64(unit), 0
	for m := n / unit; m >= unit; m /= unit {
		div *= unit
		exp++
	}
	return fmt.Sprintf("%.1f %ciB", float64(n)/float64(div), "KMGTPE"[exp])
}

// restoreRootfs rebuilds a layered root for a restore: the diff is checked
// against the manifest first unless the whole checkpoint was (it is untrusted
// input until then; the shim verifies the whole checkpoint before CRIU reads
// it), then applied to a fresh upper layer over the base with the recorded
// digest.
func (s *Service) restoreRootfs(dir, ckpt string, m *checkpoint.Manifest, verified bool) (string, error) {
	if !verified {
		if err := checkpoint.VerifyFile(ckpt, m, m.Rootfs.Diff); err != nil {
			return "", err
		}
	}
	f, err := os.Open(filepath.Join(ckpt, m.Rootfs.Diff))
	if err != nil {
		return "", fmt.Errorf("%w: rootfs diff: %w", checkpoint.ErrCorrupt, err)
	}
	defer f.Close()
	l, err := s.bases.Mount(dir, m.Rootfs.BaseDigest, f)
	if err != nil {
		return "", err
	}
	return l.Merged, nil
}
