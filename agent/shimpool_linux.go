package agent

import (
	"errors"
	"log/slog"
	"os/exec"
	"sync"
	"time"

	"github.com/migratehq/migrate/agent/shim"
)

// shimPool keeps one standby shim ready (shim.StartStandby), so a container
// created or restored, a moved one above all, does not wait for a shim
// process to start. A used standby is replaced in the background.
type shimPool struct {
	exe  string
	criu string // CRIU binary the standby starts ahead for a restore
	log  *slog.Logger

	mu      sync.Mutex
	standby *shim.Standby // guarded by mu
	filling bool          // guarded by mu
	closed  bool          // guarded by mu
}

// spawn starts a shim for o: the standby one when there is one, else a new
// process (shim.Spawn).
func (p *shimPool) spawn(o shim.SpawnOptions) (*exec.Cmd, error) {
	if p == nil {
		return shim.Spawn(o)
	}
	p.mu.Lock()
	sb := p.standby
	p.standby = nil
	p.mu.Unlock()
	// The next standby starts once this shim is up and a little after: its
	// exec, and CRIU's it starts, would compete for the CPU with this one's
	// restore (a move's downtime) on a small node.
	defer func() { time.AfterFunc(standbyRefillDelay, p.fill) }()
	if sb != nil {
		cmd, err := sb.Use(o)
		if !errors.Is(err, shim.ErrStandbyGone) {
			return cmd, err
		}
		p.log.Warn("standby shim gone; starting one", "id", o.ID, "err", err)
	}
	return shim.Spawn(o)
}

// standbyRefillDelay is how long after a spawn the next standby starts.
const standbyRefillDelay = 300 * time.Millisecond

// fill starts a standby shim in the background if none is ready.
func (p *shimPool) fill() {
	p.mu.Lock()
	if p.closed || p.standby != nil || p.filling {
		p.mu.Unlock()
		return
	}
	p.filling = true
	p.mu.Unlock()
	go func() {
		sb, err := shim.StartStandby(p.exe, p.criu)
		p.mu.Lock()
		defer p.mu.Unlock()
		p.filling = false
		if err != nil {
			p.log.Warn("standby shim", "err", err)
			return
		}
		if p.closed {
			sb.Close()
			return
		}
		p.standby = sb
	}()
}

// close stops the standby shim; spawn then starts shims itself.
func (p *shimPool) close() {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.closed = true
	if p.standby != nil {
		p.standby.Close()
		p.standby = nil
	}
}
