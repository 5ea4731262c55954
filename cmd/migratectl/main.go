// Command migratectl is the command-line client of migrated: it manages the
// containers of a node through the agent's control API, and creates cluster TLS
// material. See docs/agent.md for its exit codes.
package main

import (
	"errors"
	"fmt"
	"os"

	"github.com/spf13/cobra"
)

// version is set at build time with -ldflags "-X main.version=...".
var version = "dev"

func main() {
	os.Exit(run(os.Args[1:]))
}

func run(args []string) int {
	g := &globals{}
	root := &cobra.Command{
		Use:           "migratectl",
		Short:         "control migrate node agents",
		SilenceUsage:  true,
		SilenceErrors: true,
		Version:       version,
	}
	g.addFlags(root)
	root.AddCommand(
		newRunCommand(g, true), newRunCommand(g, false), newStartCommand(g),
		newPsCommand(g), newInspectCommand(g), newLogsCommand(g), newExecCommand(g),
		newStopCommand(g), newKillCommand(g), newRmCommand(g),
		newNodesCommand(g), newVersionCommand(g), newClusterCommand(g),
		newOperationsCommand(g), newEventsCommand(g),
		newCheckpointCommand(g), newRestoreCommand(g), newCheckpointsCommand(g), newMoveCommand(g),
		newSnapshotCommand(g),
	)
	root.SetArgs(args)
	// Flag and argument errors are usage errors.
	root.SetFlagErrorFunc(func(_ *cobra.Command, err error) error { return usageError{err} })
	err := root.Execute()
	if err == nil {
		return 0
	}
	var ee exitError
	if errors.As(err, &ee) {
		return ee.code
	}
	code, msg := describe(err, g)
	fmt.Fprintln(os.Stderr, "migratectl: "+msg)
	return code
}
