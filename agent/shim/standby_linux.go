package shim

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"

	"golang.org/x/sys/unix"
)

// optionsFd is the fd a standby shim reads its Options on
// (StartStandby's ExtraFiles[1]).
const optionsFd = 4

// ErrStandbyGone is Use's error when the standby shim was gone before it
// took its options: nothing was started, the caller may Spawn instead.
var ErrStandbyGone = errors.New("standby shim gone")

// Standby is a shim process started before its container is known, so that
// the exec of the agent's binary and the Go runtime's start (~30 ms idle,
// several times that on a busy node) are not paid when a container is
// created or restored: inside a move's downtime in particular.
type Standby struct {
	cmd   *exec.Cmd
	opts  *os.File // write end of the options pipe
	ready *os.File // read end of the ready pipe
}

// StartStandby starts `exe shim-standby`, which makes what a restore needs
// first (kit, with CRIU at criuPath; none if "") and then waits for its
// Options.
func StartStandby(exe, criuPath string) (*Standby, error) {
	r, w, err := os.Pipe()
	if err != nil {
		return nil, fmt.Errorf("standby shim: %w", err)
	}
	or, ow, err := os.Pipe()
	if err != nil {
		r.Close()
		w.Close()
		return nil, fmt.Errorf("standby shim: %w", err)
	}
	args := []string{"shim-standby"}
	if criuPath != "" {
		args = append(args, "--criu", criuPath)
	}
	cmd := shimCommand(exe, args...)
	cmd.ExtraFiles = []*os.File{w, or} // fd 3 = readyFd, fd 4 = optionsFd
	err = cmd.Start()
	w.Close()
	or.Close()
	if err != nil {
		r.Close()
		ow.Close()
		return nil, fmt.Errorf("standby shim: %w", err)
	}
	return &Standby{cmd: cmd, opts: ow, ready: r}, nil
}

// Use hands o to the standby shim, which then creates or restores the
// container as a shim from Spawn would; the result is Spawn's. A standby
// that exited meanwhile gives ErrStandbyGone.
func (sb *Standby) Use(o SpawnOptions) (*exec.Cmd, error) {
	defer sb.ready.Close()
	b, err := json.Marshal(o.Options)
	if err != nil {
		sb.opts.Close()
		sb.stop()
		return nil, fmt.Errorf("spawn shim %s: %w", o.ID, err)
	}
	_, err = sb.opts.Write(b)
	if cerr := sb.opts.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		sb.stop()
		return nil, fmt.Errorf("spawn shim %s: %w: %v", o.ID, ErrStandbyGone, err)
	}
	return awaitReady(sb.cmd, sb.ready, o)
}

// Close stops a standby shim that was not used.
func (sb *Standby) Close() {
	sb.opts.Close()
	sb.ready.Close()
	sb.stop()
}

func (sb *Standby) stop() {
	_ = sb.cmd.Process.Kill()
	_ = sb.cmd.Wait()
}

// MainStandby is the process StartStandby starts: it makes its kit, reads
// its Options as JSON on optionsFd until EOF, sends its output to the
// container directory's log, and is Main from there. EOF without options
// (the agent closed it, or died) ends it quietly.
func MainStandby(criuPath string) error {
	k := makeKit(criuPath)
	f := os.NewFile(optionsFd, "options")
	b, err := io.ReadAll(f)
	f.Close()
	if err != nil {
		k.close()
		return fmt.Errorf("standby shim: %w", err)
	}
	if len(b) == 0 {
		k.close()
		return nil
	}
	var o Options
	if err := json.Unmarshal(b, &o); err != nil {
		k.close()
		return fmt.Errorf("standby shim: options: %w", err)
	}
	logf, err := os.OpenFile(filepath.Join(o.Dir, LogFile), os.O_WRONLY|os.O_CREATE|os.O_APPEND|unix.O_CLOEXEC, 0o600)
	if err != nil {
		k.close()
		return fmt.Errorf("standby shim: %w", err)
	}
	for _, fd := range []int{1, 2} {
		if err := unix.Dup3(int(logf.Fd()), fd, 0); err != nil {
			logf.Close()
			k.close()
			return fmt.Errorf("standby shim: log: %w", err)
		}
	}
	logf.Close()
	return mainWith(o, k)
}
