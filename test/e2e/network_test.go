package e2e

import (
	"context"
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/migratehq/migrate/agent/network"
	"github.com/migratehq/migrate/test/testutil"
)

// httpCounterBundle runs test/workloads/httpcounter on port 8080.
func httpCounterBundle(t *testing.T) string {
	t.Helper()
	return testutil.NewBusyboxBundle(t, "/usr/local/bin/httpcounter", "-port", "8080")
}

// httpCount asks the httpcounter at ip:8080 for its next count from host h (busybox
// wget in h's network namespace), retrying for up to within while the container is
// frozen or moving.
func httpCount(t *testing.T, h *lanHost, ip string, within time.Duration) int {
	t.Helper()
	deadline := time.Now().Add(within)
	for {
		// busybox's wget -T crashes here: bound each try with a context instead.
		argv := append(h.wrap(), "busybox", "wget", "-q", "-O", "-", "http://"+ip+":8080/")
		ctx, cancel := context.WithTimeout(context.Background(), 3*time.Second)
		out, err := exec.CommandContext(ctx, argv[0], argv[1:]...).CombinedOutput()
		cancel()
		if err == nil {
			n, cerr := strconv.Atoi(strings.TrimSpace(string(out)))
			if cerr != nil {
				t.Fatalf("httpcounter at %s answered %q", ip, out)
			}
			return n
		}
		if time.Now().After(deadline) {
			t.Fatalf("httpcounter at %s from %s: %v: %s", ip, h.Name, err, out)
		}
		time.Sleep(200 * time.Millisecond)
	}
}

// noCRIULocksAt fails the test if CRIU's network lock rules (nft tables CRIU-*, or
// iptables chains CRIU) are in the network namespace at path.
func noCRIULocksAt(t *testing.T, what, path string) {
	t.Helper()
	rules, err := network.LockRules(path)
	if err != nil {
		t.Errorf("%s: %v", what, err)
	} else if len(rules) != 0 {
		t.Errorf("%s: CRIU lock rules left: %v", what, rules)
	}
}

// hostLink reports whether interface name exists in host h's namespace.
func hostLink(t *testing.T, h *lanHost, name string) bool {
	t.Helper()
	return exec.Command("ip", "-n", filepath.Base(h.NS), "link", "show", name).Run() == nil
}

// inspectAddress is the address `inspect` shows for id.
func inspectAddress(t *testing.T, a *agent, id string) string {
	t.Helper()
	r := must(t, a.ctl("inspect", id), "inspect "+id)
	var out struct {
		Container struct {
			Address string `json:"address"`
		} `json:"container"`
	}
	if err := json.Unmarshal([]byte(r.stdout), &out); err != nil {
		t.Fatalf("inspect: %v: %s", err, r.stdout)
	}
	return out.Container.Address
}

// TestNetworkAddressMoves runs an HTTP counter with an address of its own on the
// nodes' shared network and moves it n1 -> n2 -> n1: a client elsewhere on the
// network reaches it at the same address throughout and the count goes on; the
// source's veth and namespace are gone after each move, and no CRIU lock rule is left
// in any namespace. A stopping checkpoint and a restore keep the address too, and rm
// removes the veth and the namespace.
func TestNetworkAddressMoves(t *testing.T) {
	t.Parallel()
	if !agentNetworkSupported() {
		t.Fatal("migrated has no network configuration")
	}
	n1, n2, l, h1, h2 := lanPair(t, "", "")
	client := l.host("client", 9)
	id := containerID(t, "web")
	ip := l.addr(50)
	cidr := ip + "/" + strconv.Itoa(l.prefix())
	bundle := httpCounterBundle(t)
	veth := network.HostVethName(id)
	netns1, netns2 := filepath.Join(n1.data, "netns", id), filepath.Join(n2.data, "netns", id)

	must(t, n1.ctl("run", "--ip", cidr, "-b", bundle, id), "run --ip")
	n1.waitStatus(id, running)
	if got := inspectAddress(t, n1, id); got != cidr {
		t.Errorf("inspect shows address %q, want %q", got, cidr)
	}
	if !hostLink(t, h1, veth) {
		t.Errorf("host end %s of the veth is not in n1's namespace", veth)
	}
	first := httpCount(t, client, ip, 15*time.Second)
	last := httpCount(t, client, ip, 5*time.Second)
	if last != first+1 {
		t.Fatalf("counts %d then %d", first, last)
	}

	// Refusals: the address is taken; an address that is not a host address.
	other := containerID(t, "dup")
	wantFail(t, n1.ctl("run", "--ip", cidr, "-b", bundle, other), 4, "is used by container")
	wantFail(t, n1.ctl("run", "--ip", l.addr(0)+"/24", "-b", bundle, other), 2, "network address")
	wantFail(t, n1.ctl("run", "--ip", "10.1.2.3", "-b", bundle, other), 2, "prefix length")
	if _, ok := n1.ps()[other]; ok {
		t.Errorf("refused container %s exists", other)
	}

	lockFree := func(when string) {
		t.Helper()
		noCRIULocksAt(t, when+": n1's namespace", h1.NS)
		noCRIULocksAt(t, when+": n2's namespace", h2.NS)
		for _, p := range []string{netns1, netns2} {
			if _, err := os.Stat(p); err == nil {
				noCRIULocksAt(t, when+": container namespace "+p, p)
			}
		}
	}

	m := moveJSON(t, n1, id, "n2")
	n2.waitStatus(id, running)
	t.Logf("move n1 -> n2: downtime %s", m.Downtime)
	got := httpCount(t, client, ip, 15*time.Second)
	if got != last+1 {
		t.Errorf("after the move the count is %d, want %d: not the same process state", got, last+1)
	}
	last = got
	if got := inspectAddress(t, n2, id); got != cidr {
		t.Errorf("n2 inspect shows address %q, want %q", got, cidr)
	}
	if hostLink(t, h1, veth) {
		t.Errorf("n1 still has the veth %s after the move", veth)
	}
	if _, err := os.Stat(netns1); !os.IsNotExist(err) {
		t.Errorf("n1's namespace file %s after the move: %v", netns1, err)
	}
	if !hostLink(t, h2, veth) {
		t.Errorf("n2 has no veth %s", veth)
	}
	lockFree("after the move to n2")

	m = moveJSON(t, n2, id, "n1")
	n1.waitStatus(id, running)
	t.Logf("move n2 -> n1: downtime %s", m.Downtime)
	if got := httpCount(t, client, ip, 15*time.Second); got != last+1 {
		t.Errorf("after the move back the count is %d, want %d", got, last+1)
	} else {
		last = got
	}
	if hostLink(t, h2, veth) {
		t.Errorf("n2 still has the veth %s after the move back", veth)
	}
	lockFree("after the move back")
	n1.noMoveLeftovers()
	n2.noMoveLeftovers()

	// A checkpoint that stops the container: CRIU leaves its namespace locked until
	// a restore; the agent unlocks it.
	must(t, n1.ctl("checkpoint", "--name", "ck", "--export", filepath.Join(t.TempDir(), "ck.tar"), id), "checkpoint")
	lockFree("after a stopping checkpoint")
	must(t, n1.ctl("rm", id), "rm the checkpointed container")
	if hostLink(t, h1, veth) {
		t.Errorf("rm left the veth %s", veth)
	}
	if _, err := os.Stat(netns1); !os.IsNotExist(err) {
		t.Errorf("rm left the namespace file %s: %v", netns1, err)
	}
	must(t, n1.ctl("restore", "ck"), "restore")
	n1.waitStatus(id, running)
	if got := httpCount(t, client, ip, 15*time.Second); got != last+1 {
		t.Errorf("after checkpoint and restore the count is %d, want %d", got, last+1)
	}
	lockFree("after the restore")

	must(t, n1.ctl("rm", "-f", id), "rm -f")
	if hostLink(t, h1, veth) {
		t.Errorf("rm -f left the veth %s", veth)
	}
	if _, err := os.Stat(netns1); !os.IsNotExist(err) {
		t.Errorf("rm -f left the namespace file %s: %v", netns1, err)
	}
	if des, _ := os.ReadDir(filepath.Join(n1.data, "netns")); len(des) != 0 {
		t.Errorf("namespace files left: %v", des)
	}
	n1.noLeftovers()
	n2.noLeftovers()
}

// TestNetworkNeedsBridge: without network.bridge an address is refused at create, and
// a checkpoint of a container with an address does not restore there; both fail
// before anything is made.
func TestNetworkNeedsBridge(t *testing.T) {
	t.Parallel()
	if !agentNetworkSupported() {
		t.Fatal("migrated has no network configuration")
	}
	n1, _, l, h1, _ := lanPair(t, "", "")
	plain := newAgent(t, agentConfig{node: "plain"})
	bundle := httpCounterBundle(t)
	id := containerID(t, "c")
	cidr := l.addr(60) + "/24"
	wantFail(t, plain.ctl("run", "--ip", cidr, "-b", bundle, id), 2, "no network.bridge")
	if len(plain.ps()) != 0 {
		t.Errorf("refused container exists: %v", plain.ps())
	}

	must(t, n1.ctl("run", "--ip", cidr, "-b", bundle, id), "run --ip")
	n1.waitStatus(id, running)
	archive := filepath.Join(t.TempDir(), "ck.tar")
	must(t, n1.ctl("checkpoint", "--leave-running", "--export", archive, id), "checkpoint --export")
	// The restore's progress lines come first; the error is the last line.
	if r := plain.ctl("restore", archive); r.code != 2 || !strings.Contains(r.stderr, "no network.bridge") {
		t.Errorf("restore on a node without a bridge: exit %d, %q", r.code, r.stderr)
	}
	plain.noLeftovers()
	if des, _ := os.ReadDir(filepath.Join(plain.data, "netns")); len(des) != 0 {
		t.Errorf("namespace files left: %v", des)
	}
	// A dump that fails (an MPTCP listener, which CRIU cannot dump) leaves no lock
	// rule either, and the container runs on.
	bad := containerID(t, "mptcp")
	must(t, n1.ctl("run", "--ip", l.addr(61)+"/24", "-b", testutil.NewBusyboxBundle(t, "/usr/local/bin/httpcounter", "-port", "8080", "-mptcp"), bad), "run mptcp")
	n1.waitStatus(bad, running)
	n1.waitLogs(bad, "listening")
	if r := n1.ctl("checkpoint", "--leave-running", bad); r.code == 0 {
		t.Fatal("checkpoint of an MPTCP listener succeeded; this test needs a failing dump")
	}
	noCRIULocksAt(t, "after a failed dump: container namespace", filepath.Join(n1.data, "netns", bad))
	noCRIULocksAt(t, "after a failed dump: n1's namespace", h1.NS)
	n1.waitStatus(bad, running)
}
