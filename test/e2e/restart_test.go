package e2e

import (
	"strings"
	"testing"
	"time"

	"github.com/migratehq/migrate/test/testutil"
)

// TestAgentRestartAdoptsContainers kills the agent with SIGKILL while two containers
// run and checks that a new agent adopts them: listed, logs continuing, exec and kill
// working, a later exit recorded.
func TestAgentRestartAdoptsContainers(t *testing.T) {
	t.Parallel()
	a := newAgent(t, agentConfig{})
	c1, c2 := containerID(t, "counter"), containerID(t, "waiter")
	must(t, a.ctl("run", "-b", counterBundle(t), c1), "run c1")
	// c2 exits with 7 once /dev/shm/go exists (tmpfs: the rootfs is read-only).
	must(t, a.ctl("run", "-b", testutil.NewBusyboxBundle(t, "sh", "-c",
		`echo waiting; while [ ! -e /dev/shm/go ]; do sleep 0.1; done; echo going; exit 7`), c2), "run c2")
	p1, p2 := a.waitStatus(c1, running), a.waitStatus(c2, running)
	a.waitLogs(c1, "tick 2")
	a.waitLogs(c2, "waiting")

	a.kill9()
	if !alive(p1.Pid) || !alive(p2.Pid) || !alive(p1.ShimPid) || !alive(p2.ShimPid) {
		t.Fatalf("containers or shims died with the agent: %+v %+v", p1, p2)
	}
	wantFail(t, a.ctl("ps"), 6, "is it running?")
	before := countLines(a.ctl("logs", c1).stdout)
	time.Sleep(500 * time.Millisecond) // the agent is down; the shim keeps logging
	a.start()

	ps := a.ps()
	for _, want := range []psContainer{p1, p2} {
		got, ok := ps[want.ID]
		if !ok || got.Status != running || got.Pid != want.Pid || got.ShimPid != want.ShimPid {
			t.Errorf("after restart %s = %+v, want running as %+v", want.ID, got, want)
		}
	}
	deadline := time.Now().Add(10 * time.Second)
	for countLines(must(t, a.ctl("logs", c1), "logs").stdout) <= before+2 {
		if time.Now().After(deadline) {
			t.Fatalf("log of %s stopped growing after the restart", c1)
		}
		time.Sleep(100 * time.Millisecond)
	}

	must(t, a.ctl("exec", c2, "touch", "/dev/shm/go"), "exec after restart")
	if c := a.waitStatus(c2, stopped); c.ExitCode != 7 {
		t.Errorf("%s exit code %d, want 7", c2, c.ExitCode)
	}
	a.waitLogs(c2, "going")
	must(t, a.ctl("kill", "-s", "KILL", c1), "kill after restart")
	if c := a.waitStatus(c1, stopped); c.ExitCode != 137 {
		t.Errorf("%s exit code %d, want 137", c1, c.ExitCode)
	}

	// An exit while the agent is down is recorded too, and found by the next agent.
	c3 := containerID(t, "late")
	must(t, a.ctl("run", "-b", testutil.NewBusyboxBundle(t, "sh", "-c", "sleep 1; exit 9"), c3), "run c3")
	a.kill9()
	time.Sleep(2 * time.Second)
	a.start()
	if c := a.waitStatus(c3, stopped); c.ExitCode != 9 {
		t.Errorf("%s exit code %d, want 9", c3, c.ExitCode)
	}
}

func countLines(s string) int { return strings.Count(s, "\n") }
