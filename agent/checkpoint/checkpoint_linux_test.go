package checkpoint

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	specs "github.com/opencontainers/runtime-spec/specs-go"
	"golang.org/x/sys/unix"

	"github.com/migratehq/migrate/criu"
	"github.com/migratehq/migrate/runtime/container"
	_ "github.com/migratehq/migrate/runtime/nsenter"
	"github.com/migratehq/migrate/test/testutil"
)

func TestMain(m *testing.M) {
	// The runtime re-executes this test binary as the container's init.
	if container.IsInit() {
		container.InitMain()
	}
	// Exec'd processes are forked into the container's pid namespace: as
	// subreaper we inherit and can wait for them.
	if err := unix.Prctl(unix.PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0); err != nil {
		panic(err)
	}
	os.Exit(m.Run())
}

// lines collects what a container writes to a pipe.
type lines struct {
	mu  sync.Mutex
	all []string
}

func (l *lines) read(r *os.File) {
	sc := bufio.NewScanner(r)
	for sc.Scan() {
		l.mu.Lock()
		l.all = append(l.all, sc.Text())
		l.mu.Unlock()
	}
}

// lastNumber waits until the output holds a number > after and returns the last one.
func (l *lines) waitNumber(t *testing.T, after int) int {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for time.Now().Before(deadline) {
		l.mu.Lock()
		for i := len(l.all) - 1; i >= 0; i-- {
			if n, err := strconv.Atoi(l.all[i]); err == nil {
				if n > after {
					l.mu.Unlock()
					return n
				}
				break
			}
		}
		l.mu.Unlock()
		time.Sleep(20 * time.Millisecond)
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	t.Fatalf("no number above %d in output %q", after, l.all)
	return 0
}

// first returns the first number in the output.
func (l *lines) first() int {
	l.mu.Lock()
	defer l.mu.Unlock()
	for _, s := range l.all {
		if n, err := strconv.Atoi(s); err == nil {
			return n
		}
	}
	return -1
}

// last returns the last number in the output, once what the (dead) writer left
// in the pipe has been read.
func (l *lines) last() int {
	time.Sleep(100 * time.Millisecond)
	l.mu.Lock()
	defer l.mu.Unlock()
	for i := len(l.all) - 1; i >= 0; i-- {
		if n, err := strconv.Atoi(l.all[i]); err == nil {
			return n
		}
	}
	return -1
}

type stdio struct {
	files [3]*os.File // what the container gets
	stdin *os.File    // the test's end of the container's stdin
	out   *lines
}

func newStdio(t *testing.T) *stdio {
	t.Helper()
	inR, inW, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	outR, outW, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	s := &stdio{files: [3]*os.File{inR, outW, outW}, stdin: inW, out: &lines{}}
	go s.out.read(outR)
	t.Cleanup(func() { inW.Close(); inR.Close(); outW.Close(); outR.Close() })
	return s
}

func setup(t *testing.T) (*Checkpointer, string) {
	t.Helper()
	testutil.RequireRoot(t)
	rt, err := container.New(filepath.Join(t.TempDir(), "state"))
	if err != nil {
		t.Fatal(err)
	}
	f, err := (&criu.Client{}).Features(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	return &Checkpointer{Runtime: rt, CRIU: &criu.Client{}, NetworkLock: f.NetworkLock}, t.TempDir()
}

func startCounter(t *testing.T, cp *Checkpointer, id string) (*container.Container, *stdio) {
	t.Helper()
	bundle := testutil.NewBusyboxBundleWith(t, func(s *specs.Spec) {
		s.Process.Args = []string{"/usr/local/bin/counter", "-interval", "50ms"}
	})
	return run(t, cp, id, bundle)
}

func TestCheckpointRestoreContinues(t *testing.T) {
	cp, dir := setup(t)
	ctx := context.Background()
	c, io := startCounter(t, cp, "ctr1")
	before := io.out.waitNumber(t, 5)

	ckpt := filepath.Join(dir, "ckpt1")
	extra := filepath.Join(t.TempDir(), "container.log")
	if err := os.WriteFile(extra, []byte("before the dump\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	m, err := cp.Checkpoint(ctx, c, ckpt, Options{ID: "ckpt1", Files: func(copy func(dst, src string) error) error {
		return copy("logs/container.log", extra)
	}})
	if err != nil {
		t.Fatal(err)
	}
	if !slices.ContainsFunc(m.Files, func(f File) bool { return f.Path == "logs/container.log" && f.Size == 16 }) {
		t.Fatalf("extra file not in the manifest: %+v", m.Files)
	}
	if st, _ := c.State(); st.Status != specs.StateStopped {
		t.Fatalf("after a dump without leave-running the container is %s", st.Status)
	}
	if m.Stdio[1] == "" || !strings.HasPrefix(m.Stdio[1], "pipe:[") {
		t.Fatalf("stdout not recorded as an external pipe: %q", m.Stdio)
	}
	if _, err := c.Wait(); err != nil {
		t.Fatal(err)
	}
	if err := c.Delete(false); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(filepath.Join(ckpt, "images", "dump.log")); err != nil {
		t.Fatalf("CRIU's log is not kept with the checkpoint: %v", err)
	}

	io2 := newStdio(t)
	r, err := cp.Restore(ctx, ckpt, "ctr1", RestoreOptions{Stdio: io2.files})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = r.Delete(true) })
	// The dump froze the counter at some value after before (how long after depends
	// on the host's load): the first number after the restore is the next one.
	atDump := io.out.last()
	after := io2.out.waitNumber(t, before)
	if first := io2.out.first(); first < before || first != atDump+1 {
		t.Fatalf("restored counter printed %d first; it stopped at %d: it restarted instead of continuing", first, atDump)
	}
	if st, _ := r.State(); st.Status != specs.StateRunning {
		t.Fatalf("restored container is %s", st.Status)
	}
	pids, err := r.Processes()
	if err != nil || len(pids) == 0 {
		t.Fatalf("restored processes are not in the new cgroup: %v %v", pids, err)
	}

	// Again, leaving it running: the pause is the downtime, the counter goes on.
	ckpt2 := filepath.Join(dir, "ckpt2")
	m2, err := cp.Checkpoint(ctx, r, ckpt2, Options{ID: "ckpt2", LeaveRunning: true})
	if err != nil {
		t.Fatal(err)
	}
	if m2.Downtime <= 0 || m2.Downtime > 10*time.Second {
		t.Fatalf("downtime %v", m2.Downtime)
	}
	io2.out.waitNumber(t, after+3)
	if st, _ := r.State(); st.Status != specs.StateRunning {
		t.Fatalf("after leave-running dump: %s", st.Status)
	}
	// A second copy from the same checkpoint under a new name, while the
	// original runs.
	io3 := newStdio(t)
	r2, err := cp.Restore(ctx, ckpt2, "ctr1-copy", RestoreOptions{Stdio: io3.files})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = r2.Delete(true) })
	io3.out.waitNumber(t, after)
	t.Logf("counter: %d before the first dump, %d after restore; leave-running downtime %v", before, after, m2.Downtime)
}

func TestRestoreRefusesBadCheckpoints(t *testing.T) {
	cp, dir := setup(t)
	ctx := context.Background()
	c, io := startCounter(t, cp, "src")
	io.out.waitNumber(t, 2)
	good := filepath.Join(dir, "good")
	if _, err := cp.Checkpoint(ctx, c, good, Options{LeaveRunning: true}); err != nil {
		t.Fatal(err)
	}
	variant := func(name string, mutate func(d string)) string {
		d := filepath.Join(dir, name)
		if err := os.CopyFS(d, os.DirFS(good)); err != nil {
			t.Fatal(err)
		}
		mutate(d)
		return d
	}
	pages, _ := filepath.Glob(filepath.Join(good, "images", "pages-*.img"))
	if len(pages) == 0 {
		t.Fatal("no page images")
	}
	pageRel, _ := filepath.Rel(good, pages[0])
	truncated := variant("truncated", func(d string) {
		if err := os.Truncate(filepath.Join(d, pageRel), 100); err != nil {
			t.Fatal(err)
		}
	})
	flipped := variant("flipped", func(d string) {
		p := filepath.Join(d, pageRel)
		data, _ := os.ReadFile(p)
		data[len(data)/2] ^= 0xff
		os.WriteFile(p, data, 0o600)
	})
	newer := variant("newer", func(d string) {
		p := filepath.Join(d, ManifestName)
		var m map[string]any
		data, _ := os.ReadFile(p)
		json.Unmarshal(data, &m)
		m["formatVersion"] = FormatVersion + 1
		data, _ = json.Marshal(m)
		os.WriteFile(p, data, 0o600)
	})
	cases := []struct {
		name, dir, id string
		want          error
		text          string
	}{
		{"truncated image", truncated, "r1", ErrCorrupt, "truncated"},
		{"wrong checksum", flipped, "r2", ErrCorrupt, "checksum mismatch"},
		{"newer format", newer, "r3", ErrNewerFormat, "format version"},
		{"name exists", good, "src", container.ErrExist, "exists"},
		{"no checkpoint", filepath.Join(dir, "nothing"), "r5", ErrCorrupt, "no manifest.json"},
	}
	for _, tc := range cases {
		_, err := cp.Restore(ctx, tc.dir, tc.id, RestoreOptions{})
		if !errors.Is(err, tc.want) || !strings.Contains(err.Error(), tc.text) {
			t.Errorf("%s: want %v containing %q, got %v", tc.name, tc.want, tc.text, err)
		}
		if tc.id != "src" {
			if _, err := cp.Runtime.Get(tc.id); !errors.Is(err, container.ErrNotExist) {
				t.Errorf("%s: restore left a container behind: %v", tc.name, err)
			}
			if _, err := os.Stat(fmt.Sprintf("/sys/fs/cgroup/memory/migrate/%s", tc.id)); err == nil {
				t.Errorf("%s: restore left a cgroup behind", tc.name)
			}
		}
	}
	// The source is untouched by all of it.
	if st, _ := c.State(); st.Status != specs.StateRunning {
		t.Fatalf("source container is %s", st.Status)
	}
	// Checkpoint of a stopped container: a clear error.
	c.Signal(9, false)
	c.Wait()
	if _, err := cp.Checkpoint(ctx, c, filepath.Join(dir, "stopped"), Options{}); !errors.Is(err, container.ErrNotRunning) {
		t.Fatalf("checkpoint of a stopped container: %v", err)
	}
	if _, err := os.Stat(filepath.Join(dir, "stopped.partial")); err == nil {
		t.Fatal("failed checkpoint left a partial directory")
	}
}

// TestDumpOfPausedContainerStaysFrozen: a move relies on this. The source
// container is paused, dumped with leave-running, and must stay frozen (not
// run on, not die) until the target runs the copy; on failure it is resumed.
func TestDumpOfPausedContainerStaysFrozen(t *testing.T) {
	cp, dir := setup(t)
	c, io := startCounter(t, cp, "frozen")
	io.out.waitNumber(t, 3)
	if err := c.Pause(); err != nil {
		t.Fatal(err)
	}
	time.Sleep(100 * time.Millisecond) // output already in the pipe drains
	before := io.out.waitNumber(t, 0)
	if _, err := cp.Checkpoint(context.Background(), c, filepath.Join(dir, "ck"), Options{LeaveRunning: true}); err != nil {
		t.Fatal(err)
	}
	time.Sleep(300 * time.Millisecond) // six ticks of the counter
	if st, _ := c.State(); st.Status != "paused" {
		t.Fatalf("after the dump the container is %s, want still paused", st.Status)
	}
	if now := io.out.waitNumber(t, 0); now != before {
		t.Fatalf("a frozen container counted on during/after the dump: %d -> %d", before, now)
	}
	if err := c.Resume(); err != nil {
		t.Fatal(err)
	}
	io.out.waitNumber(t, before+2)
}
