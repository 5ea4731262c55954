package e2e

import (
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	specs "github.com/opencontainers/runtime-spec/specs-go"

	"github.com/migratehq/migrate/test/testutil"
)

const checkpointed = "CONTAINER_STATUS_CHECKPOINTED"

// checkpointFile is a file of `checkpoints inspect -o json`.
type checkpointFile struct {
	Path string `json:"path"`
}

// counterWorkload is the busybox bundle running the counter workload, which counts in
// memory: after a restore it must go on from where it was, not start again at 1.
func counterWorkload(t *testing.T) string {
	return testutil.NewBusyboxBundleWith(t, func(s *specs.Spec) {
		s.Process.Args = []string{"/usr/local/bin/counter", "-interval", "50ms"}
	})
}

// counterLog reads the container's log: the counter's numbers in order and how many
// times it started ("pid N" lines).
func (a *agent) counterLog(id string) (nums []int, starts int) {
	a.t.Helper()
	r := must(a.t, a.ctl("logs", id), "logs")
	for _, l := range strings.Split(strings.TrimSpace(r.stdout), "\n") {
		if strings.HasPrefix(l, "pid ") {
			starts++
		} else if n, err := strconv.Atoi(l); err == nil {
			nums = append(nums, n)
		}
	}
	return nums, starts
}

// waitCount waits until the counter has printed a number above n and returns the log.
func (a *agent) waitCount(id string, n int) []int {
	a.t.Helper()
	deadline := time.Now().Add(15 * time.Second)
	for {
		nums, _ := a.counterLog(id)
		if len(nums) > 0 && nums[len(nums)-1] > n {
			return nums
		}
		if time.Now().After(deadline) {
			a.t.Fatalf("counter in %s never passed %d: %v", id, n, nums)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// checkContinuous fails unless the log holds one run of the counter: started once,
// every number exactly one above the one before (nothing lost, nothing repeated, no
// restart from 1).
func checkContinuous(t *testing.T, id string, nums []int, starts int) {
	t.Helper()
	if starts != 1 {
		t.Errorf("%s: counter started %d times: it was restarted, not restored", id, starts)
	}
	for i := 1; i < len(nums); i++ {
		if nums[i] != nums[i-1]+1 {
			t.Errorf("%s: log goes from %d to %d (at line %d of %d)", id, nums[i-1], nums[i], i, len(nums))
			return
		}
	}
}

// wantOpFail checks a failed operation: the exit code, and exactly one error line
// (progress lines may come before it).
func wantOpFail(t *testing.T, r result, code int, contains string) {
	t.Helper()
	if r.code != code {
		t.Errorf("exit code %d, want %d (stderr %q)", r.code, code, r.stderr)
	}
	var errs []string
	for _, l := range strings.Split(strings.TrimRight(r.stderr, "\n"), "\n") {
		if strings.HasPrefix(l, "migratectl: ") {
			errs = append(errs, l)
		}
	}
	if len(errs) != 1 || !strings.Contains(errs[0], contains) {
		t.Errorf("want one error line mentioning %q, got %q", contains, r.stderr)
	}
}

// noLeftovers checks that only the given containers exist, in the agent and in its
// data directory, and that no import or partial checkpoint is left.
func (a *agent) noLeftovers(ids ...string) {
	a.t.Helper()
	ps := a.ps()
	if len(ps) != len(ids) {
		a.t.Errorf("containers %v, want only %v", ps, ids)
	}
	des, _ := os.ReadDir(filepath.Join(a.data, "containers"))
	if len(des) != len(ids) {
		a.t.Errorf("container directories %v, want %d", des, len(ids))
	}
	for _, id := range ids {
		if _, ok := ps[id]; !ok {
			a.t.Errorf("%s not listed", id)
		}
	}
	left, _ := filepath.Glob(filepath.Join(a.data, "checkpoints", ".import-*"))
	partial, _ := filepath.Glob(filepath.Join(a.data, "checkpoints", "*.partial"))
	if len(left)+len(partial) != 0 {
		a.t.Errorf("temporary checkpoint directories left: %v %v", left, partial)
	}
}

// TestCheckpointRestoreCycles checkpoints a counting container, removes it and
// restores it under the same id, three times: the log must show one uninterrupted
// count across all of them, and the restored container must be a working container.
func TestCheckpointRestoreCycles(t *testing.T) {
	t.Parallel()
	a := newAgent(t, agentConfig{})
	id := containerID(t, "c")
	must(t, a.ctl("run", "-b", counterWorkload(t), id), "run")
	a.waitStatus(id, running)
	last := a.waitCount(id, 3)[0]
	var names []string
	for cycle := 1; cycle <= 3; cycle++ {
		name := fmt.Sprintf("%s-%d", id, cycle)
		names = append(names, name)
		r := must(t, a.ctl("checkpoint", "--name", name, id), "checkpoint")
		if !strings.Contains(r.stdout, name) || !strings.Contains(r.stdout, "DOWNTIME") {
			t.Errorf("checkpoint printed %q", r.stdout)
		}
		c := a.waitStatus(id, checkpointed)
		if alive(c.Pid) {
			t.Errorf("cycle %d: init %d alive after a checkpoint without --leave-running", cycle, c.Pid)
		}
		nums, _ := a.counterLog(id)
		atDump := nums[len(nums)-1]
		if atDump < last {
			t.Fatalf("cycle %d: count %d at the dump, was already %d", cycle, atDump, last)
		}
		// A checkpointed container is not running: it can be removed without -f.
		must(t, a.ctl("rm", id), "rm checkpointed container")
		r = must(t, a.ctl("restore", name), "restore")
		if strings.TrimSpace(r.stdout) != id {
			t.Errorf("restore printed %q, want the id", r.stdout)
		}
		a.waitStatus(id, running)
		nums = a.waitCount(id, atDump+3)
		_, starts := a.counterLog(id)
		checkContinuous(t, id, nums, starts)
		last = nums[len(nums)-1]

		r = must(t, a.ctl("exec", id, "--", "sh", "-c", "cat /proc/1/cmdline | tr '\\0' ' '"), "exec in restored container")
		if !strings.Contains(r.stdout, "/usr/local/bin/counter") {
			t.Errorf("cycle %d: exec sees pid 1 as %q", cycle, r.stdout)
		}
	}
	t.Logf("counted to %d across 3 checkpoint/restore cycles", last)

	// Stopped, it cannot be checkpointed.
	must(t, a.ctl("kill", id), "kill")
	a.waitStatus(id, stopped)
	wantFail(t, a.ctl("checkpoint", id), 5, "not running")

	r := must(t, a.ctl("checkpoints"), "checkpoints")
	for _, n := range names {
		if !strings.Contains(r.stdout, n) {
			t.Errorf("checkpoints does not list %s:\n%s", n, r.stdout)
		}
	}
	must(t, a.ctl(append([]string{"checkpoints", "rm"}, names...)...), "checkpoints rm")
	if des, _ := os.ReadDir(filepath.Join(a.data, "checkpoints")); len(des) != 0 {
		t.Errorf("checkpoint directories left after rm: %v", des)
	}
	must(t, a.ctl("rm", id), "rm")
	a.noLeftovers()
	noShimCgroups(t, id)
}

// TestCheckpointLeaveRunningExport takes a checkpoint that leaves the container
// running and exports it, restores the export as a second container, and checks
// that bad input (truncated archive, tampered checkpoint, taken names, unknown
// containers) is refused with one line and leaves nothing behind.
func TestCheckpointLeaveRunningExport(t *testing.T) {
	t.Parallel()
	a := newAgent(t, agentConfig{})
	id := containerID(t, "c")
	must(t, a.ctl("run", "-b", counterWorkload(t), id), "run")
	before := a.waitStatus(id, running)
	a.waitCount(id, 3)

	archive := filepath.Join(t.TempDir(), "c.tar.zst")
	name := id + "-lr"
	r := must(t, a.ctl("checkpoint", "--leave-running", "--name", name, "--export", archive, id), "checkpoint --leave-running")
	lines := strings.Split(strings.TrimSpace(r.stdout), "\n")
	if len(lines) != 2 {
		t.Fatalf("checkpoint output %q", r.stdout)
	}
	f := strings.Fields(lines[1])
	if len(f) < 5 || f[0] != name || f[1] != id || f[len(f)-1] != archive {
		t.Fatalf("checkpoint row %q", lines[1])
	}
	if d, err := time.ParseDuration(f[2]); err != nil || d <= 0 || d > 10*time.Second {
		t.Errorf("downtime %q", f[2])
	}
	if st, err := os.Stat(archive); err != nil || st.Size() == 0 {
		t.Fatalf("export: %v", err)
	}
	after := a.waitStatus(id, running)
	if after.Pid != before.Pid {
		t.Errorf("init pid %d became %d: --leave-running restarted the container", before.Pid, after.Pid)
	}
	nums := a.waitCount(id, 10)
	_, starts := a.counterLog(id)
	checkContinuous(t, id, nums, starts)

	// The export restores as a second container, on a relative path as people type it.
	copyID := id + "-copy"
	cmd := exec.Command(migratectlBin, "--socket", a.sock, "restore", "--name", copyID, "./"+filepath.Base(archive))
	cmd.Dir = filepath.Dir(archive)
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("restore from the archive: %v: %s", err, out)
	}
	a.waitStatus(copyID, running)
	copyNums := a.waitCount(copyID, nums[0]+5)
	_, copyStarts := a.counterLog(copyID)
	if copyStarts != 1 || copyNums[0] != nums[0] {
		t.Errorf("the copy's log does not start with the original's output: starts %d, first %d (original %d)", copyStarts, copyNums[0], nums[0])
	}
	var insp struct {
		Checkpoint struct {
			ContainerID  string `json:"containerId"`
			LeaveRunning bool   `json:"leaveRunning"`
			Files        int    `json:"files"`
		} `json:"checkpoint"`
		Files []checkpointFile `json:"files"`
	}
	r = must(t, a.ctl("checkpoints", "inspect", name), "checkpoints inspect")
	if err := json.Unmarshal([]byte(r.stdout), &insp); err != nil {
		t.Fatalf("checkpoints inspect: %v: %s", err, r.stdout)
	}
	hasLog := slices.ContainsFunc(insp.Files, func(f checkpointFile) bool { return f.Path == "logs/container.log" })
	if insp.Checkpoint.ContainerID != id || !insp.Checkpoint.LeaveRunning || insp.Checkpoint.Files != len(insp.Files) || !hasLog {
		t.Errorf("checkpoints inspect: %+v", insp)
	}

	// Bad input: one line, a documented exit code, nothing left.
	data, err := os.ReadFile(archive)
	if err != nil {
		t.Fatal(err)
	}
	truncated := filepath.Join(t.TempDir(), "truncated.tar.zst")
	if err := os.WriteFile(truncated, data[:len(data)/2], 0o600); err != nil {
		t.Fatal(err)
	}
	wantOpFail(t, a.ctl("restore", "--name", id+"-t", truncated), 2, "truncated")

	tampered := id + "-tampered"
	src := filepath.Join(a.data, "checkpoints", name)
	dst := filepath.Join(a.data, "checkpoints", tampered)
	if out, err := exec.Command("cp", "-a", src, dst).CombinedOutput(); err != nil {
		t.Fatalf("copy checkpoint: %v: %s", err, out)
	}
	pages, _ := filepath.Glob(filepath.Join(dst, "images", "pages-*.img"))
	if len(pages) == 0 {
		t.Fatal("no page images in the checkpoint")
	}
	img, _ := os.ReadFile(pages[0])
	img[len(img)/2] ^= 0xff
	if err := os.WriteFile(pages[0], img, 0o600); err != nil {
		t.Fatal(err)
	}
	wantOpFail(t, a.ctl("restore", "--name", id+"-x", tampered), 2, "checksum mismatch")

	wantFail(t, a.ctl("restore", name), 4, "already exists") // its container runs
	wantFail(t, a.ctl("checkpoint", "--name", name, id), 4, "already exists")
	wantFail(t, a.ctl("checkpoint", "nosuch"), 3, "not found")
	wantFail(t, a.ctl("restore", "nosuch"), 3, "not found")
	wantFail(t, a.ctl("checkpoints", "rm", "nosuch"), 3, "not found")
	wantFail(t, a.ctl("checkpoint", "--export", archive, id), 4, "already exists")
	a.noLeftovers(id, copyID)
	for _, x := range []string{id + "-t", id + "-x"} {
		noShimCgroups(t, x)
		if m, _ := filepath.Glob("/sys/fs/cgroup/*/migrate/" + x); len(m) != 0 {
			t.Errorf("container cgroups left by a failed restore: %v", m)
		}
	}
}

// TestCheckpointCarriesRootfsChanges: a container runs on a layered root (its
// bundle's rootfs as a shared base, its own overlay upper layer); a checkpoint
// carries the base's digest and the container's changes, including deletions,
// and a restore rebuilds them over the same base.
func TestCheckpointCarriesRootfsChanges(t *testing.T) {
	t.Parallel()
	a := newAgent(t, agentConfig{})
	bundle := testutil.NewBusyboxBundleWith(t, func(s *specs.Spec) {
		s.Root.Readonly = false
		s.Process.Args = []string{"sh", "-c", "echo precious > /root/note && rm /etc/group && exec /usr/local/bin/counter -interval 50ms"}
	})
	id := containerID(t, "fs")
	must(t, a.ctl("run", "-b", bundle, id), "run")
	a.waitStatus(id, running)
	a.waitCount(id, 2)
	// The bundle's own rootfs is never written: changes go to the upper layer.
	if _, err := os.Stat(filepath.Join(bundle, "rootfs", "root", "note")); err == nil {
		t.Fatal("the container wrote into its bundle's rootfs instead of its own layer")
	}
	// A second container from the same bundle shares the base.
	twin := containerID(t, "twin")
	must(t, a.ctl("run", "-b", bundle, twin), "run twin")
	if bases, _ := os.ReadDir(filepath.Join(a.data, "bases")); len(bases) != 1 {
		t.Fatalf("two containers of one bundle: %d bases stored, want 1", len(bases))
	}
	must(t, a.ctl("rm", "-f", twin), "rm twin")

	name := id + "-ck"
	must(t, a.ctl("checkpoint", "--name", name, id), "checkpoint")
	r := must(t, a.ctl("checkpoints", "inspect", name), "inspect")
	manifest, err := os.ReadFile(filepath.Join(a.data, "checkpoints", name, "manifest.json"))
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(r.stdout, "rootfs-diff.tar") || !strings.Contains(string(manifest), `"baseDigest": "sha256:`) {
		t.Fatalf("checkpoint lacks the rootfs diff or base digest:\n%s", manifest)
	}
	must(t, a.ctl("rm", id), "rm")
	must(t, a.ctl("restore", name), "restore")
	a.waitStatus(id, running)
	r = must(t, a.ctl("exec", id, "--", "sh", "-c", "cat /root/note; [ -e /etc/group ] && echo group-back || echo group-gone"), "exec")
	if !strings.Contains(r.stdout, "precious") || !strings.Contains(r.stdout, "group-gone") {
		t.Fatalf("rootfs changes after restore: %q", r.stdout)
	}
	must(t, a.ctl("rm", "-f", id), "rm restored")
	must(t, a.ctl("checkpoints", "rm", name), "checkpoints rm")
	if left, _ := filepath.Glob(filepath.Join(a.data, "containers", "*")); len(left) != 0 {
		t.Fatalf("container directories left: %v", left)
	}
	if mi, _ := os.ReadFile("/proc/self/mountinfo"); strings.Contains(string(mi), a.data) {
		t.Fatal("overlay mounts left behind")
	}
}
