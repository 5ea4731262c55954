package main

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/spf13/cobra"
	"google.golang.org/protobuf/types/known/durationpb"

	"github.com/migratehq/migrate/agent/peercred"
	migratev1 "github.com/migratehq/migrate/api/migrate/v1"
)

// snapshotsClient connects to the Snapshots service of the local agent; it is
// served on the control socket only.
func (g *globals) snapshotsClient(cmd *cobra.Command) (migratev1.SnapshotsClient, context.Context, func(), error) {
	if err := g.validOutput(); err != nil {
		return nil, nil, nil, err
	}
	sock := g.socket
	switch {
	case strings.HasPrefix(g.host, "unix://"):
		sock = strings.TrimPrefix(g.host, "unix://")
	case g.host != "":
		return nil, nil, nil, usageError{fmt.Errorf("snapshot commands talk to the local agent's control socket; --host %s is not one", g.host)}
	}
	conn, err := peercred.Dial(sock)
	if err != nil {
		return nil, nil, nil, err
	}
	ctx, cancel := g.context(cmd)
	return migratev1.NewSnapshotsClient(conn), ctx, func() { cancel(); conn.Close() }, nil
}

func newSnapshotCommand(g *globals) *cobra.Command {
	cmd := &cobra.Command{
		Use:   "snapshot",
		Short: "snapshots: leave-running checkpoints kept deduplicated on the node, on demand or on a schedule",
		Long: "A snapshot dumps a running container with CRIU, leaving it running (frozen only for the dump), and keeps " +
			"the dump in the node's deduplicating page store: a snapshot of a container whose memory barely changed " +
			"stores only what changed. Snapshots are restored as new containers, here or on a peer node.",
		Args: exactArgs(0, "a subcommand"),
	}
	cmd.AddCommand(newSnapshotNowCommand(g), newSnapshotLsCommand(g), newSnapshotInspectCommand(g),
		newSnapshotRmCommand(g), newSnapshotRestoreCommand(g), newSnapshotVerifyCommand(g), newSnapshotGCCommand(g),
		newSnapshotScheduleCommand(g), newSnapshotUnscheduleCommand(g), newSnapshotSchedulesCommand(g))
	return cmd
}

func printSnapshots(g *globals, cmd *cobra.Command, m *migratev1.ListSnapshotsResponse) error {
	if done, err := printMessage(g, cmd.OutOrStdout(), m); done {
		return err
	}
	w := table(cmd.OutOrStdout())
	fmt.Fprintln(w, "NAME\tCONTAINER\tCREATED\tTRIGGER\tDOWNTIME\tLOGICAL\tSTORED\tDEDUP")
	for _, s := range m.Snapshots {
		fmt.Fprintf(w, "%s\t%s\t%s\t%s\t%s\t%s\t%s\t%.1f%%\n", s.Name, s.ContainerId, ago(s.CreatedAt), s.Trigger,
			s.Downtime.AsDuration().Round(time.Millisecond), size(uint64(s.LogicalBytes)), size(uint64(s.StoredBytes)), 100*s.DedupRatio)
	}
	return w.Flush()
}

func newSnapshotNowCommand(g *globals) *cobra.Command {
	return &cobra.Command{
		Use:               "now ID",
		Short:             "snapshot a running container now (it keeps running)",
		Args:              exactArgs(1, "a container ID"),
		ValidArgsFunction: completeContainers(g),
		RunE: func(cmd *cobra.Command, args []string) error {
			c, ctx, done, err := g.snapshotsClient(cmd)
			if err != nil {
				return err
			}
			defer done()
			r, err := c.TakeSnapshot(ctx, &migratev1.TakeSnapshotRequest{Id: args[0]})
			if err != nil {
				return err
			}
			if done, err := printMessage(g, cmd.OutOrStdout(), r); done {
				return err
			}
			return printSnapshots(g, cmd, &migratev1.ListSnapshotsResponse{Snapshots: []*migratev1.Snapshot{r.Snapshot}})
		},
	}
}

func newSnapshotLsCommand(g *globals) *cobra.Command {
	return &cobra.Command{
		Use:     "ls [ID]",
		Aliases: []string{"list"},
		Short:   "list snapshots, of one container or all",
		Args:    maxArgs(1, "at most one container ID"),
		RunE: func(cmd *cobra.Command, args []string) error {
			c, ctx, done, err := g.snapshotsClient(cmd)
			if err != nil {
				return err
			}
			defer done()
			req := &migratev1.ListSnapshotsRequest{}
			if len(args) == 1 {
				req.ContainerId = args[0]
			}
			r, err := c.ListSnapshots(ctx, req)
			if err != nil {
				return err
			}
			return printSnapshots(g, cmd, r)
		},
	}
}

func newSnapshotInspectCommand(g *globals) *cobra.Command {
	return &cobra.Command{
		Use:   "inspect NAME",
		Short: "show a snapshot: sizes, what deleting it frees, its checkpoint manifest (JSON unless -o yaml)",
		Args:  exactArgs(1, "a snapshot name"),
		RunE: func(cmd *cobra.Command, args []string) error {
			c, ctx, done, err := g.snapshotsClient(cmd)
			if err != nil {
				return err
			}
			defer done()
			r, err := c.InspectSnapshot(ctx, &migratev1.InspectSnapshotRequest{Name: args[0]})
			if err != nil {
				return err
			}
			return printDetail(g, cmd.OutOrStdout(), r)
		},
	}
}

func newSnapshotRmCommand(g *globals) *cobra.Command {
	return &cobra.Command{
		Use:     "rm NAME...",
		Aliases: []string{"delete"},
		Short:   "delete snapshots (their chunks go at the next gc)",
		Args:    minArgs(1, "at least one snapshot name"),
		RunE: func(cmd *cobra.Command, args []string) error {
			c, ctx, done, err := g.snapshotsClient(cmd)
			if err != nil {
				return err
			}
			defer done()
			for _, n := range args {
				if _, err := c.DeleteSnapshot(ctx, &migratev1.DeleteSnapshotRequest{Name: n}); err != nil {
					return err
				}
				fmt.Fprintln(cmd.OutOrStdout(), n)
			}
			return nil
		},
	}
}

func newSnapshotRestoreCommand(g *globals) *cobra.Command {
	var name, to string
	cmd := &cobra.Command{
		Use:   "restore SNAPSHOT",
		Short: "restore a snapshot as a running container, here or on a peer (--to)",
		Long: "Every chunk is checked against its hash before anything runs: a damaged snapshot is refused, naming it. " +
			"With --to the snapshot goes to that peer first, only the chunks it lacks (and the rootfs base if it lacks that).",
		Args: exactArgs(1, "a snapshot name"),
		RunE: func(cmd *cobra.Command, args []string) error {
			c, ctx, done, err := g.snapshotsClient(cmd)
			if err != nil {
				return err
			}
			defer done()
			r, err := c.RestoreSnapshot(ctx, &migratev1.RestoreSnapshotRequest{Snapshot: args[0], Name: name, To: to})
			if err != nil {
				return err
			}
			if done, err := printMessage(g, cmd.OutOrStdout(), r); done {
				return err
			}
			w := table(cmd.OutOrStdout())
			fmt.Fprintln(w, "CONTAINER\tNODE\tSTATUS\tPID\tSENT\tCHUNKS SENT\tCHUNKS PRESENT")
			fmt.Fprintf(w, "%s\t%s\t%s\t%d\t%s\t%d\t%d\n", r.Container.GetId(), r.Node, statusText(r.Container), r.Container.GetPid(),
				size(uint64(r.SentBytes)), r.SentChunks, r.PresentChunks)
			return w.Flush()
		},
	}
	cmd.Flags().StringVar(&name, "name", "", "ID of the restored container (default: the snapshotted container's)")
	cmd.Flags().StringVar(&to, "to", "", "peer node to restore on (default: this node)")
	return cmd
}

// errDamage makes verify exit 1 after printing its report.
var errDamage = errors.New("the snapshot store is damaged")

func newSnapshotVerifyCommand(g *globals) *cobra.Command {
	return &cobra.Command{
		Use:   "verify",
		Short: "read back every chunk of every snapshot and report damage (exit 1 if any)",
		Args:  exactArgs(0, "no arguments"),
		RunE: func(cmd *cobra.Command, _ []string) error {
			c, ctx, done, err := g.snapshotsClient(cmd)
			if err != nil {
				return err
			}
			defer done()
			r, err := c.VerifySnapshots(ctx, &migratev1.VerifySnapshotsRequest{})
			if err != nil {
				return err
			}
			printed, err := printMessage(g, cmd.OutOrStdout(), r)
			if err != nil {
				return err
			}
			if !printed {
				for _, d := range r.Damage {
					fmt.Fprintln(cmd.OutOrStdout(), "damaged:", d)
				}
				fmt.Fprintf(cmd.OutOrStdout(), "%d snapshots, %d chunks (%s) checked, %d damaged chunk uses\n",
					r.Snapshots, r.Chunks, size(uint64(r.Bytes)), len(r.Damage))
			}
			if len(r.Damage) > 0 {
				return fmt.Errorf("%w: %d damaged chunk uses, first: %s", errDamage, len(r.Damage), r.Damage[0])
			}
			return nil
		},
	}
}

func newSnapshotGCCommand(g *globals) *cobra.Command {
	return &cobra.Command{
		Use:   "gc",
		Short: "delete chunks no snapshot uses, and leftovers of interrupted snapshots",
		Args:  exactArgs(0, "no arguments"),
		RunE: func(cmd *cobra.Command, _ []string) error {
			c, ctx, done, err := g.snapshotsClient(cmd)
			if err != nil {
				return err
			}
			defer done()
			r, err := c.CollectGarbage(ctx, &migratev1.CollectGarbageRequest{})
			if err != nil {
				return err
			}
			if done, err := printMessage(g, cmd.OutOrStdout(), r); done {
				return err
			}
			fmt.Fprintf(cmd.OutOrStdout(), "freed %s; the store holds %d snapshots in %d chunks (%s)\n",
				size(uint64(r.FreedBytes)), r.Snapshots, r.Chunks, size(uint64(r.ChunkBytes)))
			return nil
		},
	}
}

func printSchedules(g *globals, cmd *cobra.Command, m *migratev1.ListSchedulesResponse) error {
	if done, err := printMessage(g, cmd.OutOrStdout(), m); done {
		return err
	}
	w := table(cmd.OutOrStdout())
	fmt.Fprintln(w, "CONTAINER\tSCHEDULE\tKEEP\tJITTER\tNEXT RUN\tLAST SNAPSHOT\tLAST ERROR")
	for _, s := range m.Schedules {
		spec := "cron " + s.Cron
		if s.Every != nil {
			spec = "every " + s.Every.AsDuration().String()
		}
		var keep []string
		for _, k := range []struct {
			n    int32
			what string
		}{{s.KeepLast, "last"}, {s.KeepHourly, "hourly"}, {s.KeepDaily, "daily"}} {
			if k.n > 0 {
				keep = append(keep, fmt.Sprintf("%s %d", k.what, k.n))
			}
		}
		if len(keep) == 0 {
			keep = []string{"all"}
		}
		next := "-"
		if s.NextRun != nil {
			next = s.NextRun.AsTime().Local().Format(time.DateTime)
		}
		fmt.Fprintf(w, "%s\t%s\t%s\t%s\t%s\t%s\t%s\n", s.ContainerId, spec, strings.Join(keep, ", "),
			s.Jitter.AsDuration(), next, dash(s.LastSnapshot), dash(s.LastError))
	}
	return w.Flush()
}

func newSnapshotScheduleCommand(g *globals) *cobra.Command {
	var every, jitter time.Duration
	var cronExpr string
	var keepLast, keepHourly, keepDaily int32
	cmd := &cobra.Command{
		Use:   "schedule ID (--every DURATION | --cron \"m h dom mon dow\")",
		Short: "snapshot a container on a schedule, with retention (replaces its schedule)",
		Long: "--every runs on a grid aligned to the epoch (15m: at :00, :15, :30, :45); --cron takes five fields in UTC " +
			"or @hourly/@daily. Each container runs a fixed --jitter offset into each slot (default a tenth of the interval, " +
			"at most 5m), so containers on one schedule do not freeze together. Retention applies to this schedule's snapshots " +
			"only: the newest --keep-last, plus the newest of each of the last --keep-hourly hours and --keep-daily days; " +
			"without any, all are kept. Schedules survive agent restarts.",
		Args:              exactArgs(1, "a container ID"),
		ValidArgsFunction: completeContainers(g),
		RunE: func(cmd *cobra.Command, args []string) error {
			if (every == 0) == (cronExpr == "") {
				return usageError{errors.New("give one of --every DURATION or --cron EXPRESSION")}
			}
			if keepLast < 0 || keepHourly < 0 || keepDaily < 0 {
				return usageError{errors.New("--keep-* must not be negative")}
			}
			sch := &migratev1.Schedule{ContainerId: args[0], Cron: cronExpr, KeepLast: keepLast, KeepHourly: keepHourly, KeepDaily: keepDaily}
			if every != 0 {
				sch.Every = durationpb.New(every)
			}
			if cmd.Flags().Changed("jitter") {
				sch.Jitter = durationpb.New(jitter)
			}
			c, ctx, done, err := g.snapshotsClient(cmd)
			if err != nil {
				return err
			}
			defer done()
			r, err := c.SetSchedule(ctx, &migratev1.SetScheduleRequest{Schedule: sch})
			if err != nil {
				return err
			}
			return printSchedules(g, cmd, &migratev1.ListSchedulesResponse{Schedules: []*migratev1.Schedule{r.Schedule}})
		},
	}
	f := cmd.Flags()
	f.DurationVar(&every, "every", 0, "interval between snapshots (at least 1s)")
	f.StringVar(&cronExpr, "cron", "", "cron expression: minute hour day-of-month month day-of-week (UTC)")
	f.Int32Var(&keepLast, "keep-last", 0, "keep the newest N scheduled snapshots")
	f.Int32Var(&keepHourly, "keep-hourly", 0, "keep the newest snapshot of each of the last N hours")
	f.Int32Var(&keepDaily, "keep-daily", 0, "keep the newest snapshot of each of the last N days")
	f.DurationVar(&jitter, "jitter", 0, "bound of the container's fixed delay into each slot (default: interval/10, at most 5m)")
	return cmd
}

func newSnapshotUnscheduleCommand(g *globals) *cobra.Command {
	return &cobra.Command{
		Use:   "unschedule ID",
		Short: "remove a container's snapshot schedule (its snapshots stay)",
		Args:  exactArgs(1, "a container ID"),
		RunE: func(cmd *cobra.Command, args []string) error {
			c, ctx, done, err := g.snapshotsClient(cmd)
			if err != nil {
				return err
			}
			defer done()
			if _, err := c.RemoveSchedule(ctx, &migratev1.RemoveScheduleRequest{ContainerId: args[0]}); err != nil {
				return err
			}
			fmt.Fprintln(cmd.OutOrStdout(), args[0])
			return nil
		},
	}
}

func newSnapshotSchedulesCommand(g *globals) *cobra.Command {
	return &cobra.Command{
		Use:   "schedules",
		Short: "list snapshot schedules with their next run and last outcome",
		Args:  exactArgs(0, "no arguments"),
		RunE: func(cmd *cobra.Command, _ []string) error {
			c, ctx, done, err := g.snapshotsClient(cmd)
			if err != nil {
				return err
			}
			defer done()
			r, err := c.ListSchedules(ctx, &migratev1.ListSchedulesRequest{})
			if err != nil {
				return err
			}
			return printSchedules(g, cmd, r)
		},
	}
}

func maxArgs(n int, what string) cobra.PositionalArgs {
	return func(_ *cobra.Command, args []string) error {
		if len(args) > n {
			return usageError{fmt.Errorf("want %s, got %d arguments", what, len(args))}
		}
		return nil
	}
}
