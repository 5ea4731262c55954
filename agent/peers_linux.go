package agent

import (
	"context"
	"fmt"
	"sort"
	"strings"
	"sync"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/keepalive"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/migratehq/migrate/agent/config"
	"github.com/migratehq/migrate/agent/pki"
	migratev1 "github.com/migratehq/migrate/api/migrate/v1"
)

// A peer link that stops answering (a cut cable, a dead host) would leave a
// transfer blocked in TCP retransmits for many minutes: both ends ping on idle
// connections and give up after peerKeepalive+peerKeepaliveTimeout (grpc-go's
// minimum client interval is 10 s).
const (
	peerKeepalive        = 10 * time.Second
	peerKeepaliveTimeout = 5 * time.Second
)

// peerServerOptions are the keepalive settings of the peer listener, matching
// the clients' pings.
func peerServerOptions() []grpc.ServerOption {
	return []grpc.ServerOption{
		grpc.KeepaliveEnforcementPolicy(keepalive.EnforcementPolicy{MinTime: peerKeepalive / 2, PermitWithoutStream: true}),
		grpc.KeepaliveParams(keepalive.ServerParameters{Time: peerKeepalive, Timeout: peerKeepaliveTimeout}),
	}
}

// peers holds client connections to the configured peers.
type peers struct {
	cfg *config.Config

	mu    sync.Mutex
	conns map[string]*grpc.ClientConn // guarded by mu
}

func newPeers(cfg *config.Config) *peers {
	return &peers{cfg: cfg, conns: map[string]*grpc.ClientConn{}}
}

func (p *peers) files() pki.Files {
	return pki.Files{CA: p.cfg.TLS.CA, Cert: p.cfg.TLS.Cert, Key: p.cfg.TLS.Key}
}

// client returns a Peer client for name; see conn.
func (p *peers) client(name string) (migratev1.PeerClient, error) {
	c, err := p.conn(name)
	if err != nil {
		return nil, err
	}
	return migratev1.NewPeerClient(c), nil
}

// conn returns the connection to peer name; the TLS config makes the connection
// fail unless the server's certificate is of our CA and names exactly that peer.
func (p *peers) conn(name string) (*grpc.ClientConn, error) {
	addr, ok := p.cfg.Peers[name]
	if !ok {
		return nil, fmt.Errorf("peer %q: %w", name, ErrNotFound)
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	if c, ok := p.conns[name]; ok {
		return c, nil
	}
	tc, err := pki.ClientConfig(p.files(), name)
	if err != nil {
		return nil, fmt.Errorf("peer %s: %w", name, err)
	}
	c, err := grpc.NewClient("passthrough:///"+addr, grpc.WithTransportCredentials(credentials.NewTLS(tc)),
		grpc.WithKeepaliveParams(keepalive.ClientParameters{Time: peerKeepalive, Timeout: peerKeepaliveTimeout}))
	if err != nil {
		return nil, fmt.Errorf("peer %s: %w", name, err)
	}
	p.conns[name] = c
	return c, nil
}

func (p *peers) statuses(ctx context.Context) []*migratev1.NodeStatus {
	names := make([]string, 0, len(p.cfg.Peers))
	for n := range p.cfg.Peers {
		names = append(names, n)
	}
	sort.Strings(names)
	out := make([]*migratev1.NodeStatus, len(names))
	var wg sync.WaitGroup
	for i, name := range names {
		wg.Add(1)
		go func() {
			defer wg.Done()
			out[i] = p.status(ctx, name)
		}()
	}
	wg.Wait()
	return out
}

func (p *peers) status(ctx context.Context, name string) *migratev1.NodeStatus {
	ns := &migratev1.NodeStatus{Name: name, Address: p.cfg.Peers[name]}
	c, err := p.client(name)
	if err != nil {
		ns.Error = err.Error()
		return ns
	}
	ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	t0 := time.Now()
	if _, err := c.Ping(ctx, &migratev1.PingRequest{From: p.cfg.Node, SentAt: timestamppb.Now()}); err != nil {
		ns.Error = peerError(err)
		return ns
	}
	ns.RttMicros = time.Since(t0).Microseconds()
	r, err := c.NodeInfo(ctx, &migratev1.PeerNodeInfoRequest{})
	if err != nil {
		ns.Error = peerError(err)
		return ns
	}
	ns.Reachable, ns.Info = true, r.Node
	return ns
}

// peerError makes gRPC's connection errors readable: the TLS reason is what matters.
func peerError(err error) string {
	msg := cleanMessage(err)
	for _, cut := range []string{"connection error: desc = ", "transport: authentication handshake failed: "} {
		if i := strings.Index(msg, cut); i >= 0 {
			msg = msg[i+len(cut):]
		}
	}
	return strings.Trim(msg, `"`)
}

func (p *peers) close() {
	p.mu.Lock()
	defer p.mu.Unlock()
	for _, c := range p.conns {
		c.Close()
	}
}
