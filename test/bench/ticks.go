package bench

import (
	"strconv"
	"strings"
	"time"
)

// parseTicks returns the times of memwriter's "tick <unix ns>" lines in text,
// in the order they appear. Other lines, and tick lines that do not parse (a
// line cut by a log rotation), are skipped.
func parseTicks(text string) []time.Time {
	var ts []time.Time
	for _, l := range strings.Split(text, "\n") {
		f, ok := strings.CutPrefix(strings.TrimSpace(l), "tick ")
		if !ok {
			continue
		}
		ns, err := strconv.ParseInt(f, 10, 64)
		if err != nil {
			continue
		}
		ts = append(ts, time.Unix(0, ns))
	}
	return ts
}

// appGap finds the pause a move caused as the process saw it: the longest
// interval between consecutive ticks that overlaps [from, to], the span in
// which the move paused and resumed the process. It returns the tick before
// and the tick after that interval; ok is false when no interval overlaps
// (no tick after from, or none before to).
//
// A process frozen for the move ticks on until the pause and again from its
// first scheduling on the target, so the longest gap inside the move is last
// tick on the source to first tick on the target; any other stall of the
// process (a slow page fault during the lazy phase) is shorter or it is the
// one the application felt most, which is worth reporting as well.
func appGap(ticks []time.Time, from, to time.Time) (last, first time.Time, ok bool) {
	var best time.Duration = -1
	for i := 1; i < len(ticks); i++ {
		a, z := ticks[i-1], ticks[i]
		if !z.After(from) || !a.Before(to) {
			continue
		}
		if d := z.Sub(a); d > best {
			best, last, first, ok = d, a, z, true
		}
	}
	return last, first, ok
}
