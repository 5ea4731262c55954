package e2e

import (
	"bufio"
	"bytes"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	specs "github.com/opencontainers/runtime-spec/specs-go"

	"github.com/migratehq/migrate/test/testutil"
)

// memwriterBundle runs the memory writer over mib MiB; SIGUSR1 makes it verify
// its pages and print "ok <sha256>" (or "corrupt").
func memwriterBundle(t *testing.T, mib int) string {
	return testutil.NewBusyboxBundleWith(t, func(s *specs.Spec) {
		s.Process.Args = []string{"/usr/local/bin/memwriter", "-mib", strconv.Itoa(mib)}
	})
}

// memLog waits until the container's log has a line starting with prefix after
// its first skip lines, and returns that line.
func (a *agent) memLog(id, prefix string, skip int) string {
	a.t.Helper()
	// Filling or verifying hundreds of MiB takes seconds on a loaded machine.
	deadline := time.Now().Add(60 * time.Second)
	for {
		r := must(a.t, a.ctl("logs", id), "logs")
		lines := strings.Split(strings.TrimSpace(r.stdout), "\n")
		for i := skip; i < len(lines); i++ {
			if strings.HasPrefix(lines[i], "corrupt") {
				a.t.Fatalf("%s: memory corrupt: %q", id, lines[i:])
			}
			if strings.HasPrefix(lines[i], prefix) {
				return lines[i]
			}
		}
		if time.Now().After(deadline) {
			a.t.Fatalf("%s: no %q line after line %d: %q", id, prefix, skip, lines)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// memReady waits for the memory writer's "ready <sha>" line and returns the sum.
func (a *agent) memReady(id string) string {
	a.t.Helper()
	return strings.TrimPrefix(a.memLog(id, "ready ", 0), "ready ")
}

// memIntact has the memory writer verify its pages now and fails unless they
// still have sum.
func (a *agent) memIntact(id, sum string) {
	a.t.Helper()
	n := countLines(must(a.t, a.ctl("logs", id), "logs").stdout)
	must(a.t, a.ctl("kill", "-s", "USR1", id), "ask for a verification")
	if got := a.memLog(id, "ok ", n); got != "ok "+sum {
		a.t.Fatalf("%s: memory changed: %q, want ok %s", id, got, sum)
	}
}

// moveUntil runs a cold `move id --to to` and calls at once when a progress
// line contains marker; it returns the move's result. Cold: these faults are
// about the transfer and restore phases of a cold move (post-copy faults are in
// postcopy_test.go).
func moveUntil(t *testing.T, a *agent, id, to, marker string, at func()) result {
	t.Helper()
	return moveWhen(t, a, id, to, marker, func(l string) bool { return strings.Contains(l, marker) }, at, "--mode", "cold")
}

// moveUntilArgs is moveUntil with other arguments for move (a mode of choice).
func moveUntilArgs(t *testing.T, a *agent, id, to, marker string, at func(), args ...string) result {
	t.Helper()
	return moveWhen(t, a, id, to, marker, func(l string) bool { return strings.Contains(l, marker) }, at, args...)
}

// transferredAtLeast matches a transfer progress line "(done/total bytes)" with
// done >= frac of total.
func transferredAtLeast(frac float64) func(string) bool {
	return func(l string) bool {
		i := strings.LastIndex(l, "(")
		var done, total int64
		if i < 0 || !strings.HasSuffix(l, " bytes)") {
			return false
		}
		if _, err := fmt.Sscanf(l[i:], "(%d/%d bytes)", &done, &total); err != nil || total == 0 {
			return false
		}
		return float64(done) >= frac*float64(total)
	}
}

// moveWhen runs `move id --to to args...` and calls at once when a progress
// line matches; what names the condition in failures.
func moveWhen(t *testing.T, a *agent, id, to, what string, match func(string) bool, at func(), args ...string) result {
	t.Helper()
	cmd := exec.Command(migratectlBin, append([]string{"--socket", a.sock, "move", id, "--to", to}, args...)...)
	var out bytes.Buffer
	cmd.Stdout = &out
	stderr, err := cmd.StderrPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	var log strings.Builder
	fired := false
	sc := bufio.NewScanner(stderr)
	for sc.Scan() {
		log.WriteString(sc.Text() + "\n")
		if !fired && match(sc.Text()) {
			fired = true
			at()
		}
	}
	err = cmd.Wait()
	r := result{stdout: out.String(), stderr: log.String()}
	if ee, ok := err.(*exec.ExitError); ok {
		r.code = ee.ExitCode()
	} else if err != nil {
		t.Fatal(err)
	}
	if !fired {
		t.Fatalf("move never printed %q:\n%s", what, r.stderr)
	}
	return r
}

// resumedAfterFailedMove checks that move r failed and said so, and that the
// memory writer id runs here again: the same process (resumed, not restarted)
// with its memory still summing to sum. It returns the container.
func (a *agent) resumedAfterFailedMove(r result, id string, before psContainer, sum string) psContainer {
	a.t.Helper()
	if r.code == 0 {
		a.t.Fatalf("the move of %s succeeded: %s", id, r.stdout)
	}
	if !strings.Contains(r.stderr, "resumed") {
		a.t.Errorf("progress does not say the container resumed: %q", r.stderr)
	}
	after := a.waitStatus(id, running)
	if after.Pid != before.Pid {
		a.t.Errorf("pid %d became %d: the source was restarted, not resumed", before.Pid, after.Pid)
	}
	a.memIntact(id, sum)
	return after
}

// noLockRules fails if CRIU left a lock rule in the container's network namespace
// or in the node's (nodeNetns; "" for the test's own).
func noLockRules(t *testing.T, pid int, nodeNetns string) {
	t.Helper()
	if nodeNetns == "" {
		nodeNetns = "/proc/self/ns/net"
	}
	noCRIULocksAt(t, "container namespace", "/proc/"+strconv.Itoa(pid)+"/ns/net")
	noCRIULocksAt(t, "node namespace", nodeNetns)
}

// TestMoveTargetKilled kills the target agent during the transfer, and during the
// restore: each time the move fails, the container runs on the source again (same
// process, memory intact), and the restarted target keeps nothing of the move.
func TestMoveTargetKilled(t *testing.T) {
	t.Parallel()
	for _, c := range []struct{ name, marker string }{
		{"transfer", "bytes)"},
		{"restore", "restoring on"},
	} {
		t.Run(c.name, func(t *testing.T) {
			t.Parallel()
			n1, n2 := movePair(t, "", "")
			id := containerID(t, "m")
			must(t, n1.ctl("run", "-b", memwriterBundle(t, 256), id), "run")
			before := n1.waitStatus(id, running)
			sum := n1.memReady(id)

			r := moveUntil(t, n1, id, "n2", c.marker, func() {
				n2.kill9()
				if c.name == "restore" {
					// Back within the source's abort window: the restarted agent
					// removes what the interrupted restore made and confirms.
					n2.start()
				}
			})
			t.Logf("move with the target killed during the %s: exit %d\n%s", c.name, r.code, r.stderr)
			after := n1.resumedAfterFailedMove(r, id, before, sum)
			if n2.cmd == nil {
				n2.start()
			}
			if _, ok := n2.ps()[id]; ok {
				t.Errorf("n2 lists %s after the failed move", id)
			}
			// The source tells the restarted target to drop the partial transfer.
			n2.waitNoIncoming(30 * time.Second)
			n1.noMoveLeftovers()
			n2.noMoveLeftovers()
			if left, _ := os.ReadDir(filepath.Join(n2.data, "moved-in")); len(left) != 0 {
				t.Errorf("n2 keeps move records: %v", left)
			}
			if m, _ := filepath.Glob("/sys/fs/cgroup/*/migrate/n2/" + id); len(m) != 0 {
				t.Errorf("n2's cgroups of %s left: %v", id, m)
			}
			noLockRules(t, after.Pid, "")
		})
	}
}

// TestMoveTargetRestartResumes restarts the target agent in the middle of the
// transfer: the source retries, the transfer resumes from what the target had
// written before it stopped, and the move completes with the memory intact.
func TestMoveTargetRestartResumes(t *testing.T) {
	t.Parallel()
	n1, n2 := movePair(t, "", "")
	id := containerID(t, "m")
	must(t, n1.ctl("run", "-b", memwriterBundle(t, 256), id), "run")
	n1.waitStatus(id, running)
	sum := n1.memReady(id)

	r := moveWhen(t, n1, id, "n2", "half the transfer", transferredAtLeast(0.5), func() {
		n2.kill9()
		n2.start()
	}, "--mode", "cold")
	t.Logf("move with the target restarted: exit %d\n%s", r.code, r.stderr)
	if r.code != 0 {
		t.Fatalf("move failed: %s", r.stderr)
	}
	var resumed, total int64
	for _, l := range strings.Split(r.stderr, "\n") {
		if i := strings.Index(l, "resumed: "); i >= 0 {
			fmt.Sscanf(l[i:], "resumed: %d of %d bytes", &resumed, &total)
		}
	}
	if resumed <= 0 || resumed >= total {
		t.Errorf("the transfer did not resume: %d of %d bytes kept on n2", resumed, total)
	}
	if _, ok := n1.ps()[id]; ok {
		t.Errorf("n1 still lists %s", id)
	}
	n2.waitStatus(id, running)
	n2.memIntact(id, sum)
	n1.noMoveLeftovers()
	n2.noMoveLeftovers()
}

// waitNoIncoming waits until the agent holds no incoming transfer.
func (a *agent) waitNoIncoming(within time.Duration) {
	a.t.Helper()
	deadline := time.Now().Add(within)
	for {
		des, _ := os.ReadDir(filepath.Join(a.data, "incoming"))
		if len(des) == 0 {
			return
		}
		if time.Now().After(deadline) {
			a.t.Fatalf("%s still holds incoming transfers: %v", a.data, des)
		}
		time.Sleep(500 * time.Millisecond)
	}
}

// TestMoveLinkCut cuts the target's link during the transfer: the source notices
// the dead connection (keepalive), retries for a while, then resumes the
// container (same process, memory intact). Once the link is back, the target is
// told to drop the partial transfer.
func TestMoveLinkCut(t *testing.T) {
	t.Parallel()
	n1, n2, l, h1, h2 := lanPair(t, "", "")
	id := containerID(t, "m")
	must(t, n1.ctl("run", "-b", memwriterBundle(t, 256), id), "run")
	before := n1.waitStatus(id, running)
	sum := n1.memReady(id)

	start := time.Now()
	r := moveUntil(t, n1, id, "n2", "bytes)", func() { l.cut(h2) })
	t.Logf("move with the link cut: exit %d after %v\n%s", r.code, time.Since(start).Round(time.Millisecond), r.stderr)
	after := n1.resumedAfterFailedMove(r, id, before, sum)
	noLockRules(t, after.Pid, h1.NS)
	noLockRules(t, after.Pid, h2.NS)

	l.heal(h2)
	// The source tells the target to drop the partial transfer once it can.
	n2.waitNoIncoming(90 * time.Second)
	if _, ok := n2.ps()[id]; ok {
		t.Errorf("n2 lists %s after the failed move", id)
	}
	n1.noMoveLeftovers()
	n2.noMoveLeftovers()
}
