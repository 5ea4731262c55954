package main

import (
	"fmt"
	"sort"
	"strings"

	"github.com/spf13/cobra"

	"github.com/migratehq/migrate/agent/pki"
	migratev1 "github.com/migratehq/migrate/api/migrate/v1"
)

func newNodesCommand(g *globals) *cobra.Command {
	return &cobra.Command{
		Use:   "nodes",
		Short: "list this node and its peers (pinged over mutual TLS)",
		Args:  exactArgs(0, "no arguments"),
		RunE: func(cmd *cobra.Command, _ []string) error {
			c, ctx, done, err := g.connect(cmd)
			if err != nil {
				return err
			}
			defer done()
			r, err := c.Nodes(ctx, &migratev1.NodesRequest{})
			if err != nil {
				return err
			}
			if done, err := printMessage(g, cmd.OutOrStdout(), r); done {
				return err
			}
			w := table(cmd.OutOrStdout())
			fmt.Fprintln(w, "NAME\tADDRESS\tSTATUS\tVERSION\tKERNEL\tCGROUPS\tCRIU\tCONTAINERS")
			for _, n := range r.Nodes {
				name, st := n.Name, "ready"
				if n.Self {
					name += " (self)"
				}
				if !n.Reachable {
					st = "unreachable: " + n.Error
				}
				i := n.Info
				if i == nil {
					i = &migratev1.NodeInfo{}
				}
				fmt.Fprintf(w, "%s\t%s\t%s\t%s\t%s\t%s\t%s\t%d\n", name, dash(n.Address), st, dash(i.Version),
					dash(i.Kernel), dash(i.CgroupMode), dash(i.GetCriu().GetVersion()), i.Containers)
			}
			return w.Flush()
		},
	}
}

func dash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}

func newVersionCommand(g *globals) *cobra.Command {
	return &cobra.Command{
		Use:   "version",
		Short: "show migratectl's and the agent's versions and node facts",
		Args:  exactArgs(0, "no arguments"),
		RunE: func(cmd *cobra.Command, _ []string) error {
			c, ctx, done, err := g.connect(cmd)
			if err != nil {
				return err
			}
			defer done()
			r, err := c.NodeInfo(ctx, &migratev1.NodeInfoRequest{})
			if err != nil {
				fmt.Fprintf(cmd.OutOrStdout(), "migratectl: %s\n", version)
				return err
			}
			if done, err := printMessage(g, cmd.OutOrStdout(), r); done {
				return err
			}
			n := r.Node
			out := cmd.OutOrStdout()
			fmt.Fprintf(out, "migratectl: %s\nmigrated:   %s (node %s)\nkernel:     %s\ncgroups:    %s\n", version, n.Version, n.Name, n.Kernel, n.CgroupMode)
			if cr := n.Criu; cr != nil {
				if cr.Version != "" {
					var feats []string
					for f, ok := range cr.Features {
						if ok {
							feats = append(feats, f)
						}
					}
					sort.Strings(feats)
					fmt.Fprintf(out, "criu:       %s (%s) features: %s\n", cr.Version, cr.Path, strings.Join(feats, ", "))
				} else {
					fmt.Fprintf(out, "criu:       unavailable: %s\n", cr.Error)
				}
			}
			if cp := n.Capacity; cp != nil {
				fmt.Fprintf(out, "capacity:   %d cpus, %d MiB memory (%d MiB available), %d MiB free on data disk\n",
					cp.Cpus, cp.MemoryBytes>>20, cp.MemoryAvailableBytes>>20, cp.DataDiskFreeBytes>>20)
			}
			return nil
		},
	}
}

func newClusterCommand(*globals) *cobra.Command {
	cmd := &cobra.Command{Use: "cluster", Short: "cluster TLS material"}
	var dir string
	var nodes []string
	var hosts []string
	initCmd := &cobra.Command{
		Use:   "init --dir DIR --nodes NAME[,NAME...]",
		Short: "create a cluster CA (or reuse the one in DIR) and node and admin certificates",
		Long: "Create DIR/ca.pem and ca-key.pem (kept when present), DIR/<node>.pem and <node>-key.pem for each " +
			"node, and DIR/admin.pem and admin-key.pem for migratectl --host tcp://. Existing certificates are kept. " +
			"Copy ca.pem and a node's pair to that node; keep ca-key.pem offline.",
		Args: exactArgs(0, "no arguments"),
		RunE: func(cmd *cobra.Command, _ []string) error {
			if dir == "" || len(nodes) == 0 {
				return usageError{fmt.Errorf("cluster init needs --dir and --nodes")}
			}
			extra := map[string][]string{}
			for _, h := range hosts {
				n, addr, ok := strings.Cut(h, "=")
				if !ok {
					return usageError{fmt.Errorf("--san %q: want node=host-or-ip", h)}
				}
				extra[n] = append(extra[n], addr)
			}
			for _, n := range nodes {
				if !validNodeName(n) {
					return usageError{fmt.Errorf("node name %q: want lower-case letters, digits, '-' and '.'", n)}
				}
			}
			res, err := pki.InitCluster(dir, nodes, extra)
			if err != nil {
				return err
			}
			out := cmd.OutOrStdout()
			if res.CreatedCA {
				fmt.Fprintf(out, "created CA %s/ca.pem\n", dir)
			}
			for _, n := range res.Issued {
				fmt.Fprintf(out, "issued %s/%s.pem\n", dir, n)
			}
			for _, n := range res.Kept {
				fmt.Fprintf(out, "kept %s/%s.pem\n", dir, n)
			}
			return nil
		},
	}
	initCmd.Flags().StringVar(&dir, "dir", "", "cluster directory")
	initCmd.Flags().StringSliceVar(&nodes, "nodes", nil, "node names")
	initCmd.Flags().StringArrayVar(&hosts, "san", nil, "extra subject name for a node: node=host-or-ip (repeatable)")
	cmd.AddCommand(initCmd)
	return cmd
}
