package main

import (
	"fmt"
	"time"

	"github.com/spf13/cobra"

	migratev1 "github.com/migratehq/migrate/api/migrate/v1"
)

func newMoveCommand(g *globals) *cobra.Command {
	var to, mode string
	cmd := &cobra.Command{
		Use:   "move ID --to NODE",
		Short: "move a running container to another node (cold: frozen, dumped, sent, restored there)",
		Long: "Move a running container to a peer node. The container is frozen, checkpointed with CRIU, sent " +
			"to NODE with its rootfs changes (and its rootfs base if NODE lacks it), and restored there; then it is " +
			"removed here. It runs on exactly one node: if anything fails before NODE runs it, it runs here again. " +
			"--mode auto picks the best mode available (cold for now).",
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
			stream, err := c.Move(ctx, &migratev1.MoveRequest{Id: args[0], To: to, Mode: mode})
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
			return w.Flush()
		},
	}
	f := cmd.Flags()
	f.StringVar(&to, "to", "", "target node, by its name under peers in the agent's configuration")
	f.StringVar(&mode, "mode", "cold", "cold or auto")
	return cmd
}
