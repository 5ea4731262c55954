package main

import (
	"errors"
	"fmt"
	"io"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/spf13/cobra"
	"golang.org/x/sys/unix"
	"google.golang.org/protobuf/types/known/timestamppb"

	migratev1 "github.com/migratehq/migrate/api/migrate/v1"
)

func exactArgs(n int, what string) cobra.PositionalArgs {
	return func(_ *cobra.Command, args []string) error {
		if len(args) != n {
			return usageError{fmt.Errorf("want %s, got %d arguments", what, len(args))}
		}
		return nil
	}
}

func minArgs(n int, what string) cobra.PositionalArgs {
	return func(_ *cobra.Command, args []string) error {
		if len(args) < n {
			return usageError{fmt.Errorf("want %s", what)}
		}
		return nil
	}
}

func printContainer(g *globals, cmd *cobra.Command, c *migratev1.Container) error {
	if done, err := printMessage(g, cmd.OutOrStdout(), c); done {
		return err
	}
	_, err := fmt.Fprintln(cmd.OutOrStdout(), c.Id)
	return err
}

// newRunCommand makes `run` (create and start) or `create`.
func newRunCommand(g *globals, start bool) *cobra.Command {
	var bundle, ip string
	use, short := "create ID", "create a container from an OCI bundle, ready to start"
	if start {
		use, short = "run ID", "create and start a container from an OCI bundle"
	}
	cmd := &cobra.Command{
		Use:   use,
		Short: short,
		Args:  exactArgs(1, "a container ID"),
		RunE: func(cmd *cobra.Command, args []string) error {
			b := bundle
			// Bundle paths are the agent's; resolve relative ones for a local agent.
			if g.isUnix() && !filepath.IsAbs(b) {
				abs, err := filepath.Abs(b)
				if err != nil {
					return err
				}
				b = abs
			}
			c, ctx, done, err := g.connect(cmd)
			if err != nil {
				return err
			}
			defer done()
			r, err := c.Create(ctx, &migratev1.CreateRequest{Id: args[0], Bundle: b, Start: start, Address: ip})
			if err != nil {
				return err
			}
			return printContainer(g, cmd, r.Container)
		},
	}
	cmd.Flags().StringVarP(&bundle, "bundle", "b", ".", "OCI bundle directory (config.json and rootfs) on the agent's host")
	cmd.Flags().StringVar(&ip, "ip", "", "address on the nodes' shared network, kept across moves, e.g. 10.88.0.10/24 (needs the agent's network.bridge)")
	return cmd
}

func newStartCommand(g *globals) *cobra.Command {
	return &cobra.Command{
		Use:               "start ID",
		Short:             "start a created container",
		Args:              exactArgs(1, "a container ID"),
		ValidArgsFunction: completeContainers(g),
		RunE: func(cmd *cobra.Command, args []string) error {
			c, ctx, done, err := g.connect(cmd)
			if err != nil {
				return err
			}
			defer done()
			r, err := c.Start(ctx, &migratev1.StartRequest{Id: args[0]})
			if err != nil {
				return err
			}
			return printContainer(g, cmd, r.Container)
		},
	}
}

func newPsCommand(g *globals) *cobra.Command {
	var quiet bool
	cmd := &cobra.Command{
		Use:     "ps",
		Aliases: []string{"list", "ls"},
		Short:   "list containers",
		Args:    exactArgs(0, "no arguments"),
		RunE: func(cmd *cobra.Command, _ []string) error {
			c, ctx, done, err := g.connect(cmd)
			if err != nil {
				return err
			}
			defer done()
			r, err := c.List(ctx, &migratev1.ListRequest{})
			if err != nil {
				return err
			}
			if quiet {
				for _, ctr := range r.Containers {
					fmt.Fprintln(cmd.OutOrStdout(), ctr.Id)
				}
				return nil
			}
			if done, err := printMessage(g, cmd.OutOrStdout(), r); done {
				return err
			}
			w := table(cmd.OutOrStdout())
			fmt.Fprintln(w, "ID\tSTATUS\tPID\tCREATED\tCOMMAND")
			for _, ctr := range r.Containers {
				pid := "-"
				if ctr.Pid > 0 {
					pid = strconv.Itoa(int(ctr.Pid))
				}
				fmt.Fprintf(w, "%s\t%s\t%s\t%s\t%s\n", ctr.Id, statusText(ctr), pid, ago(ctr.CreatedAt), strings.Join(ctr.Args, " "))
			}
			return w.Flush()
		},
	}
	cmd.Flags().BoolVarP(&quiet, "quiet", "q", false, "print ids only")
	return cmd
}

func newInspectCommand(g *globals) *cobra.Command {
	return &cobra.Command{
		Use:               "inspect ID",
		Short:             "show a container in detail (JSON unless -o yaml)",
		Args:              exactArgs(1, "a container ID"),
		ValidArgsFunction: completeContainers(g),
		RunE: func(cmd *cobra.Command, args []string) error {
			c, ctx, done, err := g.connect(cmd)
			if err != nil {
				return err
			}
			defer done()
			r, err := c.Inspect(ctx, &migratev1.InspectRequest{Id: args[0]})
			if err != nil {
				return err
			}
			return printDetail(g, cmd.OutOrStdout(), r)
		},
	}
}

func newLogsCommand(g *globals) *cobra.Command {
	var follow, timestamps bool
	var tail int
	var since time.Duration
	cmd := &cobra.Command{
		Use:               "logs ID",
		Short:             "show a container's stdout and stderr",
		Args:              exactArgs(1, "a container ID"),
		ValidArgsFunction: completeContainers(g),
		RunE: func(cmd *cobra.Command, args []string) error {
			c, ctx, done, err := g.connect(cmd)
			if err != nil {
				return err
			}
			defer done()
			req := &migratev1.LogsRequest{Id: args[0], Follow: follow, Tail: int32(tail)}
			if since > 0 {
				req.Since = timestamppb.New(time.Now().Add(-since))
			}
			stream, err := c.Logs(ctx, req)
			if err != nil {
				return err
			}
			for {
				e, err := stream.Recv()
				if errors.Is(err, io.EOF) {
					return nil
				}
				if err != nil {
					return err
				}
				if g.output != "table" {
					if _, err := printMessage(g, cmd.OutOrStdout(), e); err != nil {
						return err
					}
					continue
				}
				w := cmd.OutOrStdout()
				if e.Stream == migratev1.LogStream_LOG_STREAM_STDERR {
					w = cmd.ErrOrStderr()
				}
				if timestamps {
					fmt.Fprint(w, e.Time.AsTime().Format(time.RFC3339Nano)+" ")
				}
				w.Write(e.Line)
				if !e.Partial {
					fmt.Fprintln(w)
				}
			}
		},
	}
	f := cmd.Flags()
	f.BoolVarP(&follow, "follow", "f", false, "keep printing new output until the container's log ends")
	f.BoolVarP(&timestamps, "timestamps", "t", false, "prefix each line with its time")
	f.IntVar(&tail, "tail", 0, "only the last N lines (0: all)")
	f.DurationVar(&since, "since", 0, "only lines newer than this (e.g. 10m)")
	return cmd
}

func newExecCommand(g *globals) *cobra.Command {
	var env []string
	var cwd string
	var stdin bool
	cmd := &cobra.Command{
		Use:               "exec ID -- COMMAND [ARG...]",
		Short:             "run a command in a running container; exits with its status",
		Args:              minArgs(2, "a container ID and a command"),
		ValidArgsFunction: completeContainers(g),
		RunE: func(cmd *cobra.Command, args []string) error {
			argv := args[1:]
			if argv[0] == "--" { // flags stop at the ID, so "--" arrives as an argument
				argv = argv[1:]
			}
			if len(argv) == 0 {
				return usageError{errors.New("exec: no command given")}
			}
			req := &migratev1.ExecRequest{Id: args[0], Args: argv, Env: env, Cwd: cwd}
			if stdin {
				b, err := io.ReadAll(cmd.InOrStdin())
				if err != nil {
					return err
				}
				req.Stdin = b
			}
			c, ctx, done, err := g.connect(cmd)
			if err != nil {
				return err
			}
			defer done()
			stream, err := c.Exec(ctx, req)
			if err != nil {
				return err
			}
			for {
				m, err := stream.Recv()
				if err != nil {
					if errors.Is(err, io.EOF) {
						return errors.New("exec: the agent ended the stream without an exit status")
					}
					return err
				}
				if m.Exited {
					if m.ExitCode != 0 {
						return exitError{int(m.ExitCode)}
					}
					return nil
				}
				if m.Stream == migratev1.LogStream_LOG_STREAM_STDERR {
					cmd.ErrOrStderr().Write(m.Data)
				} else {
					cmd.OutOrStdout().Write(m.Data)
				}
			}
		},
	}
	f := cmd.Flags()
	f.SetInterspersed(false) // flags after ID belong to the command
	f.StringArrayVarP(&env, "env", "e", nil, "extra environment KEY=VALUE (repeatable)")
	f.StringVarP(&cwd, "workdir", "w", "", "working directory in the container")
	f.BoolVarP(&stdin, "interactive", "i", false, "send migratectl's stdin (read to its end first) to the command")
	return cmd
}

func newStopCommand(g *globals) *cobra.Command {
	var timeout uint32
	var sig string
	cmd := &cobra.Command{
		Use:               "stop ID...",
		Short:             "stop containers: signal, wait, then SIGKILL",
		Args:              minArgs(1, "at least one container ID"),
		ValidArgsFunction: completeContainers(g),
		RunE: func(cmd *cobra.Command, args []string) error {
			signo, err := parseSignal(sig)
			if err != nil {
				return err
			}
			c, ctx, done, err := g.connect(cmd)
			if err != nil {
				return err
			}
			defer done()
			for _, id := range args {
				stream, err := c.Stop(ctx, &migratev1.StopRequest{Id: id, TimeoutSeconds: timeout, Signal: int32(signo)})
				if err != nil {
					return err
				}
				last, err := followOperation(g, cmd, stream)
				if err != nil {
					return err
				}
				if g.output != "table" {
					continue // the events were printed
				}
				if err := printContainer(g, cmd, last.Container); err != nil {
					return err
				}
			}
			return nil
		},
	}
	cmd.Flags().Uint32VarP(&timeout, "time", "t", 0, "seconds to wait before SIGKILL (0: the agent's stopTimeout)")
	cmd.Flags().StringVarP(&sig, "signal", "s", "TERM", "signal to send first")
	return cmd
}

func newKillCommand(g *globals) *cobra.Command {
	var sig string
	var all bool
	cmd := &cobra.Command{
		Use:               "kill ID",
		Short:             "send a signal to a container",
		Args:              exactArgs(1, "a container ID"),
		ValidArgsFunction: completeContainers(g),
		RunE: func(cmd *cobra.Command, args []string) error {
			signo, err := parseSignal(sig)
			if err != nil {
				return err
			}
			c, ctx, done, err := g.connect(cmd)
			if err != nil {
				return err
			}
			defer done()
			_, err = c.Kill(ctx, &migratev1.KillRequest{Id: args[0], Signal: int32(signo), All: all})
			return err
		},
	}
	cmd.Flags().StringVarP(&sig, "signal", "s", "KILL", "signal name or number")
	cmd.Flags().BoolVarP(&all, "all", "a", false, "signal every process of the container")
	return cmd
}

func newRmCommand(g *globals) *cobra.Command {
	var force bool
	cmd := &cobra.Command{
		Use:               "rm ID...",
		Aliases:           []string{"delete"},
		Short:             "delete containers",
		Args:              minArgs(1, "at least one container ID"),
		ValidArgsFunction: completeContainers(g),
		RunE: func(cmd *cobra.Command, args []string) error {
			c, ctx, done, err := g.connect(cmd)
			if err != nil {
				return err
			}
			defer done()
			for _, id := range args {
				if _, err := c.Delete(ctx, &migratev1.DeleteRequest{Id: id, Force: force}); err != nil {
					return err
				}
				fmt.Fprintln(cmd.OutOrStdout(), id)
			}
			return nil
		},
	}
	cmd.Flags().BoolVarP(&force, "force", "f", false, "kill a running container first")
	return cmd
}

// parseSignal accepts "TERM", "SIGTERM", "term" or "15".
func parseSignal(s string) (unix.Signal, error) {
	if n, err := strconv.Atoi(s); err == nil && n > 0 && n < 65 {
		return unix.Signal(n), nil
	}
	name := strings.ToUpper(s)
	if !strings.HasPrefix(name, "SIG") {
		name = "SIG" + name
	}
	if sig := unix.SignalNum(name); sig != 0 {
		return sig, nil
	}
	return 0, usageError{fmt.Errorf("unknown signal %q", s)}
}
