package cgroups

import (
	"bufio"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	specs "github.com/opencontainers/runtime-spec/specs-go"
)

// Integration tests: they need root and write to this machine's cgroupfs.
// Every test uses its own cgroup under /migrate and removes it.

func needRoot(t *testing.T) {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("needs root to manage cgroups")
	}
}

var unsafeChars = regexp.MustCompile(`[^A-Za-z0-9_.-]`)

// testID is unique per test and process, so parallel tests and parallel
// `go test` runs do not collide.
func testID(t *testing.T) string {
	return "test-" + unsafeChars.ReplaceAllString(t.Name(), "_") + "-" + strconv.Itoa(os.Getpid())
}

// newTestManager creates a manager and registers a cleanup that destroys the
// cgroup and checks that nothing is left behind. Register it before starting
// children: cleanups run last-in first-out, so children are killed first.
func newTestManager(t *testing.T, cfg Config) *Manager {
	t.Helper()
	if cfg.ID == "" {
		cfg.ID = testID(t)
	}
	m, err := New(cfg)
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	t.Cleanup(func() {
		if err := m.Destroy(); err != nil {
			t.Errorf("Destroy: %v", err)
		}
		for c, p := range m.Paths() {
			if _, err := os.Stat(p); !errors.Is(err, os.ErrNotExist) {
				t.Errorf("controller %q: %s still exists after Destroy (%v)", c, p, err)
			}
		}
	})
	return m
}

// child is a process that blocks reading its stdin until release is called,
// so the test can move it into a cgroup before it does anything.
type child struct {
	cmd   *exec.Cmd
	stdin io.WriteCloser
	done  chan error
}

func startChild(t *testing.T, script string) *child {
	t.Helper()
	cmd := exec.Command("/bin/sh", "-c", "read _ && {\n"+script+"\n}")
	stdin, err := cmd.StdinPipe()
	if err != nil {
		t.Fatal(err)
	}
	cmd.Stderr = io.Discard
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	c := &child{cmd: cmd, stdin: stdin, done: make(chan error, 1)}
	go func() { c.done <- cmd.Wait() }()
	t.Cleanup(func() {
		// Grandchildren (TestPidsRecursive) are killed through the cgroup.
		_ = cmd.Process.Kill()
		<-c.done
	})
	return c
}

func (c *child) pid() int { return c.cmd.Process.Pid }

func (c *child) release(t *testing.T) {
	t.Helper()
	if _, err := io.WriteString(c.stdin, "\n"); err != nil {
		t.Fatal(err)
	}
}

func (c *child) wait(t *testing.T) error {
	t.Helper()
	select {
	case err := <-c.done:
		c.done <- err // let the cleanup's receive succeed
		return err
	case <-time.After(10 * time.Second):
		t.Fatal("child did not exit")
		return nil
	}
}

// killAll kills every process in the cgroup (children of the test's shells).
func killAll(t *testing.T, m *Manager) {
	t.Helper()
	pids, err := m.Pids()
	if err != nil {
		t.Errorf("Pids: %v", err)
	}
	for _, p := range pids {
		_ = syscall.Kill(p, syscall.SIGKILL)
	}
	deadline := time.Now().Add(5 * time.Second)
	for time.Now().Before(deadline) {
		if pids, _ := m.Pids(); len(pids) == 0 {
			return
		}
		time.Sleep(10 * time.Millisecond)
	}
	t.Errorf("processes still in cgroup after SIGKILL")
}

func readFile(t *testing.T, dir, name string) string {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(dir, name))
	if err != nil {
		t.Fatal(err)
	}
	return strings.TrimSpace(string(b))
}

// procCgroups returns /proc/PID/cgroup as controller-list -> path.
func procCgroups(t *testing.T, pid int) map[string]string {
	t.Helper()
	f, err := os.Open(fmt.Sprintf("/proc/%d/cgroup", pid))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	out := map[string]string{}
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		parts := strings.SplitN(sc.Text(), ":", 3)
		if len(parts) == 3 {
			out[parts[1]] = parts[2]
		}
	}
	return out
}

// procStat returns the state letter and utime+stime ticks of pid.
func procStat(t *testing.T, pid int) (byte, uint64) {
	t.Helper()
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		t.Fatal(err)
	}
	// The command name may contain spaces; fields restart after ")".
	f := strings.Fields(string(b[strings.LastIndexByte(string(b), ')')+2:]))
	ut, _ := strconv.ParseUint(f[11], 10, 64)
	st, _ := strconv.ParseUint(f[12], 10, 64)
	return f[0][0], ut + st
}

func firstBlockDevice(t *testing.T) string {
	t.Helper()
	entries, _ := os.ReadDir("/sys/block")
	var fallback string
	for _, e := range entries {
		b, err := os.ReadFile(filepath.Join("/sys/block", e.Name(), "dev"))
		if err != nil {
			continue
		}
		dev := strings.TrimSpace(string(b))
		if !strings.HasPrefix(e.Name(), "loop") && !strings.HasPrefix(e.Name(), "zram") {
			return dev
		}
		if fallback == "" {
			fallback = dev
		}
	}
	if fallback == "" {
		t.Skip("no block device for throttle tests")
	}
	return fallback
}

func TestApplySetReadBack(t *testing.T) {
	needRoot(t)
	t.Parallel()
	mode := Mode()
	dev := firstBlockDevice(t)
	var major, minor int64
	fmt.Sscanf(dev, "%d:%d", &major, &minor)
	bd := specs.LinuxBlockIODevice{Major: major, Minor: minor}
	res := &specs.LinuxResources{
		Memory: &specs.LinuxMemory{Limit: i64(64 << 20), Reservation: i64(32 << 20)},
		CPU:    &specs.LinuxCPU{Shares: u64(512), Quota: i64(50000), Period: u64(100000), Cpus: "0", Mems: "0"},
		Pids:   &specs.LinuxPids{Limit: i64(42)},
		BlockIO: &specs.LinuxBlockIO{
			ThrottleReadBpsDevice:   []specs.LinuxThrottleDevice{{LinuxBlockIODevice: bd, Rate: 1 << 20}},
			ThrottleWriteIOPSDevice: []specs.LinuxThrottleDevice{{LinuxBlockIODevice: bd, Rate: 100}},
		},
	}
	if mode != ModeV2 {
		res.Memory.Swappiness = u64(10)
		res.BlockIO.Weight = u16(500)
	}
	m := newTestManager(t, Config{ID: testID(t), Resources: res})
	if got, want := m.CgroupPath(), "/migrate/"+testID(t); got != want {
		t.Fatalf("CgroupPath = %q, want %q", got, want)
	}
	c := startChild(t, "exec sleep 100")
	if err := m.Apply(c.pid()); err != nil {
		t.Fatalf("Apply: %v", err)
	}
	if err := m.Set(nil); err != nil {
		t.Fatalf("Set: %v", err)
	}
	c.release(t)

	// The process is in our cgroup in every hierarchy (including
	// name=systemd and, on hybrid hosts, the v2 one), not the test's.
	for ctrls, p := range procCgroups(t, c.pid()) {
		if p != m.CgroupPath() {
			t.Errorf("/proc/PID/cgroup %q: %q, want %q", ctrls, p, m.CgroupPath())
		}
	}

	throttleLine := func(rate int) string { return fmt.Sprintf("%s %d", dev, rate) }
	var want map[string]map[string]string // controller -> file -> value
	if mode == ModeV2 {
		want = map[string]map[string]string{"": {
			"memory.max": strconv.Itoa(64 << 20), "memory.low": strconv.Itoa(32 << 20),
			"cpu.max": "50000 100000", "cpuset.cpus": "0", "pids.max": "42",
		}}
	} else {
		want = map[string]map[string]string{
			"memory": {"memory.limit_in_bytes": strconv.Itoa(64 << 20), "memory.soft_limit_in_bytes": strconv.Itoa(32 << 20), "memory.swappiness": "10"},
			"cpu":    {"cpu.shares": "512", "cpu.cfs_quota_us": "50000", "cpu.cfs_period_us": "100000"},
			"cpuset": {"cpuset.cpus": "0", "cpuset.mems": "0"},
			"pids":   {"pids.max": "42"},
			"blkio":  {"blkio.throttle.read_bps_device": throttleLine(1 << 20), "blkio.throttle.write_iops_device": throttleLine(100)},
		}
	}
	if mode != ModeV2 {
		// CFQ's blkio.weight is gone from current kernels; BFQ's file is used.
		f := "blkio.weight"
		if _, err := os.Stat(filepath.Join(m.Path("blkio"), f)); err != nil {
			f = "blkio.bfq.weight"
		}
		if got := readFile(t, m.Path("blkio"), f); !strings.HasSuffix(got, "500") {
			t.Errorf("%s = %q, want 500", f, got)
		}
	}
	for ctrl, files := range want {
		dir := m.Path(ctrl)
		if dir == "" {
			t.Errorf("no path for controller %q", ctrl)
			continue
		}
		if !strings.HasSuffix(dir, m.CgroupPath()) {
			t.Errorf("path %q does not end in %q", dir, m.CgroupPath())
		}
		for f, v := range files {
			if got := readFile(t, dir, f); got != v {
				t.Errorf("%s/%s = %q, want %q", dir, f, got, v)
			}
		}
	}

	// An update touches only what it names.
	if err := m.Set(&specs.LinuxResources{Pids: &specs.LinuxPids{Limit: i64(-1)}}); err != nil {
		t.Fatalf("Set update: %v", err)
	}
	pidsDir, memDir, memFile := m.Path("pids"), m.Path("memory"), "memory.limit_in_bytes"
	if mode == ModeV2 {
		pidsDir, memDir, memFile = m.Path(""), m.Path(""), "memory.max"
	}
	if got := readFile(t, pidsDir, "pids.max"); got != "max" {
		t.Errorf("pids.max after update = %q, want max", got)
	}
	if got := readFile(t, memDir, memFile); got != strconv.Itoa(64<<20) {
		t.Errorf("%s changed by a pids-only update: %q", memFile, got)
	}

	// Memory is charged from the move on (v1 does not move old charges):
	// wait for the exec of sleep, which allocates inside the cgroup.
	deadline := time.Now().Add(5 * time.Second)
	for {
		if b, _ := os.ReadFile(fmt.Sprintf("/proc/%d/comm", c.pid())); strings.TrimSpace(string(b)) == "sleep" {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("child did not exec sleep")
		}
		time.Sleep(5 * time.Millisecond)
	}
	st, err := m.Stats()
	if err != nil {
		t.Fatalf("Stats: %v", err)
	}
	if st.MemoryLimit != 64<<20 || st.PidsCurrent != 1 || st.PidsLimit != 0 || st.MemoryUsage == 0 {
		t.Errorf("Stats = %+v; want limit %d, 1 pid, no pids limit, some memory", st, 64<<20)
	}
}

func TestApplyCreateOnlyAndRelativePath(t *testing.T) {
	needRoot(t)
	t.Parallel()
	// The per-pod parent is not the manager's to remove; the test removes it
	// after Destroy (cleanups run last-in first-out).
	var m *Manager
	t.Cleanup(func() {
		for _, p := range m.Paths() {
			if err := os.Remove(filepath.Dir(p)); err != nil {
				t.Errorf("remove pod parent: %v", err)
			}
		}
	})
	m = newTestManager(t, Config{CgroupsPath: "pod-" + testID(t) + "/ctr"})
	if want := "/migrate/pod-" + testID(t) + "/ctr"; m.CgroupPath() != want {
		t.Fatalf("CgroupPath = %q, want %q", m.CgroupPath(), want)
	}
	if m.Exists() {
		t.Fatal("New created the cgroup")
	}
	if err := m.Apply(-1); err != nil {
		t.Fatalf("Apply(-1): %v", err)
	}
	if !m.Exists() {
		t.Fatal("Apply(-1) did not create the cgroup")
	}
	if pids, err := m.Pids(); err != nil || len(pids) != 0 {
		t.Fatalf("Pids = %v, %v; want none", pids, err)
	}
	if err := m.Apply(0); err == nil {
		t.Fatal("Apply(0) succeeded")
	}
}

func TestFreezeThaw(t *testing.T) {
	needRoot(t)
	t.Parallel()
	m := newTestManager(t, Config{ID: testID(t)})
	c := startChild(t, "while :; do :; done")
	if err := m.Apply(c.pid()); err != nil {
		t.Fatalf("Apply: %v", err)
	}
	c.release(t)
	checkFreezeThaw(t, m, c.pid())
	st, err := m.Stats()
	if err != nil {
		t.Fatalf("Stats: %v", err)
	}
	if st.CPUUsage == 0 {
		t.Errorf("Stats.CPUUsage = 0 after a busy loop")
	}
}

// checkFreezeThaw freezes m, checks that pid (a busy loop) really stops,
// thaws and checks that it runs again.
func checkFreezeThaw(t *testing.T, m *Manager, pid int) {
	t.Helper()
	if s, err := m.FreezerState(); err != nil || s != StateThawed {
		t.Fatalf("FreezerState = %q, %v; want THAWED", s, err)
	}
	if err := m.Freeze(); err != nil {
		t.Fatalf("Freeze: %v", err)
	}
	if s, err := m.FreezerState(); err != nil || s != StateFrozen {
		t.Fatalf("FreezerState = %q, %v; want FROZEN", s, err)
	}
	// A busy loop that is frozen accumulates no CPU time and is not running.
	state, t0 := procStat(t, pid)
	time.Sleep(300 * time.Millisecond)
	state2, t1 := procStat(t, pid)
	if state == 'R' || state2 == 'R' || t1 != t0 {
		t.Errorf("frozen process: state %c/%c, cpu ticks %d -> %d; want not running and no progress", state, state2, t0, t1)
	}
	if err := m.Thaw(); err != nil {
		t.Fatalf("Thaw: %v", err)
	}
	if s, err := m.FreezerState(); err != nil || s != StateThawed {
		t.Fatalf("FreezerState = %q, %v; want THAWED", s, err)
	}
	deadline := time.Now().Add(5 * time.Second)
	for {
		if _, t2 := procStat(t, pid); t2 > t1 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("thawed process makes no progress")
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func TestPidsRecursive(t *testing.T) {
	needRoot(t)
	t.Parallel()
	m := newTestManager(t, Config{ID: testID(t)})
	c := startChild(t, "sleep 100 & sleep 100 & wait")
	if err := m.Apply(c.pid()); err != nil {
		t.Fatalf("Apply: %v", err)
	}
	c.release(t)
	// A process in a sub-cgroup counts too (the container may nest cgroups).
	sub := startChild(t, "exec sleep 100")
	var subDirs []string
	for ctrl, p := range m.Paths() {
		if ctrl == "name=systemd" {
			continue
		}
		d := filepath.Join(p, "sub")
		if err := os.Mkdir(d, 0o755); err != nil {
			t.Fatal(err)
		}
		subDirs = append(subDirs, d)
	}
	t.Cleanup(func() { killAll(t, m) }) // runs before the sub child's cleanup would race Destroy
	for _, d := range subDirs {
		if strings.Contains(d, "/cpuset/") {
			for _, f := range []string{"cpuset.cpus", "cpuset.mems"} {
				if err := os.WriteFile(filepath.Join(d, f), []byte(readFile(t, filepath.Dir(d), f)), 0); err != nil {
					t.Fatal(err)
				}
			}
		}
		if err := os.WriteFile(filepath.Join(d, "cgroup.procs"), []byte(strconv.Itoa(sub.pid())), 0); err != nil {
			t.Fatalf("move into %s: %v", d, err)
		}
	}
	sub.release(t)
	want := []int{c.pid(), sub.pid()}
	deadline := time.Now().Add(5 * time.Second)
	for {
		pids, err := m.Pids()
		if err != nil {
			t.Fatalf("Pids: %v", err)
		}
		if len(pids) == 4 && slices.Contains(pids, want[0]) && slices.Contains(pids, want[1]) {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("Pids = %v; want shell %d, its two sleeps and %d in a sub-cgroup", pids, want[0], want[1])
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func TestStateRoundTrip(t *testing.T) {
	needRoot(t)
	t.Parallel()
	res := &specs.LinuxResources{Pids: &specs.LinuxPids{Limit: i64(77)}}
	m := newTestManager(t, Config{ID: testID(t), Resources: res})
	c := startChild(t, "exec sleep 100")
	if err := m.Apply(c.pid()); err != nil {
		t.Fatalf("Apply: %v", err)
	}
	c.release(t)
	// The manager keeps its own copy: later edits to the caller's spec do not leak in.
	res.Pids.Limit = i64(1)

	b, err := json.Marshal(m.State())
	if err != nil {
		t.Fatal(err)
	}
	var s State
	if err := json.Unmarshal(b, &s); err != nil {
		t.Fatal(err)
	}
	m2, err := Load(s)
	if err != nil {
		t.Fatalf("Load: %v", err)
	}
	if !mapsEqual(m.Paths(), m2.Paths()) || m2.CgroupPath() != m.CgroupPath() {
		t.Fatalf("loaded paths %v, want %v", m2.Paths(), m.Paths())
	}
	if pids, err := m2.Pids(); err != nil || !slices.Equal(pids, []int{c.pid()}) {
		t.Fatalf("loaded Pids = %v, %v; want [%d]", pids, err, c.pid())
	}
	if err := m2.Set(nil); err != nil {
		t.Fatalf("loaded Set(nil): %v", err)
	}
	dir := m2.Path("pids")
	if Mode() == ModeV2 {
		dir = m2.Path("")
	}
	if got := readFile(t, dir, "pids.max"); got != "77" {
		t.Errorf("pids.max after Load+Set(nil) = %q, want 77 (from the persisted resources)", got)
	}
	if err := m2.Freeze(); err != nil {
		t.Fatalf("loaded Freeze: %v", err)
	}
	if s, _ := m.FreezerState(); s != StateFrozen {
		t.Errorf("original manager sees %q after the loaded one froze", s)
	}
	if err := m2.Thaw(); err != nil {
		t.Fatalf("loaded Thaw: %v", err)
	}

	bad := s
	bad.Mode = "v9"
	if _, err := Load(bad); !errors.Is(err, ErrState) {
		t.Errorf("Load with another mode: %v, want ErrState", err)
	}
	bad = s
	bad.Paths = map[string]string{"": "/etc" + s.Path}
	if _, err := Load(bad); !errors.Is(err, ErrState) {
		t.Errorf("Load with a path outside cgroupfs: %v, want ErrState", err)
	}
}

func mapsEqual(a, b map[string]string) bool {
	if len(a) != len(b) {
		return false
	}
	for k, v := range a {
		if b[k] != v {
			return false
		}
	}
	return true
}

// runInCgroup starts sh -c script, joins it to m's existing cgroup before it
// runs script and returns its exit error.
func runInCgroup(t *testing.T, m *Manager, script string) error {
	t.Helper()
	c := startChild(t, script)
	if err := m.Join(c.pid()); err != nil {
		t.Fatalf("Join: %v", err)
	}
	c.release(t)
	return c.wait(t)
}

func TestDevices(t *testing.T) {
	needRoot(t)
	t.Parallel()
	// The usual spec prefix (deny all) followed by a rule that denies
	// writing /dev/null, one of the default devices.
	denyNullWrite := &specs.LinuxResources{Devices: []specs.LinuxDeviceCgroup{
		{Allow: false, Access: "rwm"},
		{Allow: false, Type: "c", Major: i64(1), Minor: i64(3), Access: "w"},
	}}
	m := newTestManager(t, Config{ID: testID(t), Resources: denyNullWrite})
	if err := m.Join(os.Getpid()); err == nil {
		t.Fatal("Join before Apply succeeded")
	}
	if err := m.Apply(-1); err != nil {
		t.Fatalf("Apply: %v", err)
	}
	if err := runInCgroup(t, m, "echo > /dev/null"); err == nil {
		t.Error("writing /dev/null succeeded although the spec denies it")
	}
	// The other defaults stay usable, and /dev/null is still readable.
	if err := runInCgroup(t, m, "echo > /dev/zero && cat /dev/null && head -c1 /dev/urandom > /dev/zero && : < /dev/random && : < /dev/full"); err != nil {
		t.Errorf("default devices not usable: %v", err)
	}

	// Deny by default: a host device that is not in the list cannot be
	// opened (only meaningful if this process itself can open it).
	if f, err := os.Open("/dev/kmsg"); err == nil {
		f.Close()
		if err := runInCgroup(t, m, ": < /dev/kmsg"); err == nil {
			t.Error("opening /dev/kmsg succeeded; the policy should deny devices not allowed")
		}
	}

	// An update without devices keeps the policy; one with devices replaces it.
	if err := m.Set(&specs.LinuxResources{Pids: &specs.LinuxPids{Limit: i64(100)}}); err != nil {
		t.Fatalf("Set: %v", err)
	}
	if err := runInCgroup(t, m, "echo > /dev/null"); err == nil {
		t.Error("an update without devices reset the device policy")
	}
	if err := m.Set(&specs.LinuxResources{Devices: []specs.LinuxDeviceCgroup{{Allow: false, Access: "rwm"}}}); err != nil {
		t.Fatalf("Set devices: %v", err)
	}
	if err := runInCgroup(t, m, "echo > /dev/null"); err != nil {
		t.Errorf("writing /dev/null after replacing the policy: %v", err)
	}
}

func TestUnavailable(t *testing.T) {
	needRoot(t)
	t.Parallel()
	if Mode() == ModeV2 {
		t.Skip("checks v1 controllers missing on this host")
	}
	m := newTestManager(t, Config{ID: testID(t)})
	if err := m.Apply(-1); err != nil {
		t.Fatal(err)
	}
	cases := []struct {
		ctrl, file string
		r          specs.LinuxResources
	}{
		{"hugetlb", "hugetlb.2MB.limit_in_bytes", specs.LinuxResources{HugepageLimits: []specs.LinuxHugepageLimit{{Pagesize: "2MB", Limit: 1 << 21}}}},
		{"net_cls", "net_cls.classid", specs.LinuxResources{Network: &specs.LinuxNetwork{ClassID: u32(0x100001)}}},
		{"net_prio", "net_prio.ifpriomap", specs.LinuxResources{Network: &specs.LinuxNetwork{Priorities: []specs.LinuxInterfacePriority{{Name: "lo", Priority: 1}}}}},
	}
	tested := 0
	for _, c := range cases {
		if m.Path(c.ctrl) != "" {
			continue // mounted here; nothing to test
		}
		tested++
		r := c.r
		r.Pids = &specs.LinuxPids{Limit: i64(5)}
		err := m.Set(&r)
		var ue *UnavailableError
		if !errors.Is(err, ErrUnavailable) || !errors.As(err, &ue) || !slices.Contains(ue.Files, c.file) {
			t.Errorf("%s: got %v, want ErrUnavailable naming %s", c.ctrl, err, c.file)
		}
		// Nothing was written: the pids limit in the same request is not applied.
		if got := readFile(t, m.Path("pids"), "pids.max"); got != "max" {
			t.Errorf("%s: pids.max = %q; a refused request must write nothing", c.ctrl, got)
		}
	}
	if tested == 0 {
		t.Skip("hugetlb, net_cls and net_prio are all mounted as v1 here")
	}
}

func TestNewRefuses(t *testing.T) {
	t.Parallel()
	if _, err := New(Config{ID: "x", Resources: &specs.LinuxResources{Memory: &specs.LinuxMemory{Limit: i64(1000)}}}); !errors.Is(err, ErrInvalid) ||
		!strings.Contains(err.Error(), "cgroups: memory.limit 1000 is below the minimum") {
		t.Errorf("New with tiny memory limit: %v", err)
	}
	if _, err := New(Config{ID: "bad/id"}); !errors.Is(err, ErrInvalid) {
		t.Errorf("New with bad id: %v", err)
	}
	if _, err := New(Config{ID: "x", CgroupsPath: "machine.slice:migrate:x"}); !errors.Is(err, ErrUnsupported) {
		t.Errorf("New with systemd path: %v", err)
	}
	if Mode() != ModeV2 {
		_, err := New(Config{ID: "x", Resources: &specs.LinuxResources{Unified: map[string]string{"memory.high": "1G"}}})
		if !errors.Is(err, ErrUnsupported) {
			t.Errorf("New with unified on %s: %v", Mode(), err)
		}
	}
}

const v2ChildEnv = "MIGRATE_CGROUPS_TEST_V2_CHILD"

// TestV2InMountNamespace exercises the cgroup v2 code on a hybrid host: it
// re-runs itself in a private mount namespace with the host's v2 hierarchy
// mounted at /sys/fs/cgroup, where the library (and Mode) see a unified host.
// Only the controllers free on the v2 side (here: hugetlb) can be limited;
// the device eBPF program, freezer and process placement are core v2.
func TestV2InMountNamespace(t *testing.T) {
	needRoot(t)
	if os.Getenv(v2ChildEnv) == "1" {
		v2Child(t)
		return
	}
	if Mode() != ModeHybrid {
		t.Skip("needs a hybrid host (a v2 host runs every other test on v2)")
	}
	t.Parallel()
	// The v2 manager enables the available controllers (hugetlb) in the
	// parents' cgroup.subtree_control, as on a real v2 host. Undo that on
	// this hybrid host if it was not so before.
	const unified = "/sys/fs/cgroup/unified"
	if before := readFile(t, unified, "cgroup.subtree_control"); !slices.Contains(strings.Fields(before), "hugetlb") {
		t.Cleanup(func() {
			for _, d := range []string{unified + DefaultParent, unified} {
				if err := os.WriteFile(filepath.Join(d, "cgroup.subtree_control"), []byte("-hugetlb"), 0); err != nil && !errors.Is(err, os.ErrNotExist) {
					t.Errorf("restore %s/cgroup.subtree_control: %v", d, err)
				}
			}
		})
	}
	cmd := exec.Command(os.Args[0], "-test.run=^TestV2InMountNamespace$", "-test.count=1", "-test.v")
	cmd.Env = append(os.Environ(), v2ChildEnv+"=1")
	cmd.SysProcAttr = &syscall.SysProcAttr{Unshareflags: syscall.CLONE_NEWNS} // Go also makes / rprivate
	out, err := cmd.CombinedOutput()
	if err != nil || !strings.Contains(string(out), "--- PASS: TestV2InMountNamespace") {
		t.Fatalf("v2 child: %v\n%s", err, out)
	}
	t.Logf("v2 child:\n%s", out)
}

func v2Child(t *testing.T) {
	if err := syscall.Mount("cgroup2", "/sys/fs/cgroup", "cgroup2", 0, ""); err != nil {
		t.Fatalf("mount cgroup2: %v", err)
	}
	if Mode() != ModeV2 {
		t.Fatalf("Mode = %q after mounting cgroup2 on /sys/fs/cgroup", Mode())
	}
	controllers := strings.Fields(readFile(t, "/sys/fs/cgroup", "cgroup.controllers"))
	res := &specs.LinuxResources{Devices: []specs.LinuxDeviceCgroup{
		{Allow: false, Access: "rwm"},
		{Allow: false, Type: "c", Major: i64(1), Minor: i64(3), Access: "w"},
	}}
	_, err := os.Stat("/sys/kernel/mm/hugepages/hugepages-2048kB")
	hugetlb := err == nil && slices.Contains(controllers, "hugetlb")
	if hugetlb {
		res.HugepageLimits = []specs.LinuxHugepageLimit{{Pagesize: "2MB", Limit: 4 << 20}}
	}
	m := newTestManager(t, Config{ID: testID(t), Resources: res})
	if p := m.Paths(); len(p) != 1 || p[""] != "/sys/fs/cgroup"+m.CgroupPath() {
		t.Fatalf("Paths = %v, want only \"\" -> /sys/fs/cgroup%s", p, m.CgroupPath())
	}
	if err := m.Apply(-1); err != nil {
		t.Fatalf("Apply: %v", err)
	}
	if err := m.Set(nil); err != nil {
		t.Fatalf("Set: %v", err)
	}
	if hugetlb {
		if got := readFile(t, m.Path(""), "hugetlb.2MB.max"); got != strconv.Itoa(4<<20) {
			t.Errorf("hugetlb.2MB.max = %q, want %d", got, 4<<20)
		}
	}
	// A controller that exists but lacks the file (no 1GB pages here) is
	// reported with the path, after the library tried to write it.
	if _, err := os.Stat("/sys/kernel/mm/hugepages/hugepages-1048576kB"); hugetlb && err != nil {
		err := m.Set(&specs.LinuxResources{HugepageLimits: []specs.LinuxHugepageLimit{{Pagesize: "1GB", Limit: 1 << 30}}})
		var ue *UnavailableError
		if !errors.Is(err, ErrUnavailable) || !errors.As(err, &ue) || !slices.Contains(ue.Files, m.Path("")+"/hugetlb.1GB.max") {
			t.Errorf("1GB hugetlb limit without 1GB pages: %v, want ErrUnavailable naming hugetlb.1GB.max", err)
		}
	}
	// The eBPF device program enforces the policy.
	if err := runInCgroup(t, m, "echo > /dev/null"); err == nil {
		t.Error("writing /dev/null succeeded although the spec denies it")
	}
	if err := runInCgroup(t, m, "echo > /dev/zero && cat /dev/null"); err != nil {
		t.Errorf("default devices not usable: %v", err)
	}
	if !slices.Contains(controllers, "pids") {
		err := m.Set(&specs.LinuxResources{Pids: &specs.LinuxPids{Limit: i64(5)}})
		var ue *UnavailableError
		if !errors.As(err, &ue) || !slices.Contains(ue.Files, "pids.max") {
			t.Errorf("pids limit without a v2 pids controller: %v, want ErrUnavailable naming pids.max", err)
		}
	}
	if _, err := New(Config{ID: "x", Resources: &specs.LinuxResources{Memory: &specs.LinuxMemory{Swappiness: u64(1)}}}); !errors.Is(err, ErrUnsupported) {
		t.Errorf("swappiness on v2: %v, want ErrUnsupported", err)
	}

	c := startChild(t, "while :; do :; done")
	if err := m.Join(c.pid()); err != nil {
		t.Fatalf("Join: %v", err)
	}
	c.release(t)
	checkFreezeThaw(t, m, c.pid())

	b, _ := json.Marshal(m.State())
	var s State
	if err := json.Unmarshal(b, &s); err != nil {
		t.Fatal(err)
	}
	m2, err := Load(s)
	if err != nil {
		t.Fatalf("Load: %v", err)
	}
	if pids, err := m2.Pids(); err != nil || !slices.Equal(pids, []int{c.pid()}) {
		t.Errorf("loaded Pids = %v, %v; want [%d]", pids, err, c.pid())
	}
	killAll(t, m)
}
