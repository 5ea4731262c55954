package oci

import (
	"bytes"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	specs "github.com/opencontainers/runtime-spec/specs-go"

	"github.com/migratehq/migrate/test/testutil"
)

var migrated string

func TestMain(m *testing.M) {
	dir, err := os.MkdirTemp("", "migrated-oci-test")
	if err != nil {
		panic(err)
	}
	migrated = filepath.Join(dir, "migrated")
	build := exec.Command("go", "build", "-o", migrated, "github.com/migratehq/migrate/cmd/migrated")
	build.Stdout, build.Stderr = os.Stderr, os.Stderr
	if err := build.Run(); err != nil {
		fmt.Fprintln(os.Stderr, "build migrated:", err)
		os.Exit(1)
	}
	code := m.Run()
	os.RemoveAll(dir)
	os.Exit(code)
}

// runtime is one state root driven through the CLI.
type runtime struct {
	t    *testing.T
	root string
}

func newRuntime(t *testing.T) *runtime {
	testutil.RequireRoot(t)
	return &runtime{t: t, root: t.TempDir()}
}

type result struct {
	stdout, stderr string
	code           int
}

func (r *runtime) cli(args ...string) result {
	r.t.Helper()
	return r.cliIn(nil, args...)
}

func (r *runtime) cliIn(stdin []byte, args ...string) result {
	r.t.Helper()
	cmd := exec.Command(migrated, append([]string{"oci", "--root", r.root}, args...)...)
	// Files, not pipes: a detached container inherits the CLI's stdio (as
	// with runc) and would hold a pipe open long after the CLI exits.
	dir := r.t.TempDir()
	out, err := os.Create(filepath.Join(dir, "stdout"))
	if err != nil {
		r.t.Fatal(err)
	}
	defer out.Close()
	errf, err := os.Create(filepath.Join(dir, "stderr"))
	if err != nil {
		r.t.Fatal(err)
	}
	defer errf.Close()
	cmd.Stdout, cmd.Stderr = out, errf
	if stdin != nil {
		cmd.Stdin = bytes.NewReader(stdin)
	}
	err = cmd.Run()
	code := 0
	if ee, ok := err.(*exec.ExitError); ok {
		code = ee.ExitCode()
	} else if err != nil {
		r.t.Fatalf("run %v: %v", args, err)
	}
	o, _ := os.ReadFile(out.Name())
	e, _ := os.ReadFile(errf.Name())
	return result{string(o), string(e), code}
}

func (r *runtime) must(args ...string) string {
	r.t.Helper()
	res := r.cli(args...)
	if res.code != 0 {
		r.t.Fatalf("migrated oci %s: exit %d: %s%s", strings.Join(args, " "), res.code, res.stderr, res.stdout)
	}
	return res.stdout
}

// bundle makes a busybox bundle running args, lets edit adjust its spec, and
// registers a forced delete of id at cleanup.
func (r *runtime) bundle(edit func(*specs.Spec), args ...string) string {
	r.t.Helper()
	return testutil.NewBusyboxBundleWith(r.t, func(s *specs.Spec) {
		if len(args) > 0 {
			s.Process.Args = args
		}
		if edit != nil {
			edit(s)
		}
	})
}

// id returns a container id unique to the test.
func id(t *testing.T) string {
	n := strings.NewReplacer("/", "-", "_", "-").Replace(t.Name())
	if len(n) > 60 {
		n = n[len(n)-60:]
	}
	return strings.Trim(strings.ToLower(n), "-") + fmt.Sprintf("-%d", time.Now().UnixNano()%1e6)
}

// runIn runs a container to completion and returns its output and exit code.
func (r *runtime) runIn(edit func(*specs.Spec), script string) result {
	r.t.Helper()
	b := r.bundle(edit, "sh", "-c", script)
	cid := id(r.t)
	r.t.Cleanup(func() { r.cli("delete", "--force", cid) })
	return r.cli("run", "--bundle", b, cid)
}

func (r *runtime) state(cid string) specs.State {
	r.t.Helper()
	var st specs.State
	if err := json.Unmarshal([]byte(r.must("state", cid)), &st); err != nil {
		r.t.Fatal(err)
	}
	return st
}

// assertGone checks that nothing of the container is left on the host.
func assertGone(t *testing.T, root, cid string) {
	t.Helper()
	if _, err := os.Stat(filepath.Join(root, cid)); !os.IsNotExist(err) {
		t.Errorf("state dir of %s left behind", cid)
	}
	for _, base := range []string{"/sys/fs/cgroup/memory", "/sys/fs/cgroup/pids", "/sys/fs/cgroup/freezer", "/sys/fs/cgroup"} {
		if _, err := os.Stat(filepath.Join(base, "migrate", cid)); err == nil {
			t.Errorf("cgroup %s left behind", filepath.Join(base, "migrate", cid))
		}
	}
	mi, _ := os.ReadFile("/proc/self/mountinfo")
	if strings.Contains(string(mi), cid) {
		t.Errorf("mount of %s left behind", cid)
	}
}
