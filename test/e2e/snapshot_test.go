package e2e

import (
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	specs "github.com/opencontainers/runtime-spec/specs-go"

	"github.com/migratehq/migrate/test/testutil"
	"github.com/migratehq/migrate/test/workloads/memcheck"
)

// snapInfo is a snapshot as `snapshot ... -o json` prints it (int64 as strings).
type snapInfo struct {
	Name          string `json:"name"`
	ContainerID   string `json:"containerId"`
	Trigger       string `json:"trigger"`
	LogicalBytes  string `json:"logicalBytes"`
	StoredBytes   string `json:"storedBytes"`
	ManifestBytes string `json:"manifestBytes"`
	CreatedAt     string `json:"createdAt"`
}

// stored is what the snapshot added to the store: new chunks and its manifest.
func (s snapInfo) stored() int64 {
	n, _ := strconv.ParseInt(s.StoredBytes, 10, 64)
	m, _ := strconv.ParseInt(s.ManifestBytes, 10, 64)
	return n + m
}

func (s snapInfo) logical() int64 { n, _ := strconv.ParseInt(s.LogicalBytes, 10, 64); return n }

func (a *agent) snapshotNow(id string) snapInfo {
	a.t.Helper()
	r := must(a.t, a.ctl("snapshot", "now", id, "-o", "json"), "snapshot now "+id)
	var out struct {
		Snapshot snapInfo `json:"snapshot"`
	}
	if err := json.Unmarshal([]byte(r.stdout), &out); err != nil || out.Snapshot.Name == "" {
		a.t.Fatalf("snapshot now -o json: %v: %s", err, r.stdout)
	}
	return out.Snapshot
}

func (a *agent) snapshots(id string) []snapInfo {
	a.t.Helper()
	args := []string{"snapshot", "ls", "-o", "json"}
	if id != "" {
		args = append(args, id)
	}
	r := must(a.t, a.ctl(args...), "snapshot ls")
	var out struct {
		Snapshots []snapInfo `json:"snapshots"`
	}
	if err := json.Unmarshal([]byte(r.stdout), &out); err != nil {
		a.t.Fatalf("snapshot ls -o json: %v: %s", err, r.stdout)
	}
	return out.Snapshots
}

// snapMemwriterBundle runs memwriter filling mib MiB, rewriting 1% of its pages on
// SIGUSR2 and keeping its status in /tmp/mw.status inside the container.
func snapMemwriterBundle(t *testing.T, mib int) string {
	return testutil.NewBusyboxBundleWith(t, func(s *specs.Spec) {
		s.Process.Args = []string{"/usr/local/bin/memwriter", "-mib", fmt.Sprint(mib), "-touch", "1", "-status", "/tmp/mw.status"}
		s.Linux.Resources = nil
		s.Root.Readonly = false // the status file
	})
}

// memStatus waits until the memwriter of container id reports a status newer
// than after with the given state, and returns it.
func (a *agent) memStatus(id string, after uint64, state string) memcheck.Status {
	a.t.Helper()
	deadline := time.Now().Add(60 * time.Second)
	for {
		c := a.ps()[id]
		st, err := memcheck.ReadStatus(fmt.Sprintf("/proc/%d/root/tmp/mw.status", c.Pid))
		if err == nil && st.Seq > after && st.State == state {
			return st
		}
		if err == nil && st.State == memcheck.StateCorrupt {
			a.t.Fatalf("memwriter in %s reports corrupt memory: %v", id, st)
		}
		if time.Now().After(deadline) {
			a.t.Fatalf("memwriter in %s (%+v): status %v (%v), want %s after seq %d; log: %s", id, c, st, err, state, after, a.ctl("logs", id).stdout)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// signal sends sig to the init of container id.
func (a *agent) signal(id string, sig syscall.Signal) {
	a.t.Helper()
	if err := syscall.Kill(a.ps()[id].Pid, sig); err != nil {
		a.t.Fatalf("signal %s: %v", id, err)
	}
}

// TestSnapshotIncrementalRestore snapshots a 256 MiB memory writer twice with 1% of its
// pages rewritten in between: the second snapshot stores under 5% of the first's
// bytes. Each snapshot restored (under a new id, beside the original) holds the
// memory of its moment, checked page by page by the workload itself.
func TestSnapshotIncrementalRestore(t *testing.T) {
	t.Parallel()
	a := newAgent(t, agentConfig{})
	id := containerID(t, "mw")
	must(t, a.ctl("run", "-b", snapMemwriterBundle(t, 256), id), "run")
	a.waitStatus(id, running)
	st0 := a.memStatus(id, 0, memcheck.StateReady)

	s1 := a.snapshotNow(id)
	a.signal(id, syscall.SIGUSR2)
	st1 := a.memStatus(id, st0.Seq, memcheck.StateTouched)
	if st1.Sum == st0.Sum {
		t.Fatal("touch did not change the memory checksum")
	}
	s2 := a.snapshotNow(id)
	ratio := float64(s2.stored()) / float64(s1.stored())
	t.Logf("first snapshot: %d logical, %d stored; second: %d logical, %d stored (%.2f%%)",
		s1.logical(), s1.stored(), s2.logical(), s2.stored(), 100*ratio)
	if s1.stored() < 200<<20 || ratio >= 0.05 {
		t.Errorf("second snapshot stored %d bytes, %.2f%% of the first's %d: want under 5%%", s2.stored(), 100*ratio, s1.stored())
	}
	if s1.Trigger != "manual" || s1.ContainerID != id {
		t.Errorf("snapshot %+v", s1)
	}
	if l := a.snapshots(id); len(l) != 2 || l[0].Name != s1.Name || l[1].Name != s2.Name {
		t.Errorf("snapshot ls %s: %+v", id, l)
	}
	insp := must(t, a.ctl("snapshot", "inspect", s1.Name), "inspect")
	if !strings.Contains(insp.stdout, `"exclusiveBytes"`) || !strings.Contains(insp.stdout, "checkpointManifestJson") {
		t.Errorf("inspect: %s", insp.stdout)
	}

	for i, c := range []struct {
		snap snapInfo
		sum  string
	}{{s1, st0.Sum}, {s2, st1.Sum}} {
		rid := fmt.Sprintf("%s-r%d", id, i)
		must(t, a.ctl("snapshot", "restore", c.snap.Name, "--name", rid), "restore "+c.snap.Name)
		a.waitStatus(rid, running)
		before, err := memcheck.ReadStatus(fmt.Sprintf("/proc/%d/root/tmp/mw.status", a.ps()[rid].Pid))
		if err != nil {
			t.Fatal(err)
		}
		a.signal(rid, syscall.SIGUSR1) // verify every page
		got := a.memStatus(rid, before.Seq, memcheck.StateOK)
		if got.Sum != c.sum {
			t.Errorf("restored %s: memory checksum %s, want %s (of its moment)", c.snap.Name, got.Sum, c.sum)
		}
		must(t, a.ctl("rm", "-f", rid), "rm restored")
	}
	if des, _ := os.ReadDir(filepath.Join(a.data, "snapshots", "scratch")); len(des) != 0 {
		t.Errorf("scratch left: %v", des)
	}
	r := must(t, a.ctl("snapshot", "verify"), "verify")
	if !strings.Contains(r.stdout, "2 snapshots") || !strings.Contains(r.stdout, "0 damaged") {
		t.Errorf("verify: %s", r.stdout)
	}
}

// TestSnapshotSchedule: a schedule with --every and --keep-last produces
// snapshots and prunes the old ones; after an agent restart it goes on.
func TestSnapshotSchedule(t *testing.T) {
	t.Parallel()
	a := newAgent(t, agentConfig{})
	id := containerID(t, "c")
	must(t, a.ctl("run", "-b", counterWorkload(t), id), "run")
	a.waitStatus(id, running)
	manual := a.snapshotNow(id) // never pruned: not the schedule's
	must(t, a.ctl("snapshot", "schedule", id, "--every", "2s", "--keep-last", "2", "--jitter", "0s"), "schedule")

	seen := map[string]bool{}
	scheduled := func() []snapInfo {
		var out []snapInfo
		for _, s := range a.snapshots(id) {
			if s.Trigger == "schedule" {
				out = append(out, s)
				seen[s.Name] = true
			}
		}
		return out
	}
	deadline := time.Now().Add(60 * time.Second)
	for len(seen) < 4 {
		if l := scheduled(); len(l) > 3 {
			t.Fatalf("keep-last 2 but %d scheduled snapshots listed", len(l))
		}
		if time.Now().After(deadline) {
			t.Fatalf("only %d scheduled snapshots in 60s", len(seen))
		}
		time.Sleep(200 * time.Millisecond)
	}
	// Pruning follows each snapshot: eventually exactly the newest 2.
	var l []snapInfo
	for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(100 * time.Millisecond) {
		if l = scheduled(); len(l) == 2 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("scheduled snapshots %+v, want 2", l)
		}
	}
	if all := a.snapshots(id); len(all) != 3 || all[0].Name != manual.Name {
		t.Errorf("the manual snapshot was pruned, or more are kept: %+v", all)
	}
	r := must(t, a.ctl("snapshot", "schedules", "-o", "json"), "schedules")
	// protojson varies its spacing on purpose: match the value, not the layout.
	if !strings.Contains(r.stdout, id) || !regexp.MustCompile(`"keepLast":\s*2\b`).MatchString(r.stdout) {
		t.Errorf("schedules: %s", r.stdout)
	}

	// Restart: the schedule is read back and runs again.
	a.stop()
	restarted := time.Now()
	a.start()
	deadline = time.Now().Add(30 * time.Second)
	for {
		var fresh bool
		for _, s := range scheduled() {
			if ts, err := time.Parse(time.RFC3339Nano, s.CreatedAt); err == nil && ts.After(restarted) {
				fresh = true
			}
		}
		if fresh {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("no scheduled snapshot after the restart; schedules: %s", a.ctl("snapshot", "schedules").stdout)
		}
		time.Sleep(200 * time.Millisecond)
	}
	must(t, a.ctl("snapshot", "unschedule", id), "unschedule")
	wantFail(t, a.ctl("snapshot", "unschedule", id), 3, "not found")
	// unschedule returns once a run in progress finished: what is listed now
	// is all there will be.
	scheduled()
	n := len(seen)
	time.Sleep(3 * time.Second)
	scheduled()
	if len(seen) != n {
		t.Errorf("snapshots went on after unschedule: %d -> %d", n, len(seen))
	}
}

func chunkCount(t *testing.T, store string) int {
	t.Helper()
	n := 0
	des, err := os.ReadDir(filepath.Join(store, "chunks"))
	if err != nil {
		return 0
	}
	for _, d := range des {
		sub, _ := os.ReadDir(filepath.Join(store, "chunks", d.Name()))
		n += len(sub)
	}
	return n
}

// TestSnapshotAgentKilledDuringStore kills the agent with SIGKILL while a
// snapshot is being stored: afterwards no snapshot is listed, verify finds no
// damage, GC reclaims every partial chunk, and snapshots work again.
func TestSnapshotAgentKilledDuringStore(t *testing.T) {
	t.Parallel()
	a := newAgent(t, agentConfig{})
	id := containerID(t, "mw")
	must(t, a.ctl("run", "-b", snapMemwriterBundle(t, 256), id), "run")
	a.waitStatus(id, running)
	a.memStatus(id, 0, memcheck.StateReady)
	store := filepath.Join(a.data, "pagestore")

	var wg sync.WaitGroup
	var r result
	wg.Add(1)
	go func() { defer wg.Done(); r = a.ctl("snapshot", "now", id) }()
	deadline := time.Now().Add(90 * time.Second)
	for chunkCount(t, store) < 500 {
		if time.Now().After(deadline) {
			t.Fatal("the snapshot never started storing chunks")
		}
		time.Sleep(20 * time.Millisecond)
	}
	a.kill9()
	wg.Wait()
	if r.code == 0 {
		t.Fatalf("snapshot succeeded although the agent was killed: %s", r.stdout)
	}
	partial := chunkCount(t, store)
	t.Logf("killed with %d chunks written", partial)

	a.start()
	if l := a.snapshots(""); len(l) != 0 {
		t.Errorf("interrupted snapshot listed: %+v", l)
	}
	v := must(t, a.ctl("snapshot", "verify"), "verify after the kill")
	if !strings.Contains(v.stdout, "0 damaged") {
		t.Errorf("verify: %s", v.stdout)
	}
	gc := must(t, a.ctl("snapshot", "gc", "-o", "json"), "gc")
	var g struct {
		FreedBytes string `json:"freedBytes"`
		Chunks     string `json:"chunks"`
	}
	if err := json.Unmarshal([]byte(gc.stdout), &g); err != nil {
		t.Fatalf("gc -o json: %v: %s", err, gc.stdout)
	}
	if g.FreedBytes == "0" || g.FreedBytes == "" || (g.Chunks != "0" && g.Chunks != "") {
		t.Errorf("gc after the kill: %+v", g)
	}
	if n := chunkCount(t, store); n != 0 {
		t.Errorf("%d chunks left after gc (%d before)", n, partial)
	}
	if des, _ := os.ReadDir(filepath.Join(store, "tmp")); len(des) != 0 {
		t.Errorf("tmp left: %d entries", len(des))
	}
	if des, _ := os.ReadDir(filepath.Join(a.data, "snapshots", "scratch")); len(des) != 0 {
		t.Errorf("scratch left: %v", des)
	}
	// The container kept running and snapshots again.
	a.waitStatus(id, running)
	s := a.snapshotNow(id)
	if s.stored() < 128<<20 {
		t.Errorf("snapshot after the kill stored %d bytes", s.stored())
	}
	must(t, a.ctl("snapshot", "verify"), "verify")
}

// TestSnapshotBadInput: invalid schedules, unknown and deleted snapshots, and a
// corrupt chunk, which makes restore fail naming the snapshot without
// starting anything.
func TestSnapshotBadInput(t *testing.T) {
	t.Parallel()
	a := newAgent(t, agentConfig{})
	id := containerID(t, "c")
	must(t, a.ctl("run", "-b", counterWorkload(t), id), "run")
	a.waitStatus(id, running)

	wantFail(t, a.ctl("snapshot", "schedule", id, "--every", "5x"), 2, "every")
	wantFail(t, a.ctl("snapshot", "schedule", id, "--cron", "61 * * * *"), 2, "cron")
	wantFail(t, a.ctl("snapshot", "schedule", id, "--cron", "every day"), 2, "cron")
	wantFail(t, a.ctl("snapshot", "schedule", id, "--every", "10ms"), 2, "shorter")
	wantFail(t, a.ctl("snapshot", "schedule", id), 2, "--every")
	wantFail(t, a.ctl("snapshot", "schedule", id, "--every", "1m", "--cron", "* * * * *"), 2, "--every")
	wantFail(t, a.ctl("snapshot", "schedule", id+"-nope", "--every", "1m"), 3, "not found")
	wantFail(t, a.ctl("snapshot", "now", id+"-nope"), 3, "not found")
	wantFail(t, a.ctl("snapshot", "restore", "no-such-snapshot"), 3, "not found")
	wantFail(t, a.ctl("snapshot", "restore", "../etc"), 2, "invalid")

	s := a.snapshotNow(id)
	wantFail(t, a.ctl("snapshot", "restore", s.Name), 4, "already exists")

	// Corrupt one chunk: same size, other bytes.
	var chunk string
	_ = filepath.WalkDir(filepath.Join(a.data, "pagestore", "chunks"), func(p string, d os.DirEntry, err error) error {
		if err == nil && d.Type().IsRegular() && chunk == "" {
			chunk = p
		}
		return nil
	})
	fi, err := os.Stat(chunk)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(chunk, []byte(strings.Repeat("x", int(fi.Size()))), 0o600); err != nil {
		t.Fatal(err)
	}
	r := a.ctl("snapshot", "restore", s.Name, "--name", id+"-r")
	wantFail(t, r, 2, s.Name)
	if !strings.Contains(r.stderr, "corrupt chunk") {
		t.Errorf("restore of a corrupt snapshot: %q", r.stderr)
	}
	if _, ok := a.ps()[id+"-r"]; ok {
		t.Errorf("a container was restored from a corrupt snapshot")
	}
	v := a.ctl("snapshot", "verify")
	if v.code != 1 || !strings.Contains(v.stdout, s.Name) || !strings.Contains(v.stderr, "damaged") {
		t.Errorf("verify of a corrupt store: exit %d %q %q", v.code, v.stdout, v.stderr)
	}

	// A deleted snapshot is gone for restore.
	must(t, a.ctl("snapshot", "rm", s.Name), "rm")
	wantFail(t, a.ctl("snapshot", "restore", s.Name, "--name", id+"-r"), 3, "not found")
	wantFail(t, a.ctl("snapshot", "rm", s.Name), 3, "not found")
	must(t, a.ctl("snapshot", "gc"), "gc")
	must(t, a.ctl("snapshot", "verify"), "verify after rm and gc")
	a.noLeftovers(id)
}

// TestSnapshotRestoreOnPeer restores a snapshot on another node: the first
// restore sends the chunks and the rootfs base, a later snapshot of the same
// container sends only what the peer lacks.
func TestSnapshotRestoreOnPeer(t *testing.T) {
	t.Parallel()
	n1, n2 := movePair(t, "", "")
	id := containerID(t, "c")
	must(t, n1.ctl("run", "-b", counterWorkload(t), id), "run")
	n1.waitStatus(id, running)
	n1.waitCount(id, 3)
	s1 := n1.snapshotNow(id)

	type restoreOut struct {
		Node          string `json:"node"`
		SentChunks    string `json:"sentChunks"`
		SentBytes     string `json:"sentBytes"`
		PresentChunks string `json:"presentChunks"`
		BaseSent      bool   `json:"baseSent"`
	}
	restore := func(snap, name string) restoreOut {
		r := must(t, n1.ctl("snapshot", "restore", snap, "--to", "n2", "--name", name, "-o", "json"), "restore --to n2")
		var out restoreOut
		if err := json.Unmarshal([]byte(r.stdout), &out); err != nil {
			t.Fatalf("restore -o json: %v: %s", err, r.stdout)
		}
		return out
	}
	r1 := restore(s1.Name, id+"-a")
	if r1.Node != "n2" || r1.SentChunks == "0" || !r1.BaseSent {
		t.Errorf("first restore on n2: %+v", r1)
	}
	n2.waitStatus(id+"-a", running)
	n2.waitCount(id+"-a", 3)
	if l := n2.snapshots(id); len(l) != 1 || l[0].Name != s1.Name {
		t.Errorf("n2 keeps %+v, want the snapshot it received", l)
	}

	s2 := n1.snapshotNow(id)
	r2 := restore(s2.Name, id+"-b")
	sent1, _ := strconv.Atoi(r1.SentChunks)
	sent2, _ := strconv.Atoi(r2.SentChunks)
	present2, _ := strconv.Atoi(r2.PresentChunks)
	t.Logf("first restore sent %d chunks (%s bytes), second %d (%s bytes), %d present", sent1, r1.SentBytes, sent2, r2.SentBytes, present2)
	if r2.BaseSent || present2 == 0 || sent2 >= sent1 {
		t.Errorf("second restore on n2: %+v, first %+v", r2, r1)
	}
	n2.waitStatus(id+"-b", running)
	must(t, n2.ctl("snapshot", "verify"), "verify on n2")
	wantFail(t, n1.ctl("snapshot", "restore", s2.Name, "--to", "n9"), 3, "n9")
}
