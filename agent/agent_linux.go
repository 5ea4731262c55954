package agent

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"maps"
	"net"
	"os"
	"path/filepath"
	"slices"

	"golang.org/x/sys/unix"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"

	"github.com/migratehq/migrate/agent/config"
	"github.com/migratehq/migrate/agent/peercred"
	"github.com/migratehq/migrate/agent/pki"
	"github.com/migratehq/migrate/agent/shim"
	migratev1 "github.com/migratehq/migrate/api/migrate/v1"
	"github.com/migratehq/migrate/criu"
	"github.com/migratehq/migrate/transfer"
)

// ErrLocked is returned by Run when another agent uses the data directory.
var ErrLocked = errors.New("data directory is in use by another migrated")

// Options are the parts of the agent that are not configuration.
type Options struct {
	// Exe is the migrated binary started as `Exe shim ...`; empty means /proc/self/exe.
	Exe     string
	Version string
	Logger  *slog.Logger // nil discards
	// Ready, if set, is called once both listeners accept connections.
	Ready func()
}

// Run runs the agent until ctx ends. It validates cfg, takes the data directory's
// lock, re-adopts running containers and serves. Containers keep running when Run
// returns.
func Run(ctx context.Context, cfg *config.Config, o Options) error {
	if err := cfg.Validate(); err != nil {
		return err
	}
	// Shims must not inherit fds the agent was started with.
	shim.CloexecInherited()
	if o.Logger == nil {
		o.Logger = slog.New(slog.NewTextHandler(io.Discard, nil))
	}
	if o.Exe == "" {
		exe, err := os.Executable()
		if err != nil {
			return fmt.Errorf("find own binary: %w", err)
		}
		o.Exe = exe
	}
	for _, d := range []string{cfg.DataDir, cfg.ContainersDir(), cfg.RuntimeDir(), cfg.CheckpointsDir(), movesDir(cfg.DataDir), incomingDir(cfg.DataDir)} {
		if err := os.MkdirAll(d, 0o700); err != nil {
			return fmt.Errorf("data directory: %w", err)
		}
	}
	lock, err := os.OpenFile(filepath.Join(cfg.DataDir, "migrated.lock"), os.O_RDWR|os.O_CREATE, 0o600)
	if err != nil {
		return fmt.Errorf("data directory: %w", err)
	}
	defer lock.Close()
	if err := unix.Flock(int(lock.Fd()), unix.LOCK_EX|unix.LOCK_NB); err != nil {
		return fmt.Errorf("%s: %w", cfg.DataDir, ErrLocked)
	}

	// Load the TLS material before anything else, so a bad path fails the start.
	var peerTLS *tls.Config
	if cfg.Peer.Listen != "" {
		names := slices.Collect(maps.Keys(cfg.Peers))
		peerTLS, err = pki.ServerConfig(pki.Files{CA: cfg.TLS.CA, Cert: cfg.TLS.Cert, Key: cfg.TLS.Key},
			pki.PeersOrAdmin(func() []string { return names }))
		if err != nil {
			return fmt.Errorf("peer TLS: %w", err)
		}
	}

	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	p := newPeers(cfg)
	defer p.close()
	s := newService(ctx, cfg, o, p)
	if err := s.recover(ctx); err != nil {
		return err
	}
	s.removeStaleImports()
	s.removeStaleMoves()
	if err := s.openSnapshots(); err != nil {
		return err
	}
	defer s.closeSnapshots()
	s.recoverMovedIn()
	go s.expireIncoming(ctx)
	s.shims.fill()
	defer s.shims.close()
	// Probe CRIU once: shims get its network lock backend for checkpoints.
	if ci := s.node.get(ctx).GetCriu(); ci.GetError() != "" {
		o.Logger.Warn("CRIU unavailable: checkpoint and restore will fail", "err", ci.GetError())
	} else {
		o.Logger.Info("CRIU", "version", ci.GetVersion(), "networkLock", ci.GetNetworkLock())
		// Remade at every start: a cache outside a tmpfs survives reboots.
		if made, err := (&criu.Client{Path: cfg.CRIU}).PrimeKdatCache(); err != nil {
			o.Logger.Warn("CRIU's kernel-feature cache: every CRIU call probes the kernel again", "err", err)
		} else if made {
			o.Logger.Info("made CRIU's kernel-feature cache (/run is not a tmpfs, where CRIU keeps it itself)", "file", "/run/criu.kdat")
		}
	}

	errc := make(chan error, 3)
	msrv, err := s.serveMetrics(ctx, errc)
	if err != nil {
		return fmt.Errorf("metrics: %w", err)
	}
	if msrv != nil {
		defer msrv.Close()
	}

	ctl, err := peercred.Listen(cfg.ControlSocket)
	if err != nil {
		return fmt.Errorf("control socket: %w", err)
	}
	ctlSrv := grpc.NewServer(peercred.ServerOptions()...)
	migratev1.RegisterControlServer(ctlSrv, &controlAPI{s: s})
	migratev1.RegisterSnapshotsServer(ctlSrv, &snapshotsAPI{s: s})
	go func() { errc <- fmt.Errorf("control socket: %w", ctlSrv.Serve(ctl)) }()
	defer func() {
		ctlSrv.Stop()
		os.Remove(cfg.ControlSocket)
	}()

	if peerTLS != nil {
		pl, err := net.Listen("tcp", cfg.Peer.Listen)
		if err != nil {
			return fmt.Errorf("peer listener: %w", err)
		}
		opts := append([]grpc.ServerOption{grpc.Creds(credentials.NewTLS(peerTLS))}, tlsInterceptors()...)
		opts = append(opts, peerServerOptions()...)
		peerSrv := grpc.NewServer(opts...)
		migratev1.RegisterPeerServer(peerSrv, &peerAPI{s: s})
		migratev1.RegisterControlServer(peerSrv, &controlAPI{s: s})
		transfer.RegisterServer(peerSrv, s.incoming)
		migratev1.RegisterSnapshotPeerServer(peerSrv, &snapshotPeerAPI{s: s})
		go func() { errc <- fmt.Errorf("peer listener: %w", peerSrv.Serve(pl)) }()
		defer peerSrv.Stop()
		o.Logger.Info("peer listener", "addr", pl.Addr().String())
	}
	// Scheduled snapshots; stopped (and waited for) before the store closes.
	schedDone := make(chan struct{})
	go func() { defer close(schedDone); s.runScheduler(ctx) }()
	defer func() { cancel(); <-schedDone }()
	o.Logger.Info("migrated running", "node", cfg.Node, "socket", cfg.ControlSocket, "data", cfg.DataDir, "containers", len(s.containers))
	if o.Ready != nil {
		o.Ready()
	}
	select {
	case <-ctx.Done():
		o.Logger.Info("migrated stopping; containers keep running")
		return nil
	case err := <-errc:
		return err
	}
}
