//go:build !linux

package caps

import (
	"errors"

	specs "github.com/opencontainers/runtime-spec/specs-go"
)

// errNotLinux is returned by the functions that need Linux capabilities.
var errNotLinux = errors.New("capabilities: only supported on Linux")

// DropBounding is only supported on Linux.
func DropBounding(c *specs.LinuxCapabilities) error {
	if c == nil {
		return nil
	}
	return errNotLinux
}

// KeepCapsForUserSwitch is only supported on Linux.
func KeepCapsForUserSwitch() error { return errNotLinux }

// Apply is only supported on Linux.
func Apply(c *specs.LinuxCapabilities) error {
	if c == nil {
		return nil
	}
	return errNotLinux
}
