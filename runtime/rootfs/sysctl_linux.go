package rootfs

import (
	"fmt"
	"sort"
	"strings"

	pathrs "github.com/cyphar/filepath-securejoin/pathrs-lite"
	"github.com/cyphar/filepath-securejoin/pathrs-lite/procfs"
	specs "github.com/opencontainers/runtime-spec/specs-go"
	"golang.org/x/sys/unix"
)

// ipcSysctls are the namespaced sysctls under kernel.* that belong to the
// IPC namespace (fs.mqueue.* does too).
var ipcSysctls = map[string]bool{
	"kernel.msgmax":          true,
	"kernel.msgmnb":          true,
	"kernel.msgmni":          true,
	"kernel.sem":             true,
	"kernel.shmall":          true,
	"kernel.shmmax":          true,
	"kernel.shmmni":          true,
	"kernel.shm_rmid_forced": true,
}

// sysctlKey splits a key ("net.ipv4.ip_forward" or "net/ipv4/ip_forward")
// into its dotted name, for policy, and its path under /proc/sys. A dotted
// key maps dots to slashes (as runc); use the slash form for names holding a
// dot, such as a VLAN interface "eth0.100".
func sysctlKey(key string) (dotted, rel string, err error) {
	if strings.Contains(key, "/") {
		rel = key
	} else {
		rel = strings.ReplaceAll(key, ".", "/")
	}
	for _, c := range strings.Split(rel, "/") {
		if c == "" || c == "." || c == ".." {
			return "", "", fmt.Errorf("sysctl %q: %w: malformed key", key, ErrInvalidSysctl)
		}
	}
	return strings.ReplaceAll(rel, "/", "."), rel, nil
}

// namespace finds the spec's namespace of type t.
func namespace(spec *specs.Spec, t specs.LinuxNamespaceType) (specs.LinuxNamespace, bool) {
	if spec.Linux != nil {
		for _, ns := range spec.Linux.Namespaces {
			if ns.Type == t {
				return ns, true
			}
		}
	}
	return specs.LinuxNamespace{}, false
}

// isCurrentNetNS reports whether the namespace file at path is the caller's
// own network namespace.
func isCurrentNetNS(path string) (bool, error) {
	var a, b unix.Stat_t
	if err := unix.Stat(path, &a); err != nil {
		return false, fmt.Errorf("stat %s: %w", path, err)
	}
	if err := unix.Stat("/proc/self/ns/net", &b); err != nil {
		return false, fmt.Errorf("stat /proc/self/ns/net: %w", err)
	}
	return a.Dev == b.Dev && a.Ino == b.Ino, nil
}

// ValidateSysctls refuses sysctls the container cannot own, as runc does:
// IPC keys need a new IPC namespace, net.* a network namespace other than
// the caller's, kernel.domainname a UTS namespace, and kernel.hostname is
// refused in favour of the spec's hostname field. Anything else is not
// namespaced and would change the host.
func ValidateSysctls(spec *specs.Spec) error {
	if spec == nil || spec.Linux == nil {
		return nil
	}
	keys := make([]string, 0, len(spec.Linux.Sysctl))
	for k := range spec.Linux.Sysctl {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	var (
		netChecked bool
		hostNet    bool
	)
	for _, key := range keys {
		s, _, err := sysctlKey(key)
		if err != nil {
			return err
		}
		if ipcSysctls[s] || strings.HasPrefix(s, "fs.mqueue.") {
			if _, ok := namespace(spec, specs.IPCNamespace); !ok {
				return fmt.Errorf("sysctl %q: %w: needs a new ipc namespace", key, ErrInvalidSysctl)
			}
			continue
		}
		if strings.HasPrefix(s, "net.") {
			if !netChecked {
				netChecked = true
				ns, ok := namespace(spec, specs.NetworkNamespace)
				switch {
				case !ok:
					hostNet = true
				case ns.Path != "":
					if hostNet, err = isCurrentNetNS(ns.Path); err != nil {
						return fmt.Errorf("sysctl %q: %w: network namespace path: %v", key, ErrInvalidSysctl, err)
					}
				}
			}
			if hostNet {
				return fmt.Errorf("sysctl %q: %w: not allowed in the host network namespace", key, ErrInvalidSysctl)
			}
			continue
		}
		if _, uts := namespace(spec, specs.UTSNamespace); uts {
			switch s {
			case "kernel.domainname":
				continue
			case "kernel.hostname":
				return fmt.Errorf("sysctl %q: %w: use the spec's hostname field", key, ErrInvalidSysctl)
			}
		}
		return fmt.Errorf("sysctl %q: %w: not in a separate kernel namespace", key, ErrInvalidSysctl)
	}
	return nil
}

// WriteSysctls writes linux.sysctl into /proc/sys, in key order. Files are
// opened through a private procfs handle (pathrs procfs), so an overmount or
// symlink in the container's /proc cannot redirect the write
// (CVE-2025-52881 class). Call it after Pivot and before Finalize.
func WriteSysctls(spec *specs.Spec) error {
	if spec == nil || spec.Linux == nil || len(spec.Linux.Sysctl) == 0 {
		return nil
	}
	keys := make([]string, 0, len(spec.Linux.Sysctl))
	for k := range spec.Linux.Sysctl {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	proc, err := procfs.OpenProcRoot()
	if err != nil {
		return fmt.Errorf("write sysctls: open procfs: %w", err)
	}
	defer proc.Close()
	for _, key := range keys {
		_, rel, err := sysctlKey(key)
		if err != nil {
			return fmt.Errorf("write sysctls: %w", err)
		}
		if err := writeSysctl(proc, rel, spec.Linux.Sysctl[key]); err != nil {
			return fmt.Errorf("write sysctl %s: %w", key, err)
		}
	}
	return nil
}

func writeSysctl(proc *procfs.Handle, rel, value string) error {
	h, err := proc.OpenRoot("sys/" + rel)
	if err != nil {
		return err
	}
	defer h.Close()
	// Re-open the resolved handle for writing through its fd, not by path.
	f, err := pathrs.Reopen(h, unix.O_WRONLY|unix.O_CLOEXEC)
	if err != nil {
		return err
	}
	_, err = f.WriteString(value)
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	return err
}
