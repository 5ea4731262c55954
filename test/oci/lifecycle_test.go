package oci

import (
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	specs "github.com/opencontainers/runtime-spec/specs-go"
)

func TestLifecycle(t *testing.T) {
	r := newRuntime(t)
	b := r.bundle(nil, "sleep", "1000")
	cid := id(t)
	pidFile := filepath.Join(t.TempDir(), "pid")
	r.must("create", "--bundle", b, "--pid-file", pidFile, cid)
	t.Cleanup(func() { r.cli("delete", "--force", cid) })

	st := r.state(cid)
	if st.Status != specs.StateCreated || st.Pid <= 0 || st.Bundle != b {
		t.Fatalf("after create: %+v", st)
	}
	if data, _ := os.ReadFile(pidFile); string(data) != strconv.Itoa(st.Pid) {
		t.Fatalf("pid file %q, state pid %d", data, st.Pid)
	}
	// CVE-2019-5736: until start the init is our binary, run from a sealed
	// memfd; the host binary is never what /proc/<pid>/exe names.
	exe, err := os.Readlink("/proc/" + strconv.Itoa(st.Pid) + "/exe")
	if err != nil || !strings.Contains(exe, "memfd:migrated-init") {
		t.Fatalf("init exe = %q (%v), want the sealed memfd", exe, err)
	}
	if f, err := os.OpenFile("/proc/"+strconv.Itoa(st.Pid)+"/exe", os.O_WRONLY, 0); err == nil {
		f.Close()
		t.Fatal("init binary is writable through /proc/<pid>/exe")
	}

	r.must("start", cid)
	if st = r.state(cid); st.Status != specs.StateRunning {
		t.Fatalf("after start: %s", st.Status)
	}
	if cmd, _ := os.ReadFile("/proc/" + strconv.Itoa(st.Pid) + "/cmdline"); !strings.HasPrefix(string(cmd), "sleep\x001000") {
		t.Fatalf("init runs %q", cmd)
	}
	if res := r.cli("start", cid); res.code == 0 || !strings.Contains(res.stderr, "running") {
		t.Fatalf("second start: %+v", res)
	}
	if res := r.cli("delete", cid); res.code == 0 || !strings.Contains(res.stderr, "--force") {
		t.Fatalf("delete of a running container: %+v", res)
	}
	if out := r.must("ps", "--format", "json", cid); !strings.Contains(out, strconv.Itoa(st.Pid)) {
		t.Fatalf("ps: %s", out)
	}
	if out := r.must("list", "--format", "json"); !strings.Contains(out, cid) {
		t.Fatalf("list: %s", out)
	}

	r.must("pause", cid)
	if st = r.state(cid); st.Status != "paused" {
		t.Fatalf("after pause: %s", st.Status)
	}
	if s := procState(t, st.Pid); s != "S" && s != "D" {
		// A frozen task sleeps in the freezer.
		t.Logf("frozen task state %s", s)
	}
	r.must("resume", cid)
	if st = r.state(cid); st.Status != specs.StateRunning {
		t.Fatalf("after resume: %s", st.Status)
	}

	r.must("kill", cid, "KILL")
	waitStatus(t, r, cid, specs.StateStopped)
	r.must("delete", cid)
	assertGone(t, r.root, cid)
}

func procState(t *testing.T, pid int) string {
	data, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		t.Fatal(err)
	}
	s := string(data)
	return strings.Fields(s[strings.LastIndex(s, ")")+1:])[0]
}

func waitStatus(t *testing.T, r *runtime, cid string, want specs.ContainerState) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		st := r.state(cid)
		if st.Status == want {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("status %s, want %s", st.Status, want)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func TestRunExitCodeAndOutput(t *testing.T) {
	r := newRuntime(t)
	res := r.runIn(nil, "echo hello from $(hostname); exit 7")
	if res.code != 7 || !strings.Contains(res.stdout, "hello from migrate") {
		t.Fatalf("run: %+v", res)
	}
}

func TestExecJoinsContainer(t *testing.T) {
	r := newRuntime(t)
	b := r.bundle(func(s *specs.Spec) { s.Hostname = "exec-host" }, "sleep", "1000")
	cid := id(t)
	r.must("run", "--detach", "--bundle", b, cid)
	t.Cleanup(func() { r.cli("delete", "--force", cid) })
	out := r.must("exec", cid, "sh", "-c", "hostname; echo pid1=$(cat /proc/1/cmdline | tr '\\0' ' '); cat /proc/self/cgroup | echo fds: $(ls /proc/self/fd)")
	if !strings.Contains(out, "exec-host") || !strings.Contains(out, "pid1=sleep 1000") {
		t.Fatalf("exec output:\n%s", out)
	}
	// CVE-2024-21626: only stdio (and ls's own directory fd) are open.
	if !strings.Contains(out, "fds: 0 1 2 3\n") {
		t.Fatalf("exec'd process has more than stdio open:\n%s", out)
	}
	if res := r.cli("exec", cid, "sh", "-c", "exit 3"); res.code != 3 {
		t.Fatalf("exec exit code: %+v", res)
	}
	st := r.state(cid)
	pids := r.must("ps", "--format", "json", cid)
	if !strings.Contains(pids, strconv.Itoa(st.Pid)) {
		t.Fatalf("ps %s", pids)
	}
}
