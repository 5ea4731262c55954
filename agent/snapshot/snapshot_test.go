package snapshot

import (
	"errors"
	"path/filepath"
	"reflect"
	"testing"
	"time"
)

func at(s string) time.Time {
	t, err := time.Parse(time.RFC3339, s)
	if err != nil {
		panic(err)
	}
	return t
}

func TestValidate(t *testing.T) {
	ok := []Schedule{
		{ContainerID: "c", Every: Duration(15 * time.Minute)},
		{ContainerID: "c", Every: Duration(time.Second), KeepLast: 3},
		{ContainerID: "c", Cron: "*/5 * * * *", KeepDaily: 7, Jitter: Duration(time.Minute)},
		{ContainerID: "c", Cron: "@hourly"},
	}
	for _, s := range ok {
		if err := s.Validate(); err != nil {
			t.Errorf("%+v: %v", s, err)
		}
	}
	bad := []Schedule{
		{ContainerID: "c"},
		{Every: Duration(time.Minute)},
		{ContainerID: "c", Every: Duration(time.Minute), Cron: "* * * * *"},
		{ContainerID: "c", Every: Duration(time.Millisecond)},
		{ContainerID: "c", Every: Duration(-time.Minute)},
		{ContainerID: "c", Cron: "61 * * * *"},
		{ContainerID: "c", Cron: "* * *"},
		{ContainerID: "c", Cron: "every tuesday"},
		{ContainerID: "c", Every: Duration(time.Minute), KeepLast: -1},
		{ContainerID: "c", Every: Duration(time.Minute), Jitter: Duration(2 * time.Hour)},
	}
	for _, s := range bad {
		if err := s.Validate(); !errors.Is(err, ErrInvalid) {
			t.Errorf("%+v: got %v, want ErrInvalid", s, err)
		}
	}
}

func TestNextEvery(t *testing.T) {
	s := Schedule{ContainerID: "c", Every: Duration(15 * time.Minute)}
	cases := map[string]string{
		"2026-01-01T10:00:00Z": "2026-01-01T10:15:00Z", // strictly after
		"2026-01-01T10:07:30Z": "2026-01-01T10:15:00Z",
		"2026-01-01T23:59:00Z": "2026-01-02T00:00:00Z",
	}
	for from, want := range cases {
		if got := s.Next(at(from)); !got.Equal(at(want)) {
			t.Errorf("Next(%s) = %s, want %s", from, got, want)
		}
	}
}

func TestNextCron(t *testing.T) {
	s := Schedule{ContainerID: "c", Cron: "30 2 * * *"}
	if got := s.Next(at("2026-01-01T10:00:00Z")); !got.Equal(at("2026-01-02T02:30:00Z")) {
		t.Errorf("got %s", got)
	}
	s = Schedule{ContainerID: "c", Cron: "0 */6 * * 1"} // Mondays every 6 h
	if got := s.Next(at("2026-01-01T10:00:00Z")); !got.Equal(at("2026-01-05T00:00:00Z")) {
		t.Errorf("got %s", got)
	}
}

func TestJitter(t *testing.T) {
	base := Schedule{Every: Duration(time.Hour), Jitter: Duration(10 * time.Minute)}
	offsets := map[time.Duration]bool{}
	for _, id := range []string{"a", "b", "c", "d", "e", "f", "g", "h"} {
		s := base
		s.ContainerID = id
		off := s.Offset()
		if off < 0 || off >= 10*time.Minute {
			t.Fatalf("%s: offset %s out of [0,10m)", id, off)
		}
		if s.Offset() != off {
			t.Fatalf("%s: offset not stable", id)
		}
		offsets[off] = true
		from := at("2026-01-01T10:00:00Z")
		next := s.Next(from)
		want := at("2026-01-01T10:00:00Z").Add(off)
		if off == 0 {
			want = want.Add(time.Hour)
		}
		if !next.Equal(want) {
			t.Errorf("%s: next %s, want %s", id, next, want)
		}
		// Each run is one interval after the previous one.
		if n2 := s.Next(next); n2.Sub(next) != time.Hour {
			t.Errorf("%s: runs %s and %s are not an hour apart", id, next, n2)
		}
	}
	if len(offsets) < 6 {
		t.Errorf("8 containers got only %d distinct offsets", len(offsets))
	}
	if (&Schedule{ContainerID: "a", Every: Duration(time.Hour)}).Offset() != 0 {
		t.Error("no jitter, non-zero offset")
	}
}

func names(items []Item) []string {
	var out []string
	for _, it := range items {
		out = append(out, it.Name)
	}
	return out
}

func TestPrune(t *testing.T) {
	var items []Item
	// One snapshot every 20 minutes over two days: 144 items, s000 oldest.
	start := at("2026-01-01T00:00:00Z")
	for i := 0; i < 144; i++ {
		items = append(items, Item{Name: fmtName(i), Created: start.Add(time.Duration(i) * 20 * time.Minute)})
	}
	if got := Prune(items, Policy{}); got != nil {
		t.Errorf("empty policy pruned %d", len(got))
	}
	got := Prune(items, Policy{KeepLast: 5})
	if len(got) != 139 || got[0].Name != "s000" || got[138].Name != "s138" {
		t.Errorf("keep-last 5: pruned %d, first %s last %s", len(got), got[0].Name, got[len(got)-1].Name)
	}
	// Newest of each of the last 3 hours: s143 (hour 47), s140 (hour 46), s137 (hour 45).
	got = Prune(items, Policy{KeepHourly: 3})
	kept := keptOf(items, got)
	if !reflect.DeepEqual(kept, []string{"s137", "s140", "s143"}) {
		t.Errorf("keep-hourly 3 kept %v", kept)
	}
	// Daily 2: s071 (day 1's last), s143. With last 2: s142 as well.
	kept = keptOf(items, Prune(items, Policy{KeepDaily: 2, KeepLast: 2}))
	if !reflect.DeepEqual(kept, []string{"s071", "s142", "s143"}) {
		t.Errorf("keep-daily 2 + last 2 kept %v", kept)
	}
	// More buckets asked than exist keeps one per bucket.
	kept = keptOf(items, Prune(items, Policy{KeepDaily: 30}))
	if len(kept) != 2 {
		t.Errorf("keep-daily 30 kept %v", kept)
	}
	// Input order does not matter.
	rev := append([]Item(nil), items...)
	for i, j := 0, len(rev)-1; i < j; i, j = i+1, j-1 {
		rev[i], rev[j] = rev[j], rev[i]
	}
	if a, b := names(Prune(items, Policy{KeepLast: 7, KeepHourly: 5})), names(Prune(rev, Policy{KeepLast: 7, KeepHourly: 5})); !reflect.DeepEqual(a, b) {
		t.Error("result depends on input order")
	}
}

func fmtName(i int) string {
	return "s" + string(rune('0'+i/100)) + string(rune('0'+i/10%10)) + string(rune('0'+i%10))
}

func keptOf(all, pruned []Item) []string {
	gone := map[string]bool{}
	for _, it := range pruned {
		gone[it.Name] = true
	}
	var out []string
	for _, it := range all {
		if !gone[it.Name] {
			out = append(out, it.Name)
		}
	}
	return out
}

func TestName(t *testing.T) {
	n, err := Name("web+1", at("2026-03-04T05:06:07Z").Add(8*time.Millisecond))
	if err != nil || n != "web_1-20260304T050607.008Z" {
		t.Errorf("got %q %v", n, err)
	}
	long := make([]byte, 120)
	for i := range long {
		long[i] = 'a'
	}
	if _, err := Name(string(long), time.Now()); err == nil {
		t.Error("accepted a name over 128 bytes")
	}
}

func TestTablePersists(t *testing.T) {
	p := filepath.Join(t.TempDir(), "schedules.json")
	tb, err := LoadTable(p)
	if err != nil || len(tb.List()) != 0 {
		t.Fatalf("empty: %v %v", tb, err)
	}
	s := Schedule{ContainerID: "a", Every: Duration(time.Minute), KeepLast: 2, Jitter: Duration(time.Second)}
	if err := tb.Set(s); err != nil {
		t.Fatal(err)
	}
	if err := tb.Set(Schedule{ContainerID: "b", Cron: "nonsense"}); !errors.Is(err, ErrInvalid) {
		t.Errorf("invalid schedule saved: %v", err)
	}
	if err := tb.Update("a", func(s *Schedule) { s.LastSnapshot = "a-1" }); err != nil {
		t.Fatal(err)
	}
	tb2, err := LoadTable(p)
	if err != nil {
		t.Fatal(err)
	}
	got, ok := tb2.Get("a")
	if !ok || got.Every != s.Every || got.KeepLast != 2 || got.LastSnapshot != "a-1" || len(tb2.List()) != 1 {
		t.Errorf("reloaded %+v", tb2.List())
	}
	if ok, err := tb2.Remove("a"); !ok || err != nil {
		t.Fatal(ok, err)
	}
	tb3, _ := LoadTable(p)
	if len(tb3.List()) != 0 {
		t.Errorf("removed schedule came back: %+v", tb3.List())
	}
}
