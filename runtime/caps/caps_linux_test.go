package caps

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"os/exec"
	"runtime"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/moby/sys/capability"
	specs "github.com/opencontainers/runtime-spec/specs-go"
	"golang.org/x/sys/unix"
)

// The integration tests re-exec the test binary as a stand-in for the
// container init: TestMain runs helperMain instead of the tests when
// helperEnv is set, so each case gets a fresh process whose capabilities
// can be changed and then inspected from outside through /proc.
const (
	helperEnv       = "MIGRATE_CAPS_TEST_HELPER"
	helperConfigEnv = "MIGRATE_CAPS_TEST_CONFIG"
)

type helperConfig struct {
	Caps         *specs.LinuxCapabilities
	UID, GID     int
	SkipKeepCaps bool
	// Exec, when set, is exec'd after Apply; otherwise the helper prints
	// "ready <tid>" and waits for stdin to close.
	Exec []string
}

func TestMain(m *testing.M) {
	if os.Getenv(helperEnv) != "" {
		os.Exit(helperMain())
	}
	os.Exit(m.Run())
}

// helperMain follows the init's order: bounding, keepcaps, uid switch,
// Apply. Failures are printed as "error: ..." on stdout.
func helperMain() int {
	runtime.LockOSThread()
	fail := func(format string, args ...any) int {
		fmt.Printf("error: "+format+"\n", args...)
		return 3
	}
	var cfg helperConfig
	if err := json.Unmarshal([]byte(os.Getenv(helperConfigEnv)), &cfg); err != nil {
		return fail("config: %v", err)
	}
	if err := DropBounding(cfg.Caps); err != nil {
		return fail("%v", err)
	}
	if cfg.UID != 0 {
		if !cfg.SkipKeepCaps {
			if err := KeepCapsForUserSwitch(); err != nil {
				return fail("%v", err)
			}
		}
		if err := unix.Setgroups([]int{}); err != nil {
			return fail("setgroups: %v", err)
		}
		if err := unix.Setgid(cfg.GID); err != nil {
			return fail("setgid: %v", err)
		}
		if err := unix.Setuid(cfg.UID); err != nil {
			return fail("setuid: %v", err)
		}
	}
	if err := Apply(cfg.Caps); err != nil {
		return fail("%v", err)
	}
	if len(cfg.Exec) > 0 {
		err := unix.Exec(cfg.Exec[0], cfg.Exec, os.Environ())
		return fail("exec: %v", err)
	}
	fmt.Printf("ready %d\n", unix.Gettid())
	_, _ = io.Copy(io.Discard, os.Stdin)
	return 0
}

func requireRoot(t *testing.T) {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("needs root")
	}
	c, err := capability.NewPid2(0)
	if err != nil {
		t.Fatal(err)
	}
	if err := c.Load(); err != nil {
		t.Fatal(err)
	}
	if !c.Get(capability.EFFECTIVE, capability.CAP_SETPCAP) || !c.Get(capability.EFFECTIVE, capability.CAP_SETUID) {
		t.Skip("needs CAP_SETPCAP and CAP_SETUID")
	}
}

func helperCmd(t *testing.T, cfg helperConfig) *exec.Cmd {
	t.Helper()
	b, err := json.Marshal(cfg)
	if err != nil {
		t.Fatal(err)
	}
	// A stuck helper is killed rather than hanging the test binary.
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	t.Cleanup(cancel)
	cmd := exec.CommandContext(ctx, os.Args[0])
	cmd.Env = append(os.Environ(), helperEnv+"=1", helperConfigEnv+"="+string(b))
	cmd.Stderr = os.Stderr
	return cmd
}

// mask is the /proc/<pid>/status bit mask of names.
func mask(t *testing.T, names ...string) uint64 {
	t.Helper()
	var m uint64
	for _, n := range names {
		c, err := Parse(n)
		if err != nil {
			t.Fatal(err)
		}
		m |= 1 << uint(c)
	}
	return m
}

// statusCaps extracts the Cap* lines (and Uid/Gid) of a /proc status file.
func statusCaps(t *testing.T, status string) map[string]uint64 {
	t.Helper()
	out := make(map[string]uint64)
	for _, line := range strings.Split(status, "\n") {
		k, v, ok := strings.Cut(line, ":")
		if !ok {
			continue
		}
		v = strings.TrimSpace(v)
		switch {
		case strings.HasPrefix(k, "Cap"):
			n, err := strconv.ParseUint(v, 16, 64)
			if err != nil {
				t.Fatalf("parse %s: %v", line, err)
			}
			out[k] = n
		case k == "Uid" || k == "Gid":
			// real, effective, saved, fs: all must be equal for our checks.
			f := strings.Fields(v)
			n, err := strconv.ParseUint(f[0], 10, 32)
			if err != nil {
				t.Fatalf("parse %s: %v", line, err)
			}
			for _, o := range f[1:] {
				if o != f[0] {
					t.Fatalf("%s ids differ: %q", k, v)
				}
			}
			out[k] = n
		}
	}
	for _, k := range []string{"CapInh", "CapPrm", "CapEff", "CapBnd", "CapAmb"} {
		if _, ok := out[k]; !ok {
			t.Fatalf("status has no %s line:\n%s", k, status)
		}
	}
	return out
}

func checkMasks(t *testing.T, got map[string]uint64, want map[string]uint64) {
	t.Helper()
	for k, w := range want {
		if got[k] != w {
			t.Errorf("%s = %016x, want %016x", k, got[k], w)
		}
	}
}

// TestApplyAsRoot drops the bounding set and sets reduced sets in a root
// child, then reads the child thread's status from outside.
func TestApplyAsRoot(t *testing.T) {
	requireRoot(t)
	t.Parallel()
	c := &specs.LinuxCapabilities{
		Bounding:    []string{"CAP_CHOWN", "CAP_KILL", "CAP_NET_BIND_SERVICE", "CAP_SETPCAP"},
		Effective:   []string{"CAP_CHOWN", "CAP_NET_BIND_SERVICE"},
		Permitted:   []string{"CAP_CHOWN", "CAP_KILL", "CAP_NET_BIND_SERVICE"},
		Inheritable: []string{"CAP_KILL", "CAP_CHOWN"},
		Ambient:     []string{"CAP_KILL"},
	}
	cmd := helperCmd(t, helperConfig{Caps: c})
	stdin, err := cmd.StdinPipe()
	if err != nil {
		t.Fatal(err)
	}
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		_ = stdin.Close()
		_ = cmd.Process.Kill()
		_ = cmd.Wait()
	})

	line, err := bufio.NewReader(stdout).ReadString('\n')
	if err != nil {
		t.Fatalf("read helper: %v (%q)", err, line)
	}
	var tid int
	if _, err := fmt.Sscanf(line, "ready %d\n", &tid); err != nil {
		t.Fatalf("helper said %q", line)
	}
	// Capabilities are per thread: read the thread that applied them.
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/task/%d/status", cmd.Process.Pid, tid))
	if err != nil {
		t.Fatal(err)
	}
	checkMasks(t, statusCaps(t, string(b)), map[string]uint64{
		"CapBnd": mask(t, c.Bounding...),
		"CapEff": mask(t, c.Effective...),
		"CapPrm": mask(t, c.Permitted...),
		"CapInh": mask(t, c.Inheritable...),
		"CapAmb": mask(t, c.Ambient...),
	})
	if err := stdin.Close(); err != nil {
		t.Fatal(err)
	}
	if err := cmd.Wait(); err != nil {
		t.Fatalf("helper: %v", err)
	}
}

// TestApplyAfterUserSwitch switches to an unprivileged uid with
// KeepCapsForUserSwitch and checks what the exec'd program holds: for a
// non-root program without file capabilities, permitted and effective
// become the ambient set.
func TestApplyAfterUserSwitch(t *testing.T) {
	requireRoot(t)
	t.Parallel()
	const id = 65534
	c := &specs.LinuxCapabilities{
		Bounding:    []string{"CAP_CHOWN", "CAP_NET_BIND_SERVICE", "CAP_NET_RAW"},
		Effective:   []string{"CAP_CHOWN", "CAP_NET_BIND_SERVICE"},
		Permitted:   []string{"CAP_CHOWN", "CAP_NET_BIND_SERVICE"},
		Inheritable: []string{"CAP_NET_BIND_SERVICE", "CAP_NET_RAW"},
		Ambient:     []string{"CAP_NET_BIND_SERVICE"},
	}
	out, err := helperCmd(t, helperConfig{
		Caps: c, UID: id, GID: id,
		Exec: []string{"/bin/cat", "/proc/self/status"},
	}).Output()
	if err != nil {
		t.Fatalf("helper: %v\n%s", err, out)
	}
	got := statusCaps(t, string(out))
	checkMasks(t, got, map[string]uint64{
		"Uid":    id,
		"Gid":    id,
		"CapBnd": mask(t, c.Bounding...),
		"CapInh": mask(t, c.Inheritable...),
		"CapAmb": mask(t, c.Ambient...),
		"CapPrm": mask(t, c.Ambient...),
		"CapEff": mask(t, c.Ambient...),
	})
}

// TestApplyWithoutKeepCaps shows why KeepCapsForUserSwitch exists: the uid
// change empties the permitted set and Apply can no longer grant anything.
func TestApplyWithoutKeepCaps(t *testing.T) {
	requireRoot(t)
	t.Parallel()
	c := &specs.LinuxCapabilities{
		Bounding:  []string{"CAP_CHOWN"},
		Effective: []string{"CAP_CHOWN"},
		Permitted: []string{"CAP_CHOWN"},
	}
	out, _ := helperCmd(t, helperConfig{Caps: c, UID: 65534, GID: 65534, SkipKeepCaps: true, Exec: []string{"/bin/true"}}).Output()
	if !strings.Contains(string(out), "error: set effective/permitted/inheritable capabilities") ||
		!strings.Contains(string(out), "operation not permitted") {
		t.Fatalf("want a capset EPERM error, helper said %q", out)
	}
}

// TestApplyAmbientNotInheritable checks that an ambient capability the
// kernel would refuse (not inheritable) is skipped, as runc does: runc's own
// default spec lists ambient capabilities without an inheritable set.
func TestApplyAmbientNotInheritable(t *testing.T) {
	requireRoot(t)
	t.Parallel()
	c := &specs.LinuxCapabilities{
		Bounding:    []string{"CAP_CHOWN", "CAP_KILL"},
		Effective:   []string{"CAP_CHOWN"},
		Permitted:   []string{"CAP_CHOWN", "CAP_KILL"},
		Inheritable: []string{"CAP_CHOWN"},
		Ambient:     []string{"CAP_KILL", "CAP_CHOWN"},
	}
	out, _ := helperCmd(t, helperConfig{Caps: c, Exec: []string{"/bin/cat", "/proc/self/status"}}).Output()
	if strings.Contains(string(out), "error:") || !strings.Contains(string(out), "CapAmb:\t0000000000000001") {
		t.Fatalf("want CAP_CHOWN ambient and CAP_KILL skipped, helper said %q", out)
	}
}

// TestNilLeavesCapabilities checks that a nil set changes nothing: the
// exec'd root program keeps the full bounding set it started with.
func TestNilLeavesCapabilities(t *testing.T) {
	requireRoot(t)
	t.Parallel()
	before, err := os.ReadFile("/proc/self/status")
	if err != nil {
		t.Fatal(err)
	}
	out, err := helperCmd(t, helperConfig{Exec: []string{"/bin/cat", "/proc/self/status"}}).Output()
	if err != nil {
		t.Fatalf("helper: %v\n%s", err, out)
	}
	want := statusCaps(t, string(before))
	got := statusCaps(t, string(out))
	checkMasks(t, got, map[string]uint64{"CapBnd": want["CapBnd"], "CapAmb": want["CapAmb"]})
}
