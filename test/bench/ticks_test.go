package bench

import (
	"fmt"
	"testing"
	"time"
)

func TestParseTicks(t *testing.T) {
	text := "ready abc\ntick 1000000000\nok abc\ntick 1010000000\ntick 10x\n  tick 2000000000  \n"
	got := parseTicks(text)
	want := []time.Time{time.Unix(1, 0), time.Unix(1, 10e6), time.Unix(2, 0)}
	if fmt.Sprint(got) != fmt.Sprint(want) {
		t.Fatalf("parseTicks = %v, want %v", got, want)
	}
	if got := parseTicks("ready x\n"); len(got) != 0 {
		t.Fatalf("parseTicks without ticks = %v", got)
	}
}

func TestAppGap(t *testing.T) {
	at := func(ms int) time.Time { return time.Unix(100, int64(ms)*1e6) }
	var ticks []time.Time
	// Every 10 ms from 0 to 500, a 40 ms stall before the move, then the move's
	// gap 900 -> 1250, then every 10 ms again.
	for ms := 0; ms <= 500; ms += 10 {
		ticks = append(ticks, at(ms))
	}
	ticks = append(ticks, at(540))
	for ms := 550; ms <= 900; ms += 10 {
		ticks = append(ticks, at(ms))
	}
	for ms := 1250; ms <= 1500; ms += 10 {
		ticks = append(ticks, at(ms))
	}
	last, first, ok := appGap(ticks, at(800), at(1400))
	if !ok || !last.Equal(at(900)) || !first.Equal(at(1250)) {
		t.Fatalf("appGap = %v %v %v, want the 900 -> 1250 gap", last, first, ok)
	}
	// The stall before the move is outside the window: not the move's.
	last, first, ok = appGap(ticks, at(600), at(850))
	if !ok || first.Sub(last) != 10*time.Millisecond {
		t.Fatalf("appGap before the move = %v %v %v, want a 10 ms tick", last, first, ok)
	}
	// A gap that only straddles the window's start still counts.
	if last, first, ok = appGap(ticks, at(1000), at(1300)); !ok || !last.Equal(at(900)) || !first.Equal(at(1250)) {
		t.Fatalf("appGap straddling = %v %v %v", last, first, ok)
	}
	// No tick after the window's start: the target never ticked.
	if _, _, ok := appGap(ticks[:20], at(800), at(1400)); ok {
		t.Fatal("appGap without a tick after the move found one")
	}
	if _, _, ok := appGap(nil, at(0), at(1)); ok {
		t.Fatal("appGap of no ticks found one")
	}
}
