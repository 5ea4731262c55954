package main

import (
	"fmt"
	"path/filepath"
	"strings"
	"time"

	"github.com/spf13/cobra"

	migratev1 "github.com/migratehq/migrate/api/migrate/v1"
)

// localPath makes a path absolute for a local agent, which shares our filesystem;
// a remote agent's paths are its own and must be given absolute.
func localPath(g *globals, p string) (string, error) {
	if p == "" || filepath.IsAbs(p) || !g.isUnix() {
		return p, nil
	}
	return filepath.Abs(p)
}

func newCheckpointCommand(g *globals) *cobra.Command {
	var leave bool
	var name, export string
	cmd := &cobra.Command{
		Use:   "checkpoint ID",
		Short: "checkpoint a running container with CRIU (it stops unless --leave-running)",
		Long: "Dump a running container into a checkpoint on its node, named --name or <ID>-<UTC time>. " +
			"Without --leave-running the container's processes end after the dump and it shows as checkpointed; " +
			"`migratectl restore NAME` brings it back. If the dump fails the container keeps running. " +
			"--export also writes the checkpoint to one archive file (tar, zstd) on the agent's host.",
		Args:              exactArgs(1, "a container ID"),
		ValidArgsFunction: completeContainers(g),
		RunE: func(cmd *cobra.Command, args []string) error {
			exp, err := localPath(g, export)
			if err != nil {
				return err
			}
			c, ctx, done, err := g.connect(cmd)
			if err != nil {
				return err
			}
			defer done()
			stream, err := c.Checkpoint(ctx, &migratev1.CheckpointRequest{Id: args[0], LeaveRunning: leave, Name: name, ExportPath: exp})
			if err != nil {
				return err
			}
			last, err := followOperation(g, cmd, stream)
			if err != nil {
				return err
			}
			if g.output != "table" {
				return nil // the events were printed
			}
			ck := last.GetCheckpoint()
			if ck == nil {
				return fmt.Errorf("checkpoint %s: the agent reported no checkpoint", args[0])
			}
			w := table(cmd.OutOrStdout())
			fmt.Fprintln(w, "NAME\tCONTAINER\tDOWNTIME\tSIZE\tEXPORT")
			fmt.Fprintf(w, "%s\t%s\t%s\t%s\t%s\n", ck.Name, ck.ContainerId, ck.Downtime.AsDuration().Round(time.Millisecond),
				size(ck.SizeBytes), dash(ck.ExportPath))
			return w.Flush()
		},
	}
	f := cmd.Flags()
	f.BoolVar(&leave, "leave-running", false, "keep the container running (it is frozen only during the dump)")
	f.StringVar(&name, "name", "", "checkpoint name (default <ID>-<UTC time>)")
	f.StringVar(&export, "export", "", "also write the checkpoint to this archive file (must not exist)")
	return cmd
}

func newRestoreCommand(g *globals) *cobra.Command {
	var name string
	cmd := &cobra.Command{
		Use:   "restore CHECKPOINT|FILE",
		Short: "restore a container from a checkpoint name, a checkpoint directory or an exported archive",
		Long: "Restore a running container from a checkpoint of this node (by name), or from a checkpoint " +
			"directory or an archive written by `checkpoint --export` (a path: anything with a '/', e.g. ./c1.tar.zst). " +
			"The container gets the checkpointed container's ID unless --name is given. On failure nothing is left.",
		Args:              exactArgs(1, "a checkpoint name or file"),
		ValidArgsFunction: completeCheckpoints(g),
		RunE: func(cmd *cobra.Command, args []string) error {
			ref := args[0]
			if strings.Contains(ref, "/") {
				var err error
				if ref, err = localPath(g, ref); err != nil {
					return err
				}
			}
			c, ctx, done, err := g.connect(cmd)
			if err != nil {
				return err
			}
			defer done()
			stream, err := c.Restore(ctx, &migratev1.RestoreRequest{Checkpoint: ref, Name: name})
			if err != nil {
				return err
			}
			last, err := followOperation(g, cmd, stream)
			if err != nil {
				return err
			}
			if g.output != "table" {
				return nil
			}
			return printContainer(g, cmd, last.Container)
		},
	}
	cmd.Flags().StringVar(&name, "name", "", "ID of the restored container (default: the checkpointed container's)")
	return cmd
}

func newCheckpointsCommand(g *globals) *cobra.Command {
	list := func(cmd *cobra.Command, _ []string) error {
		c, ctx, done, err := g.connect(cmd)
		if err != nil {
			return err
		}
		defer done()
		r, err := c.ListCheckpoints(ctx, &migratev1.ListCheckpointsRequest{})
		if err != nil {
			return err
		}
		if done, err := printMessage(g, cmd.OutOrStdout(), r); done {
			return err
		}
		w := table(cmd.OutOrStdout())
		fmt.Fprintln(w, "NAME\tCONTAINER\tCREATED\tSIZE\tDOWNTIME\tMODE")
		for _, ck := range r.Checkpoints {
			if ck.Error != "" {
				fmt.Fprintf(w, "%s\t-\t-\t-\t-\tunusable: %s\n", ck.Name, ck.Error)
				continue
			}
			mode := "stop"
			if ck.LeaveRunning {
				mode = "leave-running"
			}
			fmt.Fprintf(w, "%s\t%s\t%s\t%s\t%s\t%s\n", ck.Name, ck.ContainerId, ago(ck.CreatedAt), size(ck.SizeBytes),
				ck.Downtime.AsDuration().Round(time.Millisecond), mode)
		}
		return w.Flush()
	}
	cmd := &cobra.Command{
		Use:     "checkpoints",
		Aliases: []string{"ckpts"},
		Short:   "list, inspect or delete the checkpoints of a node",
		Args:    exactArgs(0, "no arguments (or a subcommand: ls, inspect, rm)"),
		RunE:    list,
	}
	ls := &cobra.Command{Use: "ls", Short: "list checkpoints", Args: exactArgs(0, "no arguments"), RunE: list}
	inspect := &cobra.Command{
		Use:               "inspect NAME",
		Short:             "show a checkpoint's manifest summary, files and spec (JSON unless -o yaml)",
		Args:              exactArgs(1, "a checkpoint name"),
		ValidArgsFunction: completeCheckpoints(g),
		RunE: func(cmd *cobra.Command, args []string) error {
			c, ctx, done, err := g.connect(cmd)
			if err != nil {
				return err
			}
			defer done()
			r, err := c.InspectCheckpoint(ctx, &migratev1.InspectCheckpointRequest{Name: args[0]})
			if err != nil {
				return err
			}
			return printDetail(g, cmd.OutOrStdout(), r)
		},
	}
	rm := &cobra.Command{
		Use:               "rm NAME...",
		Aliases:           []string{"delete"},
		Short:             "delete checkpoints",
		Args:              minArgs(1, "at least one checkpoint name"),
		ValidArgsFunction: completeCheckpoints(g),
		RunE: func(cmd *cobra.Command, args []string) error {
			c, ctx, done, err := g.connect(cmd)
			if err != nil {
				return err
			}
			defer done()
			for _, n := range args {
				if _, err := c.DeleteCheckpoint(ctx, &migratev1.DeleteCheckpointRequest{Name: n}); err != nil {
					return err
				}
				fmt.Fprintln(cmd.OutOrStdout(), n)
			}
			return nil
		},
	}
	cmd.AddCommand(ls, inspect, rm)
	return cmd
}

// completeCheckpoints completes checkpoint names from the agent.
func completeCheckpoints(g *globals) func(*cobra.Command, []string, string) ([]string, cobra.ShellCompDirective) {
	return func(cmd *cobra.Command, _ []string, _ string) ([]string, cobra.ShellCompDirective) {
		c, done, err := g.client()
		if err != nil {
			return nil, cobra.ShellCompDirectiveError
		}
		defer done()
		ctx, cancel := g.context(cmd)
		defer cancel()
		r, err := c.ListCheckpoints(ctx, &migratev1.ListCheckpointsRequest{})
		if err != nil {
			return nil, cobra.ShellCompDirectiveError
		}
		var names []string
		for _, ck := range r.Checkpoints {
			names = append(names, ck.Name)
		}
		return names, cobra.ShellCompDirectiveDefault // files too: restore takes archives
	}
}

// size prints a byte count in binary units.
func size(n uint64) string {
	const unit = 1024
	if n < unit {
		return fmt.Sprintf("%d B", n)
	}
	div, exp := uint64(unit), 0
	for m := n / unit; m >= unit; m /= unit {
		div *= unit
		exp++
	}
	return fmt.Sprintf("%.1f %ciB", float64(n)/float64(div), "KMGTPE"[exp])
}
