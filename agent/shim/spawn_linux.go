package shim

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/migratehq/migrate/agent/peercred"
	shimv1 "github.com/migratehq/migrate/api/shim/v1"
)

// SpawnOptions start a shim for a new container.
type SpawnOptions struct {
	// Exe is the migrated binary; the shim is `Exe shim ...`.
	Exe string
	Options
	// Timeout bounds the container's creation; 0 means one minute.
	Timeout time.Duration
}

// Args returns the shim's command line after the binary, as cmd/migrated parses it.
func (o Options) Args() []string {
	args := []string{"shim",
		"--id", o.ID, "--bundle", o.Bundle, "--dir", o.Dir, "--runtime-root", o.RuntimeRoot,
		"--log-max-bytes", strconv.FormatInt(o.LogMaxBytes, 10),
		"--log-max-files", strconv.Itoa(o.LogMaxFiles),
	}
	if o.NetworkLock != "" {
		args = append(args, "--network-lock", o.NetworkLock)
	}
	if o.CRIUPath != "" {
		args = append(args, "--criu", o.CRIUPath)
	}
	if o.CRIUVersion != "" {
		args = append(args, "--criu-version", o.CRIUVersion)
	}
	if o.Rootfs != "" {
		args = append(args, "--rootfs", o.Rootfs)
	}
	if o.Restore != "" {
		args = append(args, "--restore", o.Restore)
		if o.Verified {
			args = append(args, "--verified")
		}
		if o.Consume {
			args = append(args, "--consume")
		}
	}
	if o.NetNS != "" {
		args = append(args, "--netns", o.NetNS)
	}
	if o.LazyPagesDir != "" {
		args = append(args, "--lazy-pages-dir", o.LazyPagesDir)
	}
	return args
}

// Spawn starts a shim, which creates the container, and waits for its ready report.
// On success the returned Cmd must be waited for (the shim is our child until the
// agent exits; then it is reparented). On failure no shim is left running; a shim's
// own error comes back as a gRPC status error with the shim's code.
func Spawn(o SpawnOptions) (*exec.Cmd, error) {
	logf, err := os.OpenFile(filepath.Join(o.Dir, LogFile), os.O_WRONLY|os.O_CREATE|os.O_APPEND|unix.O_CLOEXEC, 0o600)
	if err != nil {
		return nil, fmt.Errorf("spawn shim %s: %w", o.ID, err)
	}
	defer logf.Close()
	r, w, err := os.Pipe()
	if err != nil {
		return nil, fmt.Errorf("spawn shim %s: %w", o.ID, err)
	}
	defer r.Close()
	cmd := shimCommand(o.Exe, o.Args()...)
	cmd.Stdout, cmd.Stderr = logf, logf
	cmd.ExtraFiles = []*os.File{w} // fd 3 = readyFd
	if err := cmd.Start(); err != nil {
		w.Close()
		return nil, fmt.Errorf("spawn shim %s: %w", o.ID, err)
	}
	w.Close()
	return awaitReady(cmd, r, o)
}

// shimCommand is exe (migrated) run with args as a shim.
func shimCommand(exe string, args ...string) *exec.Cmd {
	cmd := exec.Command(exe, args...)
	cmd.Args[0] = "migrated-shim"
	cmd.Dir = "/"
	cmd.Env = []string{"PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"}
	// Its own session: no signals from the agent's terminal or process group.
	cmd.SysProcAttr = &syscall.SysProcAttr{Setsid: true}
	return cmd
}

// awaitReady waits for the ready report of the started shim cmd on r.
func awaitReady(cmd *exec.Cmd, r *os.File, o SpawnOptions) (*exec.Cmd, error) {
	if o.Timeout == 0 {
		o.Timeout = time.Minute
	}
	type result struct {
		msg readyMsg
		err error
	}
	ch := make(chan result, 1)
	go func() {
		line, err := bufio.NewReader(r).ReadBytes('\n')
		if err != nil && len(line) == 0 {
			ch <- result{err: fmt.Errorf("shim exited before reporting (see %s)", filepath.Join(o.Dir, LogFile))}
			return
		}
		var m readyMsg
		if err := json.Unmarshal(line, &m); err != nil {
			ch <- result{err: fmt.Errorf("shim sent %q: %w", line, err)}
			return
		}
		ch <- result{msg: m}
	}()
	fail := func(err error) (*exec.Cmd, error) {
		_ = cmd.Process.Kill()
		_ = cmd.Wait()
		return nil, err
	}
	select {
	case res := <-ch:
		if res.err != nil {
			return fail(fmt.Errorf("spawn shim %s: %w", o.ID, res.err))
		}
		if !res.msg.OK {
			// The shim cleaned up and exits by itself; reap it.
			_ = cmd.Wait()
			code := res.msg.Code
			if code == codes.OK {
				code = codes.Unknown
			}
			return nil, status.Error(code, res.msg.Error)
		}
		return cmd, nil
	case <-time.After(o.Timeout):
		return fail(fmt.Errorf("spawn shim %s: no report within %s", o.ID, o.Timeout))
	}
}

// Client is the agent's connection to one shim.
type Client struct {
	shimv1.ShimClient
	conn *grpc.ClientConn
}

// Connect makes a client for the shim serving in container directory dir and checks
// it answers.
func Connect(ctx context.Context, dir string) (*Client, *shimv1.StateResponse, error) {
	sock := filepath.Join(dir, SocketFile)
	if _, err := os.Stat(sock); err != nil {
		return nil, nil, fmt.Errorf("connect shim: %w", err)
	}
	conn, err := peercred.Dial(sock)
	if err != nil {
		return nil, nil, fmt.Errorf("connect shim: %w", err)
	}
	c := &Client{ShimClient: shimv1.NewShimClient(conn), conn: conn}
	ctx, cancel := context.WithTimeout(ctx, 3*time.Second)
	defer cancel()
	st, err := c.State(ctx, &shimv1.StateRequest{}, grpc.WaitForReady(false))
	if err != nil {
		conn.Close()
		return nil, nil, fmt.Errorf("connect shim: %w", err)
	}
	return c, st, nil
}

// Close closes the connection; the shim keeps running.
func (c *Client) Close() error { return c.conn.Close() }
