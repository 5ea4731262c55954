package main

import (
	"context"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/spf13/cobra"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"

	"github.com/migratehq/migrate/agent/peercred"
	"github.com/migratehq/migrate/agent/pki"
	migratev1 "github.com/migratehq/migrate/api/migrate/v1"
)

const defaultSocket = "/run/migrate/migrated.sock"

// globals are the flags every command shares.
type globals struct {
	socket     string
	host       string
	tlsDir     string
	serverName string
	output     string
	timeout    time.Duration
}

func (g *globals) addFlags(root *cobra.Command) {
	pf := root.PersistentFlags()
	sock := os.Getenv("MIGRATE_SOCKET")
	if sock == "" {
		sock = defaultSocket
	}
	pf.StringVar(&g.socket, "socket", sock, "control socket of the local agent (env MIGRATE_SOCKET)")
	pf.StringVarP(&g.host, "host", "H", os.Getenv("MIGRATE_HOST"), "agent to talk to: unix:///path or tcp://host:port (mTLS with the admin certificate; env MIGRATE_HOST)")
	pf.StringVar(&g.tlsDir, "tls-dir", "", "cluster directory with ca.pem, admin.pem, admin-key.pem (for tcp:// hosts)")
	pf.StringVar(&g.serverName, "node", "", "node name the tcp:// agent's certificate must carry (default: the host part)")
	pf.StringVarP(&g.output, "output", "o", "table", "output format: table, json or yaml")
	pf.DurationVar(&g.timeout, "timeout", 0, "give up after this long (0: no limit)")
	_ = root.RegisterFlagCompletionFunc("output", func(*cobra.Command, []string, string) ([]string, cobra.ShellCompDirective) {
		return []string{"table", "json", "yaml"}, cobra.ShellCompDirectiveNoFileComp
	})
}

func (g *globals) isUnix() bool { return g.host == "" || strings.HasPrefix(g.host, "unix://") }

// target names the agent for messages.
func (g *globals) target() string {
	if g.host != "" {
		return g.host
	}
	return g.socket
}

func (g *globals) validOutput() error {
	switch g.output {
	case "table", "json", "yaml":
		return nil
	}
	return usageError{fmt.Errorf("unknown output format %q: want table, json or yaml", g.output)}
}

// client connects to the agent.
func (g *globals) client() (migratev1.ControlClient, func(), error) {
	if err := g.validOutput(); err != nil {
		return nil, nil, err
	}
	var conn *grpc.ClientConn
	var err error
	switch {
	case g.host == "":
		conn, err = peercred.Dial(g.socket)
	case strings.HasPrefix(g.host, "unix://"):
		conn, err = peercred.Dial(strings.TrimPrefix(g.host, "unix://"))
	case strings.HasPrefix(g.host, "tcp://"):
		addr := strings.TrimPrefix(g.host, "tcp://")
		if g.tlsDir == "" {
			return nil, nil, usageError{fmt.Errorf("--host %s needs --tls-dir (the agent speaks mutual TLS only)", g.host)}
		}
		name := g.serverName
		if name == "" {
			if name, _, err = net.SplitHostPort(addr); err != nil {
				return nil, nil, usageError{fmt.Errorf("--host %s: %w", g.host, err)}
			}
		}
		tc, terr := pki.ClientConfig(pki.Files{
			CA:   filepath.Join(g.tlsDir, pki.CAFile),
			Cert: pki.CertFile(g.tlsDir, pki.AdminName),
			Key:  pki.KeyFile(g.tlsDir, pki.AdminName),
		}, name)
		if terr != nil {
			return nil, nil, terr
		}
		conn, err = grpc.NewClient("passthrough:///"+addr, grpc.WithTransportCredentials(credentials.NewTLS(tc)))
	default:
		return nil, nil, usageError{fmt.Errorf("--host %q: want unix:///path or tcp://host:port", g.host)}
	}
	if err != nil {
		return nil, nil, err
	}
	return migratev1.NewControlClient(conn), func() { conn.Close() }, nil
}

// context returns the command's context, bounded by --timeout.
// connect returns a client and the command's context; done closes both.
func (g *globals) connect(cmd *cobra.Command) (migratev1.ControlClient, context.Context, func(), error) {
	c, closeConn, err := g.client()
	if err != nil {
		return nil, nil, nil, err
	}
	ctx, cancel := g.context(cmd)
	return c, ctx, func() { cancel(); closeConn() }, nil
}

func (g *globals) context(cmd *cobra.Command) (context.Context, context.CancelFunc) {
	ctx := cmd.Context()
	if ctx == nil {
		ctx = context.Background()
	}
	if g.timeout > 0 {
		return context.WithTimeout(ctx, g.timeout)
	}
	return context.WithCancel(ctx)
}

// completeContainers completes container ids from the agent.
func completeContainers(g *globals) func(*cobra.Command, []string, string) ([]string, cobra.ShellCompDirective) {
	return func(cmd *cobra.Command, _ []string, _ string) ([]string, cobra.ShellCompDirective) {
		c, done, err := g.client()
		if err != nil {
			return nil, cobra.ShellCompDirectiveError
		}
		defer done()
		ctx, cancel := context.WithTimeout(context.Background(), 3*time.Second)
		defer cancel()
		r, err := c.List(ctx, &migratev1.ListRequest{})
		if err != nil {
			return nil, cobra.ShellCompDirectiveError
		}
		var ids []string
		for _, ctr := range r.Containers {
			ids = append(ids, ctr.Id)
		}
		return ids, cobra.ShellCompDirectiveNoFileComp
	}
}
