package checkpoint

import (
	"fmt"
	"os"

	specs "github.com/opencontainers/runtime-spec/specs-go"
	"golang.org/x/sys/unix"

	"github.com/migratehq/migrate/criu"
	"github.com/migratehq/migrate/runtime/container"
)

// netNSKey is the key an external network namespace goes by in CRIU's images
// (runc's name for it, so images stay comparable).
const netNSKey = "extRootNetNS"

// netNSPath returns the path a spec joins its network namespace by, "" when
// the runtime creates the namespace (or the container shares the host's).
func netNSPath(s *specs.Spec) string {
	if s == nil || s.Linux == nil {
		return ""
	}
	for _, ns := range s.Linux.Namespaces {
		if ns.Type == specs.NetworkNamespace {
			return ns.Path
		}
	}
	return ""
}

// externalNetNS makes a namespace given by path external to the dump, as runc
// does: CRIU neither dumps its devices, addresses and routes (it cannot
// recreate a veth whose peer is outside) nor expects to recreate it; the
// restore hands in a namespace prepared the same way.
func externalNetNS(c *container.Container, m *Manifest, opts *criu.DumpOptions) error {
	if netNSPath(c.Spec()) == "" {
		return nil
	}
	var st unix.Stat_t
	if err := unix.Stat(fmt.Sprintf("/proc/%d/ns/net", c.InitPid()), &st); err != nil {
		return fmt.Errorf("network namespace: %w", err)
	}
	opts.External = append(opts.External, fmt.Sprintf("net[%d]:%s", st.Ino, netNSKey))
	m.Network = &Network{NetNSKey: netNSKey, Address: c.Spec().Annotations[AddressAnnotation]}
	return nil
}

// restoreNetNS opens the namespace a restore goes into when the checkpoint's
// was external, and points the restored spec at it; nil when CRIU restores
// the namespace from the images.
func restoreNetNS(m *Manifest, path string) (*os.File, error) {
	if m.Network == nil || m.Network.NetNSKey == "" {
		if path != "" {
			return nil, fmt.Errorf("a network namespace was given, but the checkpoint's network namespace is in its images")
		}
		return nil, nil
	}
	if path == "" {
		return nil, fmt.Errorf("%w: the checkpoint's network namespace was external (joined by path) and no namespace was given to restore into", ErrNotCheckable)
	}
	f, err := os.OpenFile(path, os.O_RDONLY|unix.O_CLOEXEC, 0)
	if err != nil {
		return nil, fmt.Errorf("network namespace: %w", err)
	}
	for i, ns := range m.Spec.Linux.Namespaces {
		if ns.Type == specs.NetworkNamespace {
			m.Spec.Linux.Namespaces[i].Path = path
		}
	}
	return f, nil
}
