package network

import (
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"fmt"
	"net"
	"net/netip"
)

// ErrInvalid is wrapped by errors about bad input: an address, a prefix, a
// configuration.
var ErrInvalid = errors.New("invalid network setting")

// ContainerIfName is the container's end of its veth pair.
const ContainerIfName = "eth0"

// ParseAddress parses a container address in CIDR form ("10.88.0.10/24"). Only
// IPv4 host addresses are accepted: not the network or broadcast address of
// the prefix, not loopback, multicast or unspecified, and a prefix of 8-30 bits
// (/31 and /32 leave no room for a gateway on the same link).
func ParseAddress(s string) (netip.Prefix, error) {
	p, err := netip.ParsePrefix(s)
	if err != nil {
		return netip.Prefix{}, fmt.Errorf("%w: address %q: want an IPv4 address with its prefix length, like 10.88.0.10/24", ErrInvalid, s)
	}
	a := p.Addr()
	if !a.Is4() {
		return netip.Prefix{}, fmt.Errorf("%w: address %q: only IPv4 is supported", ErrInvalid, s)
	}
	if p.Bits() < 8 || p.Bits() > 30 {
		return netip.Prefix{}, fmt.Errorf("%w: address %q: prefix length must be 8-30", ErrInvalid, s)
	}
	if a.IsLoopback() || a.IsMulticast() || a.IsUnspecified() || a.IsLinkLocalUnicast() || a == netip.AddrFrom4([4]byte{255, 255, 255, 255}) {
		return netip.Prefix{}, fmt.Errorf("%w: address %q is not a unicast host address", ErrInvalid, s)
	}
	if a == p.Masked().Addr() {
		return netip.Prefix{}, fmt.Errorf("%w: address %q is the network address of its prefix", ErrInvalid, s)
	}
	if a == broadcast(p) {
		return netip.Prefix{}, fmt.Errorf("%w: address %q is the broadcast address of its prefix", ErrInvalid, s)
	}
	return p, nil
}

// broadcast is the last address of p's network.
func broadcast(p netip.Prefix) netip.Addr {
	b := p.Masked().Addr().As4()
	v := binary.BigEndian.Uint32(b[:]) | (1<<(32-p.Bits()) - 1)
	binary.BigEndian.PutUint32(b[:], v)
	return netip.AddrFrom4(b)
}

// ParseGateway parses a gateway address ("" is none).
func ParseGateway(s string) (netip.Addr, error) {
	if s == "" {
		return netip.Addr{}, nil
	}
	a, err := netip.ParseAddr(s)
	if err != nil || !a.Is4() || a.IsUnspecified() || a.IsMulticast() {
		return netip.Addr{}, fmt.Errorf("%w: gateway %q is not an IPv4 unicast address", ErrInvalid, s)
	}
	return a, nil
}

// CheckGateway reports whether gw (if any) is on addr's link: the default
// route goes through it without a further route.
func CheckGateway(addr netip.Prefix, gw netip.Addr) error {
	if !gw.IsValid() {
		return nil
	}
	if !addr.Masked().Contains(gw) {
		return fmt.Errorf("%w: gateway %s is not in %s", ErrInvalid, gw, addr.Masked())
	}
	if gw == addr.Addr() {
		return fmt.Errorf("%w: address %s is the gateway's", ErrInvalid, addr)
	}
	return nil
}

// MAC is the container's MAC address for ip: 02:42 (locally administered,
// unicast) followed by the four bytes of the address. Every node computes the
// same one, so a moved container keeps its MAC without storing it, and
// neighbours' ARP caches stay right across a move.
func MAC(ip netip.Addr) net.HardwareAddr {
	b := ip.As4()
	return net.HardwareAddr{0x02, 0x42, b[0], b[1], b[2], b[3]}
}

// hostMAC is the MAC of the host end of the container's veth: fe:42 and the
// address's bytes. A Linux bridge whose MAC was not set takes the lowest MAC of
// its ports; a port starting with fe (as libvirt's taps) never is the lowest,
// so attaching or removing a container does not change the node's own MAC
// under the node's address (peers' ARP caches would go stale).
func hostMAC(ip netip.Addr) net.HardwareAddr {
	b := ip.As4()
	return net.HardwareAddr{0xfe, 0x42, b[0], b[1], b[2], b[3]}
}

// HostVethName is the name of the host end of container id's veth pair: a
// fixed prefix and a hash of the id, because ids are longer than an interface
// name may be (15 bytes).
func HostVethName(id string) string {
	sum := sha256.Sum256([]byte(id))
	return "mgv" + hex.EncodeToString(sum[:6])
}

// garpFrame is a gratuitous ARP request for ip from mac: an Ethernet broadcast
// whose sender and target protocol addresses are both ip. Switches learn the
// port of mac from it, neighbours refresh their cache entry for ip.
func garpFrame(mac net.HardwareAddr, ip netip.Addr) []byte {
	f := make([]byte, 42)
	copy(f[0:6], []byte{0xff, 0xff, 0xff, 0xff, 0xff, 0xff})
	copy(f[6:12], mac)
	binary.BigEndian.PutUint16(f[12:14], 0x0806) // ARP
	a := f[14:]
	binary.BigEndian.PutUint16(a[0:2], 1)      // Ethernet
	binary.BigEndian.PutUint16(a[2:4], 0x0800) // IPv4
	a[4], a[5] = 6, 4
	binary.BigEndian.PutUint16(a[6:8], 1) // request
	ip4 := ip.As4()
	copy(a[8:14], mac)
	copy(a[14:18], ip4[:])
	// Target hardware address stays zero.
	copy(a[24:28], ip4[:])
	return f
}
