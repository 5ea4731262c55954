package pagestore

import (
	"os/exec"
	"testing"
)

func TestOwnerAlive(t *testing.T) {
	me, err := selfOwner()
	if err != nil {
		t.Fatal(err)
	}
	boot, err := bootID()
	if err != nil {
		t.Fatal(err)
	}
	got, ok := parseOwner(me.String() + ".7.lease")
	if !ok || got != me {
		t.Fatalf("parseOwner(%q) = %+v, %v", me.String(), got, ok)
	}
	if !me.alive(boot) {
		t.Error("this process is not alive")
	}
	if (owner{boot: me.boot, pid: me.pid, start: me.start + 1}).alive(boot) {
		t.Error("a reused pid (other start time) is alive")
	}
	if (owner{boot: "x", pid: me.pid, start: me.start}).alive(boot) {
		t.Error("an owner of another boot is alive")
	}
	cmd := exec.Command("/bin/true")
	if err := cmd.Run(); err != nil {
		t.Fatal(err)
	}
	if (owner{boot: boot, pid: cmd.Process.Pid, start: 1}).alive(boot) {
		t.Error("an exited process is alive")
	}
	for _, bad := range []string{"lock", "x.1.2.lease", me.boot + ".0.1.lease", me.boot + ".1.2"} {
		if _, ok := parseOwner(bad); ok {
			t.Errorf("parseOwner(%q) accepted", bad)
		}
	}
}
