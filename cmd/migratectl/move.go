package main

import (
	"fmt"
	"time"

	"github.com/spf13/cobra"

	"google.golang.org/protobuf/types/known/durationpb"

	migratev1 "github.com/migratehq/migrate/api/migrate/v1"
)

func newMoveCommand(g *globals) *cobra.Command {
	var to, mode string
	var maxDowntime time.Duration
	cmd := &cobra.Command{
		Use:   "move ID --to NODE",
		Short: "move a running container to another node (postcopy or cold)",
		Long: "Move a running container to a peer node. The container is frozen, checkpointed with CRIU, sent " +
			"to NODE with its rootfs changes (and its rootfs base if NODE lacks it), and restored there; then it is " +
			"removed here. It runs on exactly one node: if anything fails before NODE runs it, it runs here again. " +
			"Modes: cold (frozen for the whole dump, transfer and restore), postcopy (restored on NODE at once, its " +
			"memory fetched afterwards through the agents' mTLS channel; downtime does not grow with memory, but if this " +
			"node is lost before NODE has every page the container is lost), precopy (needs soft-dirty memory tracking). " +
			"--mode auto (default) picks the best mode both nodes support and says why; --max-downtime refuses the move, " +
			"before touching the container, when no mode is expected to meet it.",
		Args:              exactArgs(1, "a container ID"),
		ValidArgsFunction: completeContainers(g),
		RunE: func(cmd *cobra.Command, args []string) error {
			if to == "" {
				return usageError{fmt.Errorf("move %s: --to NODE is required", args[0])}
			}
			c, ctx, done, err := g.connect(cmd)
			if err != nil {
				return err
			}
			defer done()
			if maxDowntime < 0 {
				return usageError{fmt.Errorf("move %s: --max-downtime must not be negative", args[0])}
			}
			req := &migratev1.MoveRequest{Id: args[0], To: to, Mode: mode}
			if maxDowntime > 0 {
				req.MaxDowntime = durationpb.New(maxDowntime)
			}
			stream, err := c.Move(ctx, req)
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
			m := last.GetMove()
			if m == nil {
				return fmt.Errorf("move %s: the agent reported no result", args[0])
			}
			base := "present on target"
			if m.BaseSent {
				base = "sent, " + size(uint64(m.BaseBytes))
			}
			ms := func(d interface{ AsDuration() time.Duration }) string {
				return d.AsDuration().Round(time.Millisecond).String()
			}
			w := table(cmd.OutOrStdout())
			fmt.Fprintln(w, "CONTAINER\tFROM\tTO\tMODE\tDOWNTIME\tDUMP\tTRANSFER\tRESTORE\tBYTES (RAW/WIRE)\tBASE")
			fmt.Fprintf(w, "%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s / %s\t%s\n", m.ContainerId, m.From, m.To, m.Mode,
				ms(m.Downtime), ms(m.Dump), ms(m.Transfer), ms(m.Restore),
				size(uint64(m.RawBytes)), size(uint64(m.WireBytes)), base)
			if err := w.Flush(); err != nil {
				return err
			}
			if m.LazyPages != nil {
				fmt.Fprintf(cmd.OutOrStdout(), "memory pages: %s fetched by %s in %s after it resumed\n", size(uint64(m.LazyBytes)), m.To, ms(m.LazyPages))
			}
			if m.ModeReason != "" {
				fmt.Fprintf(cmd.OutOrStdout(), "mode %s: %s\n", m.Mode, m.ModeReason)
			}
			return nil
		},
	}
	f := cmd.Flags()
	f.StringVar(&to, "to", "", "target node, by its name under peers in the agent's configuration")
	f.StringVar(&mode, "mode", "auto", "auto, postcopy, cold or precopy")
	f.DurationVar(&maxDowntime, "max-downtime", 0, "refuse the move unless a mode is expected to keep the downtime within this (e.g. 500ms)")
	return cmd
}
