package caps

import (
	"errors"
	"slices"
	"strings"
	"testing"

	"github.com/moby/sys/capability"
	specs "github.com/opencontainers/runtime-spec/specs-go"
)

func TestParseKnownNames(t *testing.T) {
	t.Parallel()
	for _, c := range capability.ListKnown() {
		name := Name(c)
		got, err := Parse(name)
		if err != nil {
			t.Fatalf("Parse(%q): %v", name, err)
		}
		if got != c {
			t.Fatalf("Parse(%q) = %d, want %d", name, got, c)
		}
	}
	for name, want := range map[string]capability.Cap{
		"CAP_SYS_ADMIN":          capability.CAP_SYS_ADMIN,
		"CAP_CHOWN":              capability.CAP_CHOWN,
		"CAP_NET_BIND_SERVICE":   capability.CAP_NET_BIND_SERVICE,
		"CAP_CHECKPOINT_RESTORE": capability.CAP_CHECKPOINT_RESTORE,
	} {
		got, err := Parse(name)
		if err != nil || got != want {
			t.Errorf("Parse(%q) = %d, %v; want %d", name, got, err, want)
		}
	}
}

func TestParseUnknownNames(t *testing.T) {
	t.Parallel()
	for _, name := range []string{"", "CAP_", "SYS_ADMIN", "cap_sys_admin", "CAP_sys_admin", "CAP_SYS_ADMIN ", "CAP_NOT_A_CAP"} {
		_, err := Parse(name)
		if !errors.Is(err, ErrUnknownCapability) {
			t.Errorf("Parse(%q) error = %v, want ErrUnknownCapability", name, err)
		}
	}
}

func TestValidate(t *testing.T) {
	t.Parallel()
	if err := Validate(nil); err != nil {
		t.Fatalf("Validate(nil) = %v", err)
	}
	good := &specs.LinuxCapabilities{
		Bounding:    []string{"CAP_CHOWN", "CAP_KILL", "CAP_SYS_ADMIN"},
		Effective:   []string{"CAP_CHOWN"},
		Permitted:   []string{"CAP_CHOWN", "CAP_KILL"},
		Inheritable: []string{"CAP_KILL"},
		Ambient:     []string{"CAP_KILL"},
	}
	if err := Validate(good); err != nil {
		t.Fatalf("Validate(good) = %v", err)
	}
	if err := Validate(&specs.LinuxCapabilities{}); err != nil {
		t.Fatalf("Validate(empty) = %v", err)
	}

	for _, set := range []string{"bounding", "effective", "permitted", "inheritable", "ambient"} {
		c := *good
		bad := []string{"CAP_CHOWN", "CAP_BOGUS_" + strings.ToUpper(set)}
		switch set {
		case "bounding":
			c.Bounding = bad
		case "effective":
			c.Effective = bad
		case "permitted":
			c.Permitted = bad
		case "inheritable":
			c.Inheritable = bad
		case "ambient":
			c.Ambient = bad
		}
		err := Validate(&c)
		if !errors.Is(err, ErrUnknownCapability) {
			t.Fatalf("%s: Validate error = %v, want ErrUnknownCapability", set, err)
		}
		if msg := err.Error(); !strings.Contains(msg, bad[1]) || !strings.HasPrefix(msg, set+" ") {
			t.Fatalf("%s: error %q does not name the set and %s", set, msg, bad[1])
		}
	}
}

func TestSupportedDropsNewerThanKernel(t *testing.T) {
	t.Parallel()
	in := []capability.Cap{capability.CAP_CHOWN, capability.CAP_BPF, capability.CAP_PERFMON, capability.CAP_CHECKPOINT_RESTORE}
	got := supported(slices.Clone(in), capability.CAP_BPF)
	want := []capability.Cap{capability.CAP_CHOWN, capability.CAP_BPF, capability.CAP_PERFMON}
	if !slices.Equal(got, want) {
		t.Fatalf("supported(..., CAP_BPF) = %v, want %v", got, want)
	}
	if got := supported(slices.Clone(in), capability.CAP_CHECKPOINT_RESTORE); !slices.Equal(got, in) {
		t.Fatalf("supported(..., last) = %v, want %v", got, in)
	}
}
