package bench

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"strings"
	"testing"
	"time"
)

// postcopySample is one move of a memwriter container in one mode.
type postcopySample struct {
	downtime, total, lazy time.Duration
	lazyBytes             int64
}

// postcopyRuns keeps each size's samples across the framework's runs.
var postcopyRuns = map[string]map[string][]postcopySample{}

// BenchmarkPostcopy moves a memwriter container of 64, 256 and 1024 MiB
// between two agents on loopback in postcopy mode and, in the same iteration,
// in cold mode (which goes first alternates). Each restored container's memory
// is checked against its checksum once the move has ended, that is once the
// target has every page. Reported: medians of the downtime (pause on the source
// to running on the target) of each mode, of the postcopy lazy phase (running
// on the target to every page there) and of the whole move.
//
//	go test -run '^$' -bench Postcopy -benchtime 3x ./test/bench/
func BenchmarkPostcopy(b *testing.B) {
	setup(b)
	n1, n2 := agentPair(b, "")
	warmUp(b, 2*moveSizes[len(moveSizes)-1]<<20)
	// The first move sends the rootfs base; measured moves send checkpoints only.
	postcopyMove(b, n1, n2, memwriterBundle(b, 16), 16, "cold")
	for _, mib := range moveSizes {
		b.Run(fmt.Sprintf("%dMiB", mib), func(b *testing.B) {
			bundle := memwriterBundle(b, mib)
			s := postcopyRuns[b.Name()]
			if s == nil {
				s = map[string][]postcopySample{}
				postcopyRuns[b.Name()] = s
			}
			for i := 0; i < b.N; i++ {
				modes := []string{"postcopy", "cold"}
				if len(s["cold"])%2 == 1 {
					modes[0], modes[1] = modes[1], modes[0]
				}
				for _, mode := range modes {
					s[mode] = append(s[mode], postcopyMove(b, n1, n2, bundle, mib, mode))
				}
			}
			ms := func(d time.Duration) float64 { return float64(d.Microseconds()) / 1000 }
			pick := func(ss []postcopySample, f func(postcopySample) time.Duration) time.Duration {
				ds := make([]time.Duration, len(ss))
				for i, x := range ss {
					ds[i] = f(x)
				}
				return median(ds)
			}
			for _, mode := range []string{"postcopy", "cold"} {
				b.ReportMetric(ms(pick(s[mode], func(x postcopySample) time.Duration { return x.downtime })), mode+"-downtime-ms")
				b.ReportMetric(ms(pick(s[mode], func(x postcopySample) time.Duration { return x.total })), mode+"-total-ms")
			}
			b.ReportMetric(ms(pick(s["postcopy"], func(x postcopySample) time.Duration { return x.lazy })), "postcopy-lazy-ms")
			last := s["postcopy"][len(s["postcopy"])-1]
			if last.lazy > 0 {
				b.ReportMetric(float64(last.lazyBytes)/(1<<20)/last.lazy.Seconds(), "postcopy-lazy-MiB/s")
			}
			b.ReportMetric(float64(len(s["cold"])), "samples")
		})
	}
}

// postcopyMove runs a memwriter on n1, moves it to n2 in mode and checks its
// memory there.
func postcopyMove(b *testing.B, n1, n2 *benchAgent, bundle string, mib int, mode string) postcopySample {
	b.Helper()
	id := fmt.Sprintf("pc-%d-%d", mib, time.Now().UnixNano())
	n1.must(b, "run", "-b", bundle, id)
	sum := strings.TrimPrefix(n1.waitLine(b, id, 5*time.Minute, "ready "), "ready ")
	t0 := time.Now()
	out := n1.must(b, "move", id, "--to", "n2", "--mode", mode, "-o", "json")
	total := time.Since(t0)
	var last *struct {
		moveSummary
		LazyPages string `json:"lazyPages"`
		LazyBytes string `json:"lazyBytes"`
	}
	dec := json.NewDecoder(strings.NewReader(out))
	for {
		var ev struct {
			Move *struct {
				moveSummary
				LazyPages string `json:"lazyPages"`
				LazyBytes string `json:"lazyBytes"`
			} `json:"move"`
		}
		err := dec.Decode(&ev)
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			b.Fatalf("move -o json: %v: %s", err, out)
		}
		if ev.Move != nil {
			last = ev.Move
		}
	}
	if last == nil || last.Mode != mode {
		b.Fatalf("move -o json: no %s move result in %s", mode, out)
	}
	n2.must(b, "kill", "-s", "USR1", id)
	if got := n2.waitLine(b, id, 5*time.Minute, "ok ", "corrupt"); got != "ok "+sum {
		b.Fatalf("%s on n2 after the %s move: %q, want memory checksum %s", id, mode, got, sum)
	}
	n2.must(b, "rm", "-f", id)
	s := postcopySample{downtime: parseDur(b, last.Downtime), total: total}
	if last.LazyPages != "" {
		s.lazy = parseDur(b, last.LazyPages)
		fmt.Sscan(last.LazyBytes, &s.lazyBytes)
	}
	b.Logf("%s %d MiB: downtime %s (dump %s, transfer %s, restore %s), lazy %s, total %s",
		mode, mib, s.downtime.Round(time.Millisecond), last.Dump, last.Transfer, last.Restore, s.lazy.Round(time.Millisecond), total.Round(time.Millisecond))
	return s
}
