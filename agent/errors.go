package agent

import (
	"context"
	"errors"
	"regexp"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/migratehq/migrate/agent/checkpoint"
	"github.com/migratehq/migrate/agent/ops"
	"github.com/migratehq/migrate/agent/pki"
	"github.com/migratehq/migrate/criu"
	"github.com/migratehq/migrate/runtime/container"
	"github.com/migratehq/migrate/transfer/layer"
)

// Sentinel errors of the service, wrapped with context. They become gRPC codes only in
// toStatus, at the API edge.
var (
	ErrNotFound     = errors.New("not found")
	ErrExists       = errors.New("already exists")
	ErrInvalid      = errors.New("invalid argument")
	ErrInvalidState = errors.New("not allowed in the current state")
	ErrUnavailable  = errors.New("unavailable")
)

// toStatus maps an error to a gRPC status error, keeping its full message.
func toStatus(err error) error {
	if err == nil {
		return nil
	}
	return status.Error(codeOf(err), cleanMessage(err))
}

var rpcPrefix = regexp.MustCompile(`rpc error: code = \w+ desc = `)

// cleanMessage drops the "rpc error: code = X desc =" of errors from shims and peers
// wrapped in our context: the code travels separately.
func cleanMessage(err error) string { return rpcPrefix.ReplaceAllString(err.Error(), "") }

func codeOf(err error) codes.Code {
	switch {
	case errors.Is(err, ErrNotFound), errors.Is(err, container.ErrNotExist), errors.Is(err, ops.ErrNotFound):
		return codes.NotFound
	case errors.Is(err, ErrExists), errors.Is(err, container.ErrExist):
		return codes.AlreadyExists
	case errors.Is(err, ErrInvalid), errors.Is(err, container.ErrInvalidID), errors.Is(err, checkpoint.ErrCorrupt),
		errors.Is(err, layer.ErrUnsafeEntry), errors.Is(err, layer.ErrDeviceNotAllowed), errors.Is(err, layer.ErrTruncated):
		return codes.InvalidArgument
	case errors.Is(err, ErrInvalidState), errors.Is(err, container.ErrNotRunning), errors.Is(err, container.ErrInvalidState),
		errors.Is(err, checkpoint.ErrNewerFormat), errors.Is(err, checkpoint.ErrNotCheckable), errors.Is(err, criu.ErrNotFound):
		return codes.FailedPrecondition
	case errors.Is(err, ErrUnavailable):
		return codes.Unavailable
	case errors.Is(err, pki.ErrUnknownPeer), errors.Is(err, pki.ErrWrongRole):
		return codes.PermissionDenied
	case errors.Is(err, context.DeadlineExceeded):
		return codes.DeadlineExceeded
	case errors.Is(err, context.Canceled):
		return codes.Canceled
	}
	if st, ok := status.FromError(err); ok {
		return st.Code()
	}
	return codes.Unknown
}
