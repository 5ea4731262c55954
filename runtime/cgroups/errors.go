package cgroups

import (
	"errors"
	"strings"
)

// Sentinel errors; every error returned by this package that a caller may
// branch on wraps one of them.
var (
	// ErrInvalid reports a value in the config or resources that can never be
	// applied (out of range, malformed). The error is a *ValidationError.
	ErrInvalid = errors.New("cgroups: invalid configuration")

	// ErrUnsupported reports a request this package refuses on the host's
	// cgroup layout: unified resources on v1, v1-only knobs on v2, systemd
	// style cgroup paths.
	ErrUnsupported = errors.New("cgroups: not supported")

	// ErrUnavailable reports that a requested limit needs a controller or
	// controller file the host does not provide. The error is an
	// *UnavailableError naming the files; the caller decides whether to drop
	// the limit and retry or to fail.
	ErrUnavailable = errors.New("cgroups: controller file not available")

	// ErrState reports a State that cannot be loaded (different cgroup mode,
	// malformed paths).
	ErrState = errors.New("cgroups: bad state")
)

// ValidationError names the resource field that failed validation, using the
// OCI spec's JSON names (for example "memory.limit" or "blockIO.weight").
type ValidationError struct {
	Field string
	Msg   string
}

func (e *ValidationError) Error() string { return "cgroups: " + e.Field + " " + e.Msg }

// Unwrap makes errors.Is(err, ErrInvalid) true.
func (e *ValidationError) Unwrap() error { return ErrInvalid }

// UnsupportedError names the field refused on this host's cgroup layout.
type UnsupportedError struct {
	Field string
	Mode  string // host layout the refusal depends on; empty if it does not
	Msg   string
}

func (e *UnsupportedError) Error() string {
	if e.Mode == "" {
		return "cgroups: " + e.Field + " is not supported: " + e.Msg
	}
	return "cgroups: " + e.Field + " is not supported on cgroup " + e.Mode + ": " + e.Msg
}

// Unwrap makes errors.Is(err, ErrUnsupported) true.
func (e *UnsupportedError) Unwrap() error { return ErrUnsupported }

// UnavailableError lists controller files a request needed but the host lacks.
type UnavailableError struct {
	// Files are the missing files: bare names ("hugetlb.2MB.limit_in_bytes")
	// when the whole controller is absent, absolute paths when the
	// controller exists but the file does not.
	Files []string
	// Err is the underlying error from the filesystem, if any.
	Err error
}

func (e *UnavailableError) Error() string {
	s := "cgroups: not available on this host: " + strings.Join(e.Files, ", ")
	if e.Err != nil {
		s += ": " + e.Err.Error()
	}
	return s
}

// Is makes errors.Is(err, ErrUnavailable) true while Unwrap still exposes
// the filesystem error.
func (e *UnavailableError) Is(target error) bool { return target == ErrUnavailable }

func (e *UnavailableError) Unwrap() error { return e.Err }
