package agent

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"sync"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/protobuf/types/known/durationpb"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/migratehq/migrate/agent/checkpoint"
	"github.com/migratehq/migrate/agent/snapshot"
	migratev1 "github.com/migratehq/migrate/api/migrate/v1"
	shimv1 "github.com/migratehq/migrate/api/shim/v1"
	"github.com/migratehq/migrate/metrics"
	"github.com/migratehq/migrate/pagestore"
	"github.com/migratehq/migrate/runtime/container"
)

// snapshots is the agent's snapshot state: the page store under
// <data>/pagestore, the schedules in <data>/snapshots/schedules.json and
// scratch checkpoints under <data>/snapshots/scratch (removed at start: what
// is there was left by a crash).
type snapshots struct {
	store   *pagestore.Store
	table   *snapshot.Table
	scratch string

	mu   sync.Mutex
	busy map[string]bool      // guarded by mu: containers with a snapshot in progress
	next map[string]time.Time // guarded by mu: next run of each schedule
	// scheduled: containers with a scheduled run in progress, guarded by mu;
	// RemoveSchedule waits for it.
	scheduled map[string]bool
}

func snapshotsDir(data string) string { return filepath.Join(data, "snapshots") }

// openSnapshots opens the store and the schedules.
func (s *Service) openSnapshots() error {
	dir := snapshotsDir(s.cfg.DataDir)
	scratch := filepath.Join(dir, "scratch")
	if err := os.RemoveAll(scratch); err != nil {
		return fmt.Errorf("snapshots: %w", err)
	}
	if err := os.MkdirAll(scratch, 0o700); err != nil {
		return fmt.Errorf("snapshots: %w", err)
	}
	st, err := pagestore.Open(filepath.Join(s.cfg.DataDir, "pagestore"), pagestore.Options{})
	if err != nil {
		return fmt.Errorf("snapshots: %w", err)
	}
	tb, err := snapshot.LoadTable(filepath.Join(dir, "schedules.json"))
	if err != nil {
		st.Close()
		return fmt.Errorf("snapshots: %w", err)
	}
	s.snaps = &snapshots{store: st, table: tb, scratch: scratch, busy: map[string]bool{}, next: map[string]time.Time{}, scheduled: map[string]bool{}}
	return nil
}

func (s *Service) closeSnapshots() {
	if s.snaps != nil {
		s.snaps.store.Close()
	}
}

// storeErr gives pagestore errors the agent's sentinels, for toStatus.
func storeErr(err error) error {
	switch {
	case err == nil:
		return nil
	case errors.Is(err, pagestore.ErrNotFound):
		return fmt.Errorf("%w: %w", ErrNotFound, err)
	case errors.Is(err, pagestore.ErrExists):
		return fmt.Errorf("%w: %w", ErrExists, err)
	case errors.Is(err, pagestore.ErrInvalidName), errors.Is(err, pagestore.ErrCorrupt), errors.Is(err, pagestore.ErrBadManifest):
		return fmt.Errorf("%w: %w", ErrInvalid, err)
	}
	return err
}

// TakeSnapshot snapshots a container now.
func (s *Service) TakeSnapshot(ctx context.Context, r *migratev1.TakeSnapshotRequest) (*migratev1.TakeSnapshotResponse, error) {
	snap, err := s.takeSnapshot(ctx, r.Id, snapshot.TriggerManual)
	if err != nil {
		return nil, err
	}
	return &migratev1.TakeSnapshotResponse{Snapshot: snap}, nil
}

// takeSnapshot dumps the container with leave-running into a scratch
// directory, stores that in the page store and removes it. At most one
// snapshot of a container runs at a time.
func (s *Service) takeSnapshot(ctx context.Context, id, trigger string) (_ *migratev1.Snapshot, retErr error) {
	e, err := s.lookup(id)
	if err != nil {
		return nil, fmt.Errorf("snapshot: %w", err)
	}
	sn := s.snaps
	sn.mu.Lock()
	if sn.busy[id] {
		sn.mu.Unlock()
		return nil, fmt.Errorf("snapshot %s: %w: a snapshot of it is in progress", id, ErrInvalidState)
	}
	sn.busy[id] = true
	sn.mu.Unlock()
	defer func() {
		sn.mu.Lock()
		delete(sn.busy, id)
		sn.mu.Unlock()
	}()

	c, st, err := e.quickState(ctx, "snapshot")
	if err != nil {
		return nil, err
	}
	if st.Exited || st.Status == "created" {
		return nil, fmt.Errorf("snapshot %s: %w (it is %s)", id, container.ErrNotRunning, st.Status)
	}
	name, err := snapshot.Name(id, time.Now())
	if err != nil {
		return nil, fmt.Errorf("%w: %w", ErrInvalid, err)
	}
	defer s.rec.Begin(metrics.OpSnapshot)()
	start := time.Now()
	var rm metrics.Snapshot
	failed := metrics.ReasonOther // a failure outside the dump: scratch space, the store
	defer func() {
		rm.Duration = time.Since(start)
		rm.Result, rm.Reason = resultOf(retErr, failed)
		s.rec.ObserveSnapshot(rm)
		s.updateStoreMetrics()
	}()

	work := filepath.Join(sn.scratch, name)
	if err := os.Mkdir(work, 0o700); err != nil {
		return nil, fmt.Errorf("snapshot %s: %w", id, err)
	}
	defer os.RemoveAll(work)
	dir := filepath.Join(work, "checkpoint")
	res, err := c.Checkpoint(ctx, &shimv1.CheckpointRequest{Dir: dir, Id: name, LeaveRunning: true})
	if err != nil {
		failed = metrics.ReasonDump
		return nil, shimErr("snapshot", id, err)
	}
	dump := time.Since(start)
	m, err := checkpoint.Read(dir)
	if err != nil {
		return nil, fmt.Errorf("snapshot %s: %w", id, err)
	}
	meta := map[string]string{
		snapshot.MetaContainer: id,
		snapshot.MetaTrigger:   trigger,
		snapshot.MetaDowntime:  strconv.FormatInt(res.DowntimeNs, 10),
		snapshot.MetaDump:      strconv.FormatInt(int64(dump), 10),
		snapshot.MetaNode:      s.cfg.Node,
		snapshot.MetaCRIU:      m.CRIUVersion,
	}
	if m.Rootfs.BaseDigest != "" {
		meta[snapshot.MetaBase] = m.Rootfs.BaseDigest
	}
	info, err := sn.store.Put(ctx, name, dir, meta)
	if err != nil {
		return nil, fmt.Errorf("snapshot %s: store: %w", id, storeErr(err))
	}
	rm.Downtime = time.Duration(res.DowntimeNs)
	rm.LogicalBytes, rm.StoredBytes, rm.DedupRatio = info.LogicalBytes, info.NewStoredBytes, info.DedupRatio
	out := s.snapshotProto(info)
	out.Duration = durationpb.New(time.Since(start))
	s.events.publish(&migratev1.Event{Time: timestamppb.Now(), Type: "snapshotted", ContainerId: id})
	return out, nil
}

func (s *Service) updateStoreMetrics() {
	u, err := s.snaps.store.Usage()
	if err != nil {
		return
	}
	s.rec.SetSnapshotStore(metrics.SnapshotStore{Snapshots: u.Snapshots, Chunks: u.Chunks, StoredBytes: u.ChunkBytes + u.ManifestBytes})
}

func (s *Service) snapshotProto(info *pagestore.SnapshotInfo) *migratev1.Snapshot {
	down, _ := strconv.ParseInt(info.Meta[snapshot.MetaDowntime], 10, 64)
	return &migratev1.Snapshot{
		Name: info.Name, ContainerId: info.Meta[snapshot.MetaContainer], CreatedAt: timestamppb.New(info.Created),
		Downtime: durationpb.New(time.Duration(down)), LogicalBytes: info.LogicalBytes, StoredBytes: info.NewStoredBytes,
		DedupRatio: info.DedupRatio, Chunks: int64(info.Chunks), NewChunks: int64(info.NewChunks),
		Trigger: info.Meta[snapshot.MetaTrigger], Node: info.Meta[snapshot.MetaNode], BaseDigest: info.Meta[snapshot.MetaBase],
		ExclusiveBytes: info.ExclusiveBytes, ManifestBytes: info.ManifestBytes,
	}
}

// ListSnapshots lists the node's snapshots, oldest first.
func (s *Service) ListSnapshots(_ context.Context, r *migratev1.ListSnapshotsRequest) (*migratev1.ListSnapshotsResponse, error) {
	list, err := s.snaps.store.List()
	if err != nil {
		return nil, storeErr(err)
	}
	out := &migratev1.ListSnapshotsResponse{}
	for i := range list {
		if r.ContainerId != "" && list[i].Meta[snapshot.MetaContainer] != r.ContainerId {
			continue
		}
		out.Snapshots = append(out.Snapshots, s.snapshotProto(&list[i]))
	}
	return out, nil
}

// InspectSnapshot describes one snapshot with its checkpoint manifest.
func (s *Service) InspectSnapshot(_ context.Context, r *migratev1.InspectSnapshotRequest) (*migratev1.InspectSnapshotResponse, error) {
	info, err := s.snaps.store.Inspect(r.Name)
	if err != nil {
		return nil, storeErr(err)
	}
	b, err := s.snaps.store.ReadFile(r.Name, checkpoint.ManifestName)
	if err != nil {
		return nil, fmt.Errorf("inspect snapshot %s: %w", r.Name, storeErr(err))
	}
	return &migratev1.InspectSnapshotResponse{Snapshot: s.snapshotProto(info), CheckpointManifestJson: b}, nil
}

// DeleteSnapshot removes a snapshot's manifest; GC frees its chunks.
func (s *Service) DeleteSnapshot(_ context.Context, r *migratev1.DeleteSnapshotRequest) (*migratev1.DeleteSnapshotResponse, error) {
	if err := s.snaps.store.Delete(r.Name); err != nil {
		return nil, storeErr(err)
	}
	s.updateStoreMetrics()
	return &migratev1.DeleteSnapshotResponse{}, nil
}

// VerifySnapshots checks every chunk of every snapshot.
func (s *Service) VerifySnapshots(ctx context.Context, _ *migratev1.VerifySnapshotsRequest) (*migratev1.VerifySnapshotsResponse, error) {
	rep, err := s.snaps.store.Verify(ctx)
	if err != nil {
		return nil, storeErr(err)
	}
	out := &migratev1.VerifySnapshotsResponse{Snapshots: int32(rep.Snapshots), Chunks: int64(rep.Chunks), Bytes: rep.Bytes}
	for _, d := range rep.Damage {
		out.Damage = append(out.Damage, d.String())
	}
	return out, nil
}

// CollectGarbage runs the store's GC.
func (s *Service) CollectGarbage(ctx context.Context, _ *migratev1.CollectGarbageRequest) (*migratev1.CollectGarbageResponse, error) {
	freed, err := s.snaps.store.GC(ctx)
	if err != nil {
		return nil, storeErr(err)
	}
	u, err := s.snaps.store.Usage()
	if err != nil {
		return nil, err
	}
	s.updateStoreMetrics()
	return &migratev1.CollectGarbageResponse{FreedBytes: freed, Chunks: int64(u.Chunks), ChunkBytes: u.ChunkBytes, Snapshots: int32(u.Snapshots)}, nil
}

// RestoreSnapshot restores a snapshot here or on a peer.
func (s *Service) RestoreSnapshot(ctx context.Context, r *migratev1.RestoreSnapshotRequest) (*migratev1.RestoreSnapshotResponse, error) {
	if r.Name != "" {
		if err := container.ValidateID(r.Name); err != nil {
			return nil, fmt.Errorf("restore snapshot: %w: %w", ErrInvalid, err)
		}
	}
	if r.To != "" && r.To != s.cfg.Node {
		return s.restoreSnapshotOn(ctx, r)
	}
	ctr, err := s.restoreSnapshot(ctx, r.Snapshot, r.Name)
	if err != nil {
		return nil, err
	}
	return &migratev1.RestoreSnapshotResponse{Container: ctr, Node: s.cfg.Node}, nil
}

// restoreSnapshot rebuilds the snapshot as a checkpoint directory in scratch
// space, every chunk checked against its hash (a bad one fails the restore
// before anything runs, naming the snapshot), then restores it with the
// agent's restore path.
func (s *Service) restoreSnapshot(ctx context.Context, name, id string) (_ *migratev1.Container, retErr error) {
	defer s.rec.Begin(metrics.OpRestore)()
	start := time.Now()
	defer func() {
		m := metrics.Restore{Duration: time.Since(start)}
		m.Result, m.Reason = resultOf(retErr, metrics.ReasonRestore)
		s.rec.ObserveRestore(m)
	}()
	work, err := os.MkdirTemp(s.snaps.scratch, "restore-")
	if err != nil {
		return nil, fmt.Errorf("restore snapshot %s: %w", name, err)
	}
	defer os.RemoveAll(work)
	dir := filepath.Join(work, "checkpoint")
	if err := s.snaps.store.Get(ctx, name, dir); err != nil {
		return nil, fmt.Errorf("restore snapshot %s: %w", name, storeErr(err))
	}
	m, err := checkpoint.Read(dir)
	if err != nil {
		return nil, fmt.Errorf("restore snapshot %s: %w", name, err)
	}
	if id == "" {
		id = m.ContainerID
	}
	if err := container.ValidateID(id); err != nil {
		return nil, fmt.Errorf("restore snapshot %s: %w: %w", name, ErrInvalid, err)
	}
	if _, err := s.lookup(id); err == nil {
		return nil, fmt.Errorf("restore snapshot %s: container %s %w (use --name)", name, id, ErrExists)
	}
	return s.restore(ctx, restoreSource{dir: dir}, id, func(progress) {})
}

// restoreSnapshotOn restores a snapshot on peer r.To over one Push stream:
// offer the manifest, send the chunks (and the rootfs base) the peer lacks,
// then ask it to restore.
func (s *Service) restoreSnapshotOn(ctx context.Context, r *migratev1.RestoreSnapshotRequest) (*migratev1.RestoreSnapshotResponse, error) {
	conn, err := s.peers.conn(r.To)
	if err != nil {
		return nil, fmt.Errorf("restore snapshot %s on %s: %w", r.Snapshot, r.To, err)
	}
	ex, err := s.snaps.store.Export(ctx, r.Snapshot)
	if err != nil {
		return nil, fmt.Errorf("restore snapshot %s: %w", r.Snapshot, storeErr(err))
	}
	defer ex.Close()
	info, err := s.snaps.store.Inspect(r.Snapshot)
	if err != nil {
		return nil, fmt.Errorf("restore snapshot %s: %w", r.Snapshot, storeErr(err))
	}
	base := info.Meta[snapshot.MetaBase]
	ctx, cancel := context.WithCancel(ctx)
	defer cancel() // ends the stream on every error path: the peer aborts its import
	stream, err := migratev1.NewSnapshotPeerClient(conn).Push(ctx)
	if err != nil {
		return nil, fmt.Errorf("restore snapshot %s on %s: %w: %w", r.Snapshot, r.To, ErrUnavailable, err)
	}
	fail := func(what string, err error) (*migratev1.RestoreSnapshotResponse, error) {
		return nil, fmt.Errorf("restore snapshot %s on %s: %s: %w", r.Snapshot, r.To, what, err)
	}
	if err := stream.Send(&migratev1.PushMessage{Msg: &migratev1.PushMessage_Offer{Offer: &migratev1.PushOffer{
		Snapshot: r.Snapshot, Manifest: ex.Manifest(), BaseDigest: base}}}); err != nil {
		return fail("offer", recvErr(stream, err))
	}
	rep, err := stream.Recv()
	if err != nil {
		return fail("offer", err)
	}
	out := &migratev1.RestoreSnapshotResponse{Node: r.To, PresentChunks: int64(len(ex.Keys()) - len(rep.Missing))}
	for _, k := range rep.Missing {
		comp, err := ex.Chunk(k)
		if err != nil {
			return nil, fmt.Errorf("restore snapshot %s on %s: %w", r.Snapshot, r.To, storeErr(err))
		}
		if err := stream.Send(&migratev1.PushMessage{Msg: &migratev1.PushMessage_Chunk{Chunk: &migratev1.PushChunk{Key: k, Data: comp}}}); err != nil {
			return fail("send", recvErr(stream, err))
		}
		out.SentChunks++
		out.SentBytes += int64(len(comp))
	}
	if rep.NeedBase {
		if err := s.sendBase(stream, base); err != nil {
			return fail("send base", err)
		}
		out.BaseSent = true
	}
	if err := stream.Send(&migratev1.PushMessage{Msg: &migratev1.PushMessage_Restore{Restore: &migratev1.PushRestore{Name: r.Name}}}); err != nil {
		return fail("restore", recvErr(stream, err))
	}
	done, err := stream.Recv()
	if err != nil {
		return fail("restore", err)
	}
	_ = stream.CloseSend()
	out.Container = done.Container
	return out, nil
}

// recvErr replaces a failed Send's io.EOF by the status the peer ended with.
func recvErr(stream grpc.BidiStreamingClient[migratev1.PushMessage, migratev1.PushReply], err error) error {
	if errors.Is(err, io.EOF) {
		if _, rerr := stream.Recv(); rerr != nil {
			return rerr
		}
	}
	return err
}

// sendBase streams the rootfs base as a tar, in 1 MiB pieces.
func (s *Service) sendBase(stream grpc.BidiStreamingClient[migratev1.PushMessage, migratev1.PushReply], digest string) error {
	work, err := os.MkdirTemp(s.snaps.scratch, "base-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(work)
	p := filepath.Join(work, "base.tar")
	if _, err := s.writeBase(digest, p); err != nil {
		return err
	}
	f, err := os.Open(p)
	if err != nil {
		return err
	}
	defer f.Close()
	buf := make([]byte, 1<<20)
	for {
		n, err := f.Read(buf)
		last := errors.Is(err, io.EOF)
		if err != nil && !last {
			return err
		}
		if serr := stream.Send(&migratev1.PushMessage{Msg: &migratev1.PushMessage_Base{Base: &migratev1.PushBase{Data: buf[:n], Last: last}}}); serr != nil {
			return recvErr(stream, serr)
		}
		if last {
			return nil
		}
	}
}

// Push receives a snapshot from a peer and restores it (SnapshotPeer).
// Everything received is checked: the manifest by the store's rules, every
// chunk against its hash, the base against its digest. If the stream ends
// before the restore, the import is abandoned; GC reclaims its chunks.
func (s *Service) Push(stream grpc.BidiStreamingServer[migratev1.PushMessage, migratev1.PushReply]) error {
	ctx := stream.Context()
	first, err := stream.Recv()
	if err != nil {
		return err
	}
	offer := first.GetOffer()
	if offer == nil {
		return fmt.Errorf("%w: push must start with an offer", ErrInvalid)
	}
	name := offer.Snapshot
	reply := &migratev1.PushReply{}
	var im *pagestore.Import
	if ex, err := s.snaps.store.Export(ctx, name); err == nil {
		same := string(ex.Manifest()) == string(offer.Manifest)
		ex.Close()
		if !same {
			return fmt.Errorf("snapshot %s: %w here with other content", name, ErrExists)
		}
		reply.AlreadyStored = true
	} else {
		im, err = s.snaps.store.BeginImport(ctx, name, offer.Manifest)
		if err != nil {
			return storeErr(err)
		}
		defer func() {
			if im != nil {
				im.Abort()
			}
		}()
		reply.Missing = im.Missing()
	}
	if offer.BaseDigest != "" {
		p, err := s.bases.BasePath(offer.BaseDigest)
		if err != nil {
			return fmt.Errorf("%w: %w", ErrInvalid, err)
		}
		if _, err := os.Stat(p); err != nil {
			reply.NeedBase = true
		}
	}
	if err := stream.Send(reply); err != nil {
		return err
	}
	var baseFile *os.File
	defer func() {
		if baseFile != nil {
			baseFile.Close()
			os.RemoveAll(filepath.Dir(baseFile.Name()))
		}
	}()
	for {
		msg, err := stream.Recv()
		if err != nil {
			return err
		}
		switch m := msg.Msg.(type) {
		case *migratev1.PushMessage_Chunk:
			if im == nil {
				return fmt.Errorf("%w: chunk for a snapshot already stored", ErrInvalid)
			}
			if err := im.PutChunk(m.Chunk.Key, m.Chunk.Data); err != nil {
				return storeErr(err)
			}
		case *migratev1.PushMessage_Base:
			if !reply.NeedBase {
				return fmt.Errorf("%w: base data not asked for", ErrInvalid)
			}
			if baseFile == nil {
				work, err := os.MkdirTemp(s.snaps.scratch, "base-")
				if err != nil {
					return err
				}
				if baseFile, err = os.Create(filepath.Join(work, "base.tar")); err != nil {
					os.RemoveAll(work)
					return err
				}
			}
			if _, err := baseFile.Write(m.Base.Data); err != nil {
				return err
			}
			if m.Base.Last {
				if err := s.importBase(baseFile.Name(), offer.BaseDigest); err != nil {
					return fmt.Errorf("snapshot %s: base %s: %w", name, offer.BaseDigest, err)
				}
			}
		case *migratev1.PushMessage_Restore:
			if im != nil {
				if _, err := im.Commit(); err != nil {
					im = nil
					return storeErr(err)
				}
				im = nil
				s.updateStoreMetrics()
			}
			ctr, err := s.restoreSnapshot(ctx, name, m.Restore.Name)
			if err != nil {
				return err
			}
			return stream.Send(&migratev1.PushReply{Container: ctr})
		default:
			return fmt.Errorf("%w: unexpected push message", ErrInvalid)
		}
	}
}

// SetSchedule adds or replaces a container's schedule.
func (s *Service) SetSchedule(_ context.Context, r *migratev1.SetScheduleRequest) (*migratev1.SetScheduleResponse, error) {
	p := r.GetSchedule()
	if p == nil {
		return nil, fmt.Errorf("%w: no schedule", ErrInvalid)
	}
	if _, err := s.lookup(p.ContainerId); err != nil {
		return nil, fmt.Errorf("schedule: %w", err)
	}
	sch := snapshot.Schedule{
		ContainerID: p.ContainerId, Every: snapshot.Duration(p.GetEvery().AsDuration()), Cron: p.Cron,
		KeepLast: int(p.KeepLast), KeepHourly: int(p.KeepHourly), KeepDaily: int(p.KeepDaily),
		Created: time.Now().UTC(),
	}
	if p.Jitter != nil {
		sch.Jitter = snapshot.Duration(p.Jitter.AsDuration())
	} else if sch.Every != 0 {
		sch.Jitter = snapshot.Duration(snapshot.DefaultJitter(time.Duration(sch.Every)))
	} else if err := sch.Validate(); err == nil {
		n := sch.Planned(time.Now())
		sch.Jitter = snapshot.Duration(snapshot.DefaultJitter(sch.Planned(n).Sub(n)))
	}
	if err := s.snaps.table.Set(sch); err != nil {
		if errors.Is(err, snapshot.ErrInvalid) {
			return nil, fmt.Errorf("schedule %s: %w: %w", p.ContainerId, ErrInvalid, err)
		}
		return nil, fmt.Errorf("schedule %s: %w", p.ContainerId, err)
	}
	s.snaps.mu.Lock()
	delete(s.snaps.next, sch.ContainerID)
	s.snaps.mu.Unlock()
	return &migratev1.SetScheduleResponse{Schedule: s.scheduleProto(sch)}, nil
}

// RemoveSchedule drops a container's schedule; its snapshots stay. It returns
// once no scheduled snapshot of the container is running (or ctx ends): after
// it, no scheduled snapshot of it is taken.
func (s *Service) RemoveSchedule(ctx context.Context, r *migratev1.RemoveScheduleRequest) (*migratev1.RemoveScheduleResponse, error) {
	ok, err := s.snaps.table.Remove(r.ContainerId)
	if err != nil {
		return nil, err
	}
	if !ok {
		return nil, fmt.Errorf("schedule of %q: %w", r.ContainerId, ErrNotFound)
	}
	for {
		s.snaps.mu.Lock()
		running := s.snaps.scheduled[r.ContainerId]
		s.snaps.mu.Unlock()
		if !running {
			break
		}
		select {
		case <-ctx.Done():
			return &migratev1.RemoveScheduleResponse{}, nil
		case <-time.After(50 * time.Millisecond):
		}
	}
	return &migratev1.RemoveScheduleResponse{}, nil
}

// ListSchedules lists the schedules with their next runs.
func (s *Service) ListSchedules(context.Context, *migratev1.ListSchedulesRequest) (*migratev1.ListSchedulesResponse, error) {
	out := &migratev1.ListSchedulesResponse{}
	for _, sch := range s.snaps.table.List() {
		out.Schedules = append(out.Schedules, s.scheduleProto(sch))
	}
	return out, nil
}

func (s *Service) scheduleProto(sch snapshot.Schedule) *migratev1.Schedule {
	out := &migratev1.Schedule{
		ContainerId: sch.ContainerID, Cron: sch.Cron, KeepLast: int32(sch.KeepLast), KeepHourly: int32(sch.KeepHourly),
		KeepDaily: int32(sch.KeepDaily), Jitter: durationpb.New(time.Duration(sch.Jitter)),
		LastSnapshot: sch.LastSnapshot, LastError: sch.LastError,
	}
	if sch.Every != 0 {
		out.Every = durationpb.New(time.Duration(sch.Every))
	}
	if !sch.LastRun.IsZero() {
		out.LastRun = timestamppb.New(sch.LastRun)
	}
	s.snaps.mu.Lock()
	next, ok := s.snaps.next[sch.ContainerID]
	s.snaps.mu.Unlock()
	if !ok {
		next = sch.Next(time.Now())
	}
	out.NextRun = timestamppb.New(next)
	return out
}

// runScheduler fires the schedules until ctx ends. Each schedule's next run
// is computed from now when it is first seen (at start, or when set): runs
// missed while the agent was down are not caught up. A run that finds the
// previous snapshot of its container still going is skipped.
func (s *Service) runScheduler(ctx context.Context) {
	sn := s.snaps
	tick := time.NewTicker(250 * time.Millisecond)
	defer tick.Stop()
	var wg sync.WaitGroup
	defer wg.Wait()
	for {
		select {
		case <-ctx.Done():
			return
		case <-tick.C:
		}
		now := time.Now()
		live := map[string]bool{}
		for _, sch := range sn.table.List() {
			id := sch.ContainerID
			live[id] = true
			sn.mu.Lock()
			next, ok := sn.next[id]
			if !ok {
				sn.next[id] = sch.Next(now)
				sn.mu.Unlock()
				continue
			}
			if now.Before(next) {
				sn.mu.Unlock()
				continue
			}
			sn.next[id] = sch.Next(now)
			busy := sn.busy[id]
			sn.mu.Unlock()
			if busy {
				_ = sn.table.Update(id, func(x *snapshot.Schedule) {
					x.LastError = fmt.Sprintf("run of %s skipped: the previous snapshot was still going", next.Format(time.RFC3339))
				})
				continue
			}
			s.rec.ObserveScheduleLag(now.Sub(next))
			wg.Add(1)
			go func() {
				defer wg.Done()
				s.scheduledSnapshot(ctx, sch)
			}()
		}
		sn.mu.Lock()
		for id := range sn.next {
			if !live[id] {
				delete(sn.next, id)
			}
		}
		sn.mu.Unlock()
	}
}

// scheduledSnapshot takes one scheduled snapshot, records the outcome in the
// schedule and applies its retention.
func (s *Service) scheduledSnapshot(ctx context.Context, sch snapshot.Schedule) {
	id := sch.ContainerID
	// Checked and marked at once, so a RemoveSchedule either stops this run or
	// waits for it.
	sn := s.snaps
	sn.mu.Lock()
	if _, ok := sn.table.Get(id); !ok {
		sn.mu.Unlock()
		return
	}
	sn.scheduled[id] = true
	sn.mu.Unlock()
	defer func() {
		sn.mu.Lock()
		delete(sn.scheduled, id)
		sn.mu.Unlock()
	}()
	snap, err := s.takeSnapshot(ctx, id, snapshot.TriggerSchedule)
	if ctx.Err() != nil {
		return // agent stopping
	}
	_ = s.snaps.table.Update(id, func(x *snapshot.Schedule) {
		x.LastRun = time.Now().UTC()
		if err != nil {
			x.LastError = cleanMessage(err)
			return
		}
		x.LastError, x.LastSnapshot = "", snap.Name
	})
	if err != nil {
		s.log.Warn("scheduled snapshot failed", "container", id, "err", err)
		return
	}
	if err := s.applyRetention(ctx, sch); err != nil {
		s.log.Warn("snapshot retention", "container", id, "err", err)
	}
}

// applyRetention deletes the container's scheduled snapshots its policy no
// longer keeps (manual snapshots are never pruned) and collects garbage.
func (s *Service) applyRetention(ctx context.Context, sch snapshot.Schedule) error {
	pol := snapshot.Policy{KeepLast: sch.KeepLast, KeepHourly: sch.KeepHourly, KeepDaily: sch.KeepDaily}
	if pol.Empty() {
		return nil
	}
	list, err := s.snaps.store.List()
	if err != nil {
		return err
	}
	var items []snapshot.Item
	for _, info := range list {
		if info.Meta[snapshot.MetaContainer] == sch.ContainerID && info.Meta[snapshot.MetaTrigger] == snapshot.TriggerSchedule {
			items = append(items, snapshot.Item{Name: info.Name, Created: info.Created})
		}
	}
	prune := snapshot.Prune(items, pol)
	sort.Slice(prune, func(i, j int) bool { return prune[i].Created.Before(prune[j].Created) })
	for _, it := range prune {
		if err := s.snaps.store.Delete(it.Name); err != nil && !errors.Is(err, pagestore.ErrNotFound) {
			return err
		}
	}
	if len(prune) > 0 {
		if _, err := s.snaps.store.GC(ctx); err != nil {
			return err
		}
		s.updateStoreMetrics()
	}
	return nil
}

// snapshotsAPI is the gRPC face of the snapshot methods: it forwards and maps
// errors, nothing else.
type snapshotsAPI struct {
	migratev1.UnimplementedSnapshotsServer
	s *Service
}

var _ migratev1.SnapshotsServer = (*snapshotsAPI)(nil)

func (a *snapshotsAPI) TakeSnapshot(ctx context.Context, r *migratev1.TakeSnapshotRequest) (*migratev1.TakeSnapshotResponse, error) {
	res, err := a.s.TakeSnapshot(ctx, r)
	return res, toStatus(err)
}

func (a *snapshotsAPI) ListSnapshots(ctx context.Context, r *migratev1.ListSnapshotsRequest) (*migratev1.ListSnapshotsResponse, error) {
	res, err := a.s.ListSnapshots(ctx, r)
	return res, toStatus(err)
}

func (a *snapshotsAPI) InspectSnapshot(ctx context.Context, r *migratev1.InspectSnapshotRequest) (*migratev1.InspectSnapshotResponse, error) {
	res, err := a.s.InspectSnapshot(ctx, r)
	return res, toStatus(err)
}

func (a *snapshotsAPI) DeleteSnapshot(ctx context.Context, r *migratev1.DeleteSnapshotRequest) (*migratev1.DeleteSnapshotResponse, error) {
	res, err := a.s.DeleteSnapshot(ctx, r)
	return res, toStatus(err)
}

func (a *snapshotsAPI) RestoreSnapshot(ctx context.Context, r *migratev1.RestoreSnapshotRequest) (*migratev1.RestoreSnapshotResponse, error) {
	res, err := a.s.RestoreSnapshot(ctx, r)
	return res, toStatus(err)
}

func (a *snapshotsAPI) VerifySnapshots(ctx context.Context, r *migratev1.VerifySnapshotsRequest) (*migratev1.VerifySnapshotsResponse, error) {
	res, err := a.s.VerifySnapshots(ctx, r)
	return res, toStatus(err)
}

func (a *snapshotsAPI) CollectGarbage(ctx context.Context, r *migratev1.CollectGarbageRequest) (*migratev1.CollectGarbageResponse, error) {
	res, err := a.s.CollectGarbage(ctx, r)
	return res, toStatus(err)
}

func (a *snapshotsAPI) SetSchedule(ctx context.Context, r *migratev1.SetScheduleRequest) (*migratev1.SetScheduleResponse, error) {
	res, err := a.s.SetSchedule(ctx, r)
	return res, toStatus(err)
}

func (a *snapshotsAPI) RemoveSchedule(ctx context.Context, r *migratev1.RemoveScheduleRequest) (*migratev1.RemoveScheduleResponse, error) {
	res, err := a.s.RemoveSchedule(ctx, r)
	return res, toStatus(err)
}

func (a *snapshotsAPI) ListSchedules(ctx context.Context, r *migratev1.ListSchedulesRequest) (*migratev1.ListSchedulesResponse, error) {
	res, err := a.s.ListSchedules(ctx, r)
	return res, toStatus(err)
}

// snapshotPeerAPI serves other agents' snapshot pushes.
type snapshotPeerAPI struct {
	migratev1.UnimplementedSnapshotPeerServer
	s *Service
}

var _ migratev1.SnapshotPeerServer = (*snapshotPeerAPI)(nil)

func (a *snapshotPeerAPI) Push(stream grpc.BidiStreamingServer[migratev1.PushMessage, migratev1.PushReply]) error {
	return toStatus(a.s.Push(stream))
}
