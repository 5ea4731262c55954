package criu

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// lazyAddressConfig writes a CRIU configuration file that sets the page
// server's listen address, into the work directory (the images directory when
// work is ""), and returns its path.
func lazyAddressConfig(images, work, address string) (string, error) {
	dir := work
	if dir == "" {
		dir = images
	}
	p := filepath.Join(dir, "lazy-dump.conf")
	if err := os.WriteFile(p, []byte("address "+address+"\n"), 0o600); err != nil {
		return "", fmt.Errorf("page server address: %w", err)
	}
	return p, nil
}

// LazyPagesOptions configure StartLazyPages.
type LazyPagesOptions struct {
	// ImagesDir holds the images of a lazy dump (DumpOptions.LazyPages).
	ImagesDir string
	// WorkDir is where the daemon listens for the restore (CRIU's
	// lazy-pages.socket): it must be the WorkDir of the lazy restore.
	WorkDir string
	// Address and Port are the dumping CRIU's page server.
	Address string
	Port    int
	// LogFile is a name inside WorkDir; default "lazy-pages.log".
	LogFile  string
	LogLevel int
}

// lazyStartingFile, in a lazy-pages daemon's work directory, says the daemon
// was launched and does not listen yet: a lazy restore in that directory waits
// until it is gone (LaunchLazyPages, waitLazyPagesDaemon).
const lazyStartingFile = "lazy-pages.starting"

// lazyStartTimeout bounds a restore's wait for a launched daemon.
const lazyStartTimeout = 2 * time.Minute

// LazyPages is a running `criu lazy-pages` daemon. It takes the userfaultfds of
// a lazy restore, fetches faulting pages from the page server first and all
// the others in the background, and exits once the restored tree has every
// page. It has no RPC; it is CRIU's command line.
type LazyPages struct {
	cmd     *exec.Cmd
	logFile string
	done    chan struct{}
	err     error // set before done is closed
	ready   chan bool
	readyOK bool // set before ready is closed
}

// StartLazyPages starts the daemon and returns once it listens for the
// restore. Cancelling ctx kills it.
func (c *Client) StartLazyPages(ctx context.Context, o LazyPagesOptions) (*LazyPages, error) {
	l, err := c.LaunchLazyPages(ctx, o)
	if err != nil {
		return nil, err
	}
	if err := l.WaitReady(ctx); err != nil {
		l.Kill()
		<-l.done
		return nil, err
	}
	return l, nil
}

// LaunchLazyPages starts the daemon and returns at once, so that the daemon's
// start (mostly CRIU probing the kernel) overlaps with preparing the restore.
// A lazy restore (Client.Restore with LazyPages) in the same work directory
// waits until the daemon listens or has exited. Cancelling ctx kills it.
func (c *Client) LaunchLazyPages(ctx context.Context, o LazyPagesOptions) (*LazyPages, error) {
	if err := checkBinary(c.path()); err != nil {
		return nil, err
	}
	if o.ImagesDir == "" || o.WorkDir == "" || o.Address == "" {
		return nil, errors.New("criu lazy-pages: images, work directory and page server address are required")
	}
	if o.Port <= 0 || o.Port > 65535 {
		return nil, fmt.Errorf("criu lazy-pages: port %d out of range", o.Port)
	}
	logFile := o.LogFile
	if logFile == "" {
		logFile = "lazy-pages.log"
	}
	if err := checkLogFile(logFile); err != nil {
		return nil, fmt.Errorf("criu lazy-pages: %w", err)
	}
	level := o.LogLevel
	if level == 0 {
		level = DefaultLogLevel
	}
	removeStaleKdatTmp(kdatTmp, time.Now())
	_, _ = ensureKdatCache(c.path(), false) // without it CRIU probes the kernel itself
	starting := filepath.Join(o.WorkDir, lazyStartingFile)
	if err := os.WriteFile(starting, nil, 0o600); err != nil {
		return nil, fmt.Errorf("criu lazy-pages: %w", err)
	}
	r, w, err := os.Pipe() // O_CLOEXEC; w becomes the daemon's fd 3
	if err != nil {
		os.Remove(starting)
		return nil, fmt.Errorf("criu lazy-pages: %w", err)
	}
	cmd := exec.CommandContext(ctx, c.path(), "lazy-pages", "--page-server",
		"--address", o.Address, "--port", strconv.Itoa(o.Port),
		"-D", o.ImagesDir, "-W", o.WorkDir, "-o", logFile, "-v"+strconv.Itoa(level),
		"--status-fd", "3")
	cmd.ExtraFiles = []*os.File{w}
	var stderr bytes.Buffer // read only after Wait
	cmd.Stderr = &stderr
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	cmd.WaitDelay = 5 * time.Second
	l := &LazyPages{cmd: cmd, logFile: filepath.Join(o.WorkDir, logFile), done: make(chan struct{}), ready: make(chan bool)}
	if err := cmd.Start(); err != nil {
		w.Close()
		r.Close()
		os.Remove(starting)
		return nil, &Error{Op: "lazy-pages", Err: err, LogFile: l.logFile}
	}
	w.Close()
	go func() {
		err := cmd.Wait()
		if err != nil {
			lines := logLines(l.logFile)
			if msg := strings.TrimSpace(stderr.String()); msg != "" {
				lines = append(lines, strings.Split(msg, "\n")...)
			}
			err = &Error{Op: "lazy-pages", Err: fmt.Errorf("%w: %w", ErrFailed, err), LogFile: l.logFile, Lines: lines}
		}
		l.err = err
		close(l.done)
	}()
	// CRIU writes one byte on the status fd once its socket listens; EOF means
	// it exited first. Either way a waiting restore may go on: it connects, or
	// fails to.
	go func() {
		defer r.Close()
		b := make([]byte, 1)
		n, _ := r.Read(b)
		os.Remove(starting)
		l.readyOK = n == 1
		close(l.ready)
	}()
	return l, nil
}

// WaitReady waits until the daemon listens for the restore; an error if it
// exited first or ctx ended.
func (l *LazyPages) WaitReady(ctx context.Context) error {
	select {
	case <-l.ready:
		if l.readyOK {
			return nil
		}
		<-l.done
		if l.err == nil {
			return &Error{Op: "lazy-pages", Err: errors.New("exited before it was ready"), LogFile: l.logFile, Lines: logLines(l.logFile)}
		}
		return l.err
	case <-ctx.Done():
		return &Error{Op: "lazy-pages", Err: ctx.Err(), LogFile: l.logFile}
	}
}

// waitLazyPagesDaemon waits while a daemon launched in workDir does not listen
// yet (LaunchLazyPages); it returns at once when none is starting there.
func waitLazyPagesDaemon(ctx context.Context, workDir string) error {
	p := filepath.Join(workDir, lazyStartingFile)
	deadline := time.Now().Add(lazyStartTimeout)
	for {
		if _, err := os.Stat(p); errors.Is(err, os.ErrNotExist) {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("lazy-pages daemon in %s not listening after %s", workDir, lazyStartTimeout)
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(2 * time.Millisecond):
		}
	}
}

// Pid is the daemon's process id.
func (l *LazyPages) Pid() int { return l.cmd.Process.Pid }

// LogFile is the absolute path of the daemon's log.
func (l *LazyPages) LogFile() string { return l.logFile }

// Done is closed when the daemon has exited.
func (l *LazyPages) Done() <-chan struct{} { return l.done }

// Err is nil if the daemon exited successfully: the restored tree got every
// page. Valid once Done is closed.
func (l *LazyPages) Err() error { return l.err }

// Kill ends the daemon at once. The pages it had not copied yet are lost.
func (l *LazyPages) Kill() {
	select {
	case <-l.done:
	default:
		_ = syscall.Kill(-l.cmd.Process.Pid, syscall.SIGKILL)
	}
}
