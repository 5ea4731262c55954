package agent

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"google.golang.org/grpc"

	migratev1 "github.com/migratehq/migrate/api/migrate/v1"
	"github.com/migratehq/migrate/transfer"
)

// A postcopy move's page traffic crosses the agents' mTLS channel (docs/postcopy.md):
//
//	target CRIU lazy-pages --tcp--> 127.0.0.1:L (target agent)
//	    ==Peer.Tunnel (gRPC, mTLS)==> source agent --tcp--> 127.0.0.1:P (source CRIU page server)
//
// CRIU never listens or connects on anything but loopback.

// tunnelChunk is the most one tunnel message carries.
const tunnelChunk = 256 << 10

// tunnelAcceptTimeout bounds the wait for the lazy-pages daemon's connection:
// it connects once the restore handed it the restored tasks' memory.
const tunnelAcceptTimeout = 5 * time.Minute

// tunnelEnd is the target's record of one move's tunnel.
type tunnelEnd struct {
	port      int
	container string        // set by the lazy restore that uses the tunnel
	ready     chan struct{} // closed once the tunnel listens (port is set)
	// onBroken is called, before the daemon's connection is closed, when the
	// source end broke before the page transfer ended cleanly.
	mu       sync.Mutex
	onBroken func(error) // guarded by mu
	broken   error       // guarded by mu
}

// tunnels is the target's table of tunnels by transfer id.
type tunnels struct {
	mu sync.Mutex
	m  map[string]*tunnelEnd // guarded by mu
}

func (t *tunnels) get(id string) *tunnelEnd {
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.m == nil {
		t.m = map[string]*tunnelEnd{}
	}
	e, ok := t.m[id]
	if !ok {
		e = &tunnelEnd{ready: make(chan struct{})}
		t.m[id] = e
	}
	return e
}

// receiving reports whether container id's memory is still arriving through
// a tunnel (its postcopy move to this node has not finished).
func (t *tunnels) receiving(id string) bool {
	t.mu.Lock()
	defer t.mu.Unlock()
	for _, e := range t.m {
		e.mu.Lock()
		c := e.container
		e.mu.Unlock()
		if c == id {
			return true
		}
	}
	return false
}

func (t *tunnels) drop(id string) {
	t.mu.Lock()
	defer t.mu.Unlock()
	delete(t.m, id)
}

// setOnBroken installs f; if the tunnel broke already, f runs at once.
func (e *tunnelEnd) setOnBroken(f func(error)) {
	e.mu.Lock()
	err := e.broken
	e.onBroken = f
	e.mu.Unlock()
	if err != nil {
		f(err)
	}
}

func (e *tunnelEnd) breakWith(err error) {
	e.mu.Lock()
	if e.broken != nil {
		e.mu.Unlock()
		return
	}
	e.broken = err
	f := e.onBroken
	e.mu.Unlock()
	if f != nil {
		f(err)
	}
}

// Tunnel is the target's end: it listens on 127.0.0.1, says so, and relays
// the one connection it accepts (the lazy-pages daemon's) to the stream.
func (s *Service) Tunnel(stream grpc.BidiStreamingServer[migratev1.TunnelData, migratev1.TunnelData]) error {
	first, err := stream.Recv()
	if err != nil {
		return err
	}
	if err := transfer.ValidateID(first.TransferId); err != nil {
		return fmt.Errorf("tunnel: %w: %w", ErrInvalid, err)
	}
	id := first.TransferId
	end := s.moves.lazy.get(id)
	select {
	case <-end.ready:
		return fmt.Errorf("tunnel %s: %w: it is open already", id, ErrExists)
	default:
	}
	// A tunnel no restore took up (the move failed before) leaves no record.
	defer func() {
		end.mu.Lock()
		watched := end.onBroken != nil
		end.mu.Unlock()
		if !watched {
			s.moves.lazy.drop(id)
		}
	}()
	l, err := net.Listen("tcp4", "127.0.0.1:0")
	if err != nil {
		return fmt.Errorf("tunnel %s: %w", id, err)
	}
	defer l.Close()
	end.port = l.Addr().(*net.TCPAddr).Port
	close(end.ready)
	if err := stream.Send(&migratev1.TunnelData{}); err != nil {
		return err
	}
	// Stop accepting when the source goes away or nobody connects in time.
	accepted := make(chan net.Conn, 1)
	go func() {
		c, err := l.Accept()
		if err != nil {
			close(accepted)
			return
		}
		accepted <- c
	}()
	var conn net.Conn
	select {
	case c, ok := <-accepted:
		if !ok {
			return fmt.Errorf("tunnel %s: accept failed", id)
		}
		conn = c
	case <-stream.Context().Done():
		end.breakWith(stream.Context().Err())
		return stream.Context().Err()
	case <-time.After(tunnelAcceptTimeout):
		return fmt.Errorf("tunnel %s: %w: no connection from the lazy-pages daemon", id, ErrUnavailable)
	}
	l.Close()
	defer conn.Close()
	// Once the daemon closed its end the stream ends too: the receiving side
	// then sees a cancelled stream, which is no break.
	var finished atomic.Bool
	defer finished.Store(true)
	// source -> daemon. A clean end of the source's stream means its page server
	// is done; an error means the source is gone: the container must be stopped
	// before the daemon notices (it would let the missing pages read as zeros).
	go func() {
		if serr, _ := pumpIn(stream, conn); serr != nil {
			if !finished.Load() {
				end.breakWith(fmt.Errorf("tunnel from the source: %w", serr))
			}
			conn.Close()
		}
	}()
	// daemon -> source, until the daemon closes its connection.
	if serr, _ := pumpOut(conn, stream, func(int) {}); serr != nil {
		end.breakWith(fmt.Errorf("tunnel to the source: %w", serr))
		return serr
	}
	finished.Store(true)
	return nil
}

// tunnelStream is either end of a Peer.Tunnel stream.
type tunnelStream interface {
	Send(*migratev1.TunnelData) error
	Recv() (*migratev1.TunnelData, error)
}

// pumpIn writes the stream's data to conn until the stream ends. A clean end
// closes conn's write side and returns nothing; otherwise it returns the
// stream's error or conn's write error.
func pumpIn(stream tunnelStream, conn net.Conn) (streamErr, writeErr error) {
	for {
		m, err := stream.Recv()
		if errors.Is(err, io.EOF) {
			_ = conn.(*net.TCPConn).CloseWrite()
			return nil, nil
		}
		if err != nil {
			return err, nil
		}
		if _, err := conn.Write(m.Data); err != nil {
			return nil, err
		}
	}
}

// pumpOut sends what it reads from conn over the stream, calling sent with each
// chunk's size, until a send fails (sendErr) or conn's read does (readErr,
// io.EOF for a clean end).
func pumpOut(conn net.Conn, stream tunnelStream, sent func(int)) (sendErr, readErr error) {
	buf := make([]byte, tunnelChunk)
	for {
		n, err := conn.Read(buf)
		if n > 0 {
			if serr := stream.Send(&migratev1.TunnelData{Data: buf[:n]}); serr != nil {
				return serr, nil
			}
			sent(n)
		}
		if err != nil {
			return nil, err
		}
	}
}

// sourceTunnel is the source's end of a move's tunnel.
type sourceTunnel struct {
	cancel context.CancelFunc
	bytes  atomic.Int64 // page-server bytes sent to the target
	done   chan struct{}
	err    error // set before done is closed
}

// openTunnel opens the move's tunnel to node to and relays it to the local page
// server on 127.0.0.1:port. It returns once the target listens.
func (s *Service) openTunnel(ctx context.Context, to, moveID string, port int) (*sourceTunnel, error) {
	pc, err := s.peers.client(to)
	if err != nil {
		return nil, err
	}
	ctx, cancel := context.WithCancel(ctx)
	t := &sourceTunnel{cancel: cancel, done: make(chan struct{})}
	stream, err := pc.Tunnel(ctx)
	if err == nil {
		err = stream.Send(&migratev1.TunnelData{TransferId: moveID})
	}
	if err == nil {
		_, err = stream.Recv()
	}
	var conn net.Conn
	if err == nil {
		var d net.Dialer
		conn, err = d.DialContext(ctx, "tcp4", net.JoinHostPort("127.0.0.1", strconv.Itoa(port)))
	}
	if err != nil {
		cancel()
		return nil, fmt.Errorf("tunnel to %s: %w", to, peerErr(err))
	}
	var once sync.Once
	finish := func(err error) {
		once.Do(func() {
			t.err = err
			if err != nil {
				cancel()
			}
			conn.Close()
			close(t.done)
		})
	}
	// target -> page server
	go func() {
		switch serr, werr := pumpIn(stream, conn); {
		case serr != nil:
			finish(fmt.Errorf("tunnel from %s: %w", to, peerErr(serr)))
		case werr != nil:
			finish(fmt.Errorf("tunnel: page server: %w", werr))
		}
	}()
	// page server -> target; the page server closes once every page is served.
	go func() {
		switch serr, rerr := pumpOut(conn, stream, func(n int) { t.bytes.Add(int64(n)) }); {
		case serr != nil:
			finish(fmt.Errorf("tunnel to %s: %w", to, peerErr(serr)))
		case errors.Is(rerr, io.EOF):
			_ = stream.CloseSend()
			finish(nil)
		default:
			finish(fmt.Errorf("tunnel: page server: %w", rerr))
		}
	}()
	return t, nil
}

// close tears the tunnel down; after a clean end it only releases it.
func (t *sourceTunnel) close() {
	t.cancel()
	<-t.done
}
