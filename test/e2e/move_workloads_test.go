package e2e

import (
	"fmt"
	"strconv"
	"strings"
	"testing"
	"time"

	specs "github.com/opencontainers/runtime-spec/specs-go"

	"github.com/migratehq/migrate/runtime/spec"
	"github.com/migratehq/migrate/test/testutil"
	"github.com/migratehq/migrate/test/workloads/memcheck"
)

// Cold moves of real workloads between two agents in their own network namespaces
// (lanPair): the memory writer's 256 MiB, redis with its keys, and the counter
// moved back and forth with its log and rootfs changes.

// moveCold runs `move --mode cold -o json`, bounded in time, and returns the summary
// of its final event.
func moveCold(t *testing.T, a *agent, id, to string) moveSummary {
	t.Helper()
	r := must(t, runCtl(t, []string{"timeout", "300"}, "--socket", a.sock, "move", id, "--to", to, "--mode", "cold", "-o", "json"),
		"move "+id+" to "+to)
	return *testutil.LastMove[moveSummary](t, r.stdout)
}

// logMove reports a move's figures in the test log and checks its downtime.
func logMove(t *testing.T, m moveSummary) {
	t.Helper()
	t.Logf("move %s -> %s: downtime %s, raw %s B, wire %s B, base sent %v (%s B)",
		m.From, m.To, m.Downtime, m.RawBytes, m.WireBytes, m.BaseSent, m.BaseBytes)
	if d, err := time.ParseDuration(m.Downtime); err != nil || d <= 0 || d > time.Minute {
		t.Errorf("downtime %q", m.Downtime)
	}
}

// int64Field parses an int64 that protojson wrote as a string.
func int64Field(t *testing.T, what, s string) int64 {
	t.Helper()
	n, err := strconv.ParseInt(s, 10, 64)
	if err != nil {
		t.Fatalf("%s %q: %v", what, s, err)
	}
	return n
}

// TestMoveMemwriter moves a process holding 256 MiB of patterned memory: on the
// target it re-verifies every page and reports the checksum it had before the move.
func TestMoveMemwriter(t *testing.T) {
	t.Parallel()
	const mib = 256
	n1, n2, _, _, _ := lanPair(t, "", "")
	bundle := testutil.NewBusyboxBundleWith(t, func(s *specs.Spec) {
		s.Root.Readonly = false
		s.Process.Args = []string{"/usr/local/bin/memwriter", "-mib", strconv.Itoa(mib), "-status", "/memwriter.status"}
	})
	id := containerID(t, "mem")
	must(t, n1.ctl("run", "-b", bundle, id), "run")
	log := n1.waitLogs(id, "ready ")
	sum := ""
	for _, l := range strings.Split(log, "\n") {
		if s, ok := strings.CutPrefix(l, "ready "); ok {
			sum = strings.TrimSpace(s)
		}
	}
	if len(sum) != 64 {
		t.Fatalf("memwriter's ready line has no checksum: %q", log)
	}

	m := moveCold(t, n1, id, "n2")
	logMove(t, m)
	if raw := int64Field(t, "rawBytes", m.RawBytes); raw < mib<<20 {
		t.Errorf("the move sent %d bytes: less than the %d MiB the process holds", raw, mib)
	}
	if _, ok := n1.ps()[id]; ok {
		t.Errorf("n1 still lists %s after the move", id)
	}
	n2.waitStatus(id, running)
	// SIGUSR1: re-verify every page against the pattern and print "ok <sum>".
	must(t, n2.ctl("kill", "-s", "USR1", id), "kill -s USR1")
	log = n2.waitLogs(id, "ok "+sum)
	if strings.Contains(log, "corrupt") {
		t.Fatalf("memory corrupt after the move:\n%s", log)
	}
	r := must(t, n2.ctl("exec", id, "--", "cat", "/memwriter.status"), "read the status file")
	st, err := memcheck.ParseStatus(strings.TrimSpace(r.stdout))
	if err != nil {
		t.Fatal(err)
	}
	if st.State != memcheck.StateOK || st.Sum != sum || st.Size != mib<<20 || st.Seq != 2 {
		t.Errorf("status after the move %+v, want the second event, ok, sha256 %s, %d MiB", st, sum, mib)
	}
	n1.noMoveLeftovers()
	n2.noMoveLeftovers()
}

// redisBundle runs redis-server on the Debian rootfs, read-only, with tmpfs on /tmp
// and /run, listening on its container's loopback.
func redisBundle(t *testing.T) string {
	t.Helper()
	bundle := t.TempDir()
	s := spec.Example()
	s.Root.Path = testutil.DebianRootfs(t)
	s.Root.Readonly = true
	s.Process.Terminal = false
	s.Process.Args = []string{"redis-server", "--save", "", "--appendonly", "no", "--port", "6379", "--bind", "127.0.0.1"}
	s.Process.Capabilities = nil
	s.Mounts = append(s.Mounts,
		specs.Mount{Destination: "/tmp", Type: "tmpfs", Source: "tmpfs", Options: []string{"nosuid", "nodev", "mode=1777"}},
		specs.Mount{Destination: "/run", Type: "tmpfs", Source: "tmpfs", Options: []string{"nosuid", "nodev", "mode=755"}},
	)
	testutil.WriteSpec(t, bundle, s)
	return bundle
}

// TestMoveRedis writes keys into redis, moves it, and reads them back on the target,
// where it also takes new writes.
func TestMoveRedis(t *testing.T) {
	t.Parallel()
	const keys = 1000
	n1, n2, _, _, _ := lanPair(t, "", "")
	id := containerID(t, "redis")
	must(t, n1.ctl("run", "-b", redisBundle(t), id), "run")
	deadline := time.Now().Add(20 * time.Second)
	for {
		r := n1.ctl("exec", id, "--", "redis-cli", "ping")
		if strings.Contains(r.stdout, "PONG") {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("redis did not answer: %q %q", r.stdout, r.stderr)
		}
		time.Sleep(100 * time.Millisecond)
	}
	fill := fmt.Sprintf(`i=0; while [ $i -lt %d ]; do echo "SET key$i value$i"; i=$((i+1)); done | redis-cli >/dev/null && redis-cli dbsize`, keys)
	if r := must(t, n1.ctl("exec", id, "--", "sh", "-c", fill), "write keys"); strings.TrimSpace(r.stdout) != strconv.Itoa(keys) {
		t.Fatalf("dbsize before the move %q, want %d", r.stdout, keys)
	}

	m := moveCold(t, n1, id, "n2")
	logMove(t, m)
	if !m.BaseSent {
		t.Errorf("n2 had no Debian base, yet the move did not send it: %+v", m)
	}
	n2.waitStatus(id, running)
	for _, i := range []int{0, keys / 2, keys - 1} {
		r := must(t, n2.ctl("exec", id, "--", "redis-cli", "get", fmt.Sprintf("key%d", i)), "get")
		if got := strings.TrimSpace(r.stdout); got != fmt.Sprintf("value%d", i) {
			t.Errorf("key%d after the move = %q", i, got)
		}
	}
	if r := must(t, n2.ctl("exec", id, "--", "redis-cli", "set", "after", "move"), "set"); strings.TrimSpace(r.stdout) != "OK" {
		t.Errorf("redis refuses writes after the move: %q", r.stdout)
	}
	if r := must(t, n2.ctl("exec", id, "--", "redis-cli", "dbsize"), "dbsize"); strings.TrimSpace(r.stdout) != strconv.Itoa(keys+1) {
		t.Errorf("dbsize after the move %q, want %d", r.stdout, keys+1)
	}
	n1.noLeftovers()
	n1.noMoveLeftovers()
	n2.noMoveLeftovers()
}

// TestMoveCounterBackAndForth moves the counter n1 -> n2 -> n1 -> n2. After every
// move its log goes on without a gap or a restart, files written in its root before
// a move (by exec, and by the counter itself on every tick) are there after it, and
// only the first move sends the rootfs base: both nodes have it from then on.
func TestMoveCounterBackAndForth(t *testing.T) {
	t.Parallel()
	n1, n2, _, _, _ := lanPair(t, "", "")
	bundle := testutil.NewBusyboxBundleWith(t, func(s *specs.Spec) {
		s.Root.Readonly = false
		s.Process.Args = []string{"/usr/local/bin/counter", "-interval", "50ms", "-file", "/var/count"}
	})
	id := containerID(t, "c")
	must(t, n1.ctl("run", "-b", bundle, id), "run")
	n1.waitStatus(id, running)
	nums := n1.waitCount(id, 3)
	first := nums[0]
	must(t, n1.ctl("exec", id, "--", "sh", "-c", "echo written-on-n1 > /root/note-0"), "write a file")
	notes := []string{"written-on-n1"}

	hops := []struct {
		from, to *agent
		name     string
		baseSent bool
	}{
		{n1, n2, "n2", true},
		{n2, n1, "n1", false},
		{n1, n2, "n2", false},
	}
	for i, h := range hops {
		last := nums[len(nums)-1]
		m := moveCold(t, h.from, id, h.name)
		logMove(t, m)
		if m.To != h.name || m.ContainerID != id {
			t.Errorf("move %d: result %+v", i+1, m)
		}
		if m.BaseSent != h.baseSent {
			t.Errorf("move %d to %s: base sent %v, want %v", i+1, h.name, m.BaseSent, h.baseSent)
		}
		if _, ok := h.from.ps()[id]; ok {
			t.Errorf("move %d: the source still lists %s", i+1, id)
		}
		h.to.waitStatus(id, running)
		nums = h.to.waitCount(id, last+5)
		_, starts := h.to.counterLog(id)
		checkContinuous(t, id, nums, starts)
		if nums[0] != first {
			t.Errorf("move %d: the log starts at %d, it started at %d", i+1, nums[0], first)
		}
		r := must(t, h.to.ctl("exec", id, "--", "sh", "-c", "cat /root/note-*"), "read the notes")
		if got := strings.Fields(r.stdout); strings.Join(got, " ") != strings.Join(notes, " ") {
			t.Errorf("move %d: notes in the rootfs %q, want %q", i+1, got, notes)
		}
		note := fmt.Sprintf("written-on-%s-%d", h.name, i+1)
		must(t, h.to.ctl("exec", id, "--", "sh", "-c", fmt.Sprintf("echo %s > /root/note-%d", note, i+1)), "write a file")
		notes = append(notes, note)
		h.from.noLeftovers()
		h.from.noMoveLeftovers()
		h.to.noMoveLeftovers()
	}

	// The counter's own file holds every value from 1 on, none lost by a move.
	r := must(t, n2.ctl("exec", id, "--", "cat", "/var/count"), "read the counter's file")
	values := strings.Fields(r.stdout)
	if len(values) < nums[len(nums)-1] {
		t.Fatalf("/var/count has %d values, the log already shows %d", len(values), nums[len(nums)-1])
	}
	for i, v := range values {
		if v != strconv.Itoa(i+1) {
			t.Fatalf("/var/count line %d is %q, want %d", i+1, v, i+1)
		}
	}
}
