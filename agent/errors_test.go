package agent

import (
	"fmt"
	"testing"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/migratehq/migrate/agent/checkpoint"
	"github.com/migratehq/migrate/runtime/container"
	"github.com/migratehq/migrate/transfer/layer"
)

func TestToStatus(t *testing.T) {
	shimErr := status.Error(codes.FailedPrecondition, "delete c: container is running")
	for _, tc := range []struct {
		err  error
		code codes.Code
		msg  string
	}{
		{fmt.Errorf("logs: container %q: %w", "c", ErrNotFound), codes.NotFound, `logs: container "c": not found`},
		{fmt.Errorf("create c: %w", container.ErrExist), codes.AlreadyExists, "create c: container already exists"},
		{fmt.Errorf("create: %w: bad", ErrInvalid), codes.InvalidArgument, "create: invalid argument: bad"},
		{fmt.Errorf("stop c: %w", shimErr), codes.FailedPrecondition, "stop c: delete c: container is running"},
		{fmt.Errorf("x: %w", ErrUnavailable), codes.Unavailable, "x: unavailable"},
		{fmt.Errorf("restore c: %w: x", checkpoint.ErrCorrupt), codes.InvalidArgument, "restore c: checkpoint is corrupt: x"},
		{fmt.Errorf("restore c: apply: %w: x", layer.ErrUnsafeEntry), codes.InvalidArgument, "restore c: apply: unsafe entry: x"},
		{fmt.Errorf("restore c: %w", checkpoint.ErrNewerFormat), codes.FailedPrecondition, "restore c: checkpoint format is newer than this agent"},
		{fmt.Errorf("checkpoint c: %w", checkpoint.ErrNotCheckable), codes.FailedPrecondition, "checkpoint c: container cannot be checkpointed"},
		{fmt.Errorf("plain"), codes.Unknown, "plain"},
	} {
		st, _ := status.FromError(toStatus(tc.err))
		if st.Code() != tc.code || st.Message() != tc.msg {
			t.Errorf("toStatus(%v) = %v %q, want %v %q", tc.err, st.Code(), st.Message(), tc.code, tc.msg)
		}
	}
	if toStatus(nil) != nil {
		t.Error("toStatus(nil) != nil")
	}
}
