package network

import (
	"errors"
	"fmt"
	"net"
	"net/netip"
	"path/filepath"
	"time"

	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"
	"golang.org/x/sys/unix"
)

// ErrNoBridge is returned when the node has no bridge configured or it is missing.
var ErrNoBridge = errors.New("no network bridge on this node")

// Manager prepares container network namespaces on one node.
type Manager struct {
	// Bridge is an existing Linux bridge in the host namespace, joined to
	// the network the nodes share.
	Bridge string
	// Gateway, when valid, is the containers' default route.
	Gateway netip.Addr
	// Dir holds the namespace files, one per container id.
	Dir string
	// HostNS is the file of the namespace holding Bridge; "" means the
	// caller's (the agent's) own.
	HostNS string
}

// Endpoint is a container's attachment to the shared network.
type Endpoint struct {
	ID       string       `json:"id"`
	Address  netip.Prefix `json:"address"`
	NetNS    string       `json:"netns"`    // the namespace file
	HostVeth string       `json:"hostVeth"` // host end, on the bridge
}

// NetNSPath is where container id's namespace file is.
func (m *Manager) NetNSPath(id string) string { return filepath.Join(m.Dir, id) }

func (m *Manager) hostHandle() (*netlink.Handle, error) {
	if m.HostNS == "" {
		return netlink.NewHandle()
	}
	ns, err := netns.GetFromPath(m.HostNS)
	if err != nil {
		return nil, err
	}
	defer ns.Close()
	return netlink.NewHandleAt(ns)
}

// Check verifies that the bridge exists and is a bridge.
func (m *Manager) Check() error {
	if m.Bridge == "" {
		return ErrNoBridge
	}
	h, err := m.hostHandle()
	if err != nil {
		return fmt.Errorf("netlink: %w", err)
	}
	defer h.Close()
	_, err = m.bridge(h)
	return err
}

func (m *Manager) bridge(h *netlink.Handle) (netlink.Link, error) {
	br, err := h.LinkByName(m.Bridge)
	if err != nil {
		return nil, fmt.Errorf("%w: bridge %s: %w", ErrNoBridge, m.Bridge, err)
	}
	if br.Type() != "bridge" {
		return nil, fmt.Errorf("%w: %s is a %s, not a bridge", ErrNoBridge, m.Bridge, br.Type())
	}
	return br, nil
}

// Setup makes container id's namespace with addr on eth0 and the host end of
// its veth on the bridge. On failure nothing is left.
func (m *Manager) Setup(id string, addr netip.Prefix) (_ *Endpoint, retErr error) {
	if err := CheckGateway(addr, m.Gateway); err != nil {
		return nil, err
	}
	h, err := m.hostHandle()
	if err != nil {
		return nil, fmt.Errorf("netlink: %w", err)
	}
	defer h.Close()
	br, err := m.bridge(h)
	if err != nil {
		return nil, err
	}
	ep := &Endpoint{ID: id, Address: addr, NetNS: m.NetNSPath(id), HostVeth: HostVethName(id)}
	if err := newNetNS(ep.NetNS); err != nil {
		return nil, err
	}
	defer func() {
		if retErr != nil {
			_ = m.Teardown(ep)
		}
	}()
	ns, err := netns.GetFromPath(ep.NetNS)
	if err != nil {
		return nil, fmt.Errorf("netns %s: %w", ep.NetNS, err)
	}
	defer ns.Close()
	// A host end left by a crashed agent would make the add fail.
	if old, err := h.LinkByName(ep.HostVeth); err == nil {
		_ = h.LinkDel(old)
	}
	veth := &netlink.Veth{
		LinkAttrs: netlink.LinkAttrs{Name: ep.HostVeth, MTU: br.Attrs().MTU, MasterIndex: br.Attrs().Index, HardwareAddr: hostMAC(addr.Addr())},
		PeerName:  ContainerIfName, PeerHardwareAddr: MAC(addr.Addr()), PeerNamespace: netlink.NsFd(ns),
	}
	if err := h.LinkAdd(veth); err != nil {
		return nil, fmt.Errorf("veth %s: %w", ep.HostVeth, err)
	}
	host, err := h.LinkByName(ep.HostVeth)
	if err != nil {
		return nil, fmt.Errorf("veth %s: %w", ep.HostVeth, err)
	}
	if host.Attrs().MasterIndex != br.Attrs().Index {
		if err := h.LinkSetMaster(host, br); err != nil {
			return nil, fmt.Errorf("veth %s: join %s: %w", ep.HostVeth, m.Bridge, err)
		}
	}
	if err := h.LinkSetUp(host); err != nil {
		return nil, fmt.Errorf("veth %s: up: %w", ep.HostVeth, err)
	}
	if err := m.configure(ns, addr); err != nil {
		return nil, fmt.Errorf("netns %s: %w", ep.NetNS, err)
	}
	return ep, nil
}

// configure sets up the container side: lo and eth0 up, the address, the
// default route.
func (m *Manager) configure(ns netns.NsHandle, addr netip.Prefix) error {
	h, err := netlink.NewHandleAt(ns)
	if err != nil {
		return err
	}
	defer h.Close()
	if err := linkUp(h, "lo"); err != nil {
		return err
	}
	eth, err := h.LinkByName(ContainerIfName)
	if err != nil {
		return err
	}
	ipn := &net.IPNet{IP: addr.Addr().AsSlice(), Mask: net.CIDRMask(addr.Bits(), 32)}
	// No duplicate address detection delay: the address is usable at once.
	if err := h.AddrAdd(eth, &netlink.Addr{IPNet: ipn}); err != nil {
		return fmt.Errorf("address %s: %w", addr, err)
	}
	if err := h.LinkSetUp(eth); err != nil {
		return fmt.Errorf("%s up: %w", ContainerIfName, err)
	}
	if m.Gateway.IsValid() {
		r := &netlink.Route{LinkIndex: eth.Attrs().Index, Gw: m.Gateway.AsSlice()}
		if err := h.RouteAdd(r); err != nil {
			return fmt.Errorf("default route via %s: %w", m.Gateway, err)
		}
	}
	return nil
}

// Teardown removes the veth pair and the namespace. Missing pieces are fine:
// it also finishes an interrupted setup or teardown.
func (m *Manager) Teardown(ep *Endpoint) error {
	var errs []error
	if h, err := m.hostHandle(); err == nil {
		if l, err := h.LinkByName(ep.HostVeth); err == nil {
			// Deleting one end deletes the pair.
			if err := h.LinkDel(l); err != nil {
				errs = append(errs, fmt.Errorf("veth %s: %w", ep.HostVeth, err))
			}
		}
		h.Close()
	} else {
		errs = append(errs, fmt.Errorf("netlink: %w", err))
	}
	if err := removeNetNS(ep.NetNS); err != nil {
		errs = append(errs, err)
	}
	return errors.Join(errs...)
}

// Announce sends gratuitous ARPs for ep's address from inside its namespace,
// so the bridges on the way learn the container's new port and neighbours
// refresh their caches at once rather than when their entries age out.
func Announce(ep *Endpoint, count int, interval time.Duration) error {
	mac := MAC(ep.Address.Addr())
	frame := garpFrame(mac, ep.Address.Addr())
	return inNetNS(ep.NetNS, func() error {
		ifi, err := net.InterfaceByName(ContainerIfName)
		if err != nil {
			return err
		}
		fd, err := unix.Socket(unix.AF_PACKET, unix.SOCK_RAW|unix.SOCK_CLOEXEC, int(htons(unix.ETH_P_ARP)))
		if err != nil {
			return fmt.Errorf("packet socket: %w", err)
		}
		defer unix.Close(fd)
		to := &unix.SockaddrLinklayer{Ifindex: ifi.Index, Protocol: htons(unix.ETH_P_ARP), Halen: 6}
		copy(to.Addr[:], []byte{0xff, 0xff, 0xff, 0xff, 0xff, 0xff})
		for i := 0; i < count; i++ {
			if i > 0 {
				time.Sleep(interval)
			}
			if err := unix.Sendto(fd, frame, 0, to); err != nil {
				return fmt.Errorf("gratuitous ARP: %w", err)
			}
		}
		return nil
	})
}

func htons(v uint16) uint16 { return v<<8 | v>>8 }

// Exists reports whether ep's namespace file is still a mounted namespace.
func Exists(ep *Endpoint) bool {
	ns, err := netns.GetFromPath(ep.NetNS)
	if err != nil {
		return false
	}
	ns.Close()
	var st unix.Statfs_t
	return unix.Statfs(ep.NetNS, &st) == nil && st.Type == unix.NSFS_MAGIC
}

// Path is ep's namespace file, "" for a nil endpoint.
func (ep *Endpoint) Path() string {
	if ep == nil {
		return ""
	}
	return ep.NetNS
}
