package agent

import (
	"errors"
	"strings"
	"testing"
	"time"

	migratev1 "github.com/migratehq/migrate/api/migrate/v1"
)

func TestPickMode(t *testing.T) {
	all := &migratev1.MoveFeatures{LazyPages: true, MemTrack: true}
	lazyOnly := &migratev1.MoveFeatures{LazyPages: true}
	none := &migratev1.MoveFeatures{}
	const gib = 1 << 30
	for _, c := range []struct {
		name          string
		req           string
		max           time.Duration
		local, remote *migratev1.MoveFeatures
		mem           int64
		want          string
		wantErr       error
		msg           string // in the reason or the error
	}{
		{"auto picks postcopy", modeAuto, 0, lazyOnly, lazyOnly, gib, modePostcopy, nil, "precopy skipped: no soft-dirty tracking on this node and node n2"},
		{"auto small container goes cold", modeAuto, 0, lazyOnly, lazyOnly, 1 << 20, modeCold, nil, "cold: expected downtime"},
		{"auto without lazy pages on the target", modeAuto, 0, lazyOnly, none, gib, modeCold, nil, "postcopy skipped: no lazy pages on node n2"},
		{"auto within max", modeAuto, 5 * time.Second, lazyOnly, lazyOnly, gib, modePostcopy, nil, "postcopy"},
		{"auto cannot meet max", modeAuto, 10 * time.Millisecond, lazyOnly, lazyOnly, gib, "", ErrInvalid, "no mode meets --max-downtime 10ms"},
		{"auto cold cannot meet max without lazy", modeAuto, time.Second, none, none, 4 * gib, "", ErrInvalid, "postcopy skipped"},
		{"precopy refused without soft-dirty", modePrecopy, 0, lazyOnly, lazyOnly, gib, "", ErrInvalidState, "soft-dirty memory tracking"},
		{"precopy with tracking not there yet", modePrecopy, 0, all, all, gib, "", ErrInvalidState, "not implemented"},
		{"postcopy without lazy pages here", modePostcopy, 0, none, lazyOnly, gib, "", ErrInvalidState, "lazy pages (userfaultfd) on this node"},
		{"postcopy over max", modePostcopy, time.Millisecond, lazyOnly, lazyOnly, gib, "", ErrInvalid, "more than --max-downtime"},
		{"cold over max", modeCold, time.Second, lazyOnly, lazyOnly, 4 * gib, "", ErrInvalid, "a cold move of 4096 MiB"},
		{"cold requested", modeCold, 0, lazyOnly, lazyOnly, gib, modeCold, nil, "requested"},
	} {
		t.Run(c.name, func(t *testing.T) {
			got, err := pickMode(c.req, c.max, c.local, c.remote, "n2", c.mem)
			if c.wantErr != nil {
				if !errors.Is(err, c.wantErr) || !strings.Contains(err.Error(), c.msg) {
					t.Fatalf("err %v, want %v containing %q", err, c.wantErr, c.msg)
				}
				return
			}
			if err != nil || got.mode != c.want || !strings.Contains(got.reason, c.msg) {
				t.Fatalf("got %+v, %v; want %s because ...%q...", got, err, c.want, c.msg)
			}
		})
	}
}

func TestEstimateColdGrowsWithMemory(t *testing.T) {
	small, big := estimateCold(64<<20), estimateCold(1<<30)
	if small < coldFixedDowntime || big <= small {
		t.Errorf("estimateCold: 64 MiB %s, 1 GiB %s", small, big)
	}
}

func TestTunnelsReceiving(t *testing.T) {
	var tt tunnels
	e := tt.get("move-1")
	if tt.receiving("c1") {
		t.Fatal("receiving before any restore")
	}
	e.container = "c1"
	if !tt.receiving("c1") || tt.receiving("c2") {
		t.Fatal("receiving does not follow the restored container")
	}
	tt.drop("move-1")
	if tt.receiving("c1") {
		t.Fatal("receiving after the tunnel was dropped")
	}
}

func TestTunnelBreakRunsWatcherOnce(t *testing.T) {
	e := &tunnelEnd{ready: make(chan struct{})}
	e.breakWith(errors.New("first"))
	var got []string
	e.setOnBroken(func(err error) { got = append(got, err.Error()) })
	e.breakWith(errors.New("second"))
	if len(got) != 1 || got[0] != "first" {
		t.Fatalf("watcher saw %v, want the first break only", got)
	}
}
