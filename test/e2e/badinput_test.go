package e2e

import (
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/migratehq/migrate/test/testutil"
)

// TestBadInput checks that operator mistakes get one clear line, a documented exit
// code, and leave nothing behind.
func TestBadInput(t *testing.T) {
	t.Parallel()
	a := newAgent(t, agentConfig{})
	id := containerID(t, "c")

	wantFail(t, a.ctl("logs", "nosuch"), 3, `"nosuch": not found`)
	wantFail(t, a.ctl("exec", "nosuch", "true"), 3, "not found")
	wantFail(t, a.ctl("rm", "nosuch"), 3, "not found")
	wantFail(t, a.ctl("stop", "nosuch"), 3, "not found")
	wantFail(t, a.ctl("run", "-b", "/nonexistent/bundle", id), 2, "/nonexistent/bundle")
	wantFail(t, a.ctl("run", "-b", t.TempDir(), id), 2, "no config.json")
	wantFail(t, a.ctl("run", "-b", t.TempDir(), "bad/id"), 2, "invalid container id")
	wantFail(t, a.ctl("kill", "-s", "NOSUCHSIG", id), 2, "unknown signal")
	wantFail(t, a.ctl("ps", "-o", "xml"), 2, "output format")
	wantFail(t, a.ctl("ps", "--no-such-flag"), 2, "unknown flag")

	bundle := testutil.NewBusyboxBundle(t, "sleep", "1000")
	must(t, a.ctl("run", "-b", bundle, id), "run")
	wantFail(t, a.ctl("run", "-b", bundle, id), 4, "already exists")
	wantFail(t, a.ctl("rm", id), 5, "--force")
	must(t, a.ctl("rm", "-f", id), "rm -f")

	// A spec the runtime refuses: the shim reports it and nothing stays.
	broken := testutil.NewBusyboxBundle(t, "/no/such/binary")
	r := a.ctl("run", "-b", broken, id+"-broken")
	if r.code == 0 {
		// The runtime may only notice at exec time: then the container exists, stopped.
		a.waitStatus(id+"-broken", stopped)
		must(t, a.ctl("rm", id+"-broken"), "rm broken")
	}
	noShimCgroups(t, id)
	if des, _ := os.ReadDir(filepath.Join(a.data, "containers")); len(des) != 0 {
		t.Errorf("container directories left behind: %v", des)
	}
	if des, _ := os.ReadDir(filepath.Join(a.data, "runtime")); len(des) != 0 {
		t.Errorf("runtime state left behind: %v", des)
	}

	// No agent at all: say how to start one.
	wantFail(t, runCtl(t, nil, "--socket", filepath.Join(a.dir, "none.sock"), "ps"), 6, "migrated daemon")
}

// TestMalformedConfig checks that migrated refuses a bad configuration file with one
// line and creates nothing.
func TestMalformedConfig(t *testing.T) {
	t.Parallel()
	testutil.RequireRoot(t)
	dir := t.TempDir()
	data := filepath.Join(dir, "data")
	for name, cfg := range map[string]string{
		"syntax":      "node: [unclosed\n",
		"unknown key": "node: n1\ndataDirectory: " + data + "\n",
		"bad value":   "node: n1\ndataDir: " + data + "\nstopTimeout: soon\n",
		"no tls":      "node: n1\ndataDir: " + data + "\npeer:\n  listen: 127.0.0.1:1\n",
	} {
		path := filepath.Join(dir, "bad.yaml")
		if err := os.WriteFile(path, []byte(cfg+"controlSocket: "+filepath.Join(dir, "s.sock")+"\n"), 0o600); err != nil {
			t.Fatal(err)
		}
		out, err := exec.Command(migratedBin, "daemon", "--config", path).CombinedOutput()
		ee, ok := err.(*exec.ExitError)
		if !ok || ee.ExitCode() != 1 {
			t.Errorf("%s: exit %v, want 1: %s", name, err, out)
		}
		if s := strings.TrimRight(string(out), "\n"); strings.Contains(s, "\n") || !strings.Contains(s, "invalid configuration") {
			t.Errorf("%s: want one line about the invalid configuration, got %q", name, out)
		}
		if _, err := os.Stat(data); err == nil {
			t.Errorf("%s: data directory created by a refused configuration", name)
		}
		if _, err := os.Stat(filepath.Join(dir, "s.sock")); err == nil {
			t.Errorf("%s: control socket created by a refused configuration", name)
		}
	}
	out, err := exec.Command(migratedBin, "daemon", "--config", filepath.Join(dir, "missing.yaml")).CombinedOutput()
	if err == nil || !strings.Contains(string(out), "missing.yaml") {
		t.Errorf("missing config file: err %v, output %q", err, out)
	}
}
