package main

import (
	"context"
	"fmt"
	"log/slog"
	"os"
	"os/signal"

	"github.com/spf13/cobra"
	"golang.org/x/sys/unix"
	"sigs.k8s.io/yaml"

	"github.com/migratehq/migrate/agent"
	"github.com/migratehq/migrate/agent/config"
)

func init() { subcommands = append(subcommands, newDaemonCommand()) }

// newDaemonCommand runs the node agent: configuration file, then flags.
func newDaemonCommand() *cobra.Command {
	var cfgPath string
	var printConfig bool
	cmd := &cobra.Command{
		Use:   "daemon",
		Short: "run the node agent",
		Long: "Run the node agent. Configuration comes from --config (default " + config.DefaultPath +
			" when it exists, else built-in defaults: a single node), then from flags.",
		Args: cobra.NoArgs,
	}
	ov := config.AddFlags(cmd.Flags())
	cmd.Flags().StringVarP(&cfgPath, "config", "c", "", "configuration file (YAML)")
	cmd.Flags().BoolVar(&printConfig, "print-config", false, "print the effective configuration and exit")
	cmd.RunE = func(cmd *cobra.Command, _ []string) error {
		cfg, err := config.Load(cfgPath)
		if err != nil {
			return err
		}
		if err := ov.Apply(cfg); err != nil {
			return err
		}
		if err := cfg.Validate(); err != nil {
			return err
		}
		if printConfig {
			b, err := yaml.Marshal(cfg)
			if err != nil {
				return err
			}
			_, err = cmd.OutOrStdout().Write(b)
			return err
		}
		if err := requireRoot(); err != nil {
			return err
		}
		ctx, stop := signal.NotifyContext(context.Background(), unix.SIGINT, unix.SIGTERM)
		defer stop()
		log := slog.New(slog.NewTextHandler(os.Stderr, nil))
		if err := agent.Run(ctx, cfg, agent.Options{Version: version, Logger: log}); err != nil {
			return fmt.Errorf("daemon: %w", err)
		}
		return nil
	}
	return cmd
}
