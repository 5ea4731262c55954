package bench

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	specs "github.com/opencontainers/runtime-spec/specs-go"

	"github.com/migratehq/migrate/agent/checkpoint"
	"github.com/migratehq/migrate/criu"
	"github.com/migratehq/migrate/pagestore"
	"github.com/migratehq/migrate/runtime/container"
	"github.com/migratehq/migrate/test/testutil"
)

// snapResult is one snapshot: whole time (dump and store), the container's
// freeze, bytes added to the store (or, for runc, the image size).
type snapResult struct {
	total, downtime time.Duration
	stored, logical int64
}

// touch rewrites 1% of the memwriter's pages (it runs with -touch 1).
func (p *memProc) touch(tb testing.TB) {
	tb.Helper()
	if _, err := p.stdin.Write([]byte("touch\n")); err != nil {
		tb.Fatal(err)
	}
	p.expect(tb, "touched ")
}

func memwriterSpec(mib int) func(*specs.Spec) {
	return func(s *specs.Spec) {
		s.Process.Args = []string{"/usr/local/bin/memwriter", "-mib", fmt.Sprint(mib), "-touch", "1"}
		s.Linux.Resources = nil
	}
}

// oursSnapshots takes two snapshots of a memwriter as the agent does (a
// leave-running dump, then a Put into the page store, scratch removed), with
// 1% of its pages rewritten in between.
func oursSnapshots(b *testing.B, cp *checkpoint.Checkpointer, mib int, work string) [2]snapResult {
	rt := cp.Runtime
	bundle := testutil.NewBusyboxBundleWith(b, memwriterSpec(mib))
	p := newMemProc(b)
	id := fmt.Sprintf("snap-%d-%d", mib, time.Now().UnixNano())
	c, err := rt.Create(id, container.CreateOptions{Bundle: bundle, Stdin: p.files[0], Stdout: p.files[1], Stderr: p.files[2]})
	if err != nil {
		b.Fatal(err)
	}
	defer c.Delete(true)
	if err := c.Start(); err != nil {
		b.Fatal(err)
	}
	p.expect(b, "ready ")
	store, err := pagestore.Open(filepath.Join(work, "store-"+id), pagestore.Options{})
	if err != nil {
		b.Fatal(err)
	}
	defer func() { store.Close(); os.RemoveAll(filepath.Join(work, "store-"+id)) }()
	var out [2]snapResult
	for i := range out {
		if i == 1 {
			p.touch(b)
		}
		dir := filepath.Join(work, fmt.Sprintf("%s-%d", id, i))
		t0 := time.Now()
		m, err := cp.Checkpoint(context.Background(), c, dir, checkpoint.Options{LeaveRunning: true})
		if err != nil {
			b.Fatal(err)
		}
		info, err := store.Put(context.Background(), fmt.Sprintf("s%d", i), dir, nil)
		if err != nil {
			b.Fatal(err)
		}
		os.RemoveAll(dir)
		out[i] = snapResult{total: time.Since(t0), downtime: m.Downtime, stored: info.NewStoredBytes + info.ManifestBytes, logical: info.LogicalBytes}
	}
	return out
}

// runcCheckpoints takes two `runc checkpoint --leave-running` images of the
// same workload, 1% of pages rewritten in between: each is a full image.
func runcCheckpoints(b *testing.B, mib int, work string) [2]snapResult {
	bundle := testutil.NewBusyboxBundleWith(b, memwriterSpec(mib))
	id := fmt.Sprintf("runcsnap-%d-%d", mib, time.Now().UnixNano())
	p := newMemProc(b)
	runc := runcCmd(b, work)
	if err := runc(p, "run", "--detach", "--bundle", bundle, id); err != nil {
		b.Fatal(err)
	}
	defer runc(nil, "delete", "--force", id)
	p.expect(b, "ready ")
	var out [2]snapResult
	for i := range out {
		if i == 1 {
			p.touch(b)
		}
		dir := filepath.Join(work, fmt.Sprintf("%s-%d", id, i))
		t0 := time.Now()
		if err := runc(nil, "checkpoint", "--leave-running", "--image-path", dir, id); err != nil {
			b.Fatal(err)
		}
		out[i] = snapResult{total: time.Since(t0), stored: dirSize(dir), logical: dirSize(dir)}
		os.RemoveAll(dir)
	}
	return out
}

// runcCmd returns a runner of runc with its own state root and our CRIU; with
// p the command gets the container's stdio, without it its output is kept
// for the error.
func runcCmd(b *testing.B, work string) func(p *memProc, args ...string) error {
	argv := []string{"--root", filepath.Join(work, "runc-state"), "--criu", criu.DefaultPath}
	return func(p *memProc, args ...string) error {
		cmd := exec.Command("runc", append(argv, args...)...)
		var out bytes.Buffer
		if p != nil {
			cmd.Stdin, cmd.Stdout, cmd.Stderr = p.files[0], p.files[1], p.files[2]
		} else {
			cmd.Stdout, cmd.Stderr = &out, &out
		}
		if err := cmd.Run(); err != nil {
			return fmt.Errorf("runc %s: %w: %s", strings.Join(args, " "), err, out.String())
		}
		return nil
	}
}

// BenchmarkSnapshot measures a first and an incremental snapshot (1% of the
// pages rewritten) of 256 and 1024 MiB memwriter containers: time, freeze and
// bytes stored, next to two `runc checkpoint --leave-running` images of the
// same containers. Run with -benchtime 1x: each iteration is four dumps.
func BenchmarkSnapshot(b *testing.B) {
	setup(b)
	for _, mib := range []int{256, 1024} {
		b.Run(fmt.Sprintf("%dMiB", mib), func(b *testing.B) {
			work := b.TempDir()
			if err := os.Chmod(work, 0o755); err != nil {
				b.Fatal(err)
			}
			cp := newCheckpointer(b, work)
			var o [2]snapResult
			var r [2]snapResult
			for i := 0; i < b.N; i++ {
				o = oursSnapshots(b, cp, mib, work)
				r = runcCheckpoints(b, mib, work)
			}
			ms := func(d time.Duration) float64 { return float64(d.Milliseconds()) }
			mb := func(n int64) float64 { return float64(n) / (1 << 20) }
			b.ReportMetric(ms(o[0].total), "first-ms")
			b.ReportMetric(ms(o[0].downtime), "first-freeze-ms")
			b.ReportMetric(mb(o[0].stored), "first-stored-MiB")
			b.ReportMetric(ms(o[1].total), "incr-ms")
			b.ReportMetric(ms(o[1].downtime), "incr-freeze-ms")
			b.ReportMetric(mb(o[1].stored), "incr-stored-MiB")
			b.ReportMetric(100*float64(o[1].stored)/float64(o[0].stored), "incr-stored-%")
			b.ReportMetric(ms(r[0].total), "runc-first-ms")
			b.ReportMetric(mb(r[0].stored), "runc-first-MiB")
			b.ReportMetric(ms(r[1].total), "runc-second-ms")
			b.ReportMetric(mb(r[1].stored), "runc-second-MiB")
		})
	}
}
