package e2e

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/migratehq/migrate/test/testutil"
)

var (
	migratedBin   string
	migratectlBin string
)

func TestMain(m *testing.M) {
	if os.Geteuid() != 0 {
		os.Exit(m.Run()) // every test skips
	}
	dir, err := os.MkdirTemp("", "migrate-e2e-bin")
	if err != nil {
		panic(err)
	}
	migratedBin = filepath.Join(dir, "migrated")
	migratectlBin = filepath.Join(dir, "migratectl")
	for bin, pkg := range map[string]string{
		migratedBin:   "github.com/migratehq/migrate/cmd/migrated",
		migratectlBin: "github.com/migratehq/migrate/cmd/migratectl",
	} {
		build := exec.Command("go", "build", "-o", bin, pkg)
		build.Stdout, build.Stderr = os.Stderr, os.Stderr
		if err := build.Run(); err != nil {
			fmt.Fprintln(os.Stderr, "build:", err)
			os.RemoveAll(dir)
			os.Exit(1)
		}
	}
	code := m.Run()
	os.RemoveAll(dir)
	os.Exit(code)
}

// agent is one migrated under test.
type agent struct {
	t       *testing.T
	dir     string // short temp dir: unix socket paths are limited to 107 bytes
	cfgPath string
	sock    string
	data    string
	cmd     *exec.Cmd
	log     *bytes.Buffer
	wrap    []string
}

// agentConfig is the YAML a test adds to the agent's base configuration.
type agentConfig struct {
	node  string
	extra string
	wrap  []string // command prefix for migrated, e.g. nsenter into a network namespace
}

// newAgent writes a configuration and starts migrated with it. Cleanup deletes every
// container the agent still has and stops it.
func newAgent(t *testing.T, ac agentConfig) *agent {
	t.Helper()
	testutil.RequireRoot(t)
	dir, err := os.MkdirTemp("", "mig")
	if err != nil {
		t.Fatal(err)
	}
	a := &agent{t: t, dir: dir, sock: filepath.Join(dir, "ctl.sock"), data: filepath.Join(dir, "data"), cfgPath: filepath.Join(dir, "migrated.yaml")}
	if ac.node == "" {
		ac.node = "node1"
	}
	a.wrap = ac.wrap
	cfg := fmt.Sprintf("node: %s\ndataDir: %s\ncontrolSocket: %s\nstopTimeout: 2s\n%s", ac.node, a.data, a.sock, ac.extra)
	if err := os.WriteFile(a.cfgPath, []byte(cfg), 0o600); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		a.cleanup()
		os.RemoveAll(dir)
	})
	a.start()
	return a
}

// start runs migrated daemon and waits until it answers.
func (a *agent) start() {
	a.t.Helper()
	a.log = &bytes.Buffer{}
	argv := append(append([]string{}, a.wrap...), migratedBin, "daemon", "--config", a.cfgPath)
	a.cmd = exec.Command(argv[0], argv[1:]...)
	a.cmd.Stdout, a.cmd.Stderr = a.log, a.log
	if err := a.cmd.Start(); err != nil {
		a.t.Fatalf("start migrated: %v", err)
	}
	deadline := time.Now().Add(15 * time.Second)
	for {
		if r := a.ctl("version"); r.code == 0 {
			return
		}
		if time.Now().After(deadline) {
			a.t.Fatalf("migrated did not come up; its log:\n%s", a.log)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// kill9 kills the agent with SIGKILL, as a crash would.
func (a *agent) kill9() {
	a.t.Helper()
	_ = a.cmd.Process.Signal(syscall.SIGKILL)
	_ = a.cmd.Wait()
	a.cmd = nil
}

func (a *agent) stop() {
	if a.cmd == nil {
		return
	}
	testutil.StopProcess(a.cmd)
	a.cmd = nil
}

func (a *agent) cleanup() {
	if a.cmd == nil {
		a.start() // containers of a killed agent are cleaned through a new one
	}
	if r := a.ctl("ps", "-q"); r.code == 0 {
		for _, id := range strings.Fields(r.stdout) {
			if r := a.ctl("rm", "-f", id); r.code != 0 {
				a.t.Errorf("cleanup: rm -f %s: %s", id, r.stderr)
			}
		}
	}
	a.stop()
	if a.t.Failed() {
		a.t.Logf("migrated log:\n%s", a.log)
	}
}

type result struct {
	stdout, stderr string
	code           int
}

// ctl runs migratectl against the agent.
func (a *agent) ctl(args ...string) result {
	a.t.Helper()
	return runCtl(a.t, nil, append([]string{"--socket", a.sock}, args...)...)
}

// runCtlIn runs migratectl with stdin.
func runCtlIn(t *testing.T, stdin string, args ...string) result {
	t.Helper()
	return runCtlWith(t, nil, strings.NewReader(stdin), args...)
}

func runCtl(t *testing.T, wrap []string, args ...string) result {
	t.Helper()
	return runCtlWith(t, wrap, nil, args...)
}

func runCtlWith(t *testing.T, wrap []string, stdin io.Reader, args ...string) result {
	t.Helper()
	argv := append(append([]string{}, wrap...), migratectlBin)
	argv = append(argv, args...)
	cmd := exec.Command(argv[0], argv[1:]...)
	cmd.Stdin = stdin
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	err := cmd.Run()
	code := 0
	if ee, ok := err.(*exec.ExitError); ok {
		code = ee.ExitCode()
	} else if err != nil {
		t.Fatalf("run migratectl: %v", err)
	}
	return result{out.String(), errb.String(), code}
}

// must fails the test unless r succeeded.
func must(t *testing.T, r result, what string) result {
	t.Helper()
	if r.code != 0 {
		t.Fatalf("%s: exit %d: %s%s", what, r.code, r.stderr, r.stdout)
	}
	return r
}

// wantFail checks an exit code and that stderr is exactly one line.
func wantFail(t *testing.T, r result, code int, contains string) {
	t.Helper()
	if r.code != code {
		t.Errorf("exit code %d, want %d (stderr %q)", r.code, code, r.stderr)
	}
	if lines := strings.Count(strings.TrimRight(r.stderr, "\n"), "\n") + 1; lines != 1 || r.stderr == "" {
		t.Errorf("want one line on stderr, got %q", r.stderr)
	}
	if !strings.Contains(r.stderr, contains) {
		t.Errorf("stderr %q does not mention %q", r.stderr, contains)
	}
}

// containerID makes an id unique across parallel tests and concurrent runs.
func containerID(t *testing.T, name string) string {
	s := strings.NewReplacer("/", "-", "#", "-").Replace(t.Name())
	return fmt.Sprintf("e2e-%d-%s-%s", os.Getpid(), s, name)
}

type psContainer struct {
	ID       string `json:"id"`
	Status   string `json:"status"`
	Pid      int    `json:"pid"`
	ExitCode int    `json:"exitCode"`
	ShimPid  int    `json:"shimPid"`
}

func (a *agent) ps() map[string]psContainer {
	a.t.Helper()
	r := must(a.t, a.ctl("ps", "-o", "json"), "ps")
	var out struct {
		Containers []psContainer `json:"containers"`
	}
	if err := json.Unmarshal([]byte(r.stdout), &out); err != nil {
		a.t.Fatalf("ps -o json: %v: %s", err, r.stdout)
	}
	m := map[string]psContainer{}
	for _, c := range out.Containers {
		m[c.ID] = c
	}
	return m
}

// waitStatus waits until the container has status (CONTAINER_STATUS_...).
func (a *agent) waitStatus(id, status string) psContainer {
	a.t.Helper()
	deadline := time.Now().Add(15 * time.Second)
	for {
		c, ok := a.ps()[id]
		if ok && c.Status == status {
			return c
		}
		if time.Now().After(deadline) {
			a.t.Fatalf("container %s: status %q, want %q", id, c.Status, status)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// waitLogs waits until the container's log contains s.
func (a *agent) waitLogs(id, s string) string {
	a.t.Helper()
	deadline := time.Now().Add(15 * time.Second)
	for {
		r := a.ctl("logs", id)
		if r.code == 0 && strings.Contains(r.stdout+r.stderr, s) {
			return r.stdout
		}
		if time.Now().After(deadline) {
			a.t.Fatalf("logs of %s never showed %q: exit %d, %q %q", id, s, r.code, r.stdout, r.stderr)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

func alive(pid int) bool { return pid > 0 && syscall.Kill(pid, 0) == nil }

// freePort returns a TCP port that was free a moment ago.
func freePort(t *testing.T) int {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port
}

// counterBundle is a busybox bundle printing "tick N" to stdout and "err N" to stderr
// every 200ms.
func counterBundle(t *testing.T) string {
	return testutil.NewBusyboxBundle(t, "sh", "-c",
		`i=0; while true; do echo "tick $i"; echo "err $i" >&2; i=$((i+1)); sleep 0.2; done`)
}

// noShimCgroups fails the test if a shim cgroup of container id is left.
func noShimCgroups(t *testing.T, id string) {
	t.Helper()
	if m, _ := filepath.Glob("/sys/fs/cgroup/*/migrate-shim/" + id + "-*"); len(m) != 0 {
		t.Errorf("shim cgroups left: %v", m)
	}
	if m, _ := filepath.Glob("/sys/fs/cgroup/migrate-shim/" + id + "-*"); len(m) != 0 {
		t.Errorf("shim cgroups left: %v", m)
	}
}
