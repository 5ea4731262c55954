package rootfs

import (
	"errors"
	"fmt"
)

// Sentinel errors callers may branch on with errors.Is.
var (
	// ErrInvalidMount: a spec mount is malformed (destination, type, source,
	// conflicting options).
	ErrInvalidMount = errors.New("invalid mount")
	// ErrUnsupportedOption: a mount option this runtime deliberately refuses
	// (for example idmapped mounts).
	ErrUnsupportedOption = errors.New("unsupported mount option")
	// ErrInvalidDevice: a linux.devices entry is malformed.
	ErrInvalidDevice = errors.New("invalid device")
	// ErrInvalidPropagation: an unknown propagation value.
	ErrInvalidPropagation = errors.New("invalid mount propagation")
	// ErrInvalidPath: a masked or read-only path that is not absolute and clean.
	ErrInvalidPath = errors.New("invalid path")
	// ErrInvalidSysctl: a sysctl that is malformed or not namespaced for this
	// container.
	ErrInvalidSysctl = errors.New("invalid sysctl")
	// ErrUnsafeMount: a mount target resolved to something other than what was
	// asked for (not procfs after a proc mount, outside the rootfs, a /dev/null
	// that is not the null device...).
	ErrUnsafeMount = errors.New("unsafe mount target")
)

// MountError describes a problem with one entry of spec.Mounts.
type MountError struct {
	Index       int    // position in spec.Mounts
	Destination string // as written in the spec
	Option      string // offending option, if any
	Err         error  // wraps one of the sentinel errors or a syscall error
}

func (e *MountError) Error() string {
	if e.Option != "" {
		return fmt.Sprintf("mount[%d] %s: option %q: %v", e.Index, e.Destination, e.Option, e.Err)
	}
	return fmt.Sprintf("mount[%d] %s: %v", e.Index, e.Destination, e.Err)
}

func (e *MountError) Unwrap() error { return e.Err }
