package checkpoint

import (
	"fmt"
	"os"

	specs "github.com/opencontainers/runtime-spec/specs-go"
	"golang.org/x/sys/unix"

	"github.com/migratehq/migrate/agent/network"
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

// externalNetNS makes the container's network namespace external to the
// dump where a restore can make it anew, and CRIU then neither dumps it nor
// recreates it (with ip and iptables, ~0.1 s each way):
//   - a namespace given by path, as runc does: CRIU cannot recreate a veth
//     whose peer is outside; the restore hands in one prepared the same way;
//   - the container's own namespace when it holds only its loopback
//     (network.LoopbackOnly), which a restore makes fresh. Only a frozen
//     container is inspected, so nothing changes between the look and the
//     dump; a running one, or a namespace holding more, is left to CRIU
//     (m.NetworkInImages says why). fresh is a fresh namespace read ahead
//     (nil: one is read here).
func externalNetNS(c *container.Container, m *Manifest, opts *criu.DumpOptions, frozen bool, fresh *network.Fresh) error {
	path := netNSPath(c.Spec())
	if path == "" && !hasNetNS(c.Spec()) {
		return nil // the host's: CRIU leaves it alone
	}
	var loUp bool
	if path == "" {
		if !frozen {
			m.NetworkInImages = "the container was running when the dump began"
			return nil
		}
		up, why, err := network.LoopbackOnly(c.InitPid(), fresh)
		if err != nil {
			return fmt.Errorf("network namespace: %w", err)
		}
		if why != "" {
			m.NetworkInImages = why
			return nil
		}
		loUp = up
	}
	var st unix.Stat_t
	if err := unix.Stat(fmt.Sprintf("/proc/%d/ns/net", c.InitPid()), &st); err != nil {
		return fmt.Errorf("network namespace: %w", err)
	}
	opts.External = append(opts.External, fmt.Sprintf("net[%d]:%s", st.Ino, netNSKey))
	if path == "" {
		m.Network = &Network{NetNSKey: netNSKey, Loopback: &Loopback{Up: loUp}}
		return nil
	}
	m.Network = &Network{NetNSKey: netNSKey, Address: c.Spec().Annotations[AddressAnnotation]}
	return nil
}

// hasNetNS reports whether a spec asks for a network namespace.
func hasNetNS(s *specs.Spec) bool {
	if s == nil || s.Linux == nil {
		return false
	}
	for _, ns := range s.Linux.Namespaces {
		if ns.Type == specs.NetworkNamespace {
			return true
		}
	}
	return false
}

// restoreNetNS opens the namespace a restore goes into when the checkpoint's
// was external, and points the restored spec at one given by path; nil when
// CRIU restores the namespace from the images. A loopback-only namespace is
// made fresh (or is fresh, a namespace made ahead with its loopback up) and
// stays the container's own (no path in its spec).
func restoreNetNS(m *Manifest, path string, fresh *os.File) (*os.File, error) {
	if m.Network == nil || m.Network.NetNSKey == "" {
		if path != "" {
			return nil, fmt.Errorf("a network namespace was given, but the checkpoint's network namespace is in its images")
		}
		return nil, nil
	}
	if lo := m.Network.Loopback; lo != nil {
		if path != "" {
			return nil, fmt.Errorf("a network namespace was given, but the checkpoint's was the container's own, holding only its loopback")
		}
		if lo.Up && fresh != nil {
			return fresh, nil
		}
		return network.NewLoopback(lo.Up)
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
