package main

import (
	"github.com/spf13/cobra"

	"github.com/migratehq/migrate/agent/shim"
)

func init() { subcommands = append(subcommands, newShimCommand(), newStandbyShimCommand()) }

// newShimCommand is the per-container shim the agent starts; not for people.
func newShimCommand() *cobra.Command {
	var o shim.Options
	cmd := &cobra.Command{
		Use:    "shim",
		Short:  "per-container shim (started by the agent)",
		Hidden: true,
		Args:   cobra.NoArgs,
		RunE: func(*cobra.Command, []string) error {
			if err := requireRoot(); err != nil {
				return err
			}
			return shim.Main(o)
		},
	}
	f := cmd.Flags()
	f.StringVar(&o.ID, "id", "", "container id")
	f.StringVar(&o.Bundle, "bundle", "", "OCI bundle directory")
	f.StringVar(&o.Dir, "dir", "", "container directory (state, socket, logs)")
	f.StringVar(&o.RuntimeRoot, "runtime-root", "", "OCI runtime state root")
	f.Int64Var(&o.LogMaxBytes, "log-max-bytes", 10<<20, "rotate the container log at this size")
	f.IntVar(&o.LogMaxFiles, "log-max-files", 3, "log files kept")
	f.StringVar(&o.Restore, "restore", "", "restore the container from this checkpoint directory instead of creating it")
	f.BoolVar(&o.Verified, "verified", false, "the checkpoint's files were checked against its manifest already")
	f.BoolVar(&o.Consume, "consume", false, "the checkpoint is removed after the restore: link its logs instead of copying them")
	f.StringVar(&o.NetworkLock, "network-lock", "", "CRIU network lock backend (nftables or iptables)")
	f.StringVar(&o.CRIUVersion, "criu-version", "", "CRIU version as the agent probed it")
	f.StringVar(&o.CRIUPath, "criu", "", "CRIU binary (default /usr/local/sbin/criu)")
	f.StringVar(&o.Rootfs, "rootfs", "", "root filesystem of a restored container (default: as checkpointed)")
	f.StringVar(&o.NetNS, "netns", "", "network namespace file of a restored container whose checkpoint's namespace was external")
	f.StringVar(&o.LazyPagesDir, "lazy-pages-dir", "", "with --restore: restore lazily from the criu lazy-pages daemon listening in this directory")
	for _, n := range []string{"id", "bundle", "dir", "runtime-root"} {
		_ = cmd.MarkFlagRequired(n)
	}
	return cmd
}

// newStandbyShimCommand is a shim started before its container is known; it
// reads its options from the agent when one is needed (shim.StartStandby).
func newStandbyShimCommand() *cobra.Command {
	var criuPath string
	cmd := &cobra.Command{
		Use:    "shim-standby",
		Short:  "per-container shim started ahead of need (started by the agent)",
		Hidden: true,
		Args:   cobra.NoArgs,
		RunE: func(*cobra.Command, []string) error {
			if err := requireRoot(); err != nil {
				return err
			}
			return shim.MainStandby(criuPath)
		},
	}
	cmd.Flags().StringVar(&criuPath, "criu", "", "CRIU binary to start ahead for a restore (none if empty)")
	return cmd
}
