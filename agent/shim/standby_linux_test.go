package shim

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"
)

// TestMain lets the test binary be a standby shim, as migrated is.
func TestMain(m *testing.M) {
	if len(os.Args) > 1 && os.Args[1] == "shim-standby" {
		criuPath := ""
		if len(os.Args) > 3 && os.Args[2] == "--criu" {
			criuPath = os.Args[3]
		}
		if err := MainStandby(criuPath); err != nil {
			os.Stderr.WriteString(err.Error() + "\n")
			os.Exit(1)
		}
		os.Exit(0)
	}
	os.Exit(m.Run())
}

func testExe(t *testing.T) string {
	t.Helper()
	exe, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	return exe
}

// A standby shim whose agent drops it exits; one that died before use is
// reported as gone, so the agent can start a shim itself.
func TestStandbyCloseAndGone(t *testing.T) {
	sb, err := StartStandby(testExe(t), "")
	if err != nil {
		t.Fatal(err)
	}
	pid := sb.cmd.Process.Pid
	sb.Close()
	if err := syscall.Kill(pid, 0); err == nil {
		t.Fatalf("standby shim %d still runs after Close", pid)
	}

	sb, err = StartStandby(testExe(t), "")
	if err != nil {
		t.Fatal(err)
	}
	_ = sb.cmd.Process.Kill()
	_, _ = sb.cmd.Process.Wait() // dead: its end of the options pipe is closed
	_, err = sb.Use(SpawnOptions{Options: Options{ID: "gone", Dir: t.TempDir()}})
	if !errors.Is(err, ErrStandbyGone) {
		t.Fatalf("Use of a dead standby: %v, want ErrStandbyGone", err)
	}
}

// A standby shim given options runs as a shim with them: here options it
// refuses (an invalid id), which it reports on the ready pipe and logs in
// the container directory.
func TestStandbyRunsWithOptions(t *testing.T) {
	sb, err := StartStandby(testExe(t), "")
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	_, err = sb.Use(SpawnOptions{Options: Options{ID: "../bad", Dir: dir}, Timeout: 10 * time.Second})
	if err == nil || errors.Is(err, ErrStandbyGone) || !strings.Contains(err.Error(), "bad") {
		t.Fatalf("Use with an invalid id: %v, want the shim's refusal", err)
	}
	if _, err := os.Stat(filepath.Join(dir, LogFile)); err != nil {
		t.Errorf("no shim log in the container directory: %v", err)
	}
}
