package main

import (
	"errors"
	"fmt"
	"strings"
	"testing"

	"golang.org/x/sys/unix"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	migratev1 "github.com/migratehq/migrate/api/migrate/v1"
)

func TestParseSignal(t *testing.T) {
	for in, want := range map[string]unix.Signal{"TERM": unix.SIGTERM, "sigkill": unix.SIGKILL, "9": unix.SIGKILL, "HUP": unix.SIGHUP} {
		if got, err := parseSignal(in); err != nil || got != want {
			t.Errorf("parseSignal(%q) = %v, %v; want %v", in, got, err, want)
		}
	}
	for _, in := range []string{"", "NOPE", "0", "99"} {
		if _, err := parseSignal(in); err == nil {
			t.Errorf("parseSignal(%q) accepted", in)
		}
	}
}

func TestExitCodes(t *testing.T) {
	g := &globals{socket: "/run/x.sock"}
	for _, tc := range []struct {
		err  error
		code int
		msg  string
	}{
		{status.Error(codes.NotFound, `container "x": not found`), exitNotFound, "not found"},
		{status.Error(codes.AlreadyExists, "exists"), exitExists, "exists"},
		{status.Error(codes.InvalidArgument, "bad"), exitUsage, "bad"},
		{status.Error(codes.FailedPrecondition, "running"), exitState, "running"},
		{status.Error(codes.PermissionDenied, "root only"), exitPermission, "root only"},
		{status.Error(codes.DeadlineExceeded, "late"), exitTimeout, "late"},
		{status.Error(codes.Unavailable, "connection error: desc = \"transport: dial unix /run/x.sock: connect: no such file or directory\""), exitUnavailable, "migrated daemon"},
		{status.Error(codes.Unavailable, "connection error: desc = \"dial unix /run/x.sock: connect: permission denied\""), exitPermission, "root only"},
		{status.Error(codes.Unavailable, "exec c: shim: unavailable"), exitUnavailable, "shim"},
		{usageError{errors.New("want an ID")}, exitUsage, "want an ID"},
		{fmt.Errorf("plain"), exitFailure, "plain"},
	} {
		code, msg := describe(tc.err, g)
		if code != tc.code || !strings.Contains(msg, tc.msg) || strings.Contains(msg, "\n") {
			t.Errorf("describe(%v) = %d %q; want %d, mentioning %q", tc.err, code, msg, tc.code, tc.msg)
		}
	}
}

func TestOperationError(t *testing.T) {
	g := &globals{socket: "/run/x.sock"}
	for _, tc := range []struct {
		op   *migratev1.Operation
		code int
		msg  string
	}{
		{&migratev1.Operation{Kind: "restore", ContainerId: "c", Error: "restore c: checkpoint is corrupt", ErrorCode: int32(codes.InvalidArgument)}, exitUsage, "restore c: checkpoint is corrupt"},
		{&migratev1.Operation{Kind: "checkpoint", ContainerId: "c", Error: "container is not running", ErrorCode: int32(codes.FailedPrecondition)}, exitState, "checkpoint c: container is not running"},
		{&migratev1.Operation{Kind: "stop", ContainerId: "c", Error: "stop c: boom"}, exitFailure, "stop c: boom"},
	} {
		code, msg := describe(operationError(tc.op), g)
		if code != tc.code || msg != tc.msg {
			t.Errorf("operationError(%v) -> %d %q; want %d %q", tc.op, code, msg, tc.code, tc.msg)
		}
	}
}
