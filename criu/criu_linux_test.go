package criu

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

func needRoot(t *testing.T) {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("needs root: CRIU dumps and restores processes only as root")
	}
}

// TestCRIUVersionAndFeatures is part of the project's acceptance: it checks
// the CRIU features migrate depends on and says how to get a missing one.
func TestCRIUVersionAndFeatures(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Fatalf("must run as root (CRIU needs CAP_SYS_ADMIN and ptrace): run `sudo make test`")
	}
	ctx, cancel := context.WithTimeout(t.Context(), time.Minute)
	defer cancel()
	c := &Client{}
	v, err := c.Version(ctx)
	if err != nil {
		t.Fatalf("CRIU version: %v", err)
	}
	t.Logf("CRIU %s at %s", v.Raw, DefaultPath)
	if !v.AtLeast(MinVersion) {
		t.Fatalf("CRIU %s at %s is older than %d.%d (needed for the vDSO fix on current kernels): run scripts/setup.sh to build CRIU >= %d.%d",
			v, DefaultPath, MinVersion.Major, MinVersion.Minor, MinVersion.Major, MinVersion.Minor)
	}
	if err := c.Check(ctx); err != nil {
		t.Fatalf("`criu check` fails, the kernel lacks something CRIU needs: %v", err)
	}
	f, err := c.Features(ctx)
	if err != nil {
		t.Fatalf("CRIU feature check: %v", err)
	}
	t.Logf("features: %+v", *f)
	var missing []string
	if !f.Userfaultfd {
		missing = append(missing, "userfaultfd: the kernel needs CONFIG_USERFAULTFD=y (and root, or vm.unprivileged_userfaultfd=1)")
	}
	if !f.LazyPages {
		missing = append(missing, "lazy pages: CRIU reports no non-cooperative userfaultfd; needs a kernel with CONFIG_USERFAULTFD and UFFD_FEATURE_EVENT_FORK/REMAP (>= 4.11)")
	}
	if f.NetworkLock == "" {
		missing = append(missing, "network lock backend: install nftables and a CRIU built with libnftables-dev, or iptables (run scripts/setup.sh)")
	}
	if len(missing) > 0 {
		t.Fatalf("CRIU %s lacks features migrate depends on:\n\t%s", v.Raw, strings.Join(missing, "\n\t"))
	}
	if f.PipeMaxSize < LazyPagesPipeMaxSize {
		t.Logf("fs.pipe-max-size is %d: lazy-pages migrations raise it to %d (EnsurePipeMaxSize)", f.PipeMaxSize, LazyPagesPipeMaxSize)
	}
	if !f.MemTrack {
		t.Log("memory tracking (soft-dirty) is unavailable: pre-dumps will copy all memory each time")
	}
}

// counter is a running counter workload.
type counter struct {
	cmd *exec.Cmd
	out string
}

// startCounter re-executes the test binary as a counter in its own session,
// with stdio on /dev/null, and waits for it to start counting.
func startCounter(t *testing.T) *counter {
	t.Helper()
	return startCounterOut(t, nil)
}

// startCounterOut is startCounter with the counter's stdout on stdout.
func startCounterOut(t *testing.T, stdout *os.File) *counter {
	t.Helper()
	out := filepath.Join(t.TempDir(), "count")
	cmd := exec.Command("/proc/self/exe")
	cmd.Env = append(os.Environ(), childEnv+"=counter", "MIGRATE_CRIU_TEST_OUT="+out, "GOMAXPROCS=1")
	cmd.Dir = filepath.Dir(out)
	cmd.SysProcAttr = &syscall.SysProcAttr{Setsid: true}
	if stdout != nil {
		cmd.Stdout = stdout
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	c := &counter{cmd: cmd, out: out}
	t.Cleanup(func() {
		if cmd.ProcessState == nil {
			_ = cmd.Process.Kill()
			_ = cmd.Wait()
		}
	})
	c.waitFor(t, 3)
	return c
}

// counts reads the values written so far and checks that they run 1, 2, 3...
// without restarting or skipping.
func (c *counter) counts(t *testing.T) int {
	t.Helper()
	b, err := os.ReadFile(c.out)
	if errors.Is(err, os.ErrNotExist) {
		return 0 // not started yet
	}
	if err != nil {
		t.Fatal(err)
	}
	lines := strings.Split(string(b), "\n")
	if lines[len(lines)-1] == "" {
		lines = lines[:len(lines)-1]
	} else {
		lines = lines[:len(lines)-1] // a partial last write
	}
	for i, l := range lines {
		if n, err := strconv.Atoi(l); err != nil || n != i+1 {
			t.Fatalf("line %d of %s is %q, want %d: the counter restarted or skipped", i+1, c.out, l, i+1)
		}
	}
	return len(lines)
}

func (c *counter) waitFor(t *testing.T, n int) int {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for {
		got := c.counts(t)
		if got >= n {
			return got
		}
		if time.Now().After(deadline) {
			t.Fatalf("counter stuck at %d, want %d", got, n)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func testCtx(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(t.Context(), 2*time.Minute)
	t.Cleanup(cancel)
	return ctx
}

func TestDumpRestoreRoundTrip(t *testing.T) {
	needRoot(t)
	t.Parallel()
	ctx := testCtx(t)
	c := &Client{}
	w := startCounter(t)
	pid := w.cmd.Process.Pid
	images := t.TempDir()

	if err := c.Dump(ctx, DumpOptions{ImagesDir: images, Pid: pid}, nil); err != nil {
		t.Fatalf("dump: %v", err)
	}
	// CRIU killed the dumped tree.
	err := w.cmd.Wait()
	var ee *exec.ExitError
	if !errors.As(err, &ee) || ee.Sys().(syscall.WaitStatus).Signal() != syscall.SIGKILL {
		t.Fatalf("dumped counter ended with %v, want SIGKILL", err)
	}
	stopped := w.counts(t)
	time.Sleep(200 * time.Millisecond)
	if n := w.counts(t); n != stopped {
		t.Fatalf("counter still counting after dump: %d -> %d", stopped, n)
	}
	if _, err := os.Stat(filepath.Join(images, "inventory.img")); err != nil {
		t.Fatalf("no inventory image: %v", err)
	}

	n := &recordNotify{}
	rpid, err := c.Restore(ctx, RestoreOptions{ImagesDir: images, RstSibling: true}, n)
	if err != nil {
		t.Fatalf("restore: %v", err)
	}
	// With RstSibling the restored counter is our child.
	p, err := os.FindProcess(rpid)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		_ = p.Kill()
		_, _ = p.Wait()
	})
	if rpid != pid {
		t.Errorf("restored pid %d, want the dumped %d", rpid, pid)
	}
	if !n.saw("pre-restore") || !n.saw("post-restore "+strconv.Itoa(rpid)) || !n.saw("post-resume") {
		t.Errorf("notifications %v lack pre-restore/post-restore %d/post-resume", n.calls, rpid)
	}
	// counts checks the sequence: a counter that restarted would write 1 again.
	got := w.waitFor(t, stopped+5)
	t.Logf("dumped at %d, restored counter reached %d", stopped, got)
}

// TestRestoreInheritFd dumps a counter whose stdout is a pipe we hold, and
// restores it with that pipe passed as an inherited fd: the restored counter
// writes its next values into our pipe. The restore runs in a fresh swrk, in
// one prepared with the pipe among other files (at another position than in
// InheritFds), and in one prepared without it, which must not be used.
func TestRestoreInheritFd(t *testing.T) {
	needRoot(t)
	t.Parallel()
	for _, tc := range []struct {
		name     string
		prepared func(t *testing.T, devnull, w *os.File) *Prepared
	}{
		{"fresh swrk", func(*testing.T, *os.File, *os.File) *Prepared { return nil }},
		{"prepared swrk", func(t *testing.T, devnull, w *os.File) *Prepared {
			p, err := (&Client{}).Prepare(testCtx(t), w, devnull)
			if err != nil {
				t.Fatal(err)
			}
			return p
		}},
		{"prepared swrk without the pipe", func(t *testing.T, devnull, _ *os.File) *Prepared {
			p, err := (&Client{}).Prepare(testCtx(t), devnull)
			if err != nil {
				t.Fatal(err)
			}
			return p
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			restoreInheritFd(t, tc.prepared)
		})
	}
}

func restoreInheritFd(t *testing.T, prepare func(t *testing.T, devnull, w *os.File) *Prepared) {
	ctx := testCtx(t)
	c := &Client{}
	r, w, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { r.Close(); w.Close() })
	var st unix.Stat_t
	if err := unix.Fstat(int(w.Fd()), &st); err != nil {
		t.Fatal(err)
	}
	key := fmt.Sprintf("pipe:[%d]", st.Ino)
	lines := make(chan int, 1024)
	go func() {
		sc := bufio.NewScanner(r)
		for sc.Scan() {
			if n, err := strconv.Atoi(sc.Text()); err == nil {
				select {
				case lines <- n:
				default: // nobody reads any more; keep the pipe drained
				}
			}
		}
	}()

	wk := startCounterOut(t, w)
	pid := wk.cmd.Process.Pid
	images := t.TempDir()
	if err := c.Dump(ctx, DumpOptions{ImagesDir: images, Pid: pid}, nil); err != nil {
		t.Fatalf("dump: %v", err)
	}
	_ = wk.cmd.Wait()
	stopped := wk.counts(t)

	// A second, unused inherited file first: the pipe must still be matched
	// to its own fd number in swrk.
	devnull, err := os.Open(os.DevNull)
	if err != nil {
		t.Fatal(err)
	}
	defer devnull.Close()
	prepared := prepare(t, devnull, w)
	var preparedPid int
	if prepared != nil {
		preparedPid = prepared.s.cmd.Process.Pid
	}
	rpid, err := c.Restore(ctx, RestoreOptions{
		Prepared:   prepared,
		ImagesDir:  images,
		RstSibling: true,
		InheritFds: []InheritFd{{Key: "file[0:1]", File: devnull}, {Key: key, File: w}},
	}, nil)
	if err != nil {
		t.Fatalf("restore with %s inherited: %v", key, err)
	}
	p, err := os.FindProcess(rpid)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		_ = p.Kill()
		_, _ = p.Wait()
	})
	if prepared != nil && prepared.take() != nil {
		t.Error("the prepared swrk is still there after the restore")
	}
	WaitReaped()
	if preparedPid != 0 && syscall.Kill(preparedPid, 0) == nil {
		t.Errorf("prepared swrk %d still runs after the restore", preparedPid)
	}
	timeout := time.After(20 * time.Second)
	for {
		select {
		case n := <-lines:
			if n > stopped+3 {
				t.Logf("dumped at %d, restored counter wrote %d into our pipe", stopped, n)
				return
			}
		case <-timeout:
			t.Fatalf("restored counter wrote nothing past %d into the inherited pipe", stopped)
		}
	}
}

func TestDumpLeaveRunning(t *testing.T) {
	needRoot(t)
	t.Parallel()
	ctx := testCtx(t)
	c := &Client{}
	w := startCounter(t)
	images := t.TempDir()
	n := &recordNotify{}
	if err := c.Dump(ctx, DumpOptions{ImagesDir: images, Pid: w.cmd.Process.Pid, LeaveRunning: true}, n); err != nil {
		t.Fatalf("dump: %v", err)
	}
	if !n.saw("pre-dump") || !n.saw("post-dump") {
		t.Errorf("notifications %v lack pre-dump/post-dump", n.calls)
	}
	after := w.counts(t)
	w.waitFor(t, after+5)
	if err := unix.Kill(w.cmd.Process.Pid, 0); err != nil {
		t.Fatalf("original counter gone: %v", err)
	}
	for _, img := range []string{"inventory.img", "pstree.img"} {
		if _, err := os.Stat(filepath.Join(images, img)); err != nil {
			t.Errorf("image missing: %v", err)
		}
	}
}

func TestDumpFailureQuotesLog(t *testing.T) {
	needRoot(t)
	t.Parallel()
	ctx := testCtx(t)
	images := t.TempDir()
	pid := unusedPid(t)
	err := (&Client{}).Dump(ctx, DumpOptions{ImagesDir: images, Pid: pid}, nil)
	var e *Error
	if !errors.As(err, &e) {
		t.Fatalf("dump of missing pid %d: err = %v, want *Error", pid, err)
	}
	if !errors.Is(err, ErrFailed) {
		t.Errorf("err does not wrap ErrFailed: %v", err)
	}
	wantLog := filepath.Join(images, "dump.log")
	if e.Op != "dump" || e.LogFile != wantLog {
		t.Errorf("op %q log %q, want dump %q", e.Op, e.LogFile, wantLog)
	}
	if _, serr := os.Stat(wantLog); serr != nil {
		t.Errorf("log not kept: %v", serr)
	}
	var errLine string
	for _, l := range e.Lines {
		if strings.Contains(l, "Error (") {
			errLine = l
			break
		}
	}
	if errLine == "" {
		t.Fatalf("no CRIU error line quoted: %q", e.Lines)
	}
	msg := err.Error()
	if !strings.Contains(msg, errLine) || !strings.Contains(msg, wantLog) || !strings.Contains(msg, strconv.Itoa(pid)) {
		t.Errorf("message lacks the log path, the error line or the pid:\n%s", msg)
	}
	t.Logf("error as reported:\n%s", msg)
}

// TestDumpCancel cancels a dump from its pre-dump notification: swrk is
// killed, Dump returns the context's error and the tree is left running.
func TestDumpCancel(t *testing.T) {
	needRoot(t)
	t.Parallel()
	ctx, cancel := context.WithCancel(testCtx(t))
	defer cancel()
	w := startCounter(t)
	n := &cancelNotify{cancel: cancel}
	start := time.Now()
	err := (&Client{}).Dump(ctx, DumpOptions{ImagesDir: t.TempDir(), Pid: w.cmd.Process.Pid}, n)
	if !errors.Is(err, context.Canceled) {
		t.Fatalf("dump err = %v, want context.Canceled", err)
	}
	if d := time.Since(start); d > 20*time.Second {
		t.Errorf("cancelled dump took %v", d)
	}
	after := w.counts(t)
	w.waitFor(t, after+5)
}

func TestPageServerDump(t *testing.T) {
	needRoot(t)
	t.Parallel()
	ctx := testCtx(t)
	c := &Client{}
	pages := t.TempDir()
	ps, err := c.StartPageServer(ctx, PageServerOptions{ImagesDir: pages, Address: "127.0.0.1"})
	if err != nil {
		t.Fatalf("start page server: %v", err)
	}
	if pfd, err := unix.PidfdOpen(ps.Pid, 0); err == nil {
		t.Cleanup(func() {
			_ = unix.PidfdSendSignal(pfd, unix.SIGKILL, nil, 0)
			unix.Close(pfd)
		})
	}
	w := startCounter(t)
	images := t.TempDir()
	err = c.Dump(ctx, DumpOptions{ImagesDir: images, Pid: w.cmd.Process.Pid, LeaveRunning: true,
		PageServer: &PageServer{Address: "127.0.0.1", Port: ps.Port}}, nil)
	if err != nil {
		t.Fatalf("dump to page server %d: %v", ps.Port, err)
	}
	got, _ := filepath.Glob(filepath.Join(pages, "pages-*.img"))
	local, _ := filepath.Glob(filepath.Join(images, "pages-*.img"))
	if len(got) == 0 || len(local) != 0 {
		t.Errorf("pages went to the page server %v and images dir %v, want server only", got, local)
	}
}

func TestEnsurePipeMaxSize(t *testing.T) {
	needRoot(t)
	cur, err := PipeMaxSize()
	if err != nil {
		t.Fatal(err)
	}
	changed, old, err := EnsurePipeMaxSize(cur)
	if err != nil || changed || old != cur {
		t.Fatalf("EnsurePipeMaxSize(current %d) = %v, %d, %v; want no change", cur, changed, old, err)
	}
	if changed, _, err := EnsurePipeMaxSize(cur / 2); err != nil || changed {
		t.Fatalf("EnsurePipeMaxSize lowered or failed: %v %v", changed, err)
	}
	want := cur * 2
	changed, old, err = EnsurePipeMaxSize(want)
	if err != nil || !changed || old != cur {
		t.Fatalf("EnsurePipeMaxSize(%d) = %v, %d, %v", want, changed, old, err)
	}
	t.Cleanup(func() {
		// Put it back unless someone else moved it meanwhile.
		if now, err := PipeMaxSize(); err == nil && now == want {
			_ = os.WriteFile(pipeMaxSizePath, []byte(strconv.Itoa(cur)), 0)
		}
	})
	if now, _ := PipeMaxSize(); now < want {
		t.Errorf("pipe-max-size %d after raising to %d", now, want)
	}
}

// unusedPid returns a pid no process has, from the top of the pid range.
func unusedPid(t *testing.T) int {
	b, err := os.ReadFile("/proc/sys/kernel/pid_max")
	if err != nil {
		t.Fatal(err)
	}
	max, err := strconv.Atoi(strings.TrimSpace(string(b)))
	if err != nil {
		t.Fatal(err)
	}
	for p := max - 1; p > max-1000; p-- {
		if err := unix.Kill(p, 0); errors.Is(err, unix.ESRCH) {
			return p
		}
	}
	t.Fatal("no free pid")
	return 0
}

type recordNotify struct {
	NoNotify
	calls []string
}

func (r *recordNotify) saw(s string) bool {
	for _, c := range r.calls {
		if c == s {
			return true
		}
	}
	return false
}

func (r *recordNotify) PreDump() error  { r.calls = append(r.calls, "pre-dump"); return nil }
func (r *recordNotify) PostDump() error { r.calls = append(r.calls, "post-dump"); return nil }
func (r *recordNotify) PreRestore() error {
	r.calls = append(r.calls, "pre-restore")
	return nil
}
func (r *recordNotify) PostRestore(pid int32) error {
	r.calls = append(r.calls, "post-restore "+strconv.Itoa(int(pid)))
	return nil
}
func (r *recordNotify) PostResume() error { r.calls = append(r.calls, "post-resume"); return nil }

type cancelNotify struct {
	NoNotify
	cancel context.CancelFunc
}

func (c *cancelNotify) PreDump() error {
	c.cancel()
	// Let the cancellation kill swrk before CRIU is told to go on.
	time.Sleep(500 * time.Millisecond)
	return nil
}

// TestFdHygiene checks that during an operation every descriptor we hold
// (the swrk socket, the images directory) is close-on-exec, and that none is
// left behind afterwards. Not parallel: it counts the process's fds.
func TestFdHygiene(t *testing.T) {
	needRoot(t)
	ctx := testCtx(t)
	c := &Client{}
	w := startCounter(t)
	before := openFds(t)
	// Descriptors inherited from whoever started the test are not ours.
	inherited := (&fdCheckNotify{})
	if err := inherited.PreDump(); err != nil {
		t.Fatal(err)
	}
	n := &fdCheckNotify{ignore: map[string]bool{}}
	for _, l := range inherited.leaky {
		n.ignore[l] = true
	}
	if err := c.Dump(ctx, DumpOptions{ImagesDir: t.TempDir(), Pid: w.cmd.Process.Pid, LeaveRunning: true}, n); err != nil {
		t.Fatalf("dump: %v", err)
	}
	if n.checked == 0 {
		t.Fatal("pre-dump notification not received")
	}
	if len(n.leaky) > 0 {
		t.Errorf("fds without FD_CLOEXEC during dump: %v", n.leaky)
	}
	if _, err := c.Version(ctx); err != nil {
		t.Fatal(err)
	}
	_ = c.Dump(ctx, DumpOptions{ImagesDir: t.TempDir(), Pid: unusedPid(t)}, nil)
	if after := openFds(t); len(after) != len(before) {
		t.Errorf("fds before %v, after %v", before, after)
	}
}

func openFds(t *testing.T) []string {
	t.Helper()
	ents, err := os.ReadDir("/proc/self/fd")
	if err != nil {
		t.Fatal(err)
	}
	var out []string
	for _, e := range ents {
		l, _ := os.Readlink("/proc/self/fd/" + e.Name())
		out = append(out, e.Name()+"->"+l)
	}
	return out
}

type fdCheckNotify struct {
	NoNotify
	ignore  map[string]bool
	checked int
	leaky   []string
}

func (n *fdCheckNotify) PreDump() error {
	ents, err := os.ReadDir("/proc/self/fd")
	if err != nil {
		return err
	}
	for _, e := range ents {
		fd, err := strconv.Atoi(e.Name())
		if err != nil || fd <= 2 {
			continue
		}
		flags, err := unix.FcntlInt(uintptr(fd), unix.F_GETFD, 0)
		if err != nil {
			continue // the ReadDir fd itself, closed by now
		}
		n.checked++
		if flags&unix.FD_CLOEXEC == 0 {
			l, _ := os.Readlink("/proc/self/fd/" + e.Name())
			if !n.ignore[e.Name()+"->"+l] {
				n.leaky = append(n.leaky, e.Name()+"->"+l)
			}
		}
	}
	return nil
}

// TestNotifyErrorAbortsDump refuses the dump from its pre-dump notification:
// CRIU aborts, the error carries the callback's error, the tree keeps running.
func TestNotifyErrorAbortsDump(t *testing.T) {
	needRoot(t)
	t.Parallel()
	ctx := testCtx(t)
	w := startCounter(t)
	refusal := errors.New("not now")
	err := (&Client{}).Dump(ctx, DumpOptions{ImagesDir: t.TempDir(), Pid: w.cmd.Process.Pid}, refuseNotify{err: refusal})
	if !errors.Is(err, refusal) || !errors.Is(err, ErrFailed) {
		t.Fatalf("dump err = %v, want the refusal and ErrFailed", err)
	}
	if !strings.Contains(err.Error(), "notify pre-dump: not now") {
		t.Errorf("message does not name the notification: %v", err)
	}
	after := w.counts(t)
	w.waitFor(t, after+5)
}

type refuseNotify struct {
	NoNotify
	err error
}

func (r refuseNotify) PreDump() error { return r.err }

// TestPreparedDump dumps through a swrk started ahead of the request, and
// checks that an unused prepared swrk is stopped by Close and a used one is
// not reused.
func TestPreparedDump(t *testing.T) {
	needRoot(t)
	t.Parallel()
	ctx := testCtx(t)
	c := &Client{}

	unused, err := c.Prepare(ctx)
	if err != nil {
		t.Fatal(err)
	}
	pid := unused.s.cmd.Process.Pid
	unused.Close()
	if err := syscall.Kill(pid, 0); err == nil {
		t.Errorf("unused prepared swrk %d still runs after Close", pid)
	}

	w := startCounter(t)
	p, err := c.Prepare(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer p.Close()
	images := t.TempDir()
	if err := c.Dump(ctx, DumpOptions{Prepared: p, ImagesDir: images, Pid: w.cmd.Process.Pid}, nil); err != nil {
		t.Fatalf("dump in a prepared swrk: %v", err)
	}
	if _, err := os.Stat(filepath.Join(images, "inventory.img")); err != nil {
		t.Fatalf("no inventory image: %v", err)
	}
	if p.take() != nil {
		t.Error("the prepared swrk is still there after the dump used it")
	}
	_ = w.cmd.Wait()
}
