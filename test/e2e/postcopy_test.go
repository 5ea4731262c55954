package e2e

import (
	"fmt"
	"io"
	"net/http"
	"strconv"
	"strings"
	"testing"
	"time"

	specs "github.com/opencontainers/runtime-spec/specs-go"

	"github.com/migratehq/migrate/test/testutil"
)

// postcopySummary is what a postcopy move's -o json result adds to moveSummary.
type postcopySummary struct {
	moveSummary
	Mode       string `json:"mode"`
	ModeReason string `json:"modeReason"`
	LazyPages  string `json:"lazyPages"`
	LazyBytes  string `json:"lazyBytes"`
	Dump       string `json:"dump"`
	Transfer   string `json:"transfer"`
	Restore    string `json:"restore"`
}

// movePostcopyJSON runs `move --mode MODE -o json` and returns its final result.
func movePostcopyJSON(t *testing.T, a *agent, id, to string, args ...string) postcopySummary {
	t.Helper()
	r := must(t, a.ctl(append([]string{"move", id, "--to", to, "-o", "json"}, args...)...), "move "+id+" to "+to)
	last := *testutil.LastMove[postcopySummary](t, r.stdout)
	t.Logf("move %s -> %s (%s: %s): downtime %s (dump %s, transfer %s, restore %s), lazy phase %s for %s B, raw %s B",
		last.From, last.To, last.Mode, last.ModeReason, last.Downtime, last.Dump, last.Transfer, last.Restore, last.LazyPages, last.LazyBytes, last.RawBytes)
	return last
}

// memwriterStatusBundle runs the memory writer over mib MiB with a status file.
func memwriterStatusBundle(t *testing.T, mib int) string {
	return testutil.NewBusyboxBundleWith(t, func(s *specs.Spec) {
		s.Root.Readonly = false
		s.Process.Args = []string{"/usr/local/bin/memwriter", "-mib", strconv.Itoa(mib), "-status", "/memwriter.status"}
	})
}

// postcopyMemwriter moves a memory writer of mib MiB with --mode postcopy and
// checks that every page arrived intact: the move ends only once the target has
// all pages, then the writer re-verifies them all on the target.
func postcopyMemwriter(t *testing.T, mib int) {
	n1, n2 := movePair(t, "", "")
	id := containerID(t, "pc")
	must(t, n1.ctl("run", "-b", memwriterStatusBundle(t, mib), id), "run")
	sum := n1.memReady(id)

	m := movePostcopyJSON(t, n1, id, "n2", "--mode", "postcopy")
	if m.Mode != "postcopy" {
		t.Fatalf("mode %q, want postcopy", m.Mode)
	}
	lazy := int64Field(t, "lazyBytes", m.LazyBytes)
	if lazy < int64(mib)<<20 {
		t.Errorf("%d page bytes crossed the tunnel: less than the %d MiB the writer holds", lazy, mib)
	}
	if d, err := time.ParseDuration(m.Downtime); err != nil || d <= 0 || d > 10*time.Second {
		t.Errorf("downtime %q", m.Downtime)
	}
	if _, ok := n1.ps()[id]; ok {
		t.Errorf("n1 still lists %s after the move", id)
	}
	n2.waitStatus(id, running)
	n2.memIntact(id, sum)
	n1.noLeftovers()
	n1.noMoveLeftovers()
	n2.noMoveLeftovers()
}

func TestPostcopyMemwriter256(t *testing.T) {
	t.Parallel()
	postcopyMemwriter(t, 256)
}

func TestPostcopyMemwriter1G(t *testing.T) {
	t.Parallel()
	postcopyMemwriter(t, 1024)
}

// TestPostcopyRedisAndBack moves redis with its keys n1 -> n2 -> n1 in postcopy
// mode: the keys are there after each move, and it takes writes.
func TestPostcopyRedisAndBack(t *testing.T) {
	t.Parallel()
	const keys = 1000
	n1, n2 := movePair(t, "", "")
	id := containerID(t, "pcredis")
	must(t, n1.ctl("run", "-b", redisBundle(t), id), "run")
	deadline := time.Now().Add(20 * time.Second)
	for !strings.Contains(n1.ctl("exec", id, "--", "redis-cli", "ping").stdout, "PONG") {
		if time.Now().After(deadline) {
			t.Fatal("redis did not answer")
		}
		time.Sleep(100 * time.Millisecond)
	}
	fill := fmt.Sprintf(`i=0; while [ $i -lt %d ]; do echo "SET key$i value$i"; i=$((i+1)); done | redis-cli >/dev/null && redis-cli dbsize`, keys)
	if r := must(t, n1.ctl("exec", id, "--", "sh", "-c", fill), "write keys"); strings.TrimSpace(r.stdout) != strconv.Itoa(keys) {
		t.Fatalf("dbsize before the move %q, want %d", r.stdout, keys)
	}
	check := func(a *agent, want int) {
		t.Helper()
		after := fmt.Sprintf("after%d", want)
		a.waitStatus(id, running)
		for _, i := range []int{0, keys / 2, keys - 1} {
			r := must(t, a.ctl("exec", id, "--", "redis-cli", "get", fmt.Sprintf("key%d", i)), "get")
			if got := strings.TrimSpace(r.stdout); got != fmt.Sprintf("value%d", i) {
				t.Errorf("key%d after the move = %q", i, got)
			}
		}
		if r := must(t, a.ctl("exec", id, "--", "redis-cli", "set", after, "move"), "set"); strings.TrimSpace(r.stdout) != "OK" {
			t.Errorf("redis refuses writes after the move: %q", r.stdout)
		}
		if r := must(t, a.ctl("exec", id, "--", "redis-cli", "dbsize"), "dbsize"); strings.TrimSpace(r.stdout) != strconv.Itoa(want) {
			t.Errorf("dbsize after the move %q, want %d", r.stdout, want)
		}
	}
	if m := movePostcopyJSON(t, n1, id, "n2", "--mode", "postcopy"); m.Mode != "postcopy" || !m.BaseSent {
		t.Errorf("first move %+v: want postcopy with the Debian base sent", m)
	}
	check(n2, keys+1)
	if m := movePostcopyJSON(t, n2, id, "n1", "--mode", "postcopy"); m.Mode != "postcopy" || m.BaseSent {
		t.Errorf("move back %+v: want postcopy without the base (n1 has it)", m)
	}
	check(n1, keys+2)
	n2.noLeftovers()
	n1.noMoveLeftovers()
	n2.noMoveLeftovers()
}

// TestMoveModeChoice: auto picks postcopy for 128 MiB here and says why; precopy
// is refused naming the missing kernel feature; --max-downtime below what any
// mode can do is refused before the container is touched.
func TestMoveModeChoice(t *testing.T) {
	t.Parallel()
	n1, n2 := movePair(t, "", "")
	id := containerID(t, "mode")
	must(t, n1.ctl("run", "-b", memwriterStatusBundle(t, 128), id), "run")
	before := n1.waitStatus(id, running)
	sum := n1.memReady(id)

	wantFail(t, n1.ctl("move", id, "--to", "n2", "--mode", "precopy"), 5, "soft-dirty")
	wantFail(t, n1.ctl("move", id, "--to", "n2", "--max-downtime", "1ms"), 2, "no mode meets --max-downtime 1ms")
	wantFail(t, n1.ctl("move", id, "--to", "n2", "--mode", "postcopy", "--max-downtime", "5ms"), 2, "more than --max-downtime")
	after := n1.waitStatus(id, running)
	if after.Pid != before.Pid {
		t.Errorf("pid %d became %d: a refused move touched the container", before.Pid, after.Pid)
	}
	if _, ok := n2.ps()[id]; ok {
		t.Errorf("n2 has %s after refused moves", id)
	}

	m := movePostcopyJSON(t, n1, id, "n2", "--max-downtime", "10s")
	if m.Mode != "postcopy" || !strings.Contains(m.ModeReason, "precopy skipped") || !strings.Contains(m.ModeReason, "postcopy: expected downtime") {
		t.Errorf("auto chose %q because %q: want postcopy, with precopy skipped", m.Mode, m.ModeReason)
	}
	n2.waitStatus(id, running)
	n2.memIntact(id, sum)
	n1.noMoveLeftovers()
	n2.noMoveLeftovers()
}

// TestPostcopySourceKilled kills the source agent while the target fetches the
// pages of 1 GiB: the target notices at once, kills its copy (which cannot go on
// without its memory), logs why and counts a move failed with pages_lost.
func TestPostcopySourceKilled(t *testing.T) {
	t.Parallel()
	mport := freePort(t)
	n1, n2 := movePair(t, "", fmt.Sprintf("metrics:\n  listen: 127.0.0.1:%d\n", mport))
	id := containerID(t, "pcsrc")
	must(t, n1.ctl("run", "-b", memwriterStatusBundle(t, 1024), id), "run")
	n1.memReady(id)

	killed := time.Now()
	r := moveUntilArgs(t, n1, id, "n2", "its memory follows", func() {
		killed = time.Now()
		n1.kill9()
	}, "--mode", "postcopy")
	if r.code == 0 {
		t.Fatalf("move succeeded with the source killed: %s", r.stdout)
	}
	// The target's copy is stopped, not left hanging on missing pages.
	deadline := time.Now().Add(30 * time.Second)
	for {
		c, ok := n2.ps()[id]
		if ok && c.Status != running {
			t.Logf("target's copy %s %v after the source was killed", c.Status, time.Since(killed).Round(time.Millisecond))
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("target's copy still %+v (present %v) 30s after the source died", c, ok)
		}
		time.Sleep(100 * time.Millisecond)
	}
	if !strings.Contains(n2.log.String(), "postcopy move failed: pages missing") {
		t.Errorf("target's log does not report the lost pages:\n%s", n2.log)
	}
	resp, err := http.Get(fmt.Sprintf("http://127.0.0.1:%d/metrics", mport))
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if want := `migrate_moves_total{mode="lazy",reason="pages_lost",result="failure"} 1`; !strings.Contains(string(body), want) {
		t.Errorf("target's /metrics lacks %q", want)
	}
}

// TestPostcopyTargetKilledBeforeResume kills the target agent while it restores:
// the move fails and the container runs on the source again, memory intact.
func TestPostcopyTargetKilledBeforeResume(t *testing.T) {
	t.Parallel()
	n1, n2 := movePair(t, "", "")
	id := containerID(t, "pctgt")
	must(t, n1.ctl("run", "-b", memwriterStatusBundle(t, 256), id), "run")
	before := n1.waitStatus(id, running)
	sum := n1.memReady(id)

	r := moveUntilArgs(t, n1, id, "n2", "restoring on n2 with lazy pages", func() {
		n2.kill9()
		// Back within the source's abort window: the restarted agent drops
		// what the interrupted restore made and confirms.
		n2.start()
	}, "--mode", "postcopy")
	t.Logf("postcopy move with the target killed: exit %d\n%s", r.code, r.stderr)
	if r.code == 0 {
		t.Fatalf("move succeeded with the target killed: %s", r.stdout)
	}
	after := n1.waitStatus(id, running)
	if after.Pid != before.Pid {
		t.Errorf("pid %d became %d: the source was restarted, not resumed", before.Pid, after.Pid)
	}
	n1.memIntact(id, sum)
	if c, ok := n2.ps()[id]; ok {
		t.Errorf("the restarted target lists %s (%s)", id, c.Status)
	}
	n1.noMoveLeftovers()
}
