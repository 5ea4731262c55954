package snapshot

import (
	"sort"
	"time"
)

// Item is a snapshot as retention sees it.
type Item struct {
	Name    string
	Created time.Time
}

// Policy says which snapshots of one schedule to keep. Zero everywhere keeps
// everything.
type Policy struct {
	KeepLast   int // the newest N
	KeepHourly int // the newest snapshot of each of the newest N hours that have one
	KeepDaily  int // the newest snapshot of each of the newest N days (UTC) that have one
}

// Empty reports whether the policy keeps everything.
func (p Policy) Empty() bool { return p.KeepLast == 0 && p.KeepHourly == 0 && p.KeepDaily == 0 }

// Prune returns the items the policy does not keep, oldest first. A snapshot
// kept by any rule is kept (the rules add up, as in restic and borg). Ties in
// time are broken by name, so the result does not depend on input order.
func Prune(items []Item, p Policy) []Item {
	if p.Empty() {
		return nil
	}
	sorted := append([]Item(nil), items...)
	sort.Slice(sorted, func(i, j int) bool { // newest first
		if !sorted[i].Created.Equal(sorted[j].Created) {
			return sorted[i].Created.After(sorted[j].Created)
		}
		return sorted[i].Name > sorted[j].Name
	})
	keep := make(map[string]bool)
	for i := 0; i < len(sorted) && i < p.KeepLast; i++ {
		keep[sorted[i].Name] = true
	}
	bucketed := func(n int, bucket func(time.Time) string) {
		seen := make(map[string]bool)
		for _, it := range sorted {
			if len(seen) >= n {
				return
			}
			b := bucket(it.Created.UTC())
			if seen[b] {
				continue
			}
			seen[b] = true
			keep[it.Name] = true
		}
	}
	bucketed(p.KeepHourly, func(t time.Time) string { return t.Format("2006010215") })
	bucketed(p.KeepDaily, func(t time.Time) string { return t.Format("20060102") })
	var out []Item
	for i := len(sorted) - 1; i >= 0; i-- {
		if !keep[sorted[i].Name] {
			out = append(out, sorted[i])
		}
	}
	return out
}
