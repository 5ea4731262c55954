// Command migrated is the node agent of migrate. It embeds the OCI runtime: the
// `oci` subcommands are runc-compatible, and the same binary is re-executed as
// each container's init.
package main

import (
	"errors"
	"fmt"
	"os"

	"github.com/spf13/cobra"

	"github.com/migratehq/migrate/runtime/container"
	_ "github.com/migratehq/migrate/runtime/nsenter" // joins namespaces before the Go runtime starts
)

// version is set at build time with -ldflags "-X main.version=...".
var version = "dev"

// subcommands lets other files of this package register commands.
var subcommands []*cobra.Command

// exitError carries a specific exit status (a container's, for `oci run`).
type exitError struct{ code int }

func (e *exitError) Error() string { return fmt.Sprintf("exit status %d", e.code) }

func main() {
	if container.IsInit() {
		container.InitMain() // never returns
	}
	root := &cobra.Command{
		Use:           "migrated",
		Short:         "migrate node agent and OCI runtime",
		Version:       version,
		SilenceUsage:  true,
		SilenceErrors: true,
	}
	root.AddCommand(newOCICommand())
	root.AddCommand(subcommands...)
	// A bare `migrated` runs the agent, as a systemd unit or a person expects.
	daemon := newDaemonCommand()
	root.Flags().AddFlagSet(daemon.Flags())
	root.Args = daemon.Args
	root.RunE = daemon.RunE
	if err := root.Execute(); err != nil {
		var ee *exitError
		if errors.As(err, &ee) {
			os.Exit(ee.code)
		}
		fmt.Fprintln(os.Stderr, "migrated: "+err.Error())
		os.Exit(1)
	}
}

// requireRoot gives one clear line instead of a cascade of EPERMs.
func requireRoot() error {
	if os.Geteuid() != 0 {
		return errors.New("must run as root (namespaces, cgroups and mounts need it): try sudo")
	}
	return nil
}
