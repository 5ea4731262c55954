package bench

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/migratehq/migrate/runtime/container"
	_ "github.com/migratehq/migrate/runtime/nsenter"
)

// waitTimeout bounds how long one container's `true` may take to exit.
const waitTimeout = 10 * time.Second

// ociRuntime drives one runc-compatible CLI with its own state directory.
type ociRuntime struct {
	name string
	argv []string // binary and global flags, before the verb
	log  *os.File // stdout+stderr of the last call: a file, not a pipe, so no copy goroutine waits on the container
}

// call runs one verb and returns its output in the error when it fails.
func (r *ociRuntime) call(args ...string) error {
	if err := r.log.Truncate(0); err != nil {
		return err
	}
	if _, err := r.log.Seek(0, io.SeekStart); err != nil {
		return err
	}
	cmd := exec.Command(r.argv[0], append(r.argv[1:], args...)...)
	cmd.Stdout, cmd.Stderr = r.log, r.log
	if err := cmd.Run(); err != nil {
		out, _ := os.ReadFile(r.log.Name())
		return fmt.Errorf("%s %s: %w: %s", r.name, strings.Join(args, " "), err, strings.TrimSpace(string(out)))
	}
	return nil
}

// phases are the durations of one lifecycle's steps.
type phases struct {
	create, start, wait, delete time.Duration
}

func (p phases) total() time.Duration { return p.create + p.start + p.wait + p.delete }

// cycle creates, starts, waits for and deletes one container.
func (r *ociRuntime) cycle(bundle, id string) (p phases, err error) {
	pidFile := filepath.Join(filepath.Dir(r.log.Name()), id+".pid")
	defer os.Remove(pidFile)
	defer func() {
		if err != nil {
			_ = r.call("delete", "--force", id)
		}
	}()

	t0 := time.Now()
	if err := r.call("create", "--bundle", bundle, "--pid-file", pidFile, id); err != nil {
		return p, err
	}
	t1 := time.Now()
	// Watch the init through a pidfd opened while it still waits for start,
	// so its pid cannot have been reused.
	pid, fd, err := openInit(pidFile)
	if err != nil {
		return p, fmt.Errorf("%s %s: %w", r.name, id, err)
	}
	defer unix.Close(fd)
	t2 := time.Now()
	if err := r.call("start", id); err != nil {
		return p, err
	}
	t3 := time.Now()
	if err := waitExit(fd, waitTimeout); err != nil {
		return p, fmt.Errorf("%s %s: %w", r.name, id, err)
	}
	t4 := time.Now()
	// We are a child subreaper, so the orphaned init is our child: reap it
	// and make sure `true` really ran. A runtime whose init dies before
	// exec would otherwise look fast.
	if err := reap(pid); err != nil {
		return p, fmt.Errorf("%s %s: %w", r.name, id, err)
	}
	if err := r.call("delete", id); err != nil {
		return p, err
	}
	t5 := time.Now()
	return phases{create: t1.Sub(t0), start: t3.Sub(t2), wait: t4.Sub(t3), delete: t5.Sub(t4)}, nil
}

func openInit(pidFile string) (pid, fd int, err error) {
	b, err := os.ReadFile(pidFile)
	if err != nil {
		return 0, -1, fmt.Errorf("read pid file: %w", err)
	}
	pid, err = strconv.Atoi(strings.TrimSpace(string(b)))
	if err != nil || pid <= 0 {
		return 0, -1, fmt.Errorf("pid file holds %q", b)
	}
	fd, err = unix.PidfdOpen(pid, 0) // pidfds are always close-on-exec
	if err != nil {
		return 0, -1, fmt.Errorf("pidfd_open %d: %w", pid, err)
	}
	return pid, fd, nil
}

// reap collects the exited init and fails unless it exited 0.
func reap(pid int) error {
	var ws unix.WaitStatus
	for {
		_, err := unix.Wait4(pid, &ws, 0, nil)
		if errors.Is(err, unix.EINTR) {
			continue
		}
		if err != nil {
			return fmt.Errorf("reap container init %d (is the benchmark a child subreaper?): %w", pid, err)
		}
		break
	}
	switch {
	case ws.Exited() && ws.ExitStatus() == 0:
		return nil
	case ws.Signaled():
		return fmt.Errorf("container process killed by %v", ws.Signal())
	default:
		return fmt.Errorf("container process exited with status %d", ws.ExitStatus())
	}
}

// waitExit waits until the process behind pidfd fd has exited.
func waitExit(fd int, timeout time.Duration) error {
	deadline := time.Now().Add(timeout)
	for {
		left := time.Until(deadline)
		if left <= 0 {
			return errors.New("container init did not exit in time")
		}
		fds := []unix.PollFd{{Fd: int32(fd), Events: unix.POLLIN}}
		n, err := unix.Poll(fds, int(left.Milliseconds())+1)
		if errors.Is(err, unix.EINTR) {
			continue
		}
		if err != nil {
			return fmt.Errorf("poll pidfd: %w", err)
		}
		if n > 0 {
			return nil
		}
	}
}

// env is what every benchmark in the package shares, built once.
type env struct {
	bundle string
	runc   *ociRuntime
	ours   *ociRuntime
}

var (
	setupOnce sync.Once
	shared    *env
	setupErr  error
	workDir   string // removed by TestMain
)

func TestMain(m *testing.M) {
	// The checkpoint benchmark drives the runtime in-process: it re-executes
	// this binary as the container's init.
	if container.IsInit() {
		container.InitMain()
	}
	code := m.Run()
	if workDir != "" {
		os.RemoveAll(workDir)
	}
	os.Exit(code)
}

func setup(tb testing.TB) *env {
	tb.Helper()
	if os.Geteuid() != 0 {
		tb.Skip("needs root: creates real containers")
	}
	setupOnce.Do(func() { shared, setupErr = newEnv() })
	if setupErr != nil {
		tb.Fatal(setupErr)
	}
	return shared
}

func newEnv() (*env, error) {
	// Orphaned container inits are re-parented to us rather than to pid 1, so
	// cycle can collect their exit status. It affects only this test binary.
	if err := unix.Prctl(unix.PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0); err != nil {
		return nil, fmt.Errorf("become child subreaper: %w", err)
	}
	var err error
	workDir, err = os.MkdirTemp("", fmt.Sprintf("migrate-bench-%d-", os.Getpid()))
	if err != nil {
		return nil, err
	}
	// Bundles must be traversable by the container's user.
	if err := os.Chmod(workDir, 0o755); err != nil {
		return nil, err
	}
	runc, err := exec.LookPath("runc")
	if err != nil {
		return nil, fmt.Errorf("runc is the reference and must be installed (scripts/setup.sh): %w", err)
	}
	migrated := os.Getenv("MIGRATED")
	if migrated == "" {
		migrated = filepath.Join(workDir, "migrated")
		if err := buildMigrated(migrated); err != nil {
			return nil, err
		}
	}
	bundle := filepath.Join(workDir, "bundle")
	if err := makeBundle(runc, bundle); err != nil {
		return nil, fmt.Errorf("bundle: %w", err)
	}
	e := &env{bundle: bundle}
	mk := func(name string, argv ...string) (*ociRuntime, error) {
		state := filepath.Join(workDir, "state-"+name)
		if err := os.MkdirAll(state, 0o700); err != nil {
			return nil, err
		}
		log, err := os.Create(filepath.Join(workDir, name+".log"))
		if err != nil {
			return nil, err
		}
		return &ociRuntime{name: name, argv: append(argv, "--root", state), log: log}, nil
	}
	if e.runc, err = mk("runc", runc); err != nil {
		return nil, err
	}
	if e.ours, err = mk("migrated", migrated, "oci"); err != nil {
		return nil, err
	}
	return e, nil
}

func buildMigrated(out string) error {
	gobin, err := exec.LookPath("go")
	if err != nil {
		gobin = "/usr/local/go/bin/go"
	}
	cmd := exec.Command(gobin, "build", "-o", out, "github.com/migratehq/migrate/cmd/migrated")
	if b, err := cmd.CombinedOutput(); err != nil {
		return fmt.Errorf("build migrated (or set MIGRATED): %w: %s", err, b)
	}
	return nil
}

// makeBundle writes a busybox rootfs and runc's default config running `true`
// without a terminal. Both runtimes use the same bundle, one at a time.
func makeBundle(runc, bundle string) error {
	rootfs := filepath.Join(bundle, "rootfs")
	for _, d := range []string{"bin", "dev", "etc", "proc", "sys", "tmp"} {
		if err := os.MkdirAll(filepath.Join(rootfs, d), 0o755); err != nil {
			return err
		}
	}
	bb, err := os.ReadFile("/bin/busybox")
	if err != nil {
		return fmt.Errorf("busybox-static is needed: %w", err)
	}
	if err := os.WriteFile(filepath.Join(rootfs, "bin", "busybox"), bb, 0o755); err != nil {
		return err
	}
	for _, a := range []string{"sh", "true"} {
		if err := os.Symlink("busybox", filepath.Join(rootfs, "bin", a)); err != nil {
			return err
		}
	}
	if out, err := exec.Command(runc, "spec", "--bundle", bundle).CombinedOutput(); err != nil {
		return fmt.Errorf("runc spec: %w: %s", err, out)
	}
	path := filepath.Join(bundle, "config.json")
	raw, err := os.ReadFile(path)
	if err != nil {
		return err
	}
	// Edit it generically so fields of a newer spec than ours survive.
	var cfg map[string]any
	if err := json.Unmarshal(raw, &cfg); err != nil {
		return fmt.Errorf("parse config.json: %w", err)
	}
	proc, ok := cfg["process"].(map[string]any)
	if !ok {
		return errors.New("config.json has no process")
	}
	proc["terminal"] = false
	proc["args"] = []string{"true"}
	raw, err = json.MarshalIndent(cfg, "", "\t")
	if err != nil {
		return err
	}
	return os.WriteFile(path, raw, 0o644)
}

// TestLifecycleOnce runs one lifecycle per runtime, so the benchmark's harness
// is exercised by the ordinary test run and cannot rot unnoticed.
func TestLifecycleOnce(t *testing.T) {
	e := setup(t)
	for _, r := range []*ociRuntime{e.runc, e.ours} {
		id := fmt.Sprintf("benchtest-%d-%s", os.Getpid(), r.name)
		p, err := r.cycle(e.bundle, id)
		if err != nil {
			t.Fatal(err)
		}
		if p.create <= 0 || p.start <= 0 || p.delete <= 0 {
			t.Fatalf("%s: implausible phases %+v", r.name, p)
		}
		// After delete the runtime must no longer know the container.
		if err := r.call("state", id); err == nil {
			t.Errorf("%s: state %s succeeded after delete", r.name, id)
		}
	}
}

// BenchmarkLifecycle times create+start+wait+delete of a busybox `true`
// container, runc and migrated alternately (ABBA order), one op being one
// lifecycle of each. It reports the median milliseconds per runtime and the
// median of the per-pair ratios migrated/runc.
func BenchmarkLifecycle(b *testing.B) {
	e := setup(b)
	rts := []*ociRuntime{e.runc, e.ours}
	// Warm caches (binaries, rootfs pages, cgroup hierarchy) outside the timing.
	for _, r := range rts {
		if _, err := r.cycle(e.bundle, fmt.Sprintf("benchwarm-%d-%s", os.Getpid(), r.name)); err != nil {
			b.Fatal(err)
		}
	}
	samples := map[string][]phases{}
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		order := rts
		if i%2 == 1 {
			order = []*ociRuntime{rts[1], rts[0]}
		}
		for _, r := range order {
			p, err := r.cycle(e.bundle, fmt.Sprintf("bench-%d-%s-%d", os.Getpid(), r.name, i))
			if err != nil {
				b.Fatal(err)
			}
			samples[r.name] = append(samples[r.name], p)
		}
	}
	b.StopTimer()

	totals := func(name string) []time.Duration {
		var ds []time.Duration
		for _, p := range samples[name] {
			ds = append(ds, p.total())
		}
		return ds
	}
	ms := func(d time.Duration) float64 { return float64(d) / float64(time.Millisecond) }
	ref, ours := totals("runc"), totals("migrated")
	b.ReportMetric(ms(median(ref)), "runc-ms")
	b.ReportMetric(ms(median(ours)), "migrated-ms")
	b.ReportMetric(medianFloat(pairRatios(ours, ref)), "migrated/runc")
	for _, r := range rts {
		b.Logf("%-8s median ms over %d: create %.1f  start %.1f  wait %.1f  delete %.1f  total %.1f",
			r.name, len(samples[r.name]),
			ms(median(phase(samples[r.name], func(p phases) time.Duration { return p.create }))),
			ms(median(phase(samples[r.name], func(p phases) time.Duration { return p.start }))),
			ms(median(phase(samples[r.name], func(p phases) time.Duration { return p.wait }))),
			ms(median(phase(samples[r.name], func(p phases) time.Duration { return p.delete }))),
			ms(median(totals(r.name))))
	}
}

func phase(ps []phases, f func(phases) time.Duration) []time.Duration {
	ds := make([]time.Duration, len(ps))
	for i, p := range ps {
		ds[i] = f(p)
	}
	return ds
}
