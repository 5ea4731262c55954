package spec

import (
	"encoding/json"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	specs "github.com/opencontainers/runtime-spec/specs-go"
)

func bundle(t *testing.T, s *specs.Spec) string {
	t.Helper()
	dir := t.TempDir()
	if err := os.Mkdir(filepath.Join(dir, "rootfs"), 0o755); err != nil {
		t.Fatal(err)
	}
	if s != nil {
		data, err := json.Marshal(s)
		if err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(dir, ConfigName), data, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	return dir
}

func TestExampleIsValid(t *testing.T) {
	s, err := Load(bundle(t, Example()))
	if err != nil {
		t.Fatal(err)
	}
	if s.Process.Args[0] != "sh" || RootfsPath(s, "/b") != "/b/rootfs" {
		t.Fatalf("unexpected example: %+v", s.Process)
	}
}

func TestLoadErrors(t *testing.T) {
	mutate := func(f func(*specs.Spec)) *specs.Spec { s := Example(); f(s); return s }
	cases := []struct {
		name string
		spec *specs.Spec
		raw  string
		want string
	}{
		{"missing config", nil, "", "has no config.json"},
		{"malformed", nil, "{\n  \"ociVersion\": \"1.0.0\",\n  \"process\": {,\n}", "malformed JSON at line 3 column"},
		{"wrong type", nil, `{"ociVersion": 1}`, `field "ociVersion" wants string`},
		{"trailing", nil, `{"ociVersion":"1.0.0"} {}`, "trailing data"},
		{"empty file", nil, " ", "empty file"},
		{"no version", mutate(func(s *specs.Spec) { s.Version = "" }), "", "ociVersion is empty"},
		{"future version", mutate(func(s *specs.Spec) { s.Version = "2.0.0" }), "", "not supported"},
		{"no rootfs", mutate(func(s *specs.Spec) { s.Root.Path = "nope" }), "", "rootfs"},
		{"empty args", mutate(func(s *specs.Spec) { s.Process.Args = nil }), "", "process.args must not be empty"},
		{"relative cwd", mutate(func(s *specs.Spec) { s.Process.Cwd = "tmp" }), "", "process.cwd"},
		{"bad env", mutate(func(s *specs.Spec) { s.Process.Env = []string{"NOEQUALS"} }), "", "KEY=VALUE"},
		{"bad rlimit", mutate(func(s *specs.Spec) { s.Process.Rlimits[0].Type = "RLIMIT_BOGUS" }), "", "unknown rlimit"},
		{"dup ns", mutate(func(s *specs.Spec) {
			s.Linux.Namespaces = append(s.Linux.Namespaces, specs.LinuxNamespace{Type: specs.PIDNamespace})
		}), "", "listed twice"},
		{"unknown ns", mutate(func(s *specs.Spec) {
			s.Linux.Namespaces = append(s.Linux.Namespaces, specs.LinuxNamespace{Type: "bogus"})
		}), "", "unknown namespace"},
		{"userns without maps", mutate(func(s *specs.Spec) {
			s.Linux.Namespaces = append(s.Linux.Namespaces, specs.LinuxNamespace{Type: specs.UserNamespace})
		}), "", "uidMappings"},
		{"hostname without uts", mutate(func(s *specs.Spec) { s.Linux.Namespaces = s.Linux.Namespaces[:2] }), "", "uts"},
		{"relative hook", mutate(func(s *specs.Spec) {
			s.Hooks = &specs.Hooks{Poststop: []specs.Hook{{Path: "bin/true"}}}
		}), "", "hook path"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			dir := bundle(t, c.spec)
			if c.raw != "" {
				if err := os.WriteFile(filepath.Join(dir, ConfigName), []byte(c.raw), 0o644); err != nil {
					t.Fatal(err)
				}
			}
			_, err := Load(dir)
			if err == nil || !strings.Contains(err.Error(), c.want) {
				t.Fatalf("want error containing %q, got %v", c.want, err)
			}
			if strings.Contains(err.Error(), "\n") {
				t.Fatalf("error is not one line: %q", err)
			}
		})
	}
}

func TestInvalidIsTyped(t *testing.T) {
	s := Example()
	s.Process.Args = nil
	_, err := Load(bundle(t, s))
	if !errors.Is(err, ErrInvalid) {
		t.Fatalf("want ErrInvalid, got %v", err)
	}
}
