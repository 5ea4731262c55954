//go:build !linux || !cgo

package seccomp

import (
	"fmt"

	specs "github.com/opencontainers/runtime-spec/specs-go"
)

// Validate performs the checks that need no libseccomp; this build has no
// libseccomp (not Linux, or cgo disabled).
func Validate(cfg *specs.LinuxSeccomp) error {
	if cfg == nil {
		return nil
	}
	return checkStatic(cfg)
}

// Load fails with ErrNotSupported unless cfg is nil: this build cannot load
// seccomp filters.
func Load(cfg *specs.LinuxSeccomp) error {
	if cfg == nil {
		return nil
	}
	return fmt.Errorf("load seccomp filter: %w in this build (needs Linux and cgo)", ErrNotSupported)
}
