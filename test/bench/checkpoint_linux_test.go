package bench

import (
	"bufio"
	"context"
	"fmt"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	specs "github.com/opencontainers/runtime-spec/specs-go"

	"github.com/migratehq/migrate/agent/checkpoint"
	"github.com/migratehq/migrate/criu"
	"github.com/migratehq/migrate/runtime/container"
	"github.com/migratehq/migrate/test/testutil"
)

// memProc is a memwriter container's stdio, seen from the benchmark.
type memProc struct {
	files [3]*os.File // the container's ends
	stdin *os.File
	lines chan string
}

func newMemProc(tb testing.TB) *memProc { return newMemProcFiltered(tb, nil) }

// newMemProcFiltered is newMemProc whose output lines go to take first: the
// lines it takes (returns true for) do not reach lines.
func newMemProcFiltered(tb testing.TB, take func(line string) bool) *memProc {
	inR, inW, err := os.Pipe()
	if err != nil {
		tb.Fatal(err)
	}
	outR, outW, err := os.Pipe()
	if err != nil {
		tb.Fatal(err)
	}
	p := &memProc{files: [3]*os.File{inR, outW, outW}, stdin: inW, lines: make(chan string, 64)}
	go func() {
		sc := bufio.NewScanner(outR)
		for sc.Scan() {
			if take != nil && take(sc.Text()) {
				continue
			}
			p.lines <- sc.Text()
		}
		close(p.lines)
	}()
	tb.Cleanup(func() { inR.Close(); inW.Close(); outW.Close(); outR.Close() })
	return p
}

// expect waits for a line starting with prefix and returns the rest.
func (p *memProc) expect(tb testing.TB, prefix string) string {
	tb.Helper()
	timeout := time.After(2 * time.Minute)
	for {
		select {
		case l, ok := <-p.lines:
			if !ok {
				tb.Fatalf("output closed before %q", prefix)
			}
			if strings.HasPrefix(l, prefix) {
				return strings.TrimPrefix(l, prefix)
			}
		case <-timeout:
			tb.Fatalf("no %q line", prefix)
		}
	}
}

// verify asks the memwriter to check all of its memory against sum.
func (p *memProc) verify(tb testing.TB, sum string) {
	tb.Helper()
	if _, err := p.stdin.Write([]byte("verify\n")); err != nil {
		tb.Fatal(err)
	}
	if got := p.expect(tb, "ok "); got != sum {
		tb.Fatalf("memory checksum after restore %s, want %s", got, sum)
	}
}

func dirSize(dir string) int64 {
	var n int64
	_ = filepath.WalkDir(dir, func(_ string, d fs.DirEntry, err error) error {
		if err == nil && d.Type().IsRegular() {
			if fi, err := d.Info(); err == nil {
				n += fi.Size()
			}
		}
		return nil
	})
	return n
}

type crResult struct {
	dump, restore time.Duration
	size          int64
}

// newCheckpointer is set up as the agent does: CRIU probed once.
func newCheckpointer(b *testing.B, work string) *checkpoint.Checkpointer {
	rt, err := container.New(filepath.Join(work, "ours-state"))
	if err != nil {
		b.Fatal(err)
	}
	c := &criu.Client{}
	f, err := c.Features(context.Background())
	if err != nil {
		b.Fatal(err)
	}
	v, err := c.Version(context.Background())
	if err != nil {
		b.Fatal(err)
	}
	return &checkpoint.Checkpointer{Runtime: rt, CRIU: c, NetworkLock: f.NetworkLock, Version: v}
}

// oursCR checkpoints and restores a memwriter of mib MiB with the agent's
// checkpoint package, in-process.
func oursCR(b *testing.B, cp *checkpoint.Checkpointer, mib int, work string) crResult {
	rt := cp.Runtime
	bundle := testutil.NewBusyboxBundleWith(b, func(s *specs.Spec) {
		s.Process.Args = []string{"/usr/local/bin/memwriter", "-mib", fmt.Sprint(mib)}
		s.Linux.Resources = nil
	})
	p := newMemProc(b)
	id := fmt.Sprintf("ours-%d-%d", mib, time.Now().UnixNano())
	c, err := rt.Create(id, container.CreateOptions{Bundle: bundle, Stdin: p.files[0], Stdout: p.files[1], Stderr: p.files[2]})
	if err != nil {
		b.Fatal(err)
	}
	defer c.Delete(true)
	if err := c.Start(); err != nil {
		b.Fatal(err)
	}
	sum := p.expect(b, "ready ")
	dir := filepath.Join(work, id)
	t0 := time.Now()
	if _, err := cp.Checkpoint(context.Background(), c, dir, checkpoint.Options{}); err != nil {
		b.Fatal(err)
	}
	dump := time.Since(t0)
	c.Wait()
	if err := c.Delete(false); err != nil {
		b.Fatal(err)
	}
	p2 := newMemProc(b)
	t1 := time.Now()
	r, err := cp.Restore(context.Background(), dir, id, checkpoint.RestoreOptions{Stdio: p2.files})
	if err != nil {
		b.Fatal(err)
	}
	restore := time.Since(t1)
	defer r.Delete(true)
	p2.verify(b, sum)
	res := crResult{dump: dump, restore: restore, size: dirSize(filepath.Join(dir, "images"))}
	os.RemoveAll(dir)
	return res
}

// runcCR does the same with runc checkpoint/restore and the same CRIU.
func runcCR(b *testing.B, mib int, work string) crResult {
	bundle := testutil.NewBusyboxBundleWith(b, func(s *specs.Spec) {
		s.Process.Args = []string{"/usr/local/bin/memwriter", "-mib", fmt.Sprint(mib)}
		s.Linux.Resources = nil
	})
	id := fmt.Sprintf("runc-%d-%d", mib, time.Now().UnixNano())
	argv := []string{"--root", filepath.Join(work, "runc-state"), "--criu", criu.DefaultPath}
	runc := func(p *memProc, args ...string) error {
		cmd := exec.Command("runc", append(argv, args...)...)
		if p != nil {
			cmd.Stdin, cmd.Stdout, cmd.Stderr = p.files[0], p.files[1], p.files[2]
		}
		out, err := os.CreateTemp(work, "runc-out")
		if err != nil {
			return err
		}
		defer os.Remove(out.Name())
		defer out.Close()
		if p == nil {
			cmd.Stdout, cmd.Stderr = out, out
		}
		if err := cmd.Run(); err != nil {
			msg, _ := os.ReadFile(out.Name())
			return fmt.Errorf("runc %s: %w: %s", strings.Join(args, " "), err, msg)
		}
		return nil
	}
	p := newMemProc(b)
	if err := runc(p, "run", "--detach", "--bundle", bundle, id); err != nil {
		b.Fatal(err)
	}
	defer runc(nil, "delete", "--force", id)
	sum := p.expect(b, "ready ")
	dir := filepath.Join(work, id)
	t0 := time.Now()
	if err := runc(nil, "checkpoint", "--image-path", dir, id); err != nil {
		b.Fatal(err)
	}
	dump := time.Since(t0)
	p2 := newMemProc(b)
	t1 := time.Now()
	if err := runc(p2, "restore", "--detach", "--image-path", dir, "--bundle", bundle, id); err != nil {
		b.Fatal(err)
	}
	restore := time.Since(t1)
	p2.verify(b, sum)
	res := crResult{dump: dump, restore: restore, size: dirSize(dir)}
	os.RemoveAll(dir)
	return res
}

// BenchmarkCheckpointRestore compares a stop-the-world checkpoint and a
// restore of a memwriter container, ours against runc's with the same CRIU,
// alternating which goes first. The restored memory is verified each time.
func BenchmarkCheckpointRestore(b *testing.B) {
	setup(b)
	for _, mib := range []int{64, 256, 1024} {
		b.Run(fmt.Sprintf("%dMiB", mib), func(b *testing.B) {
			work := b.TempDir()
			if err := os.Chmod(work, 0o755); err != nil {
				b.Fatal(err)
			}
			cp := newCheckpointer(b, work)
			var od, or, rd, rr []time.Duration
			var osize, rsize int64
			for i := 0; i < b.N; i++ {
				var o, r crResult
				if i%2 == 0 {
					o, r = oursCR(b, cp, mib, work), runcCR(b, mib, work)
				} else {
					r, o = runcCR(b, mib, work), oursCR(b, cp, mib, work)
				}
				od, or = append(od, o.dump), append(or, o.restore)
				rd, rr = append(rd, r.dump), append(rr, r.restore)
				osize, rsize = o.size, r.size
			}
			b.ReportMetric(float64(median(od).Milliseconds()), "ours-dump-ms")
			b.ReportMetric(float64(median(or).Milliseconds()), "ours-restore-ms")
			b.ReportMetric(float64(median(rd).Milliseconds()), "runc-dump-ms")
			b.ReportMetric(float64(median(rr).Milliseconds()), "runc-restore-ms")
			b.ReportMetric(medianFloat(pairRatios(od, rd)), "dump-ratio")
			b.ReportMetric(medianFloat(pairRatios(or, rr)), "restore-ratio")
			b.ReportMetric(float64(osize)/(1<<20), "ours-image-MiB")
			b.ReportMetric(float64(rsize)/(1<<20), "runc-image-MiB")
		})
	}
}
