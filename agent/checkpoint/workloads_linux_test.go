package checkpoint

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	specs "github.com/opencontainers/runtime-spec/specs-go"

	"github.com/migratehq/migrate/runtime/container"
	"github.com/migratehq/migrate/runtime/spec"
	"github.com/migratehq/migrate/test/testutil"
)

// roundTrip checkpoints c (stopping it), deletes it, and restores it under
// the same id with fresh stdio.
func roundTrip(t *testing.T, cp *Checkpointer, c *container.Container, dir string) (*container.Container, *stdio) {
	t.Helper()
	ctx := context.Background()
	ckpt := filepath.Join(dir, fmt.Sprintf("ckpt-%d", time.Now().UnixNano()))
	if _, err := cp.Checkpoint(ctx, c, ckpt, Options{}); err != nil {
		t.Fatal(err)
	}
	c.Wait()
	if err := c.Delete(false); err != nil {
		t.Fatal(err)
	}
	io := newStdio(t)
	r, err := cp.Restore(ctx, ckpt, c.ID(), RestoreOptions{Stdio: io.files})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = r.Delete(true) })
	return r, io
}

func run(t *testing.T, cp *Checkpointer, id, bundle string) (*container.Container, *stdio) {
	t.Helper()
	io := newStdio(t)
	c, err := cp.Runtime.Create(id, container.CreateOptions{Bundle: bundle, Stdin: io.files[0], Stdout: io.files[1], Stderr: io.files[2]})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = c.Delete(true) })
	if err := c.Start(); err != nil {
		t.Fatal(err)
	}
	return c, io
}

func (l *lines) waitPrefix(t *testing.T, prefix string, from int) (string, int) {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for time.Now().Before(deadline) {
		l.mu.Lock()
		for i := from; i < len(l.all); i++ {
			if strings.HasPrefix(l.all[i], prefix) {
				s := l.all[i]
				l.mu.Unlock()
				return s, i + 1
			}
		}
		l.mu.Unlock()
		time.Sleep(20 * time.Millisecond)
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	t.Fatalf("no line starting %q after line %d in %q", prefix, from, l.all)
	return "", 0
}

func TestMemoryChecksumSurvives(t *testing.T) {
	cp, dir := setup(t)
	b := testutil.NewBusyboxBundleWith(t, func(s *specs.Spec) {
		s.Process.Args = []string{"/usr/local/bin/memwriter", "-mib", "64"}
	})
	c, io := run(t, cp, "mem", b)
	ready, _ := io.out.waitPrefix(t, "ready ", 0)
	sum := strings.TrimPrefix(ready, "ready ")
	_, io2 := roundTrip(t, cp, c, dir)
	// The restored process reads its new stdin.
	if _, err := io2.stdin.Write([]byte("verify\n")); err != nil {
		t.Fatal(err)
	}
	ok, _ := io2.out.waitPrefix(t, "ok ", 0)
	if got := strings.TrimPrefix(ok, "ok "); got != sum {
		t.Fatalf("memory checksum after restore %s, before %s", got, sum)
	}
}

func TestProcessTreeWithPipes(t *testing.T) {
	cp, dir := setup(t)
	b := testutil.NewBusyboxBundleWith(t, func(s *specs.Spec) {
		s.Root.Readonly = false
		s.Process.Args = []string{"sh", "-c",
			"counter -interval 50ms | while read n; do echo piped $n; done"}
		s.Process.Env = append(s.Process.Env, "PATH=/usr/local/bin:/bin:/sbin")
	})
	c, io := run(t, cp, "tree", b)
	line, _ := io.out.waitPrefix(t, "piped 5", 0)
	n, _ := strconv.Atoi(strings.TrimPrefix(line, "piped "))
	pidsBefore, _ := c.Processes()
	r, io2 := roundTrip(t, cp, c, dir)
	line2, _ := io2.out.waitPrefix(t, "piped ", 0)
	n2, _ := strconv.Atoi(strings.TrimPrefix(line2, "piped "))
	if n2 <= n || n2 > n+20 {
		t.Fatalf("pipeline printed %d after restore, %d before: the pipe between its members broke or it restarted", n2, n)
	}
	pidsAfter, _ := r.Processes()
	if len(pidsAfter) != len(pidsBefore) {
		t.Fatalf("process tree had %d processes, %d after restore", len(pidsBefore), len(pidsAfter))
	}
}

// execIn runs a command in c and returns its combined output.
func execIn(t *testing.T, c *container.Container, args ...string) string {
	t.Helper()
	f, err := os.CreateTemp(t.TempDir(), "exec")
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	p := *c.Spec().Process
	p.Args = args
	p.Terminal = false
	proc, err := c.Exec(&p, container.ExecOptions{Stdout: f, Stderr: f})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := proc.Wait(); err != nil {
		t.Fatal(err)
	}
	data, _ := os.ReadFile(f.Name())
	return string(data)
}

// debianBundle runs args on the Debian rootfs, read-only, with tmpfs on /tmp
// and /run.
func debianBundle(t *testing.T, args ...string) string {
	t.Helper()
	rootfs := testutil.DebianRootfs(t)
	bundle := t.TempDir()
	s := spec.Example()
	s.Root.Path = rootfs
	s.Root.Readonly = true
	s.Process.Terminal = false
	s.Process.Args = args
	s.Process.Capabilities = nil
	s.Mounts = append(s.Mounts,
		specs.Mount{Destination: "/tmp", Type: "tmpfs", Source: "tmpfs", Options: []string{"nosuid", "nodev", "mode=1777"}},
		specs.Mount{Destination: "/run", Type: "tmpfs", Source: "tmpfs", Options: []string{"nosuid", "nodev", "mode=755"}},
	)
	testutil.WriteSpec(t, bundle, s)
	return bundle
}

const pyProgram = `
import fcntl, socket, sys, time
a, b = socket.socketpair()
lock = open("/tmp/py.lock", "w")
fcntl.flock(lock, fcntl.LOCK_EX)
state = {"n": 0, "secret": "kept-in-memory"}
while True:
    state["n"] += 1
    a.sendall(b"%d\n" % state["n"])
    echo = b.recv(64).strip().decode()
    print("py", state["n"], echo, state["secret"], flush=True)
    time.sleep(0.05)
`

func TestPythonStateSocketpairAndLock(t *testing.T) {
	cp, dir := setup(t)
	c, io := run(t, cp, "py", debianBundle(t, "python3", "-u", "-c", pyProgram))
	line, _ := io.out.waitPrefix(t, "py 5 5 kept-in-memory", 0)
	_ = line
	r, io2 := roundTrip(t, cp, c, dir)
	line2, _ := io2.out.waitPrefix(t, "py ", 0)
	f := strings.Fields(line2)
	n, _ := strconv.Atoi(f[1])
	if len(f) != 4 || n <= 5 || f[1] != f[2] || f[3] != "kept-in-memory" {
		t.Fatalf("python after restore printed %q: state, socketpair or memory lost", line2)
	}
	out := execIn(t, r, "python3", "-c", `import fcntl
f = open("/tmp/py.lock", "w")
try:
    fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB); print("got-lock")
except OSError:
    print("locked")`)
	if !strings.Contains(out, "locked") {
		t.Fatalf("python's flock was lost: %q", out)
	}
}

func TestRedisKeepsKeys(t *testing.T) {
	cp, dir := setup(t)
	c, io := run(t, cp, "redis", debianBundle(t, "redis-server", "--save", "", "--appendonly", "no", "--port", "6379", "--bind", "127.0.0.1"))
	io.out.waitPrefix(t, "", 0)
	deadline := time.Now().Add(20 * time.Second)
	for !strings.Contains(execIn(t, c, "redis-cli", "ping"), "PONG") {
		if time.Now().After(deadline) {
			t.Fatal("redis did not start")
		}
		time.Sleep(100 * time.Millisecond)
	}
	for i := 0; i < 50; i++ {
		execIn(t, c, "redis-cli", "set", fmt.Sprintf("key%d", i), fmt.Sprintf("value%d", i))
	}
	r, _ := roundTrip(t, cp, c, dir)
	for _, i := range []int{0, 17, 49} {
		if got := strings.TrimSpace(execIn(t, r, "redis-cli", "get", fmt.Sprintf("key%d", i))); got != fmt.Sprintf("value%d", i) {
			t.Fatalf("key%d after restore = %q", i, got)
		}
	}
	if got := strings.TrimSpace(execIn(t, r, "redis-cli", "set", "after", "restore")); got != "OK" {
		t.Fatalf("redis refuses writes after restore: %q", got)
	}
	if got := strings.TrimSpace(execIn(t, r, "redis-cli", "dbsize")); got != "51" {
		t.Fatalf("dbsize after restore = %q", got)
	}
}
