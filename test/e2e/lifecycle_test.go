package e2e

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/migratehq/migrate/test/testutil"
)

const (
	running = "CONTAINER_STATUS_RUNNING"
	created = "CONTAINER_STATUS_CREATED"
	stopped = "CONTAINER_STATUS_STOPPED"
)

// TestLifecycle runs a busybox container and takes it through ps, logs, exec, stop and
// rm, as an operator would.
func TestLifecycle(t *testing.T) {
	t.Parallel()
	a := newAgent(t, agentConfig{})
	id := containerID(t, "c")
	bundle := counterBundle(t)

	r := must(t, a.ctl("run", "--bundle", bundle, id), "run")
	if strings.TrimSpace(r.stdout) != id {
		t.Errorf("run printed %q, want the id", r.stdout)
	}
	c := a.waitStatus(id, running)
	if !alive(c.Pid) || !alive(c.ShimPid) {
		t.Fatalf("container pid %d / shim pid %d not alive", c.Pid, c.ShimPid)
	}
	if table := must(t, a.ctl("ps"), "ps").stdout; !strings.Contains(table, id) || !strings.Contains(table, "running") {
		t.Errorf("ps table does not show %s running:\n%s", id, table)
	}

	out := a.waitLogs(id, "tick 3")
	if !strings.Contains(out, "tick 0\ntick 1\ntick 2\n") {
		t.Errorf("stdout log not in order: %q", out)
	}
	if r := must(t, a.ctl("logs", id), "logs"); !strings.Contains(r.stderr, "err 0\n") || strings.Contains(r.stdout, "err 0") {
		t.Errorf("stderr lines must come on stderr: stdout %q stderr %q", r.stdout, r.stderr)
	}
	if r := must(t, a.ctl("logs", "--tail", "1", id), "logs --tail"); strings.Count(r.stdout+r.stderr, "\n") != 1 {
		t.Errorf("logs --tail 1 printed %q %q", r.stdout, r.stderr)
	}

	r = must(t, a.ctl("exec", id, "--", "sh", "-c", "echo in-container $(hostname); echo oops >&2"), "exec")
	if !strings.HasPrefix(r.stdout, "in-container ") || r.stderr != "oops\n" {
		t.Errorf("exec output: stdout %q stderr %q", r.stdout, r.stderr)
	}
	if r := a.ctl("exec", id, "sh", "-c", "exit 42"); r.code != 42 {
		t.Errorf("exec exit code %d, want 42 (stderr %q)", r.code, r.stderr)
	}
	if r := runCtlIn(t, "piped input", "--socket", a.sock, "exec", "-i", id, "cat"); r.code != 0 || r.stdout != "piped input" {
		t.Errorf("exec -i: exit %d stdout %q stderr %q", r.code, r.stdout, r.stderr)
	}

	// sh as pid 1 ignores SIGTERM: stop must escalate to SIGKILL after the timeout.
	r = must(t, a.ctl("stop", "-t", "1", id), "stop")
	if !strings.Contains(r.stderr, "SIGKILL") {
		t.Errorf("stop progress did not report the SIGKILL: %q", r.stderr)
	}
	c = a.waitStatus(id, stopped)
	if c.ExitCode != 137 {
		t.Errorf("exit code %d after SIGKILL, want 137", c.ExitCode)
	}
	if alive(c.ShimPid) == false {
		// The shim outlives its container until rm: it keeps the exit status and logs.
		t.Errorf("shim exited before rm")
	}
	shimPid := a.ps()[id].ShimPid
	// The stop was an operation, listed with its outcome.
	if r := must(t, a.ctl("operations", "ls"), "operations ls"); !strings.Contains(r.stdout, id) || !strings.Contains(r.stdout, "succeeded") {
		t.Errorf("operations ls does not show the stop of %s:\n%s", id, r.stdout)
	}
	if r := must(t, runCtl(t, nil, "--host", "unix://"+a.sock, "ps", "-q"), "--host unix://"); strings.TrimSpace(r.stdout) != id {
		t.Errorf("ps -q over --host unix://: %q", r.stdout)
	}
	// Logs stay readable after the container stopped; -f ends by itself.
	if r := must(t, a.ctl("logs", "-f", id), "logs -f after exit"); !strings.Contains(r.stdout, "tick 0") {
		t.Errorf("logs after stop: %q", r.stdout)
	}

	must(t, a.ctl("rm", id), "rm")
	if _, ok := a.ps()[id]; ok {
		t.Errorf("%s still listed after rm", id)
	}
	if alive(shimPid) {
		t.Errorf("shim %d still running after rm", shimPid)
	}
	if des, _ := os.ReadDir(filepath.Join(a.data, "containers")); len(des) != 0 {
		t.Errorf("container directories left after rm: %v", des)
	}
	noShimCgroups(t, id)
}

// TestCreateStart checks the two-step create/start and rm of a created container.
func TestCreateStart(t *testing.T) {
	t.Parallel()
	a := newAgent(t, agentConfig{})
	id := containerID(t, "c")
	bundle := testutil.NewBusyboxBundle(t, "sh", "-c", "echo started; exit 3")
	must(t, a.ctl("create", "-b", bundle, id), "create")
	a.waitStatus(id, created)
	must(t, a.ctl("start", id), "start")
	c := a.waitStatus(id, stopped)
	if c.ExitCode != 3 {
		t.Errorf("exit code %d, want 3", c.ExitCode)
	}
	a.waitLogs(id, "started")
	wantFail(t, a.ctl("start", id), 5, "")
	must(t, a.ctl("rm", id), "rm")

	// A created container that never started is deleted without --force.
	must(t, a.ctl("create", "-b", bundle, id), "create again")
	must(t, a.ctl("rm", id), "rm created")
	noShimCgroups(t, id)
}
