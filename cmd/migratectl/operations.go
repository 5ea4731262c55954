package main

import (
	"errors"
	"fmt"
	"io"
	"os"
	"strings"
	"time"

	"github.com/spf13/cobra"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	migratev1 "github.com/migratehq/migrate/api/migrate/v1"
)

// newOperationsCommand lists, follows and cancels long operations (stop, checkpoint,
// restore; move later).
func newOperationsCommand(g *globals) *cobra.Command {
	cmd := &cobra.Command{Use: "operations", Aliases: []string{"ops"}, Short: "list, follow or cancel long operations"}
	ls := &cobra.Command{
		Use:   "ls",
		Short: "list recent operations",
		Args:  exactArgs(0, "no arguments"),
		RunE: func(cmd *cobra.Command, _ []string) error {
			c, ctx, done, err := g.connect(cmd)
			if err != nil {
				return err
			}
			defer done()
			r, err := c.ListOperations(ctx, &migratev1.ListOperationsRequest{})
			if err != nil {
				return err
			}
			if done, err := printMessage(g, cmd.OutOrStdout(), r); done {
				return err
			}
			w := table(cmd.OutOrStdout())
			fmt.Fprintln(w, "ID\tKIND\tCONTAINER\tSTATE\tSTARTED\tERROR")
			for _, o := range r.Operations {
				fmt.Fprintf(w, "%s\t%s\t%s\t%s\t%s\t%s\n", o.Id, o.Kind, o.ContainerId,
					strings.ToLower(strings.TrimPrefix(o.State.String(), "OPERATION_STATE_")), ago(o.StartedAt), dash(o.Error))
			}
			return w.Flush()
		},
	}
	watch := &cobra.Command{
		Use:   "watch ID",
		Short: "follow an operation's progress until it ends",
		Args:  exactArgs(1, "an operation ID"),
		RunE: func(cmd *cobra.Command, args []string) error {
			c, ctx, done, err := g.connect(cmd)
			if err != nil {
				return err
			}
			defer done()
			stream, err := c.WatchOperation(ctx, &migratev1.WatchOperationRequest{Id: args[0]})
			if err != nil {
				return err
			}
			_, err = followOperation(g, cmd, stream)
			return err
		},
	}
	cancelCmd := &cobra.Command{
		Use:   "cancel ID",
		Short: "cancel a running operation",
		Args:  exactArgs(1, "an operation ID"),
		RunE: func(cmd *cobra.Command, args []string) error {
			c, ctx, done, err := g.connect(cmd)
			if err != nil {
				return err
			}
			defer done()
			_, err = c.CancelOperation(ctx, &migratev1.CancelOperationRequest{Id: args[0]})
			return err
		},
	}
	cmd.AddCommand(ls, watch, cancelCmd)
	return cmd
}

// opStream is a stream of operation events (Stop, WatchOperation, later Move...).
type opStream interface {
	Recv() (*migratev1.OperationEvent, error)
}

// followOperation shows an operation's progress and returns its last event; an
// operation that did not succeed is an error.
func followOperation(g *globals, cmd *cobra.Command, stream opStream) (*migratev1.OperationEvent, error) {
	p := newProgressPrinter(os.Stderr)
	defer p.finish()
	var last *migratev1.OperationEvent
	for {
		ev, err := stream.Recv()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			return nil, err
		}
		if g.output == "table" {
			p.event(ev)
		} else if _, err := printMessage(g, cmd.OutOrStdout(), ev); err != nil {
			return nil, err
		}
		last = ev
	}
	p.finish()
	if last == nil {
		return nil, errors.New("the agent ended the operation stream without a result")
	}
	op := last.Operation
	switch op.GetState() {
	case migratev1.OperationState_OPERATION_STATE_SUCCEEDED:
		return last, nil
	case migratev1.OperationState_OPERATION_STATE_CANCELLED:
		return last, status.Errorf(codes.Canceled, "%s %s: cancelled", op.Kind, op.ContainerId)
	}
	return last, operationError(op)
}

// operationError turns a failed operation into an error with the status code the
// agent gave it, so the exit code is the one a unary call would have produced.
func operationError(op *migratev1.Operation) error {
	msg := op.GetError()
	// The agent's errors usually start with "<kind> <target>: " already.
	if prefix := op.GetKind() + " "; !strings.HasPrefix(msg, prefix) {
		msg = fmt.Sprintf("%s %s: %s", op.GetKind(), op.GetContainerId(), msg)
	}
	code := codes.Code(op.GetErrorCode())
	if code == codes.OK {
		code = codes.Unknown
	}
	return status.Error(code, msg)
}

func newEventsCommand(g *globals) *cobra.Command {
	return &cobra.Command{
		Use:   "events [ID]",
		Short: "stream container events (created, started, stopped, killed, deleted, adopted)",
		Args:  cobra.MaximumNArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			c, ctx, done, err := g.connect(cmd)
			if err != nil {
				return err
			}
			defer done()
			req := &migratev1.EventsRequest{}
			if len(args) == 1 {
				req.Id = args[0]
			}
			stream, err := c.Events(ctx, req)
			if err != nil {
				return err
			}
			for {
				ev, err := stream.Recv()
				if err != nil {
					if errors.Is(err, io.EOF) {
						return nil
					}
					return err
				}
				if done, err := printMessage(g, cmd.OutOrStdout(), ev); done {
					if err != nil {
						return err
					}
					continue
				}
				fmt.Fprintf(cmd.OutOrStdout(), "%s %s %s\n", ev.Time.AsTime().Format(time.RFC3339Nano), ev.Type, ev.ContainerId)
			}
		},
	}
}
