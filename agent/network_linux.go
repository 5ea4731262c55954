package agent

import (
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net/netip"
	"os"
	"path/filepath"
	"sync"
	"time"

	specs "github.com/opencontainers/runtime-spec/specs-go"

	"github.com/migratehq/migrate/agent/checkpoint"
	"github.com/migratehq/migrate/agent/config"
	"github.com/migratehq/migrate/agent/network"
	"github.com/migratehq/migrate/runtime/atomicfile"
)

// networkFile records a container's endpoint in its directory, so delete and
// an agent restart know what to remove and which address is taken.
const networkFile = "network.json"

// netState is the node's shared-network attachment for containers with an
// address (docs/network.md).
type netState struct {
	mgr *network.Manager // nil without network.bridge
	log *slog.Logger

	mu   sync.Mutex
	used map[netip.Addr]string // guarded by mu: address -> container id
	byID map[string]netip.Prefix
}

func newNetState(cfg *config.Config, log *slog.Logger) *netState {
	n := &netState{log: log, used: map[netip.Addr]string{}, byID: map[string]netip.Prefix{}}
	if cfg.Network.Bridge != "" {
		gw, _ := network.ParseGateway(cfg.Network.Gateway) // validated with the configuration
		n.mgr = &network.Manager{Bridge: cfg.Network.Bridge, Gateway: gw, Dir: cfg.NetNSDir()}
	}
	return n
}

// parse validates a requested address: "" is none; an address needs a bridge.
func (n *netState) parse(addr string) (netip.Prefix, error) {
	if addr == "" {
		return netip.Prefix{}, nil
	}
	if n.mgr == nil {
		return netip.Prefix{}, fmt.Errorf("%w: address %s: this node has no network.bridge (--network-bridge), so containers cannot get an address", ErrInvalid, addr)
	}
	p, err := network.ParseAddress(addr)
	if err != nil {
		return netip.Prefix{}, fmt.Errorf("%w: %w", ErrInvalid, err)
	}
	if err := network.CheckGateway(p, n.mgr.Gateway); err != nil {
		return netip.Prefix{}, fmt.Errorf("%w: %w", ErrInvalid, err)
	}
	return p, nil
}

func (n *netState) reserve(id string, p netip.Prefix) error {
	n.mu.Lock()
	defer n.mu.Unlock()
	if other, ok := n.used[p.Addr()]; ok && other != id {
		return fmt.Errorf("address %s is used by container %s on this node: %w", p.Addr(), other, ErrExists)
	}
	n.used[p.Addr()], n.byID[id] = id, p
	return nil
}

func (n *netState) release(id string) {
	n.mu.Lock()
	defer n.mu.Unlock()
	if p, ok := n.byID[id]; ok {
		if n.used[p.Addr()] == id {
			delete(n.used, p.Addr())
		}
		delete(n.byID, id)
	}
}

// address is container id's address, "" for none.
func (n *netState) address(id string) string {
	n.mu.Lock()
	defer n.mu.Unlock()
	if p, ok := n.byID[id]; ok {
		return p.String()
	}
	return ""
}

// attach reserves p for id and prepares its namespace and veth, recorded in
// dir. An invalid p (no address) attaches nothing and returns nil.
func (n *netState) attach(id, dir string, p netip.Prefix) (*network.Endpoint, error) {
	if !p.IsValid() {
		return nil, nil
	}
	if err := n.reserve(id, p); err != nil {
		return nil, err
	}
	ep, err := n.mgr.Setup(id, p)
	if err != nil {
		n.release(id)
		if errors.Is(err, network.ErrNoBridge) {
			return nil, fmt.Errorf("%w: %w", ErrInvalid, err)
		}
		return nil, fmt.Errorf("network: %w", err)
	}
	b, _ := json.Marshal(ep)
	if err := atomicfile.WriteFile(filepath.Join(dir, networkFile), b, 0o600); err != nil {
		_ = n.mgr.Teardown(ep)
		n.release(id)
		return nil, fmt.Errorf("network: %w", err)
	}
	return ep, nil
}

// endpoint reads the endpoint recorded in a container directory; nil if none.
func endpointOf(dir string) (*network.Endpoint, error) {
	b, err := os.ReadFile(filepath.Join(dir, networkFile))
	if errors.Is(err, os.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	var ep network.Endpoint
	if err := json.Unmarshal(b, &ep); err != nil {
		return nil, fmt.Errorf("%s: %w", networkFile, err)
	}
	return &ep, nil
}

// detach removes the container's veth and namespace and frees its address.
// The record goes last, so a failed teardown can be retried.
func (n *netState) detach(id, dir string) error {
	ep, err := endpointOf(dir)
	if err != nil || ep == nil {
		n.release(id)
		return err
	}
	m := n.mgr
	if m == nil {
		m = &network.Manager{} // the bridge was unconfigured since: still remove what exists
	}
	if err := m.Teardown(ep); err != nil {
		return fmt.Errorf("network: %w", err)
	}
	n.release(id)
	return os.Remove(filepath.Join(dir, networkFile))
}

// adopt re-reserves the address of a container found at agent start.
func (n *netState) adopt(id, dir string) {
	ep, err := endpointOf(dir)
	if err != nil {
		n.log.Warn("container network record unreadable", "id", id, "err", err)
		return
	}
	if ep == nil {
		return
	}
	if err := n.reserve(id, ep.Address); err != nil {
		n.log.Warn("container address", "id", id, "err", err)
	}
}

// clearLocks removes network lock rules CRIU left in container id's namespace:
// a dump that stops the container leaves its namespace locked (CRIU unlocks at
// the restore, which goes into another namespace).
func (n *netState) clearLocks(id, dir string) {
	ep, err := endpointOf(dir)
	if err != nil || ep == nil || !network.Exists(ep) {
		return
	}
	removed, err := network.RemoveLockRules(ep.NetNS)
	if err != nil {
		n.log.Warn("remove CRIU network lock rules", "id", id, "err", err)
	} else if len(removed) > 0 {
		n.log.Info("removed CRIU network lock rules", "id", id, "rules", removed)
	}
}

// announce sends gratuitous ARPs for a restored container's address, in the
// background: the container already runs, this only speeds up learning.
func (n *netState) announce(id string, ep *network.Endpoint) {
	if ep == nil {
		return
	}
	go func() {
		if err := network.Announce(ep, 3, 200*time.Millisecond); err != nil {
			n.log.Warn("gratuitous ARP", "id", id, "address", ep.Address, "err", err)
		}
	}()
}

// joinNetwork points a container's spec at its prepared namespace and records
// the address where the checkpoint carries it.
func joinNetwork(s *specs.Spec, ep *network.Endpoint) {
	if ep == nil {
		return
	}
	if s.Linux == nil {
		s.Linux = &specs.Linux{}
	}
	found := false
	for i, ns := range s.Linux.Namespaces {
		if ns.Type == specs.NetworkNamespace {
			s.Linux.Namespaces[i].Path, found = ep.NetNS, true
		}
	}
	if !found {
		s.Linux.Namespaces = append(s.Linux.Namespaces, specs.LinuxNamespace{Type: specs.NetworkNamespace, Path: ep.NetNS})
	}
	if s.Annotations == nil {
		s.Annotations = map[string]string{}
	}
	s.Annotations[checkpoint.AddressAnnotation] = ep.Address.String()
}

// restoreNetwork prepares the network a checkpoint's container had: a fresh
// namespace with the same address on this node's bridge. It fails before
// anything is restored when the checkpoint needs what this node lacks.
func (n *netState) restoreNetwork(id, dir string, m *checkpoint.Manifest) (*network.Endpoint, error) {
	if m.Network == nil || m.Network.NetNSKey == "" || m.Network.Loopback != nil {
		return nil, nil // in the images, or made fresh by the restore
	}
	if m.Network.Address == "" {
		return nil, fmt.Errorf("%w: the checkpoint's network namespace was joined by path and has no address to recreate it with", ErrInvalid)
	}
	p, err := n.parse(m.Network.Address)
	if err != nil {
		return nil, err
	}
	return n.attach(id, dir, p)
}

// sweep removes namespaces and veths whose container directory is gone: what
// an agent that died between preparing a network and recording it left.
func (n *netState) sweep(cfg *config.Config) {
	des, err := os.ReadDir(cfg.NetNSDir())
	if err != nil {
		return
	}
	for _, de := range des {
		id := de.Name()
		if _, err := os.Stat(filepath.Join(cfg.ContainersDir(), id)); err == nil {
			continue
		}
		ep := &network.Endpoint{ID: id, NetNS: filepath.Join(cfg.NetNSDir(), id), HostVeth: network.HostVethName(id)}
		m := n.mgr
		if m == nil {
			m = &network.Manager{}
		}
		if err := m.Teardown(ep); err != nil {
			n.log.Warn("removing a stale container network", "id", id, "err", err)
		} else {
			n.log.Info("removed a stale container network", "id", id)
		}
	}
}
