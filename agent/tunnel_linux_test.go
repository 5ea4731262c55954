package agent

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"net"
	"path/filepath"
	"strconv"
	"testing"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"

	"github.com/migratehq/migrate/agent/config"
	"github.com/migratehq/migrate/agent/pki"
	migratev1 "github.com/migratehq/migrate/api/migrate/v1"
)

// tunnelPair is a source and a target Service joined by a real mTLS peer
// listener on loopback, with what a postcopy tunnel needs of them, and a
// stand-in page server on the source that writes size bytes per connection.
type tunnelPair struct {
	source, target *Service
	pageServer     int // port
}

func newTunnelPair(tb testing.TB, size int64) *tunnelPair {
	tb.Helper()
	dir := tb.TempDir()
	if _, err := pki.InitCluster(dir, []string{"n1", "n2"}, nil); err != nil {
		tb.Fatal(err)
	}
	files := func(n string) pki.Files {
		return pki.Files{CA: filepath.Join(dir, "ca.pem"), Cert: filepath.Join(dir, n+".pem"), Key: filepath.Join(dir, n+"-key.pem")}
	}
	stc, err := pki.ServerConfig(files("n2"), pki.PeersOrAdmin(func() []string { return []string{"n1"} }))
	if err != nil {
		tb.Fatal(err)
	}
	l, err := net.Listen("tcp4", "127.0.0.1:0")
	if err != nil {
		tb.Fatal(err)
	}
	target := &Service{moves: newMoveTable()}
	srv := grpc.NewServer(append([]grpc.ServerOption{grpc.Creds(credentials.NewTLS(stc))}, tlsInterceptors()...)...)
	migratev1.RegisterPeerServer(srv, &peerAPI{s: target})
	go func() { _ = srv.Serve(l) }()
	tb.Cleanup(srv.Stop)

	cfg := &config.Config{Node: "n1", Peers: map[string]string{"n2": l.Addr().String()}}
	f := files("n1")
	cfg.TLS.CA, cfg.TLS.Cert, cfg.TLS.Key = f.CA, f.Cert, f.Key
	source := &Service{cfg: cfg, peers: newPeers(cfg)}

	ps, err := net.Listen("tcp4", "127.0.0.1:0")
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() { ps.Close() })
	chunk := bytes.Repeat([]byte{0xa5}, 1<<20)
	go func() {
		for {
			c, err := ps.Accept()
			if err != nil {
				return
			}
			go func() {
				defer c.Close()
				for left := size; left > 0; {
					n := min(left, int64(len(chunk)))
					if _, err := c.Write(chunk[:n]); err != nil {
						return
					}
					left -= n
				}
			}()
		}
	}()
	return &tunnelPair{source: source, target: target, pageServer: ps.Addr().(*net.TCPAddr).Port}
}

// through opens move id's tunnel, connects to its target end as the lazy-pages
// daemon would, and returns what arrived.
func (p *tunnelPair) through(tb testing.TB, id string) int64 {
	tb.Helper()
	tun, err := p.source.openTunnel(context.Background(), "n2", id, p.pageServer)
	if err != nil {
		tb.Fatal(err)
	}
	defer tun.close()
	end := p.target.moves.lazy.get(id)
	<-end.ready
	c, err := net.Dial("tcp4", net.JoinHostPort("127.0.0.1", strconv.Itoa(end.port)))
	if err != nil {
		tb.Fatal(err)
	}
	defer c.Close()
	n, err := io.Copy(io.Discard, c)
	if err != nil {
		tb.Fatal(err)
	}
	<-tun.done
	if tun.err != nil {
		tb.Fatalf("tunnel: %v", tun.err)
	}
	if got := tun.bytes.Load(); got != n {
		tb.Fatalf("tunnel counted %d bytes, %d arrived", got, n)
	}
	return n
}

// TestTunnelCarriesEveryByte: what the page server writes arrives at the
// daemon's end through the mTLS tunnel, and a clean end of the page server's
// connection ends the tunnel without error.
func TestTunnelCarriesEveryByte(t *testing.T) {
	const size = 3<<20 + 12345
	p := newTunnelPair(t, size)
	for i := 0; i < 2; i++ {
		if n := p.through(t, fmt.Sprintf("move-%016x", i)); n != size {
			t.Fatalf("tunnel %d: %d bytes arrived, want %d", i, n, size)
		}
	}
}

// BenchmarkTunnel measures the page tunnel (page server -> source agent ->
// gRPC over mTLS -> target agent -> daemon) against a plain loopback TCP
// connection:
//
//	go test -run '^$' -bench 'Tunnel|Loopback' ./agent/
func BenchmarkTunnel(b *testing.B) {
	const size = 256 << 20
	p := newTunnelPair(b, size)
	b.SetBytes(size)
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		if n := p.through(b, fmt.Sprintf("move-%016x", i)); n != size {
			b.Fatalf("%d bytes arrived, want %d", n, size)
		}
	}
}

func BenchmarkLoopback(b *testing.B) {
	const size = 256 << 20
	l, err := net.Listen("tcp4", "127.0.0.1:0")
	if err != nil {
		b.Fatal(err)
	}
	defer l.Close()
	chunk := bytes.Repeat([]byte{0xa5}, 1<<20)
	go func() {
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			for left := int64(size); left > 0; left -= int64(len(chunk)) {
				if _, err := c.Write(chunk); err != nil {
					break
				}
			}
			c.Close()
		}
	}()
	b.SetBytes(size)
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		c, err := net.Dial("tcp4", l.Addr().String())
		if err != nil {
			b.Fatal(err)
		}
		n, _ := io.Copy(io.Discard, c)
		c.Close()
		if n != size {
			b.Fatalf("%d bytes arrived, want %d", n, size)
		}
	}
}
