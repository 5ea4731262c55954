package checkpoint

import (
	"errors"
	"os"
	"path/filepath"
	"testing"

	specs "github.com/opencontainers/runtime-spec/specs-go"
)

func TestRestoreNetNS(t *testing.T) {
	manifest := func(external bool) *Manifest {
		m := &Manifest{Spec: &specs.Spec{Linux: &specs.Linux{Namespaces: []specs.LinuxNamespace{
			{Type: specs.PIDNamespace}, {Type: specs.NetworkNamespace, Path: "/old/node/netns/c"},
		}}}}
		if external {
			m.Network = &Network{NetNSKey: netNSKey, Address: "10.88.0.10/24"}
		}
		return m
	}
	if f, err := restoreNetNS(manifest(false), "", nil); f != nil || err != nil {
		t.Errorf("namespace in the images: %v, %v", f, err)
	}
	if _, err := restoreNetNS(manifest(false), "/x", nil); err == nil {
		t.Error("a namespace given for a checkpoint without an external one was accepted")
	}
	if _, err := restoreNetNS(manifest(true), "", nil); !errors.Is(err, ErrNotCheckable) {
		t.Errorf("external namespace, none given: %v", err)
	}
	path := filepath.Join(t.TempDir(), "ns")
	if err := os.WriteFile(path, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	m := manifest(true)
	f, err := restoreNetNS(m, path, nil)
	if err != nil {
		t.Fatal(err)
	}
	f.Close()
	if got := netNSPath(m.Spec); got != path {
		t.Errorf("restored spec joins %q, want %q", got, path)
	}
}
