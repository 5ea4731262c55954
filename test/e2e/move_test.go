package e2e

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/migratehq/migrate/test/testutil"
)

// moveSummary is the result of `move -o json` (the last event's move).
type moveSummary struct {
	ContainerID string `json:"containerId"`
	From        string `json:"from"`
	To          string `json:"to"`
	Downtime    string `json:"downtime"`
	RawBytes    string `json:"rawBytes"` // int64 is a string in protojson
	WireBytes   string `json:"wireBytes"`
	BaseSent    bool   `json:"baseSent"`
	BaseBytes   string `json:"baseBytes"`
}

// moveJSON runs `move -o json` and returns the summary of its final event.
func moveJSON(t *testing.T, a *agent, id, to string) moveSummary {
	t.Helper()
	r := must(t, a.ctl("move", id, "--to", to, "-o", "json"), "move "+id+" to "+to)
	return *testutil.LastMove[moveSummary](t, r.stdout)
}

// movePair starts two agents that are each other's peers, with certificates of one
// cluster. peers1 adds peer entries ("  name: addr" lines) to the first agent's
// configuration, extra2 adds to the second's.
func movePair(t *testing.T, peers1, extra2 string) (*agent, *agent) {
	t.Helper()
	p1, p2 := freePort(t), freePort(t)
	bootstrap := newAgent(t, agentConfig{node: "boot"})
	dir := cluster(t, bootstrap, "n1", "n2")
	bootstrap.stop()
	peerCfg := func(port int, peer string, peerPort int) string {
		return fmt.Sprintf("tls:\n  dir: %s\npeer:\n  listen: 127.0.0.1:%d\npeers:\n  %s: 127.0.0.1:%d\n", dir, port, peer, peerPort)
	}
	n1 := newAgent(t, agentConfig{node: "n1", extra: peerCfg(p1, "n2", p2) + peers1})
	n2 := newAgent(t, agentConfig{node: "n2", extra: peerCfg(p2, "n1", p1) + extra2})
	return n1, n2
}

// noMoveLeftovers checks that no move's files are left in an agent's data directory.
func (a *agent) noMoveLeftovers() {
	a.t.Helper()
	for _, d := range []string{"moves", "incoming"} {
		if des, _ := os.ReadDir(filepath.Join(a.data, d)); len(des) != 0 {
			a.t.Errorf("%s: %s left: %v", a.data, d, des)
		}
	}
	if left, _ := filepath.Glob(filepath.Join(a.data, "bases", ".import-*")); len(left) != 0 {
		a.t.Errorf("base imports left: %v", left)
	}
}

// TestMoveColdRoundTrip moves the counter n1 -> n2 and back: each time it runs on
// the target with its count going on (restored, not restarted), and the source no
// longer has it. The first move sends the rootfs base, the way back does not.
func TestMoveColdRoundTrip(t *testing.T) {
	t.Parallel()
	n1, n2 := movePair(t, "", "")
	id := containerID(t, "c")
	must(t, n1.ctl("run", "-b", counterWorkload(t), id), "run")
	n1.waitStatus(id, running)
	before := n1.waitCount(id, 3)

	m := moveJSON(t, n1, id, "n2")
	if m.ContainerID != id || m.From != "n1" || m.To != "n2" {
		t.Errorf("move result %+v", m)
	}
	if !m.BaseSent || m.BaseBytes == "0" || m.BaseBytes == "" {
		t.Errorf("first move: base not sent (%+v); n2 had no base", m)
	}
	if d, err := time.ParseDuration(strings.TrimSuffix(m.Downtime, "s") + "s"); err != nil || d <= 0 || d > 30*time.Second {
		t.Errorf("downtime %q", m.Downtime)
	}
	if _, ok := n1.ps()[id]; ok {
		t.Errorf("n1 still lists %s after the move", id)
	}
	n2.waitStatus(id, running)
	nums := n2.waitCount(id, before[len(before)-1]+5)
	_, starts := n2.counterLog(id)
	checkContinuous(t, id, nums, starts)
	if nums[0] != before[0] {
		t.Errorf("n2's log starts at %d, n1's at %d: the log did not move with the container", nums[0], before[0])
	}
	n1.noLeftovers()
	n1.noMoveLeftovers()
	n2.noMoveLeftovers()

	// Back to n1, which has the base: only the checkpoint travels.
	m = moveJSON(t, n2, id, "n1")
	if m.BaseSent {
		t.Errorf("move back sent the base again: %+v", m)
	}
	if _, ok := n2.ps()[id]; ok {
		t.Errorf("n2 still lists %s after the move back", id)
	}
	n1.waitStatus(id, running)
	nums = n1.waitCount(id, nums[len(nums)-1]+5)
	_, starts = n1.counterLog(id)
	checkContinuous(t, id, nums, starts)
	n2.noLeftovers()
	n1.noMoveLeftovers()
	n2.noMoveLeftovers()

	// The table output has the summary.
	r := must(t, n1.ctl("move", id, "--to", "n2"), "move with table output")
	t.Logf("move:\n%s%s", r.stderr, r.stdout)
	for _, want := range []string{"DOWNTIME", "n1", "n2", "present on target"} {
		if !strings.Contains(r.stdout, want) {
			t.Errorf("move summary %q lacks %q", r.stdout, want)
		}
	}
	n2.waitStatus(id, running)
}

// TestMoveBadInput refuses what cannot be moved with one line and leaves the
// container running as it was.
func TestMoveBadInput(t *testing.T) {
	t.Parallel()
	// n3 is configured but not listening.
	n1, n2 := movePair(t, fmt.Sprintf("  n3: 127.0.0.1:%d\n", freePort(t)), "")
	id := containerID(t, "c")
	must(t, n1.ctl("run", "-b", counterWorkload(t), id), "run")
	before := n1.waitStatus(id, running)
	n1.waitCount(id, 3)

	wantFail(t, n1.ctl("move", id+"-nope", "--to", "n2"), 3, "not found")
	wantFail(t, n1.ctl("move", id, "--to", "n9"), 3, "n9")
	wantFail(t, n1.ctl("move", id, "--to", "n1"), 2, "this node")
	wantFail(t, n1.ctl("move", id, "--to", "n2", "--mode", "warp"), 2, "mode")
	wantFail(t, n1.ctl("move", id), 2, "--to")

	wantFail(t, n1.ctl("move", id, "--to", "n3"), 6, "n3")
	// n2 has a container of that id already.
	must(t, n2.ctl("run", "-b", counterBundle(t), id), "run the same id on n2")
	wantFail(t, n1.ctl("move", id, "--to", "n2"), 4, "already has")

	after := n1.waitStatus(id, running)
	if after.Pid != before.Pid {
		t.Errorf("pid %d became %d: a refused move touched the container", before.Pid, after.Pid)
	}
	nums := n1.waitCount(id, 10)
	_, starts := n1.counterLog(id)
	checkContinuous(t, id, nums, starts)
	n1.noMoveLeftovers()
}

// TestMoveRestoreFailsResumesSource gives the target a CRIU that fails: the move
// fails after the dump and the transfer, and the container runs on the source again,
// same process, count going on; neither node keeps anything of the move.
func TestMoveRestoreFailsResumesSource(t *testing.T) {
	t.Parallel()
	n1, n2 := movePair(t, "", "criu: /bin/false\n")
	id := containerID(t, "c")
	must(t, n1.ctl("run", "-b", counterWorkload(t), id), "run")
	before := n1.waitStatus(id, running)
	n1.waitCount(id, 3)

	r := n1.ctl("move", id, "--to", "n2")
	if r.code == 0 {
		t.Fatalf("move to a node whose CRIU fails succeeded: %s", r.stdout)
	}
	t.Logf("failed move: exit %d:\n%s", r.code, r.stderr)
	wantOpFail(t, r, r.code, "restore on n2")
	if !strings.Contains(r.stderr, "resumed") {
		t.Errorf("progress does not say the container resumed: %q", r.stderr)
	}
	after := n1.waitStatus(id, running)
	if after.Pid != before.Pid {
		t.Errorf("pid %d became %d: the source container was restarted, not resumed", before.Pid, after.Pid)
	}
	nums := n1.waitCount(id, 0)
	nums = n1.waitCount(id, nums[len(nums)-1]+5)
	_, starts := n1.counterLog(id)
	checkContinuous(t, id, nums, starts)
	if _, ok := n2.ps()[id]; ok {
		t.Errorf("n2 lists %s after a failed move", id)
	}
	n2.noLeftovers()
	n1.noMoveLeftovers()
	n2.noMoveLeftovers()
}
