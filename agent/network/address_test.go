package network

import (
	"bytes"
	"errors"
	"net/netip"
	"testing"
)

func TestParseAddress(t *testing.T) {
	for _, ok := range []string{"10.88.0.10/24", "192.168.1.254/24", "10.0.0.1/8", "172.16.5.1/30"} {
		p, err := ParseAddress(ok)
		if err != nil {
			t.Errorf("ParseAddress(%q): %v", ok, err)
			continue
		}
		if p.String() != ok {
			t.Errorf("ParseAddress(%q) = %s", ok, p)
		}
	}
	for _, bad := range []string{"", "10.88.0.10", "10.88.0.0/24", "10.88.0.255/24", "fd00::1/64", "127.0.0.5/8",
		"224.0.0.5/24", "0.0.0.0/8", "169.254.1.1/16", "10.88.0.10/31", "10.88.0.10/32", "10.88.0.10/7", "10.88.0.300/24", "x/24"} {
		if p, err := ParseAddress(bad); err == nil || !errors.Is(err, ErrInvalid) {
			t.Errorf("ParseAddress(%q) = %v, %v; want ErrInvalid", bad, p, err)
		}
	}
}

func TestGateway(t *testing.T) {
	p := netip.MustParsePrefix("10.88.0.10/24")
	if gw, err := ParseGateway(""); err != nil || gw.IsValid() {
		t.Errorf("empty gateway: %v %v", gw, err)
	}
	for _, bad := range []string{"10.88.0", "fd00::1", "0.0.0.0"} {
		if _, err := ParseGateway(bad); !errors.Is(err, ErrInvalid) {
			t.Errorf("ParseGateway(%q): %v", bad, err)
		}
	}
	if err := CheckGateway(p, netip.MustParseAddr("10.88.0.1")); err != nil {
		t.Error(err)
	}
	if err := CheckGateway(p, netip.MustParseAddr("10.89.0.1")); !errors.Is(err, ErrInvalid) {
		t.Errorf("gateway off-link: %v", err)
	}
	if err := CheckGateway(p, netip.MustParseAddr("10.88.0.10")); !errors.Is(err, ErrInvalid) {
		t.Errorf("gateway is the address: %v", err)
	}
	if err := CheckGateway(p, netip.Addr{}); err != nil {
		t.Errorf("no gateway: %v", err)
	}
}

func TestMAC(t *testing.T) {
	got := MAC(netip.MustParseAddr("10.88.0.10")).String()
	if got != "02:42:0a:58:00:0a" {
		t.Errorf("MAC = %s", got)
	}
	m := MAC(netip.MustParseAddr("192.168.1.2"))
	if m[0]&1 != 0 || m[0]&2 == 0 {
		t.Errorf("MAC %s must be unicast and locally administered", m)
	}
}

func TestHostMAC(t *testing.T) {
	m := hostMAC(netip.MustParseAddr("10.88.0.10"))
	if m.String() != "fe:42:0a:58:00:0a" || m[0]&1 != 0 || m[0]&2 == 0 {
		t.Errorf("host MAC %s", m)
	}
}

func TestHostVethName(t *testing.T) {
	a, b := HostVethName("web"), HostVethName("web2")
	if a == b || len(a) > 15 || HostVethName("web") != a {
		t.Errorf("names %q %q", a, b)
	}
	long := HostVethName(string(bytes.Repeat([]byte("x"), 128)))
	if len(long) > 15 {
		t.Errorf("%q is longer than an interface name may be", long)
	}
}

func TestGARPFrame(t *testing.T) {
	ip := netip.MustParseAddr("10.88.0.10")
	mac := MAC(ip)
	f := garpFrame(mac, ip)
	want := []byte{
		0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x02, 0x42, 10, 88, 0, 10, 0x08, 0x06, // Ethernet
		0, 1, 0x08, 0, 6, 4, 0, 1, // ARP request, Ethernet/IPv4
		0x02, 0x42, 10, 88, 0, 10, 10, 88, 0, 10, // sender
		0, 0, 0, 0, 0, 0, 10, 88, 0, 10, // target
	}
	if !bytes.Equal(f, want) {
		t.Errorf("frame\n% x\nwant\n% x", f, want)
	}
}
