package rootfs

import (
	"fmt"
	"path/filepath"
	"strings"

	specs "github.com/opencontainers/runtime-spec/specs-go"
	"golang.org/x/sys/unix"
)

// validProcMounts are the only destinations inside /proc a mount may cover:
// the files lxcfs emulates. Anything else (e.g. /proc/self/attr, /proc/sys)
// could be used to disable security settings; see runc's checkProcMount and
// CVE-2019-16884.
var validProcMounts = []string{
	"/proc/cpuinfo",
	"/proc/diskstats",
	"/proc/meminfo",
	"/proc/stat",
	"/proc/swaps",
	"/proc/uptime",
	"/proc/loadavg",
	"/proc/slabinfo",
	"/proc/pressure/cpu",
	"/proc/pressure/io",
	"/proc/pressure/memory",
	"/proc/net/dev",
	"/proc/sys/kernel/ns_last_pid",
}

// checkProcDestination enforces the /proc rule on a clean absolute
// destination (relative to the container root). isProc says the mount is a
// fresh procfs; bind mounts onto /proc itself are checked at mount time.
func checkProcDestination(dest string, isProc, isBind bool) error {
	rel, err := filepath.Rel("/proc", dest)
	if err != nil || rel == ".." || strings.HasPrefix(rel, "../") {
		return nil // outside /proc
	}
	if rel == "." {
		if isProc || isBind {
			return nil
		}
		return fmt.Errorf("%w: only a proc mount or a bind of procfs may cover /proc", ErrInvalidMount)
	}
	for _, p := range validProcMounts {
		if p == dest {
			return nil
		}
	}
	return fmt.Errorf("%w: destination is inside /proc", ErrInvalidMount)
}

// isCleanAbs reports whether p is absolute and already clean.
func isCleanAbs(p string) bool {
	return filepath.IsAbs(p) && filepath.Clean(p) == p
}

// Validate checks spec's mounts, propagation, devices and masked/read-only
// paths before anything is created. It does not touch the filesystem.
func Validate(spec *specs.Spec) error {
	if spec == nil {
		return fmt.Errorf("validate rootfs: %w: nil spec", ErrInvalidMount)
	}
	for i, m := range spec.Mounts {
		if err := validateMount(i, m); err != nil {
			return err
		}
	}
	if spec.Linux == nil {
		return nil
	}
	if _, err := parseRootfsPropagation(spec.Linux.RootfsPropagation); err != nil {
		return fmt.Errorf("validate rootfs: %w", err)
	}
	if err := validateDevices(spec.Linux.Devices); err != nil {
		return fmt.Errorf("validate rootfs: %w", err)
	}
	for _, p := range spec.Linux.MaskedPaths {
		if !isCleanAbs(p) {
			return fmt.Errorf("validate rootfs: maskedPaths %q: %w: must be absolute and clean", p, ErrInvalidPath)
		}
	}
	for _, p := range spec.Linux.ReadonlyPaths {
		if !isCleanAbs(p) {
			return fmt.Errorf("validate rootfs: readonlyPaths %q: %w: must be absolute and clean", p, ErrInvalidPath)
		}
	}
	return nil
}

func validateMount(i int, m specs.Mount) error {
	merr := func(opt string, err error) error {
		return &MountError{Index: i, Destination: m.Destination, Option: opt, Err: err}
	}
	if m.Destination == "" {
		return merr("", fmt.Errorf("%w: empty destination", ErrInvalidMount))
	}
	if !isCleanAbs(m.Destination) {
		return merr("", fmt.Errorf("%w: destination must be absolute and clean (%q)", ErrInvalidMount, filepath.Clean("/"+m.Destination)))
	}
	if m.Destination == "/" {
		return merr("", fmt.Errorf("%w: cannot mount over the container root", ErrInvalidMount))
	}
	if len(m.UIDMappings) > 0 || len(m.GIDMappings) > 0 {
		return merr("", fmt.Errorf("%w: idmapped mounts (uidMappings/gidMappings) are not supported", ErrUnsupportedOption))
	}
	o, err := parseMountOptions(m.Type, m.Options)
	if err != nil {
		if oe, ok := err.(*optionError); ok {
			return merr(oe.option, oe.err)
		}
		return merr("", err)
	}
	if o.isBind() {
		if m.Source == "" {
			return merr("", fmt.Errorf("%w: bind mount without source", ErrInvalidMount))
		}
	} else if m.Type == "" {
		return merr("", fmt.Errorf("%w: no type and not a bind mount", ErrInvalidMount))
	}
	if (o.recSet != 0 || o.recClr != 0) && !o.isBind() {
		// Recursive attributes only make sense where there can be submounts.
		return merr("", fmt.Errorf("%w: recursive options (rro, rnosuid...) need a bind mount", ErrInvalidMount))
	}
	if err := checkProcDestination(m.Destination, m.Type == "proc" && !o.isBind(), o.isBind()); err != nil {
		return merr("", err)
	}
	return nil
}

// validDeviceTypes are the OCI device types: char, block, unbuffered char, fifo.
var validDeviceTypes = map[string]bool{"c": true, "b": true, "u": true, "p": true}

func validateDevices(devs []specs.LinuxDevice) error {
	seen := map[string]bool{}
	for _, d := range devs {
		if !isCleanAbs(d.Path) || !strings.HasPrefix(d.Path, "/dev/") {
			return fmt.Errorf("device %q: %w: path must be absolute, clean and under /dev/", d.Path, ErrInvalidDevice)
		}
		if seen[d.Path] {
			return fmt.Errorf("device %q: %w: listed twice", d.Path, ErrInvalidDevice)
		}
		seen[d.Path] = true
		if !validDeviceTypes[d.Type] {
			return fmt.Errorf("device %q: %w: type %q is not one of c, b, u, p", d.Path, ErrInvalidDevice, d.Type)
		}
		if d.Major < 0 || d.Minor < 0 || d.Major > 0xfff || d.Minor > 0xfffff {
			return fmt.Errorf("device %q: %w: major/minor %d:%d out of range", d.Path, ErrInvalidDevice, d.Major, d.Minor)
		}
		// fileMode may carry the S_IFCHR-style type bits some generators
		// write; they are ignored, the type comes from "type".
		if d.FileMode != nil && uint32(*d.FileMode)&^(unix.S_IFMT|0o777) != 0 {
			return fmt.Errorf("device %q: %w: fileMode %#o holds more than permission bits", d.Path, ErrInvalidDevice, uint32(*d.FileMode))
		}
	}
	return nil
}
