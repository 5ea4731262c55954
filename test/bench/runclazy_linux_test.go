package bench

import (
	"bytes"
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

	specs "github.com/opencontainers/runtime-spec/specs-go"

	"github.com/migratehq/migrate/criu"
	"github.com/migratehq/migrate/test/testutil"
)

// tickEvery is how often the benchmarks' memwriters print a tick: the
// resolution of the application-seen downtime.
const tickEvery = 10 * time.Millisecond

var (
	tickOnce sync.Once
	tickBin  string
	tickErr  error
)

// tickMemwriter returns a memwriter built from this checkout: it has -tick,
// which a cached build from before the flag lacks.
func tickMemwriter(b *testing.B) string {
	b.Helper()
	setup(b)
	tickOnce.Do(func() {
		tickBin = filepath.Join(workDir, "memwriter")
		cmd := exec.Command("go", "build", "-trimpath", "-buildvcs=false", "-o", tickBin, "github.com/migratehq/migrate/test/workloads/memwriter")
		cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
		if out, err := cmd.CombinedOutput(); err != nil {
			tickErr = fmt.Errorf("build memwriter: %w: %s", err, out)
		}
	})
	if tickErr != nil {
		b.Fatal(tickErr)
	}
	return tickBin
}

// tickBundle is a busybox bundle running a memwriter of mib MiB that ticks
// every tickEvery. Every such bundle has the same rootfs, so an agent that
// has its base receives checkpoints only.
func tickBundle(b *testing.B, mib int) string {
	b.Helper()
	bin := tickMemwriter(b)
	bundle := testutil.NewBusyboxBundleWith(b, func(s *specs.Spec) {
		s.Process.Args = []string{"/usr/local/bin/memwriter", "-mib", strconv.Itoa(mib), "-tick", tickEvery.String()}
		s.Linux.Resources = nil
	})
	data, err := os.ReadFile(bin)
	if err != nil {
		b.Fatal(err)
	}
	dst := filepath.Join(bundle, "rootfs", "usr", "local", "bin", "memwriter")
	// Replace the private copy's binary; the cached rootfs stays as it is.
	if err := os.Remove(dst); err != nil && !os.IsNotExist(err) {
		b.Fatal(err)
	}
	if err := os.WriteFile(dst, data, 0o755); err != nil {
		b.Fatal(err)
	}
	return bundle
}

// tickLog collects a memwriter's ticks from its stdout.
type tickLog struct {
	mu sync.Mutex
	ts []time.Time
}

func (l *tickLog) ticks() []time.Time {
	l.mu.Lock()
	defer l.mu.Unlock()
	return append([]time.Time(nil), l.ts...)
}

// newTickProc is newMemProc for a ticking memwriter: ticks go to the returned
// log, every other line to the memProc's lines, so the ticks never fill the
// channel that expect reads.
func newTickProc(tb testing.TB) (*memProc, *tickLog) {
	l := &tickLog{}
	p := newMemProcFiltered(tb, func(line string) bool {
		ts := parseTicks(line)
		if len(ts) != 1 {
			return false
		}
		l.mu.Lock()
		l.ts = append(l.ts, ts[0])
		l.mu.Unlock()
		return true
	})
	return p, l
}

// runcLazySample is one move through runc's own lazy-pages flow.
type runcLazySample struct {
	downtime  time.Duration // checkpoint started -> restore returned
	dump      time.Duration // checkpoint started -> status fd: images written, page server up
	copy      time.Duration // cp -a of the images
	daemon    time.Duration // criu lazy-pages started -> its status fd
	restore   time.Duration // runc restore --lazy-pages
	lazy      time.Duration // restore returned -> checkpoint exited (every page served)
	appGap    time.Duration // last tick before the checkpoint -> first tick after the restore
	imageSize int64
}

// runcLazyMove moves a ticking memwriter with runc's lazy-pages flow, the one
// of runc's tests/integration/checkpoint.bats, with the same CRIU and both
// ends on this host: `runc checkpoint --lazy-pages --page-server
// 127.0.0.1:P --status-fd`, wait for the status byte, copy the images
// directory (the transfer), `criu lazy-pages --page-server --address
// 127.0.0.1 --port P` on the copy, `runc restore --lazy-pages` from the copy
// as a new container (the checkpointed one exists until every page was
// served). The restored memory is checked against the checksum afterwards.
func runcLazyMove(b *testing.B, bundle, work string, mib int) runcLazySample {
	b.Helper()
	id := fmt.Sprintf("rl-%d-%d", mib, time.Now().UnixNano())
	state := filepath.Join(work, "runc-state")
	runcArgv := func(args ...string) []string {
		return append([]string{"--root", state, "--criu", criu.DefaultPath}, args...)
	}
	runc := runcCmd(b, work)
	p, srcTicks := newTickProc(b)
	if err := runc(p, "run", "--detach", "--bundle", bundle, id); err != nil {
		b.Fatal(err)
	}
	defer exec.Command("runc", runcArgv("delete", "--force", id)...).Run()
	sum := p.expect(b, "ready ")
	src, dst, cpWork := filepath.Join(work, id+"-src"), filepath.Join(work, id+"-dst"), filepath.Join(work, id+"-work")
	defer os.RemoveAll(src)
	defer os.RemoveAll(dst)
	defer os.RemoveAll(cpWork)
	port := freePort(b)

	statusR, statusW, err := os.Pipe()
	if err != nil {
		b.Fatal(err)
	}
	defer statusR.Close()
	ckpt := exec.Command("runc", runcArgv("checkpoint", "--lazy-pages",
		"--page-server", fmt.Sprintf("127.0.0.1:%d", port), "--status-fd", "3",
		"--work-path", cpWork, "--image-path", src, id)...)
	ckpt.ExtraFiles = []*os.File{statusW}
	var ckptOut bytes.Buffer
	ckpt.Stdout, ckpt.Stderr = &ckptOut, &ckptOut
	t0 := time.Now()
	if err := ckpt.Start(); err != nil {
		statusW.Close()
		b.Fatal(err)
	}
	statusW.Close()
	ckptDone := make(chan error, 1)
	go func() { ckptDone <- ckpt.Wait() }()
	// Whatever happens below, the checkpoint (and its page server) ends.
	defer func() {
		select {
		case <-ckptDone:
		default:
			_ = ckpt.Process.Kill()
			<-ckptDone
		}
	}()
	if err := readStatus(statusR, 5*time.Minute); err != nil {
		b.Fatalf("runc checkpoint --lazy-pages: %v: %s\n%s", err, ckptOut.String(), tail(filepath.Join(cpWork, "dump.log")))
	}
	t1 := time.Now()
	if out, err := exec.Command("cp", "-a", src, dst).CombinedOutput(); err != nil {
		b.Fatalf("copy images: %v: %s", err, out)
	}
	t2 := time.Now()

	lpR, lpW, err := os.Pipe()
	if err != nil {
		b.Fatal(err)
	}
	defer lpR.Close()
	lp := exec.Command(criu.DefaultPath, "lazy-pages", "--page-server", "--address", "127.0.0.1",
		"--port", strconv.Itoa(port), "-D", dst, "-o", "lazy-pages.log", "-v2", "--status-fd", "3")
	lp.ExtraFiles = []*os.File{lpW}
	var lpOut bytes.Buffer
	lp.Stdout, lp.Stderr = &lpOut, &lpOut
	if err := lp.Start(); err != nil {
		lpW.Close()
		b.Fatal(err)
	}
	lpW.Close()
	lpDone := make(chan error, 1)
	go func() { lpDone <- lp.Wait() }()
	defer func() {
		select {
		case <-lpDone:
		default:
			_ = lp.Process.Kill()
			<-lpDone
		}
	}()
	if err := readStatus(lpR, time.Minute); err != nil {
		b.Fatalf("criu lazy-pages: %v: %s\n%s", err, lpOut.String(), tail(filepath.Join(dst, "lazy-pages.log")))
	}
	t3 := time.Now()

	rid := id + "-r"
	p2, dstTicks := newTickProc(b)
	if err := runc(p2, "restore", "--detach", "--lazy-pages", "--image-path", dst, "--bundle", bundle, rid); err != nil {
		b.Fatalf("%v\n%s", err, tail(filepath.Join(dst, "restore.log")))
	}
	t4 := time.Now()
	defer exec.Command("runc", runcArgv("delete", "--force", rid)...).Run()

	// The checkpoint returns once its page server has served every page, the
	// daemon once it has them all.
	select {
	case err := <-ckptDone:
		ckptDone <- err // for the deferred check
		if err != nil {
			b.Fatalf("runc checkpoint --lazy-pages: %v: %s\n%s", err, ckptOut.String(), tail(filepath.Join(cpWork, "dump.log")))
		}
	case <-time.After(5 * time.Minute):
		b.Fatal("runc checkpoint --lazy-pages: pages not all served after 5 minutes")
	}
	t5 := time.Now()
	select {
	case err := <-lpDone:
		lpDone <- err
		if err != nil {
			b.Fatalf("criu lazy-pages: %v: %s\n%s", err, lpOut.String(), tail(filepath.Join(dst, "lazy-pages.log")))
		}
	case <-time.After(time.Minute):
		b.Fatal("criu lazy-pages did not exit after the page server ended")
	}
	p2.verify(b, sum)

	s := runcLazySample{
		downtime: t4.Sub(t0), dump: t1.Sub(t0), copy: t2.Sub(t1), daemon: t3.Sub(t2), restore: t4.Sub(t3),
		lazy: t5.Sub(t4), imageSize: dirSize(dst),
	}
	// Source ticks end at the dump, target ticks start after the restore: the
	// two logs are separate pipes, so no window is needed.
	before, after := srcTicks.ticks(), dstTicks.ticks()
	if len(before) == 0 || len(after) == 0 {
		b.Fatalf("runc-lazy %d MiB: %d ticks before the move, %d after", mib, len(before), len(after))
	}
	s.appGap = after[0].Sub(before[len(before)-1])
	b.Logf("runc-lazy %d MiB: downtime %s (dump %s, copy %s, daemon %s, restore %s), app gap %s, lazy %s, images %.1f MiB",
		mib, s.downtime.Round(time.Millisecond), s.dump.Round(time.Millisecond), s.copy.Round(time.Millisecond),
		s.daemon.Round(time.Millisecond), s.restore.Round(time.Millisecond), s.appGap.Round(time.Millisecond),
		s.lazy.Round(time.Millisecond), float64(s.imageSize)/(1<<20))
	return s
}

// readStatus waits for CRIU's status byte on r; EOF means the process ended
// (or gave the descriptor up) without being ready.
func readStatus(r *os.File, timeout time.Duration) error {
	if err := r.SetReadDeadline(time.Now().Add(timeout)); err != nil {
		return err
	}
	var buf [1]byte
	if _, err := io.ReadFull(r, buf[:]); err != nil {
		return fmt.Errorf("status fd: %w", err)
	}
	return nil
}

// tail returns the last lines of a CRIU log, for a failure message.
func tail(path string) string {
	data, err := os.ReadFile(path)
	if err != nil {
		return ""
	}
	lines := strings.Split(strings.TrimSpace(string(data)), "\n")
	return strings.Join(lines[max(0, len(lines)-20):], "\n")
}
