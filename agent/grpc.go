package agent

import (
	"context"
	"strings"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/peer"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/migratehq/migrate/agent/pki"
	migratev1 "github.com/migratehq/migrate/api/migrate/v1"
)

// controlAPI is the gRPC face of Service: it forwards and maps errors, nothing else.
type controlAPI struct {
	migratev1.UnimplementedControlServer
	s *Service
}

var _ migratev1.ControlServer = (*controlAPI)(nil)

func (a *controlAPI) Create(ctx context.Context, r *migratev1.CreateRequest) (*migratev1.CreateResponse, error) {
	res, err := a.s.Create(ctx, r)
	return res, toStatus(err)
}

func (a *controlAPI) Start(ctx context.Context, r *migratev1.StartRequest) (*migratev1.StartResponse, error) {
	res, err := a.s.Start(ctx, r)
	return res, toStatus(err)
}

func (a *controlAPI) Stop(r *migratev1.StopRequest, ss migratev1.Control_StopServer) error {
	return toStatus(a.s.Stop(ss.Context(), r, ss.Send))
}

func (a *controlAPI) Kill(ctx context.Context, r *migratev1.KillRequest) (*migratev1.KillResponse, error) {
	res, err := a.s.Kill(ctx, r)
	return res, toStatus(err)
}

func (a *controlAPI) Delete(ctx context.Context, r *migratev1.DeleteRequest) (*migratev1.DeleteResponse, error) {
	res, err := a.s.Delete(ctx, r)
	return res, toStatus(err)
}

func (a *controlAPI) List(ctx context.Context, r *migratev1.ListRequest) (*migratev1.ListResponse, error) {
	res, err := a.s.List(ctx, r)
	return res, toStatus(err)
}

func (a *controlAPI) Inspect(ctx context.Context, r *migratev1.InspectRequest) (*migratev1.InspectResponse, error) {
	res, err := a.s.Inspect(ctx, r)
	return res, toStatus(err)
}

func (a *controlAPI) Logs(r *migratev1.LogsRequest, ss migratev1.Control_LogsServer) error {
	return toStatus(a.s.Logs(ss.Context(), r, ss.Send))
}

func (a *controlAPI) Exec(r *migratev1.ExecRequest, ss migratev1.Control_ExecServer) error {
	return toStatus(a.s.Exec(ss.Context(), r, ss.Send))
}

func (a *controlAPI) NodeInfo(ctx context.Context, r *migratev1.NodeInfoRequest) (*migratev1.NodeInfoResponse, error) {
	res, err := a.s.NodeInfo(ctx, r)
	return res, toStatus(err)
}

func (a *controlAPI) Nodes(ctx context.Context, r *migratev1.NodesRequest) (*migratev1.NodesResponse, error) {
	res, err := a.s.Nodes(ctx, r)
	return res, toStatus(err)
}

func (a *controlAPI) ListOperations(ctx context.Context, r *migratev1.ListOperationsRequest) (*migratev1.ListOperationsResponse, error) {
	res, err := a.s.ListOperations(ctx, r)
	return res, toStatus(err)
}

func (a *controlAPI) WatchOperation(r *migratev1.WatchOperationRequest, ss migratev1.Control_WatchOperationServer) error {
	return toStatus(a.s.WatchOperation(ss.Context(), r, ss.Send))
}

func (a *controlAPI) CancelOperation(ctx context.Context, r *migratev1.CancelOperationRequest) (*migratev1.CancelOperationResponse, error) {
	res, err := a.s.CancelOperation(ctx, r)
	return res, toStatus(err)
}

func (a *controlAPI) Events(r *migratev1.EventsRequest, ss migratev1.Control_EventsServer) error {
	return toStatus(a.s.Events(ss.Context(), r, ss.Send))
}

func (a *controlAPI) Checkpoint(r *migratev1.CheckpointRequest, ss migratev1.Control_CheckpointServer) error {
	return toStatus(a.s.Checkpoint(ss.Context(), r, ss.Send))
}

func (a *controlAPI) Restore(r *migratev1.RestoreRequest, ss migratev1.Control_RestoreServer) error {
	return toStatus(a.s.Restore(ss.Context(), r, ss.Send))
}

func (a *controlAPI) ListCheckpoints(ctx context.Context, r *migratev1.ListCheckpointsRequest) (*migratev1.ListCheckpointsResponse, error) {
	res, err := a.s.ListCheckpoints(ctx, r)
	return res, toStatus(err)
}

func (a *controlAPI) InspectCheckpoint(ctx context.Context, r *migratev1.InspectCheckpointRequest) (*migratev1.InspectCheckpointResponse, error) {
	res, err := a.s.InspectCheckpoint(ctx, r)
	return res, toStatus(err)
}

func (a *controlAPI) Move(r *migratev1.MoveRequest, ss migratev1.Control_MoveServer) error {
	return toStatus(a.s.Move(ss.Context(), r, ss.Send))
}

func (a *controlAPI) DeleteCheckpoint(ctx context.Context, r *migratev1.DeleteCheckpointRequest) (*migratev1.DeleteCheckpointResponse, error) {
	res, err := a.s.DeleteCheckpoint(ctx, r)
	return res, toStatus(err)
}

// peerAPI serves other agents.
type peerAPI struct {
	migratev1.UnimplementedPeerServer
	s *Service
}

var _ migratev1.PeerServer = (*peerAPI)(nil)

func (a *peerAPI) Ping(context.Context, *migratev1.PingRequest) (*migratev1.PingResponse, error) {
	return &migratev1.PingResponse{Node: a.s.cfg.Node, Time: timestamppb.Now()}, nil
}

func (a *peerAPI) NodeInfo(ctx context.Context, _ *migratev1.PeerNodeInfoRequest) (*migratev1.PeerNodeInfoResponse, error) {
	return &migratev1.PeerNodeInfoResponse{Node: a.s.nodeInfo(ctx)}, nil
}

func (a *peerAPI) PrepareMove(ctx context.Context, r *migratev1.PrepareMoveRequest) (*migratev1.PrepareMoveResponse, error) {
	res, err := a.s.PrepareMove(ctx, r)
	return res, toStatus(err)
}

func (a *peerAPI) RestoreMoved(ctx context.Context, r *migratev1.RestoreMovedRequest) (*migratev1.RestoreMovedResponse, error) {
	res, err := a.s.RestoreMoved(ctx, r)
	return res, toStatus(err)
}

func (a *peerAPI) AdoptLogs(ctx context.Context, r *migratev1.AdoptLogsRequest) (*migratev1.AdoptLogsResponse, error) {
	res, err := a.s.AdoptLogs(ctx, r)
	return res, toStatus(err)
}

func (a *peerAPI) AbortMove(ctx context.Context, r *migratev1.AbortMoveRequest) (*migratev1.AbortMoveResponse, error) {
	res, err := a.s.AbortMove(ctx, r)
	return res, toStatus(err)
}

func (a *peerAPI) Tunnel(stream grpc.BidiStreamingServer[migratev1.TunnelData, migratev1.TunnelData]) error {
	return toStatus(a.s.Tunnel(stream))
}

// tlsIdentity returns the verified identity of an mTLS caller.
func tlsIdentity(ctx context.Context) (pki.Identity, error) {
	p, ok := peer.FromContext(ctx)
	if !ok {
		return pki.Identity{}, status.Error(codes.Unauthenticated, "no peer")
	}
	ti, ok := p.AuthInfo.(credentials.TLSInfo)
	if !ok || len(ti.State.VerifiedChains) == 0 || len(ti.State.PeerCertificates) == 0 {
		return pki.Identity{}, status.Error(codes.Unauthenticated, "no verified client certificate")
	}
	id, err := pki.IdentityOf(ti.State.PeerCertificates[0])
	if err != nil {
		return pki.Identity{}, status.Error(codes.Unauthenticated, err.Error())
	}
	return id, nil
}

// authorizeTLS lets nodes call the peer API and admins call the control API over TCP.
func authorizeTLS(ctx context.Context, method string) error {
	id, err := tlsIdentity(ctx)
	if err != nil {
		return err
	}
	switch {
	case strings.HasPrefix(method, "/migrate.v1.Control/") && id.Role == pki.RoleAdmin:
		return nil
	case strings.HasPrefix(method, "/migrate.v1.Peer/") && (id.Role == pki.RoleNode || id.Role == pki.RoleAdmin):
		return nil
	case strings.HasPrefix(method, "/migrate.v1.SnapshotPeer/") && id.Role == pki.RoleNode:
		// Only nodes push snapshots to each other.
		return nil
	case strings.HasPrefix(method, "/migrate.transfer.v1.Transfer/") && id.Role == pki.RoleNode:
		// Only nodes send checkpoints to each other.
		return nil
	}
	return status.Errorf(codes.PermissionDenied, "%s %q may not call %s", id.Role, id.Name, method)
}

func tlsInterceptors() []grpc.ServerOption {
	return []grpc.ServerOption{
		grpc.ChainUnaryInterceptor(func(ctx context.Context, req any, info *grpc.UnaryServerInfo, h grpc.UnaryHandler) (any, error) {
			if err := authorizeTLS(ctx, info.FullMethod); err != nil {
				return nil, err
			}
			return h(ctx, req)
		}),
		grpc.ChainStreamInterceptor(func(srv any, ss grpc.ServerStream, info *grpc.StreamServerInfo, h grpc.StreamHandler) error {
			if err := authorizeTLS(ss.Context(), info.FullMethod); err != nil {
				return err
			}
			return h(srv, ss)
		}),
	}
}
