package agent

import (
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"sync"
	"time"

	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/migratehq/migrate/agent/config"
	"github.com/migratehq/migrate/agent/layers"
	"github.com/migratehq/migrate/agent/ops"
	migratev1 "github.com/migratehq/migrate/api/migrate/v1"
	"github.com/migratehq/migrate/metrics"
	"github.com/migratehq/migrate/transfer"
)

// Service is the local implementation of the control API.
type Service struct {
	cfg     *config.Config
	exe     string
	version string
	started time.Time
	log     *slog.Logger
	ops     *ops.Registry
	events  *events
	peers   *peers
	node    *nodeInfo
	bases   *layers.Store
	rec     metrics.Recorder
	moves   *moveTable
	net     *netState // containers' addresses on the shared network
	// incoming receives the files of moves to this node, under <data>/incoming.
	incoming *transfer.Receiver
	shims    *shimPool
	bg       context.Context // outlives RPCs: operations run under it

	mu         sync.Mutex
	containers map[string]*entry // guarded by mu

	ckptMu   sync.Mutex
	ckptBusy map[string]int // guarded by ckptMu; checkpoint name -> operations using it

	snaps *snapshots // snapshot store and schedules (snapshots_linux.go)
}

func newService(bg context.Context, cfg *config.Config, o Options, p *peers) *Service {
	return &Service{
		cfg: cfg, exe: o.Exe, version: o.Version, started: time.Now().UTC(), log: o.Logger,
		ops: ops.NewRegistry(), events: newEvents(), peers: p, bg: bg,
		node:  newNodeInfo(cfg),
		bases: &layers.Store{Dir: cfg.BasesDir()},
		rec:   metrics.Nop{},
		moves: newMoveTable(),
		net:   newNetState(cfg, o.Logger),
		// No fsyncs: a move's checkpoint is worthless once this machine crashed
		// (the source resumes the container), and a base it brings is made
		// durable when it is imported (importBase).
		incoming:   &transfer.Receiver{Root: incomingDir(cfg.DataDir), NoSync: true},
		shims:      &shimPool{exe: o.Exe, criu: cfg.CRIU, log: o.Logger},
		containers: map[string]*entry{},
		ckptBusy:   map[string]int{},
	}
}

// Stop starts the stop operation and streams its events until it ends or the caller
// goes away (the stop continues; WatchOperation re-attaches).
func (s *Service) Stop(ctx context.Context, r *migratev1.StopRequest, send func(*migratev1.OperationEvent) error) error {
	if _, err := s.lookup(r.Id); err != nil {
		return fmt.Errorf("stop: %w", err)
	}
	op := s.ops.Start(s.bg, "stop", r.Id, func(ctx context.Context, report func(ops.Progress)) (any, error) {
		return s.stop(ctx, r, func(p progress) {
			report(ops.Progress{Phase: p.phase, Message: p.message, Done: p.done, Total: p.total, Unit: p.unit})
		})
	})
	return s.watch(ctx, op, send)
}

func (s *Service) watch(ctx context.Context, op *ops.Op, send func(*migratev1.OperationEvent) error) error {
	return op.Watch(ctx, func(snap ops.Snapshot, p *ops.Progress) error {
		ev := &migratev1.OperationEvent{Operation: opProto(snap), Time: timestamppb.Now()}
		if p != nil {
			ev.Progress = &migratev1.Progress{Phase: p.Phase, Message: p.Message, Done: p.Done, Total: p.Total, Unit: p.Unit}
			ev.Time = timestamppb.New(p.Time)
			// Progress events show the operation as still running, even if replayed late.
			ev.Operation.State = migratev1.OperationState_OPERATION_STATE_RUNNING
			ev.Operation.EndedAt, ev.Operation.Error = nil, ""
		} else {
			switch res := snap.Result.(type) {
			case *migratev1.Container:
				ev.Container = res
			case *migratev1.Checkpoint:
				ev.Checkpoint = res
			case *migratev1.MoveResult:
				ev.Move = res
			}
		}
		return send(ev)
	})
}

func opProto(s ops.Snapshot) *migratev1.Operation {
	o := &migratev1.Operation{Id: s.ID, Kind: s.Kind, ContainerId: s.Target, StartedAt: timestamppb.New(s.Started)}
	switch s.State {
	case ops.Running:
		o.State = migratev1.OperationState_OPERATION_STATE_RUNNING
	case ops.Succeeded:
		o.State = migratev1.OperationState_OPERATION_STATE_SUCCEEDED
	case ops.Failed:
		o.State = migratev1.OperationState_OPERATION_STATE_FAILED
	case ops.Cancelled:
		o.State = migratev1.OperationState_OPERATION_STATE_CANCELLED
	}
	if !s.Ended.IsZero() {
		o.EndedAt = timestamppb.New(s.Ended)
	}
	if s.Err != nil {
		o.Error = cleanMessage(s.Err)
		o.ErrorCode = int32(codeOf(s.Err))
	}
	return o
}

// ListOperations lists retained operations.
func (s *Service) ListOperations(context.Context, *migratev1.ListOperationsRequest) (*migratev1.ListOperationsResponse, error) {
	out := &migratev1.ListOperationsResponse{}
	for _, snap := range s.ops.List() {
		out.Operations = append(out.Operations, opProto(snap))
	}
	return out, nil
}

// WatchOperation re-attaches to an operation's progress.
func (s *Service) WatchOperation(ctx context.Context, r *migratev1.WatchOperationRequest, send func(*migratev1.OperationEvent) error) error {
	op, err := s.ops.Get(r.Id)
	if err != nil {
		return err
	}
	return s.watch(ctx, op, send)
}

// CancelOperation cancels a running operation.
func (s *Service) CancelOperation(_ context.Context, r *migratev1.CancelOperationRequest) (*migratev1.CancelOperationResponse, error) {
	op, err := s.ops.Get(r.Id)
	if err != nil {
		return nil, err
	}
	op.Cancel()
	return &migratev1.CancelOperationResponse{}, nil
}

// Events streams container events.
func (s *Service) Events(ctx context.Context, r *migratev1.EventsRequest, send func(*migratev1.Event) error) error {
	ch, done := s.events.subscribe()
	defer done()
	for {
		select {
		case <-ctx.Done():
			return nil
		case ev := <-ch:
			if r.Id != "" && ev.ContainerId != r.Id {
				continue
			}
			if err := send(ev); err != nil {
				return err
			}
		}
	}
}

// NodeInfo describes this node.
func (s *Service) NodeInfo(ctx context.Context, _ *migratev1.NodeInfoRequest) (*migratev1.NodeInfoResponse, error) {
	return &migratev1.NodeInfoResponse{Node: s.nodeInfo(ctx)}, nil
}

func (s *Service) nodeInfo(ctx context.Context) *migratev1.NodeInfo {
	n := s.node.get(ctx)
	n.Version = s.version
	n.StartedAt = timestamppb.New(s.started)
	n.PeerAddress = s.cfg.Peer.Advertise
	if n.PeerAddress == "" {
		n.PeerAddress = s.cfg.Peer.Listen
	}
	s.mu.Lock()
	n.Containers = int32(len(s.containers))
	s.mu.Unlock()
	return n
}

// Nodes lists this node and its peers, asking each peer over mTLS.
func (s *Service) Nodes(ctx context.Context, _ *migratev1.NodesRequest) (*migratev1.NodesResponse, error) {
	out := &migratev1.NodesResponse{Nodes: []*migratev1.NodeStatus{{
		Name: s.cfg.Node, Address: s.cfg.Peer.Listen, Self: true, Reachable: true, Info: s.nodeInfo(ctx),
	}}}
	out.Nodes = append(out.Nodes, s.peers.statuses(ctx)...)
	return out, nil
}

// specArgs extracts process.args from a config.json.
func specArgs(b []byte) []string {
	var s struct {
		Process *struct {
			Args []string `json:"args"`
		} `json:"process"`
	}
	if json.Unmarshal(b, &s) != nil || s.Process == nil {
		return nil
	}
	return s.Process.Args
}
