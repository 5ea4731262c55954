package main

import (
	"errors"
	"fmt"
	"strings"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

// Exit codes scripts can rely on (docs/agent.md). `exec` exits with the process's
// own status instead once the process ran.
const (
	exitFailure     = 1 // anything else
	exitUsage       = 2 // bad flags or arguments, invalid input
	exitNotFound    = 3 // no such container (or operation, or peer)
	exitExists      = 4 // a container with that id exists
	exitState       = 5 // not allowed in the container's current state
	exitUnavailable = 6 // agent not running or unreachable
	exitPermission  = 7 // not allowed: not root, or certificate refused
	exitTimeout     = 8 // deadline exceeded
	exitInterrupted = 9 // cancelled
)

// exitError ends migratectl with a given code and no message (exec's status).
type exitError struct{ code int }

func (e exitError) Error() string { return fmt.Sprintf("exit status %d", e.code) }

// usageError marks a flag or argument error.
type usageError struct{ err error }

func (e usageError) Error() string { return e.err.Error() }
func (e usageError) Unwrap() error { return e.err }

// describe returns the exit code and the one-line message for err.
func describe(err error, g *globals) (int, string) {
	var ue usageError
	if errors.As(err, &ue) {
		return exitUsage, err.Error()
	}
	st, ok := status.FromError(err)
	if !ok {
		return exitFailure, err.Error()
	}
	msg := st.Message()
	switch st.Code() {
	case codes.InvalidArgument:
		return exitUsage, msg
	case codes.NotFound:
		return exitNotFound, msg
	case codes.AlreadyExists:
		return exitExists, msg
	case codes.FailedPrecondition:
		return exitState, msg
	case codes.PermissionDenied, codes.Unauthenticated:
		return exitPermission, msg
	case codes.DeadlineExceeded:
		return exitTimeout, msg
	case codes.Canceled:
		return exitInterrupted, msg
	case codes.Unavailable:
		if strings.HasPrefix(msg, "connection error:") {
			return unavailable(msg, g) // we could not reach the agent itself
		}
		return exitUnavailable, msg
	}
	return exitFailure, msg
}

// unavailable explains a failed connection to the agent.
func unavailable(msg string, g *globals) (int, string) {
	target := g.target()
	switch {
	case strings.Contains(msg, "permission denied"):
		return exitPermission, fmt.Sprintf("permission denied on %s: the control socket is for root only (try sudo)", target)
	case strings.Contains(msg, "no such file or directory"), strings.Contains(msg, "connection refused"):
		if g.isUnix() {
			return exitUnavailable, fmt.Sprintf("cannot reach migrated at %s: is it running? Start it with `systemctl start migrated` (or `migrated daemon`), or point --socket/--host at a running agent", target)
		}
		return exitUnavailable, fmt.Sprintf("cannot reach migrated at %s: connection refused; is the agent running with peer.listen set?", target)
	}
	return exitUnavailable, fmt.Sprintf("cannot reach migrated at %s: %s", target, msg)
}
