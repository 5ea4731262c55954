package container

import "errors"

// Sentinel errors; callers branch with errors.Is. They are wrapped with the
// container id and operation.
var (
	ErrNotExist     = errors.New("container does not exist")
	ErrExist        = errors.New("container already exists")
	ErrInvalidID    = errors.New("invalid container id")
	ErrNotRunning   = errors.New("container is not running")
	ErrInvalidState = errors.New("operation not allowed in the container's current state")
)
