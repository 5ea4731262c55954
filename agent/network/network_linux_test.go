package network

import (
	"bytes"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/google/nftables"
	"github.com/google/nftables/expr"
	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"
	"golang.org/x/sys/unix"

	"github.com/migratehq/migrate/test/testutil"
)

// hostNS makes a namespace standing for a node: it holds bridge br0 with
// 10.231.0.1/24. Each test has its own, so tests run in parallel.
func hostNS(t *testing.T) string {
	t.Helper()
	testutil.RequireRoot(t)
	path := filepath.Join(t.TempDir(), "host")
	if err := newNetNS(path); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = removeNetNS(path) })
	h := handleAt(t, path)
	br := &netlink.Bridge{LinkAttrs: netlink.LinkAttrs{Name: "br0"}}
	if err := h.LinkAdd(br); err != nil {
		t.Fatal(err)
	}
	if err := h.LinkSetUp(br); err != nil {
		t.Fatal(err)
	}
	a, _ := netlink.ParseAddr("10.231.0.1/24")
	if err := h.AddrAdd(br, a); err != nil {
		t.Fatal(err)
	}
	return path
}

func handleAt(t *testing.T, path string) *netlink.Handle {
	t.Helper()
	ns, err := netns.GetFromPath(path)
	if err != nil {
		t.Fatal(err)
	}
	defer ns.Close()
	h, err := netlink.NewHandleAt(ns)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(h.Close)
	return h
}

// TestSetupTeardown prepares a container namespace on a bridge and checks it
// as a CNI bridge plugin's result would be checked, then talks TCP to it from
// the host and removes it.
func TestSetupTeardown(t *testing.T) {
	t.Parallel()
	host := hostNS(t)
	m := &Manager{Bridge: "br0", Gateway: netip.MustParseAddr("10.231.0.1"), Dir: filepath.Join(t.TempDir(), "netns"), HostNS: host}
	if err := m.Check(); err != nil {
		t.Fatal(err)
	}
	addr := netip.MustParsePrefix("10.231.0.10/24")
	ep, err := m.Setup("web-1", addr)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = m.Teardown(ep) })
	if ep.NetNS != filepath.Join(m.Dir, "web-1") || !Exists(ep) {
		t.Fatalf("endpoint %+v: namespace missing", ep)
	}

	hh, ch := handleAt(t, host), handleAt(t, ep.NetNS)
	veth, err := hh.LinkByName(HostVethName("web-1"))
	if err != nil {
		t.Fatal(err)
	}
	br, _ := hh.LinkByName("br0")
	if veth.Attrs().MasterIndex != br.Attrs().Index || veth.Attrs().Flags&net.FlagUp == 0 {
		t.Errorf("host veth %s: master %d (bridge %d), flags %v", veth.Attrs().Name, veth.Attrs().MasterIndex, br.Attrs().Index, veth.Attrs().Flags)
	}
	eth, err := ch.LinkByName("eth0")
	if err != nil {
		t.Fatal(err)
	}
	if eth.Attrs().HardwareAddr.String() != "02:42:0a:e7:00:0a" || eth.Attrs().Flags&net.FlagUp == 0 {
		t.Errorf("eth0: mac %s flags %v", eth.Attrs().HardwareAddr, eth.Attrs().Flags)
	}
	addrs, _ := ch.AddrList(eth, netlink.FAMILY_V4)
	if len(addrs) != 1 || addrs[0].IPNet.String() != "10.231.0.10/24" {
		t.Errorf("eth0 addresses %v", addrs)
	}
	if lo, _ := ch.LinkByName("lo"); lo == nil || lo.Attrs().Flags&net.FlagUp == 0 {
		t.Error("lo is not up")
	}
	routes, _ := ch.RouteList(nil, netlink.FAMILY_V4)
	gw := false
	for _, r := range routes {
		if r.Dst == nil || r.Dst.String() == "0.0.0.0/0" {
			gw = r.Gw.String() == "10.231.0.1"
		}
	}
	if !gw {
		t.Errorf("no default route via the gateway: %v", routes)
	}

	// A listener in the container's namespace answers a dial from the host's.
	var lis net.Listener
	if err := inNetNS(ep.NetNS, func() (err error) { lis, err = net.Listen("tcp4", "10.231.0.10:0"); return err }); err != nil {
		t.Fatal(err)
	}
	defer lis.Close()
	go func() {
		if c, err := lis.Accept(); err == nil {
			c.Write([]byte("hello"))
			c.Close()
		}
	}()
	var got []byte
	err = inNetNS(host, func() error {
		c, err := net.DialTimeout("tcp4", lis.Addr().String(), 5*time.Second)
		if err != nil {
			return err
		}
		defer c.Close()
		c.SetDeadline(time.Now().Add(5 * time.Second))
		got = make([]byte, 5)
		_, err = c.Read(got)
		return err
	})
	if err != nil || string(got) != "hello" {
		t.Fatalf("dial the container from the host: %q, %v", got, err)
	}

	if err := m.Teardown(ep); err != nil {
		t.Fatal(err)
	}
	if _, err := hh.LinkByName(HostVethName("web-1")); err == nil {
		t.Error("host veth still exists after teardown")
	}
	if _, err := os.Stat(ep.NetNS); !os.IsNotExist(err) {
		t.Errorf("namespace file after teardown: %v", err)
	}
	if err := m.Teardown(ep); err != nil {
		t.Errorf("second teardown: %v", err)
	}
}

func TestSetupNoBridge(t *testing.T) {
	t.Parallel()
	host := hostNS(t)
	m := &Manager{Bridge: "nosuchbr", Dir: filepath.Join(t.TempDir(), "netns"), HostNS: host}
	if _, err := m.Setup("c", netip.MustParsePrefix("10.231.0.11/24")); err == nil {
		t.Fatal("setup without the bridge succeeded")
	}
	if _, err := os.Stat(m.NetNSPath("c")); !os.IsNotExist(err) {
		t.Errorf("failed setup left the namespace file: %v", err)
	}
	m.Bridge = "lo"
	if err := m.Check(); err == nil {
		t.Error("lo accepted as a bridge")
	}
}

// TestAnnounce catches the gratuitous ARP on the host end of the veth.
func TestAnnounce(t *testing.T) {
	t.Parallel()
	host := hostNS(t)
	m := &Manager{Bridge: "br0", Dir: filepath.Join(t.TempDir(), "netns"), HostNS: host}
	addr := netip.MustParsePrefix("10.231.0.12/24")
	ep, err := m.Setup("garp", addr)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = m.Teardown(ep) })
	var fd int
	err = inNetNS(host, func() error {
		ifi, err := net.InterfaceByName(ep.HostVeth)
		if err != nil {
			return err
		}
		// ETH_P_ALL: a bridge port's frames reach only the taps that see
		// every protocol; the bridge consumes them before ARP's.
		fd, err = unix.Socket(unix.AF_PACKET, unix.SOCK_RAW|unix.SOCK_CLOEXEC, int(htons(unix.ETH_P_ALL)))
		if err != nil {
			return err
		}
		return unix.Bind(fd, &unix.SockaddrLinklayer{Protocol: htons(unix.ETH_P_ALL), Ifindex: ifi.Index})
	})
	if err != nil {
		t.Fatal(err)
	}
	defer unix.Close(fd)
	_ = unix.SetsockoptTimeval(fd, unix.SOL_SOCKET, unix.SO_RCVTIMEO, &unix.Timeval{Sec: 5})
	if err := Announce(ep, 3, 200*time.Millisecond); err != nil {
		t.Fatal(err)
	}
	want := garpFrame(MAC(addr.Addr()), addr.Addr())
	buf := make([]byte, 1500)
	for {
		n, _, err := unix.Recvfrom(fd, buf, 0)
		if err != nil {
			t.Fatalf("no gratuitous ARP seen: %v", err)
		}
		if n >= len(want) && bytes.Equal(buf[:len(want)], want) {
			return
		}
	}
}

// TestLockRules builds what CRIU's two lock backends leave in a namespace and
// checks both are found and removed, and nothing else is touched.
func TestLockRules(t *testing.T) {
	t.Parallel()
	testutil.RequireRoot(t)
	path := filepath.Join(t.TempDir(), "ns")
	if err := newNetNS(path); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = removeNetNS(path) })
	c, done, err := nftConn(path)
	if err != nil {
		t.Fatal(err)
	}
	defer done()
	// nftables backend: table inet CRIU-<id>.
	crt := c.AddTable(&nftables.Table{Family: nftables.TableFamilyINet, Name: "CRIU-test"})
	c.AddChain(&nftables.Chain{Table: crt, Name: "output", Type: nftables.ChainTypeFilter, Hooknum: nftables.ChainHookOutput, Priority: nftables.ChainPriorityFilter})
	// iptables(-nft) backend: chain CRIU in ip filter, jumped to from INPUT.
	ft := c.AddTable(&nftables.Table{Family: nftables.TableFamilyIPv4, Name: "filter"})
	input := c.AddChain(&nftables.Chain{Table: ft, Name: "INPUT", Type: nftables.ChainTypeFilter, Hooknum: nftables.ChainHookInput, Priority: nftables.ChainPriorityFilter})
	criuCh := c.AddChain(&nftables.Chain{Table: ft, Name: "CRIU"})
	c.AddRule(&nftables.Rule{Table: ft, Chain: criuCh, Exprs: []expr.Any{&expr.Verdict{Kind: expr.VerdictDrop}}})
	c.AddRule(&nftables.Rule{Table: ft, Chain: input, Exprs: []expr.Any{&expr.Verdict{Kind: expr.VerdictJump, Chain: "CRIU"}}})
	// Someone else's table stays.
	c.AddTable(&nftables.Table{Family: nftables.TableFamilyINet, Name: "mine"})
	if err := c.Flush(); err != nil {
		t.Fatal(err)
	}
	found, err := LockRules(path)
	if err != nil || len(found) != 2 {
		t.Fatalf("LockRules = %v, %v; want the table and the chain", found, err)
	}
	removed, err := RemoveLockRules(path)
	if err != nil || len(removed) != 2 {
		t.Fatalf("RemoveLockRules = %v, %v", removed, err)
	}
	if found, err := LockRules(path); err != nil || len(found) != 0 {
		t.Fatalf("after removal: %v, %v", found, err)
	}
	tables, _ := c.ListTables()
	names := map[string]bool{}
	for _, tb := range tables {
		names[tb.Name] = true
	}
	if !names["mine"] || !names["filter"] {
		t.Errorf("tables left %v: want mine and filter kept", names)
	}
	rules, err := c.GetRules(ft, input)
	if err != nil || len(rules) != 0 {
		t.Errorf("INPUT rules after removal: %d, %v", len(rules), err)
	}
}
