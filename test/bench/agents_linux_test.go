package bench

import (
	"bytes"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/migratehq/migrate/agent/pki"
	"github.com/migratehq/migrate/test/testutil"
)

// benchAgent is one migrated daemon started by a benchmark, driven with
// migratectl over its control socket.
type benchAgent struct {
	node string
	dir  string // short: unix socket paths are limited to 107 bytes
	sock string
	cmd  *exec.Cmd
	log  *os.File
}

var (
	ctlOnce sync.Once
	ctlBin  string
	ctlErr  error
)

// migratectl returns a migratectl binary: MIGRATECTL, or one built once into
// the package's work directory.
func migratectl(b *testing.B) string {
	b.Helper()
	setup(b)
	ctlOnce.Do(func() {
		if ctlBin = os.Getenv("MIGRATECTL"); ctlBin != "" {
			return
		}
		ctlBin = filepath.Join(workDir, "migratectl")
		out, err := exec.Command("go", "build", "-o", ctlBin, "github.com/migratehq/migrate/cmd/migratectl").CombinedOutput()
		if err != nil {
			ctlErr = fmt.Errorf("build migratectl: %w: %s", err, out)
		}
	})
	if ctlErr != nil {
		b.Fatal(ctlErr)
	}
	return ctlBin
}

// agentPair starts agents n1 and n2, peers of each other over mutual TLS on
// loopback with certificates of one cluster, their data directories under base
// (os.TempDir when empty). Cleanup removes their containers and stops them.
func agentPair(b *testing.B, base string) (*benchAgent, *benchAgent) {
	b.Helper()
	migrated := setup(b).ours.argv[0]
	migratectl(b)
	tlsDir, err := os.MkdirTemp("", "migtls")
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { os.RemoveAll(tlsDir) })
	if _, err := pki.InitCluster(tlsDir, []string{"n1", "n2"}, nil); err != nil {
		b.Fatal(err)
	}
	p1, p2 := freePort(b), freePort(b)
	n1 := startAgent(b, migrated, base, "n1", fmt.Sprintf("tls:\n  dir: %s\npeer:\n  listen: 127.0.0.1:%d\npeers:\n  n2: 127.0.0.1:%d\n", tlsDir, p1, p2))
	n2 := startAgent(b, migrated, base, "n2", fmt.Sprintf("tls:\n  dir: %s\npeer:\n  listen: 127.0.0.1:%d\npeers:\n  n1: 127.0.0.1:%d\n", tlsDir, p2, p1))
	return n1, n2
}

func freePort(b *testing.B) int {
	b.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		b.Fatal(err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port
}

func startAgent(b *testing.B, migrated, base, node, extra string) *benchAgent {
	b.Helper()
	dir, err := os.MkdirTemp(base, "migb")
	if err != nil {
		b.Fatal(err)
	}
	a := &benchAgent{node: node, dir: dir, sock: filepath.Join(dir, "ctl.sock")}
	cfg := filepath.Join(dir, "migrated.yaml")
	body := fmt.Sprintf("node: %s\ndataDir: %s\ncontrolSocket: %s\nstopTimeout: 2s\n%s", node, filepath.Join(dir, "data"), a.sock, extra)
	if err := os.WriteFile(cfg, []byte(body), 0o600); err != nil {
		b.Fatal(err)
	}
	if a.log, err = os.Create(filepath.Join(dir, "migrated.log")); err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() {
		a.stop(b)
		a.log.Close()
		os.RemoveAll(dir)
	})
	a.cmd = exec.Command(migrated, "daemon", "--config", cfg)
	a.cmd.Stdout, a.cmd.Stderr = a.log, a.log
	if err := a.cmd.Start(); err != nil {
		b.Fatalf("start migrated: %v", err)
	}
	deadline := time.Now().Add(15 * time.Second)
	for {
		if _, err := a.ctl("version"); err == nil {
			return a
		}
		if time.Now().After(deadline) {
			b.Fatalf("migrated %s did not come up; its log:\n%s", node, a.logText())
		}
		time.Sleep(50 * time.Millisecond)
	}
}

func (a *benchAgent) logText() string {
	out, _ := os.ReadFile(a.log.Name())
	return string(out)
}

// ctl runs migratectl against the agent and returns its stdout; a failure
// carries stderr.
func (a *benchAgent) ctl(args ...string) (string, error) {
	cmd := exec.Command(ctlBin, append([]string{"--socket", a.sock}, args...)...)
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	if err := cmd.Run(); err != nil {
		return out.String(), fmt.Errorf("migratectl %s on %s: %w: %s", strings.Join(args, " "), a.node, err, strings.TrimSpace(errb.String()))
	}
	return out.String(), nil
}

func (a *benchAgent) must(b *testing.B, args ...string) string {
	b.Helper()
	out, err := a.ctl(args...)
	if err != nil {
		b.Fatalf("%v\nagent log:\n%s", err, a.logText())
	}
	return out
}

// waitLine waits until the container's log has a line starting with one of
// prefixes and returns the last such line.
func (a *benchAgent) waitLine(b *testing.B, id string, timeout time.Duration, prefixes ...string) string {
	b.Helper()
	deadline := time.Now().Add(timeout)
	for {
		out, err := a.ctl("logs", id)
		if err == nil {
			lines := strings.Split(strings.TrimSpace(out), "\n")
			for i := len(lines) - 1; i >= 0; i-- {
				for _, p := range prefixes {
					if strings.HasPrefix(lines[i], p) {
						return lines[i]
					}
				}
			}
		}
		if time.Now().After(deadline) {
			b.Fatalf("log of %s on %s never showed %q (%v): %q", id, a.node, prefixes, err, out)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// stop removes the agent's containers and stops it.
func (a *benchAgent) stop(b *testing.B) {
	if a.cmd == nil {
		return
	}
	if out, err := a.ctl("ps", "-q"); err == nil {
		for _, id := range strings.Fields(out) {
			if _, err := a.ctl("rm", "-f", id); err != nil {
				b.Errorf("cleanup: %v", err)
			}
		}
	}
	testutil.StopProcess(a.cmd)
	a.cmd = nil
}

// moveSummary is the MoveResult of `move -o json` (protojson: durations as
// "1.5s", int64 as strings).
type moveSummary struct {
	Mode      string `json:"mode"`
	Downtime  string `json:"downtime"`
	Dump      string `json:"dump"`
	Transfer  string `json:"transfer"`
	Restore   string `json:"restore"`
	RawBytes  string `json:"rawBytes"`
	WireBytes string `json:"wireBytes"`
	BaseSent  bool   `json:"baseSent"`
}

// move runs `migratectl move -o json` and returns the final event's result.
// MOVE_BENCH_MODE, when set, is passed as --mode; otherwise the agent chooses.
func (a *benchAgent) move(b *testing.B, id, to string) moveSummary {
	b.Helper()
	args := []string{"move", id, "--to", to, "-o", "json"}
	if mode := os.Getenv("MOVE_BENCH_MODE"); mode != "" {
		args = append(args, "--mode", mode)
	}
	out := a.must(b, args...)
	return *testutil.LastMove[moveSummary](b, out)
}

// parseDur reads a protojson duration ("1.234s").
func parseDur(b *testing.B, s string) time.Duration {
	b.Helper()
	d, err := time.ParseDuration(s)
	if err != nil {
		b.Fatalf("duration %q: %v", s, err)
	}
	return d
}
