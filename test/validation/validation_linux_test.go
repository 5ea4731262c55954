package validation

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"
)

// TestOCIValidation runs scripts/oci-validate.sh for runc and migrated and fails
// when migrated passes fewer validation programs than runc.
func TestOCIValidation(t *testing.T) {
	if os.Getenv("MIGRATE_SKIP_OCI_VALIDATION") != "" {
		t.Skip("MIGRATE_SKIP_OCI_VALIDATION is set")
	}
	if os.Geteuid() != 0 {
		t.Fatal("the OCI validation suite needs root (it creates real containers); " +
			"set MIGRATE_SKIP_OCI_VALIDATION=1 to skip it deliberately")
	}
	repo, err := repoRoot()
	if err != nil {
		t.Fatal(err)
	}
	cache := os.Getenv("MIGRATE_CACHE")
	if cache == "" {
		cache = "/var/cache/migrate"
	}
	base := filepath.Join(cache, "oci-validate")
	if err := os.MkdirAll(base, 0o755); err != nil {
		t.Fatal(err)
	}
	dir, err := os.MkdirTemp(base, "gotest.")
	if err != nil {
		t.Fatal(err)
	}
	keep := os.Getenv("MIGRATE_KEEP_OCI_RESULTS") != ""
	t.Cleanup(func() {
		if keep || t.Failed() {
			t.Logf("per-program logs kept in %s", dir)
			return
		}
		os.RemoveAll(dir)
	})

	ctx := context.Background()
	if dl, ok := t.Deadline(); ok {
		var cancel context.CancelFunc
		ctx, cancel = context.WithDeadline(ctx, dl.Add(-30*time.Second))
		defer cancel()
	}
	out, err := os.Create(filepath.Join(dir, "output.txt"))
	if err != nil {
		t.Fatal(err)
	}
	defer out.Close()
	cmd := exec.CommandContext(ctx, "bash", filepath.Join(repo, "scripts", "oci-validate.sh"), "-o", dir, "runc", "migrated")
	cmd.Dir = repo
	cmd.Stdout, cmd.Stderr = out, out
	// On timeout interrupt the whole process group: the script's trap then
	// deletes the containers it started.
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	cmd.Cancel = func() error { return syscall.Kill(-cmd.Process.Pid, syscall.SIGINT) }
	cmd.WaitDelay = 20 * time.Second
	runErr := cmd.Run()
	var exitErr *exec.ExitError
	if runErr != nil && !(errors.As(runErr, &exitErr) && exitErr.ExitCode() == 1) {
		// Exit 1 only means migrated lost to runc; the comparison below says how.
		t.Fatalf("oci-validate.sh: %v\n%s", runErr, tail(filepath.Join(dir, "output.txt"), 40))
	}

	f, err := os.Open(filepath.Join(dir, "results.tsv"))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	results, err := ParseResults(f)
	if err != nil {
		t.Fatal(err)
	}
	if table, err := os.ReadFile(filepath.Join(dir, "table.txt")); err == nil {
		t.Logf("results:\n%s", table)
	}
	c := Compare(results, "migrated", "runc")
	t.Logf("runc: %d/%d  migrated: %d/%d", c.Ref, c.Programs, c.Ours, c.Programs)
	if c.Programs == 0 {
		t.Fatal("no validation program ran")
	}
	// runc passes 33-36 of the 58 programs on the hosts we know; far fewer
	// means the harness or host is broken and the comparison says nothing.
	if c.Programs >= 50 && c.Ref*2 < c.Programs {
		t.Fatalf("runc passes only %d/%d programs: harness or host broken, see %s", c.Ref, c.Programs, dir)
	}
	for _, p := range c.Gains {
		t.Logf("migrated passes %s, runc does not", p)
	}
	var b strings.Builder
	for _, r := range c.Regressions {
		fmt.Fprintf(&b, "\n  %s (%s, exit %s): %s\n    log: %s", r.Program, r.Outcome, r.Exit, r.Reason,
			filepath.Join(dir, "migrated", r.Program+".log"))
	}
	if c.Ours < c.Ref {
		t.Errorf("migrated passes %d validation programs, runc %d; runc passes, migrated fails:%s", c.Ours, c.Ref, b.String())
	} else if len(c.Regressions) > 0 {
		t.Logf("runc passes, migrated fails:%s", b.String())
	}
}

// repoRoot finds the module root above the test's directory.
func repoRoot() (string, error) {
	dir, err := os.Getwd()
	if err != nil {
		return "", err
	}
	for {
		if _, err := os.Stat(filepath.Join(dir, "scripts", "oci-validate.sh")); err == nil {
			return dir, nil
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			return "", errors.New("scripts/oci-validate.sh not found above the test directory")
		}
		dir = parent
	}
}

// tail returns the last n lines of a file, for failure messages.
func tail(path string, n int) string {
	b, err := os.ReadFile(path)
	if err != nil {
		return err.Error()
	}
	lines := strings.Split(strings.TrimRight(string(b), "\n"), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}
