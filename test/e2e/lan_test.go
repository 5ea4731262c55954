package e2e

import (
	"errors"
	"fmt"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/migratehq/migrate/test/testutil"
)

// A lan is a "switch" for tests: a network namespace holding a bridge, to which host
// network namespaces are attached by veth pairs. Each lan has its own 10.<k>.0.0/24
// subnet and names starting with "mlan<k>", k unique on the machine while the lan
// exists: the switch namespace's file is created with O_EXCL by `ip netns add`, so
// concurrent test processes cannot claim the same k. Everything is removed in
// t.Cleanup.
//
//	  host netns "mlan<k>-<name>"                 switch netns "mlan<k>"
//	+------------------------------+          +--------------------------+
//	| br0 (10.<k>.0.<i>/24)        |          | br0                      |
//	|  `- uplink  <===== veth =====|==========|=> p<i>-<name> (port)     |
//	| lo                           |          |                          |
//	+------------------------------+          +--------------------------+
//
// A host's address sits on its own bridge br0, with the uplink enslaved, so that
// containers' veths can be enslaved to br0 later and share the subnet.
type lan struct {
	t     *testing.T
	k     int
	sw    string // switch netns name
	hosts []*lanHost
}

// lanHost is a network namespace attached to a lan.
type lanHost struct {
	Name string // the name given to host()
	NS   string // /run/netns/<netns name>
	IP   string // its address on br0, without the prefix length

	netns string // netns name
	port  string // its port's name in the switch netns
}

// lanMax is the highest k: 10.<k>.0.0/24.
const lanMax = 254

// newLAN claims a free k and creates the switch namespace and its bridge.
func newLAN(t *testing.T) *lan {
	t.Helper()
	testutil.RequireRoot(t)
	if _, err := exec.LookPath("ip"); err != nil {
		t.Skip("iproute2 (ip) not installed")
	}
	l := &lan{t: t}
	start := rand.IntN(lanMax)
	for i := 0; i < lanMax && l.sw == ""; i++ {
		k := (start+i)%lanMax + 1
		name := fmt.Sprintf("mlan%d", k)
		out, err := exec.Command("ip", "netns", "add", name).CombinedOutput()
		if err == nil {
			l.k, l.sw = k, name
			break
		}
		if !strings.Contains(string(out), "exists") {
			t.Fatalf("ip netns add %s: %v: %s", name, err, out)
		}
	}
	if l.sw == "" {
		t.Fatalf("no free lan: /run/netns/mlan1..mlan%d all exist", lanMax)
	}
	t.Cleanup(l.remove)
	l.ip("-n", l.sw, "link", "set", "lo", "up")
	l.ip("-n", l.sw, "link", "add", "br0", "type", "bridge")
	l.ip("-n", l.sw, "link", "set", "br0", "up")
	return l
}

// addr is the lan's address i.
func (l *lan) addr(i int) string { return fmt.Sprintf("10.%d.0.%d", l.k, i) }

// prefix is the prefix length of the lan's subnet.
func (l *lan) prefix() int { return 24 }

// host makes a network namespace attached to the switch, with address addr(i) on
// its bridge br0.
func (l *lan) host(name string, i int) *lanHost {
	l.t.Helper()
	if i < 1 || i > 254 {
		l.t.Fatalf("lan host %s: address %d out of 1..254", name, i)
	}
	h := &lanHost{Name: name, IP: l.addr(i), netns: l.sw + "-" + name}
	h.NS = filepath.Join("/run/netns", h.netns)
	// The port is named after the host in the switch namespace: interface names are
	// at most 15 bytes.
	h.port = fmt.Sprintf("p%d-%s", i, name)
	if len(h.port) > 15 {
		h.port = h.port[:15]
	}
	l.ip("netns", "add", h.netns)
	l.hosts = append(l.hosts, h)
	l.ip("-n", h.netns, "link", "set", "lo", "up")
	l.ip("-n", l.sw, "link", "add", h.port, "type", "veth", "peer", "name", "uplink", "netns", h.netns)
	l.ip("-n", l.sw, "link", "set", h.port, "master", "br0", "up")
	l.ip("-n", h.netns, "link", "add", "br0", "type", "bridge")
	l.ip("-n", h.netns, "link", "set", "uplink", "master", "br0", "up")
	l.ip("-n", h.netns, "link", "set", "br0", "up")
	l.ip("-n", h.netns, "addr", "add", fmt.Sprintf("%s/%d", h.IP, l.prefix()), "dev", "br0")
	return h
}

// wrap is the command prefix that runs a command in the host's network namespace.
// nsenter, not `ip netns exec`: the latter remounts /sys in a new mount namespace,
// which hides /sys/fs/cgroup from the agent.
func (h *lanHost) wrap() []string { return []string{"nsenter", "--net=" + h.NS, "--"} }

// cut takes h's link to the switch down, both ends.
func (l *lan) cut(h *lanHost) {
	l.t.Helper()
	l.ip("-n", l.sw, "link", "set", h.port, "down")
	l.ip("-n", h.netns, "link", "set", "uplink", "down")
}

// heal brings h's link to the switch back up.
func (l *lan) heal(h *lanHost) {
	l.t.Helper()
	l.ip("-n", l.sw, "link", "set", h.port, "up")
	l.ip("-n", h.netns, "link", "set", "uplink", "up")
}

func (l *lan) ip(args ...string) {
	l.t.Helper()
	if out, err := exec.Command("ip", args...).CombinedOutput(); err != nil {
		l.t.Fatalf("ip %s: %v: %s", strings.Join(args, " "), err, out)
	}
}

// remove deletes the hosts' namespaces and then the switch's. Deleting a namespace
// destroys its veths and bridges once no process is left in it; processes started
// in it (agents) are stopped by cleanups registered after newLAN, which run first.
func (l *lan) remove() {
	var errs []error
	for _, h := range l.hosts {
		if out, err := exec.Command("ip", "netns", "del", h.netns).CombinedOutput(); err != nil {
			errs = append(errs, fmt.Errorf("ip netns del %s: %v: %s", h.netns, err, out))
		}
	}
	if out, err := exec.Command("ip", "netns", "del", l.sw).CombinedOutput(); err != nil {
		errs = append(errs, fmt.Errorf("ip netns del %s: %v: %s", l.sw, err, out))
	}
	if err := errors.Join(errs...); err != nil {
		l.t.Errorf("lan cleanup: %v", err)
	}
}

// lanPeerPort is the agents' peer port: each host has its own network namespace,
// so one fixed port serves every test.
const lanPeerPort = 7443

// agentNetworkSupported says whether the migrated under test has a network
// section in its configuration (the bridge containers are attached to): its
// effective configuration lists every field.
var agentNetworkSupported = sync.OnceValue(func() bool {
	f, err := os.CreateTemp("", "migrated-empty-*.yaml")
	if err != nil {
		return false
	}
	f.Close()
	defer os.Remove(f.Name())
	out, err := exec.Command(migratedBin, "daemon", "--config", f.Name(), "--print-config").Output()
	return err == nil && strings.Contains("\n"+string(out), "\nnetwork:")
})

// lanPair starts two agents of one cluster, n1 in host h1 (lan address 1) and n2 in
// host h2 (address 2), peers of each other at their host addresses; extra1 and
// extra2 are added to their configurations. When migrated supports it, each agent is
// given `network: {bridge: br0}`. Their control sockets are unix sockets on the
// host's file system, reachable from the test as usual.
func lanPair(t *testing.T, extra1, extra2 string) (n1, n2 *agent, l *lan, h1, h2 *lanHost) {
	t.Helper()
	l = newLAN(t)
	h1, h2 = l.host("n1", 1), l.host("n2", 2)
	bootstrap := newAgent(t, agentConfig{node: "boot"})
	dir := cluster(t, bootstrap, "n1", "n2")
	bootstrap.stop()
	network := ""
	if agentNetworkSupported() {
		network = "network:\n  bridge: br0\n"
	}
	cfg := func(self *lanHost, peer *lanHost) string {
		return fmt.Sprintf("tls:\n  dir: %s\npeer:\n  listen: %s:%d\npeers:\n  %s: %s:%d\n%s",
			dir, self.IP, lanPeerPort, peer.Name, peer.IP, lanPeerPort, network)
	}
	n1 = newAgent(t, agentConfig{node: "n1", wrap: h1.wrap(), extra: cfg(h1, h2) + extra1})
	n2 = newAgent(t, agentConfig{node: "n2", wrap: h2.wrap(), extra: cfg(h2, h1) + extra2})
	return n1, n2, l, h1, h2
}

// waitReachable waits until a's view of peer has reachable == want.
func (a *agent) waitReachable(peer string, want bool, within time.Duration) nodeStatus {
	a.t.Helper()
	deadline := time.Now().Add(within)
	for {
		n := a.nodes()[peer]
		if n.Reachable == want {
			return n
		}
		if time.Now().After(deadline) {
			a.t.Fatalf("%s: peer %s reachable=%v after %v, want %v (error %q)", a.cfgPath, peer, n.Reachable, within, want, n.Error)
		}
		time.Sleep(200 * time.Millisecond)
	}
}

// TestLANPeers starts two agents in their own network namespaces on one lan: each
// reaches the other at its lan address; cutting n2's link makes it unreachable from
// n1, healing it makes it reachable again.
func TestLANPeers(t *testing.T) {
	t.Parallel()
	n1, n2, l, h1, h2 := lanPair(t, "", "")
	if got := n1.nodes()["n2"]; !got.Reachable {
		t.Fatalf("n1 does not reach n2 at %s: %q", h2.IP, got.Error)
	}
	if got := n2.nodes()["n1"]; !got.Reachable {
		t.Fatalf("n2 does not reach n1 at %s: %q", h1.IP, got.Error)
	}
	// The agent really is in its host's namespace: its peer port is not on the
	// test's loopback, and the host's address is not on the test's interfaces.
	out, err := exec.Command("ip", "-o", "addr").CombinedOutput()
	if err != nil {
		t.Fatalf("ip addr: %v: %s", err, out)
	}
	if strings.Contains(string(out), " "+h1.IP+"/") {
		t.Fatalf("%s is an address of the test's own network namespace", h1.IP)
	}

	l.cut(h2)
	if got := n1.waitReachable("n2", false, 20*time.Second); got.Error == "" {
		t.Errorf("n2 unreachable without an error: %+v", got)
	}
	l.heal(h2)
	n1.waitReachable("n2", true, 30*time.Second)
	n2.waitReachable("n1", true, 30*time.Second)
}
