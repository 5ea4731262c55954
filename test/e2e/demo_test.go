package e2e

import (
	"bufio"
	"bytes"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/migratehq/migrate/test/testutil"
)

// demoCmd runs scripts/demo.sh with the binaries under test, in a process group of
// its own (as a terminal would run it).
func demoCmd(t *testing.T) *exec.Cmd {
	t.Helper()
	testutil.RequireRoot(t)
	testutil.BusyboxBundle(t)
	testutil.RequireWorkload(t, "httpcounter")
	cmd := exec.Command("../../scripts/demo.sh")
	cmd.Env = append(os.Environ(), "MIGRATE_BIN="+filepath.Dir(migratedBin))
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	return cmd
}

var (
	demoWorkRe = regexp.MustCompile(`(/tmp/migrate-demo\.[A-Za-z0-9]+)/pki`)
	demoIDRe   = regexp.MustCompile(`container (web-(\d+)):`)
	demoMoveRe = regexp.MustCompile(`(?m)^   client count: (\d+) before, (\d+) after: goes on$`)
	demoDownRe = regexp.MustCompile(`(?m)^   downtime ([0-9.]+)s \(agent\)`)
)

// demoLeftovers fails the test if anything the demo made is left: its network
// namespaces, its work directory, mounts under it, processes using it (agents,
// shims, the container) or the container's cgroups.
func demoLeftovers(t *testing.T, out string) {
	t.Helper()
	w := demoWorkRe.FindStringSubmatch(out)
	id := demoIDRe.FindStringSubmatch(out)
	if w == nil || id == nil {
		t.Fatalf("demo output names no work directory or container:\n%s", out)
	}
	work, cid, pid := w[1], id[1], id[2]
	if ns, _ := filepath.Glob("/run/netns/mdemo" + pid + "-*"); len(ns) != 0 {
		t.Errorf("network namespaces left: %v", ns)
	}
	if _, err := os.Stat(work); err == nil {
		t.Errorf("work directory %s left", work)
	}
	if mi, _ := os.ReadFile("/proc/self/mountinfo"); bytes.Contains(mi, []byte(work)) {
		t.Errorf("mounts under %s left", work)
	}
	for _, pat := range []string{
		"/sys/fs/cgroup/*/migrate/" + cid, "/sys/fs/cgroup/*/migrate/*/" + cid, "/sys/fs/cgroup/migrate/" + cid,
		"/sys/fs/cgroup/migrate/*/" + cid, "/sys/fs/cgroup/*/migrate-shim/" + cid + "-*", "/sys/fs/cgroup/migrate-shim/" + cid + "-*",
	} {
		if m, _ := filepath.Glob(pat); len(m) != 0 {
			t.Errorf("container cgroups left: %v", m)
		}
	}
	procs, _ := filepath.Glob("/proc/[0-9]*/cmdline")
	for _, p := range procs {
		if b, err := os.ReadFile(p); err == nil && bytes.Contains(b, []byte(work)) {
			t.Errorf("process %s left: %q", filepath.Dir(p), bytes.ReplaceAll(b, []byte{0}, []byte{' '}))
		}
	}
}

// TestDemo runs the demo end to end: two moves, each with a downtime, and the
// client's count going on across both (the demo itself fails otherwise); a summary;
// nothing left afterwards.
func TestDemo(t *testing.T) {
	if testing.Short() {
		t.Skip("the demo takes about a minute")
	}
	t.Parallel()
	cmd := demoCmd(t)
	var buf bytes.Buffer
	cmd.Stdout, cmd.Stderr = &buf, &buf
	start := time.Now()
	err := cmd.Run()
	out := buf.String()
	t.Logf("demo (%v):\n%s", time.Since(start).Round(time.Second), out)
	if err != nil {
		t.Fatalf("demo failed: %v", err)
	}
	moves := demoMoveRe.FindAllStringSubmatch(out, -1)
	if len(moves) != 2 {
		t.Fatalf("want two moves whose count goes on, got %d", len(moves))
	}
	for i, m := range moves {
		before, _ := strconv.Atoi(m[1])
		after, _ := strconv.Atoi(m[2])
		if before < 10 || after <= before {
			t.Errorf("move %d: count %d before, %d after", i+1, before, after)
		}
	}
	if d := demoDownRe.FindAllStringSubmatch(out, -1); len(d) != 2 {
		t.Errorf("want two downtimes, got %v", d)
	}
	for _, want := range []string{"node1 -> node2", "node2 -> node1", "base sent", "base already there", "== summary", "demo passed"} {
		if !strings.Contains(out, want) {
			t.Errorf("demo output lacks %q", want)
		}
	}
	demoLeftovers(t, out)
}

// TestDemoInterrupted stops the demo with SIGINT to its process group, as Ctrl-C
// does, in the middle of its first move: it says so, exits 130 and leaves nothing.
func TestDemoInterrupted(t *testing.T) {
	if testing.Short() {
		t.Skip("the demo takes about half a minute to its first move")
	}
	t.Parallel()
	cmd := demoCmd(t)
	pr, pw, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	cmd.Stdout, cmd.Stderr = pw, pw
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	pw.Close()
	var buf bytes.Buffer
	sent := make(chan struct{})
	interrupted := sent // sent is the goroutine's: nil once closed
	done := make(chan struct{})
	go func() {
		defer close(done)
		sc := bufio.NewScanner(pr)
		for sc.Scan() {
			buf.WriteString(sc.Text() + "\n")
			if strings.HasPrefix(sc.Text(), "== move ") && sent != nil {
				_ = syscall.Kill(-cmd.Process.Pid, syscall.SIGINT)
				close(sent)
				sent = nil
			}
		}
	}()
	select {
	case <-interrupted:
	case <-time.After(3 * time.Minute):
		_ = syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL)
		t.Fatal("the demo did not reach its first move in 3 minutes")
	}
	err = cmd.Wait()
	<-done
	out := buf.String()
	t.Logf("interrupted demo:\n%s", out)
	if ee, ok := err.(*exec.ExitError); !ok || ee.ExitCode() != 130 {
		t.Errorf("interrupted demo: %v, want exit status 130", err)
	}
	if !strings.Contains(out, "interrupted, cleaning up") {
		t.Errorf("the demo did not say it was interrupted")
	}
	demoLeftovers(t, out)
}
