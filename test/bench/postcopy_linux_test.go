package bench

import (
	"fmt"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/migratehq/migrate/criu"
	"github.com/migratehq/migrate/test/testutil"
)

// postcopySample is one move of a ticking memwriter container in one mode.
type postcopySample struct {
	downtime, total, lazy time.Duration
	// appGap is the downtime the application saw: its last tick on the source
	// to its first on the target.
	appGap    time.Duration
	lazyBytes int64
}

// postcopyRuns keeps each size's samples across the framework's runs.
var postcopyRuns = map[string]*postcopySizeRuns{}

type postcopySizeRuns struct {
	agent map[string][]postcopySample // by mode: postcopy, cold
	runc  []runcLazySample
}

// postcopyMedians keeps, per size in MiB, the medians of the postcopy
// downtimes of this run, for the flatness ratio of the largest size.
var postcopyMedians = map[int]struct{ downtime, app time.Duration }{}

// postcopySizes are the memwriter sizes of BenchmarkPostcopy in MiB: those of
// BenchmarkMove, and 4096 with MIGRATE_BENCH_4G=1 (first touch of fresh memory
// runs at ~0.28 GiB/s on the benchmark VM: a 4 GiB sample costs minutes).
func postcopySizes() []int {
	s := append([]int(nil), moveSizes...)
	if os.Getenv("MIGRATE_BENCH_4G") == "1" {
		s = append(s, 4096)
	}
	return s
}

// BenchmarkPostcopy moves a memwriter container of 64, 256 and 1024 MiB (and
// 4096 with MIGRATE_BENCH_4G=1) three ways in the same iteration, in an order
// that rotates: between two agents on loopback in postcopy mode and in cold
// mode, and through runc's own lazy-pages flow with the same CRIU
// (runcLazyMove). The memwriter prints a wall-clock tick every 10 ms, so each
// move also yields the downtime the application saw: its last tick on the
// source to its first on the target. Each restored container's memory is
// checked against its checksum once the move has ended, that is once the
// target has every page. Reported: medians of the downtime of each way (for
// the agents pause on the source to running on the target, for runc
// checkpoint started to restore returned), of the application-seen downtime,
// of the lazy phase and of the whole move; ratios postcopy/runc-lazy of the
// medians, and at the largest size largest/smallest of the postcopy medians.
//
//	go test -run '^$' -bench Postcopy -benchtime 1x ./test/bench/
//
// runc's lazy pages need fs.pipe-max-size >= 4 MiB (as the agents' do): the
// benchmark raises it and leaves it raised, as the agents do.
func BenchmarkPostcopy(b *testing.B) {
	setup(b)
	if changed, old, err := criu.EnsurePipeMaxSize(4 << 20); err != nil {
		b.Fatalf("fs.pipe-max-size: %v", err)
	} else if changed {
		b.Logf("fs.pipe-max-size raised from %d to 4 MiB for lazy pages", old)
	}
	n1, n2 := agentPair(b, "")
	// Warm up as BenchmarkMove does, for up to 1 GiB only: the 4 GiB size pays
	// its first touch on both ways alike.
	warmUp(b, 2*moveSizes[len(moveSizes)-1]<<20)
	// The first move sends the rootfs base; measured moves send checkpoints
	// only. Every tickBundle has the same rootfs.
	if s, base := postcopyMove(b, n1, n2, tickBundle(b, 16), 16, "cold"); !base {
		b.Fatalf("the first move did not send the rootfs base (%+v)", s)
	}
	sizes := postcopySizes()
	for _, mib := range sizes {
		b.Run(fmt.Sprintf("%dMiB", mib), func(b *testing.B) {
			work, err := os.MkdirTemp("", "rlazy")
			if err != nil {
				b.Fatal(err)
			}
			defer os.RemoveAll(work)
			if err := os.Chmod(work, 0o755); err != nil {
				b.Fatal(err)
			}
			ours, theirs := tickBundle(b, mib), tickBundle(b, mib)
			s := postcopyRuns[b.Name()]
			if s == nil {
				s = &postcopySizeRuns{agent: map[string][]postcopySample{}}
				postcopyRuns[b.Name()] = s
			}
			for i := 0; i < b.N; i++ {
				ways := []string{"postcopy", "cold", "runc-lazy"}
				k := len(s.runc) % len(ways)
				ways = append(ways[k:], ways[:k]...)
				for _, w := range ways {
					if w == "runc-lazy" {
						s.runc = append(s.runc, runcLazyMove(b, theirs, work, mib))
						continue
					}
					x, base := postcopyMove(b, n1, n2, ours, mib, w)
					if base {
						b.Fatal("a measured move sent the rootfs base again")
					}
					s.agent[w] = append(s.agent[w], x)
				}
			}
			reportPostcopy(b, s, mib, sizes)
		})
	}
}

func reportPostcopy(b *testing.B, s *postcopySizeRuns, mib int, sizes []int) {
	ms := func(d time.Duration) float64 { return float64(d.Microseconds()) / 1000 }
	pick := func(ss []postcopySample, f func(postcopySample) time.Duration) time.Duration {
		ds := make([]time.Duration, len(ss))
		for i, x := range ss {
			ds[i] = f(x)
		}
		return median(ds)
	}
	pickRunc := func(f func(runcLazySample) time.Duration) time.Duration {
		ds := make([]time.Duration, len(s.runc))
		for i, x := range s.runc {
			ds[i] = f(x)
		}
		return median(ds)
	}
	for _, mode := range []string{"postcopy", "cold"} {
		b.ReportMetric(ms(pick(s.agent[mode], func(x postcopySample) time.Duration { return x.downtime })), mode+"-downtime-ms")
		b.ReportMetric(ms(pick(s.agent[mode], func(x postcopySample) time.Duration { return x.appGap })), mode+"-app-ms")
		b.ReportMetric(ms(pick(s.agent[mode], func(x postcopySample) time.Duration { return x.total })), mode+"-total-ms")
	}
	pcDown := pick(s.agent["postcopy"], func(x postcopySample) time.Duration { return x.downtime })
	pcApp := pick(s.agent["postcopy"], func(x postcopySample) time.Duration { return x.appGap })
	b.ReportMetric(ms(pick(s.agent["postcopy"], func(x postcopySample) time.Duration { return x.lazy })), "postcopy-lazy-ms")
	last := s.agent["postcopy"][len(s.agent["postcopy"])-1]
	if last.lazy > 0 {
		b.ReportMetric(float64(last.lazyBytes)/(1<<20)/last.lazy.Seconds(), "postcopy-lazy-MiB/s")
	}
	rlDown := pickRunc(func(x runcLazySample) time.Duration { return x.downtime })
	rlApp := pickRunc(func(x runcLazySample) time.Duration { return x.appGap })
	b.ReportMetric(ms(rlDown), "runclazy-downtime-ms")
	b.ReportMetric(ms(rlApp), "runclazy-app-ms")
	b.ReportMetric(ms(pickRunc(func(x runcLazySample) time.Duration { return x.lazy })), "runclazy-lazy-ms")
	if rlDown > 0 && rlApp > 0 {
		b.ReportMetric(float64(pcDown)/float64(rlDown), "downtime-postcopy/runclazy")
		b.ReportMetric(float64(pcApp)/float64(rlApp), "app-postcopy/runclazy")
	}
	postcopyMedians[mib] = struct{ downtime, app time.Duration }{pcDown, pcApp}
	if small, ok := postcopyMedians[sizes[0]]; ok && mib == sizes[len(sizes)-1] && mib != sizes[0] && small.app > 0 {
		b.ReportMetric(float64(pcDown)/float64(small.downtime), "postcopy-downtime-largest/smallest")
		b.ReportMetric(float64(pcApp)/float64(small.app), "postcopy-app-largest/smallest")
	}
	b.ReportMetric(float64(len(s.runc)), "samples")
}

// postcopyMove runs a ticking memwriter on n1, moves it to n2 in mode, checks
// its memory there and reads the application-seen downtime from its log,
// which moved with it. It also returns whether the move sent the rootfs base.
func postcopyMove(b *testing.B, n1, n2 *benchAgent, bundle string, mib int, mode string) (postcopySample, bool) {
	b.Helper()
	id := fmt.Sprintf("pc-%d-%d", mib, time.Now().UnixNano())
	n1.must(b, "run", "-b", bundle, id)
	sum := strings.TrimPrefix(n1.waitLine(b, id, 5*time.Minute, "ready "), "ready ")
	t0 := time.Now()
	out := n1.must(b, "move", id, "--to", "n2", "--mode", mode, "-o", "json")
	t1 := time.Now()
	total := t1.Sub(t0)
	last := testutil.LastMove[struct {
		moveSummary
		LazyPages string `json:"lazyPages"`
		LazyBytes string `json:"lazyBytes"`
	}](b, out)
	if last.Mode != mode {
		b.Fatalf("move -o json: no %s move result in %s", mode, out)
	}
	n2.must(b, "kill", "-s", "USR1", id)
	if got := n2.waitLine(b, id, 5*time.Minute, "ok ", "corrupt"); got != "ok "+sum {
		b.Fatalf("%s on n2 after the %s move: %q, want memory checksum %s", id, mode, got, sum)
	}
	// The log holds the source's lines (it moved with the checkpoint) and the
	// target's: the longest gap between ticks within the move is the pause.
	ticks := parseTicks(n2.must(b, "logs", id))
	n2.must(b, "rm", "-f", id)
	if len(ticks) == 0 || !ticks[0].Before(t0) {
		b.Fatalf("%s on n2 after the %s move: no tick from before the move in its log (%d ticks)", id, mode, len(ticks))
	}
	lastTick, firstTick, ok := appGap(ticks, t0, t1)
	if !ok {
		b.Fatalf("%s on n2 after the %s move: no tick after the move in its log", id, mode)
	}
	s := postcopySample{downtime: parseDur(b, last.Downtime), total: total, appGap: firstTick.Sub(lastTick)}
	if last.LazyPages != "" {
		s.lazy = parseDur(b, last.LazyPages)
		fmt.Sscan(last.LazyBytes, &s.lazyBytes)
	}
	b.Logf("%s %d MiB: downtime %s (dump %s, transfer %s, restore %s), app gap %s, lazy %s, total %s",
		mode, mib, s.downtime.Round(time.Millisecond), last.Dump, last.Transfer, last.Restore,
		s.appGap.Round(time.Millisecond), s.lazy.Round(time.Millisecond), total.Round(time.Millisecond))
	return s, last.BaseSent
}
