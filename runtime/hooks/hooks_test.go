package hooks

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	specs "github.com/opencontainers/runtime-spec/specs-go"
)

func TestRunPassesStateAndArgs(t *testing.T) {
	out := filepath.Join(t.TempDir(), "out")
	h := specs.Hook{Path: "/bin/sh", Args: []string{"sh", "-c", `cat > "$OUT"; echo " $0" >> "$OUT"`, "argzero"}, Env: []string{"OUT=" + out}}
	st := &specs.State{Version: specs.Version, ID: "c1", Status: specs.StateCreating, Pid: 42, Bundle: "/b"}
	if err := Run(CreateRuntime, []specs.Hook{h}, st); err != nil {
		t.Fatal(err)
	}
	b, err := os.ReadFile(out)
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(string(b), `"id":"c1"`) || !strings.Contains(string(b), `"pid":42`) || !strings.Contains(string(b), "argzero") {
		t.Fatalf("hook saw %q", b)
	}
}

func TestRunFailureAndTimeout(t *testing.T) {
	st := &specs.State{ID: "c"}
	err := Run(Poststart, []specs.Hook{{Path: "/bin/sh", Args: []string{"sh", "-c", "echo boom >&2; exit 3"}}}, st)
	if err == nil || !strings.Contains(err.Error(), "boom") || !strings.Contains(err.Error(), "poststart hook #0") {
		t.Fatalf("want failure naming hook and its output, got %v", err)
	}
	one := 1
	err = Run(Poststop, []specs.Hook{{Path: "/bin/sleep", Args: []string{"sleep", "5"}, Timeout: &one}}, st)
	if err == nil || !strings.Contains(err.Error(), "timed out") {
		t.Fatalf("want timeout, got %v", err)
	}
}
