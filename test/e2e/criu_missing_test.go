package e2e

import (
	"testing"
)

// TestCheckpointWithoutCRIU: an agent whose CRIU binary is missing still runs
// containers, and a checkpoint fails with one line naming the missing binary
// and how to get it; the container keeps running.
func TestCheckpointWithoutCRIU(t *testing.T) {
	t.Parallel()
	a := newAgent(t, agentConfig{extra: "criu: /nonexistent/criu\n"})
	id := containerID(t, "nocriu")
	must(t, a.ctl("run", "-b", counterWorkload(t), id), "run")
	before := a.waitStatus(id, running)
	r := a.ctl("checkpoint", id)
	if r.code == 0 {
		t.Fatalf("checkpoint without CRIU succeeded: %q", r.stdout)
	}
	wantOpFail(t, r, r.code, "criu not found at /nonexistent/criu: run scripts/setup.sh")
	t.Logf("stderr: %s", r.stderr)
	if after := a.waitStatus(id, running); after.Pid != before.Pid {
		t.Fatalf("container changed pid %d -> %d after a failed checkpoint", before.Pid, after.Pid)
	}
}
