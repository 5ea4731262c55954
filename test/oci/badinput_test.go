package oci

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	specs "github.com/opencontainers/runtime-spec/specs-go"
)

// Each bad input gives one clear line, a non-zero exit, and leaves nothing.
func TestBadInput(t *testing.T) {
	t.Parallel()
	r := newRuntime(t)
	good := r.bundle(nil, "sleep", "1000")

	malformed := t.TempDir()
	os.Mkdir(filepath.Join(malformed, "rootfs"), 0o755)
	os.WriteFile(filepath.Join(malformed, "config.json"), []byte(`{"ociVersion": "1.0.2", "process": {`), 0o644)

	noRootfs := r.bundle(func(s *specs.Spec) { s.Root.Path = "/nonexistent/rootfs" }, "true")
	badMount := r.bundle(func(s *specs.Spec) {
		s.Mounts = append(s.Mounts, specs.Mount{Destination: "/x", Type: "tmpfs", Source: "tmpfs", Options: []string{"size=lots"}})
	}, "true")
	relMount := r.bundle(func(s *specs.Spec) {
		s.Mounts = append(s.Mounts, specs.Mount{Destination: "relative", Type: "tmpfs", Source: "tmpfs"})
	}, "true")
	noCmd := r.bundle(func(s *specs.Spec) { s.Process.Args = []string{"/no/such/program"} }, "true")

	dup := id(t) + "-dup"
	r.must("create", "--bundle", good, dup)
	t.Cleanup(func() { r.cli("delete", "--force", dup) })

	cases := []struct {
		name string
		args []string
		want string
		cid  string
	}{
		{"missing config", []string{"create", "--bundle", t.TempDir(), "missing-cfg"}, "no config.json", "missing-cfg"},
		{"malformed config", []string{"create", "--bundle", malformed, "malformed"}, "malformed JSON at line 1", "malformed"},
		{"nonexistent rootfs", []string{"create", "--bundle", noRootfs, "no-rootfs"}, "/nonexistent/rootfs", "no-rootfs"},
		{"duplicate id", []string{"create", "--bundle", good, dup}, "already exists", ""},
		{"invalid id", []string{"create", "--bundle", good, "../escape"}, "invalid container id", ""},
		{"unknown id state", []string{"state", "nosuchcontainer"}, "does not exist", ""},
		{"unknown id kill", []string{"kill", "nosuchcontainer"}, "does not exist", ""},
		{"unknown id delete", []string{"delete", "nosuchcontainer"}, "does not exist", ""},
		{"invalid signal", []string{"kill", dup, "SIGBOGUS"}, `invalid signal "SIGBOGUS"`, ""},
		{"bad mount option", []string{"create", "--bundle", badMount, "bad-mount"}, "/x", "bad-mount"},
		{"relative mount", []string{"create", "--bundle", relMount, "rel-mount"}, "relative", "rel-mount"},
		{"missing program", []string{"run", "--bundle", noCmd, "no-cmd"}, "/no/such/program", "no-cmd"},
	}
	for _, c := range cases {
		res := r.cli(c.args...)
		if res.code == 0 {
			t.Errorf("%s: exit 0", c.name)
			continue
		}
		msg := strings.TrimSpace(res.stderr)
		if strings.Count(msg, "\n") != 0 || !strings.Contains(msg, c.want) || strings.Contains(msg, "panic") {
			t.Errorf("%s: want one line containing %q, got %q", c.name, c.want, msg)
		}
		if c.cid != "" {
			assertGone(t, r.root, c.cid)
		}
	}
	// The duplicate's original is untouched.
	if st := r.state(dup); st.Status != specs.StateCreated {
		t.Fatalf("original container after duplicate create: %s", st.Status)
	}
}
