package testutil

import (
	"encoding/json"
	"errors"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	specs "github.com/opencontainers/runtime-spec/specs-go"

	"github.com/migratehq/migrate/runtime/spec"
)

// DefaultCache is the cache directory used when MIGRATE_CACHE is not set.
const DefaultCache = "/var/cache/migrate"

// Cache returns the directory holding built fixtures and tools: $MIGRATE_CACHE,
// or DefaultCache.
func Cache() string {
	if c := os.Getenv("MIGRATE_CACHE"); c != "" {
		return c
	}
	return DefaultCache
}

// RequireRoot skips the test unless it runs as root (CI runs everything as root).
func RequireRoot(t testing.TB) {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("needs root: containers, cgroups and CRIU need it")
	}
}

// BusyboxBundle returns the cached busybox bundle: config.json from the runtime's
// default spec and rootfs/. Tests must not change it; use NewBusyboxBundle for a
// private copy.
func BusyboxBundle(t testing.TB) string {
	t.Helper()
	dir := filepath.Join(Cache(), "busybox")
	requireFixture(t, "busybox bundle", filepath.Join(dir, "config.json"))
	requireFixture(t, "busybox rootfs", filepath.Join(dir, "rootfs", "bin", "busybox"))
	return dir
}

// BusyboxRootfs returns the cached busybox rootfs: /bin/busybox with its applet
// links, /etc/passwd and /etc/group, and the workloads in /usr/local/bin. Tests must
// not change it; use NewBusyboxBundle for a private copy.
func BusyboxRootfs(t testing.TB) string {
	t.Helper()
	dir := filepath.Join(Cache(), "busybox", "rootfs")
	requireFixture(t, "busybox rootfs", filepath.Join(dir, "bin", "busybox"))
	return dir
}

// DebianRootfs returns the cached Debian bookworm minbase rootfs, which has
// python3 and redis-server. Tests must not change it.
func DebianRootfs(t testing.TB) string {
	t.Helper()
	dir := filepath.Join(Cache(), "debian", "rootfs")
	requireFixture(t, "Debian rootfs", filepath.Join(dir, "usr", "bin", "python3"))
	return dir
}

// Workload returns the host path of a workload binary built from
// test/workloads/<name> ("memwriter", "counter", "httpcounter"). Inside the busybox
// rootfs the same program is /usr/local/bin/<name>.
func Workload(name string) string {
	return filepath.Join(Cache(), "workloads", name)
}

// RequireWorkload returns Workload(name), failing the test if it was not built.
func RequireWorkload(t testing.TB, name string) string {
	t.Helper()
	p := Workload(name)
	requireFixture(t, "workload "+name, p)
	return p
}

// NewBusyboxBundle makes a private bundle in a test temp dir: a copy of the busybox
// rootfs (cp -a) and a config.json from the runtime's default spec with args as the
// process arguments (the default, "sh", when none) and no terminal. The directory
// is removed when the test ends.
func NewBusyboxBundle(t testing.TB, args ...string) string {
	t.Helper()
	return NewBusyboxBundleWith(t, func(s *specs.Spec) {
		if len(args) > 0 {
			s.Process.Args = args
		}
	})
}

// NewBusyboxBundleWith is NewBusyboxBundle with edit applied to the spec (already
// set to no terminal) before it is written.
func NewBusyboxBundleWith(t testing.TB, edit func(*specs.Spec)) string {
	t.Helper()
	rootfs := BusyboxRootfs(t)
	bundle := t.TempDir()
	if out, err := exec.Command("cp", "-a", rootfs, filepath.Join(bundle, "rootfs")).CombinedOutput(); err != nil {
		t.Fatalf("copy busybox rootfs: %v: %s", err, out)
	}
	s := spec.Example()
	s.Root.Path = "rootfs"
	s.Process.Terminal = false
	if edit != nil {
		edit(s)
	}
	WriteSpec(t, bundle, s)
	return bundle
}

// WriteSpec writes s as bundle/config.json.
func WriteSpec(t testing.TB, bundle string, s *specs.Spec) {
	t.Helper()
	b, err := json.MarshalIndent(s, "", "\t")
	if err != nil {
		t.Fatalf("encode spec: %v", err)
	}
	if err := os.WriteFile(filepath.Join(bundle, "config.json"), append(b, '\n'), 0o644); err != nil {
		t.Fatalf("write spec: %v", err)
	}
}

// ReadSpec reads bundle/config.json.
func ReadSpec(t testing.TB, bundle string) *specs.Spec {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(bundle, "config.json"))
	if err != nil {
		t.Fatalf("read spec: %v", err)
	}
	var s specs.Spec
	if err := json.Unmarshal(b, &s); err != nil {
		t.Fatalf("decode %s/config.json: %v", bundle, err)
	}
	return &s
}

func requireFixture(t testing.TB, what, path string) {
	t.Helper()
	if _, err := os.Stat(path); err != nil {
		t.Fatalf("%s fixture missing (%v): run `make fixtures` as root to build it (cache: %s, set by MIGRATE_CACHE)", what, err, Cache())
	}
}

// LastMove decodes the stream of `migratectl move -o json` events in out and
// returns the move result of the last event that has one.
func LastMove[T any](tb testing.TB, out string) *T {
	tb.Helper()
	dec := json.NewDecoder(strings.NewReader(out))
	var last *T
	for {
		var ev struct {
			Move *T `json:"move"`
		}
		err := dec.Decode(&ev)
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			tb.Fatalf("move -o json: %v: %s", err, out)
		}
		if ev.Move != nil {
			last = ev.Move
		}
	}
	if last == nil {
		tb.Fatalf("move -o json: no move result in %s", out)
	}
	return last
}

// StopProcess stops a started agent: SIGTERM, then SIGKILL after 10 s.
func StopProcess(cmd *exec.Cmd) {
	_ = cmd.Process.Signal(syscall.SIGTERM)
	done := make(chan struct{})
	go func() { _ = cmd.Wait(); close(done) }()
	select {
	case <-done:
	case <-time.After(10 * time.Second):
		_ = cmd.Process.Kill()
		<-done
	}
}
