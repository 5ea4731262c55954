package shim

import (
	"io"
	"os"
	"slices"
	"sync"
	"time"

	"golang.org/x/sys/unix"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	shimv1 "github.com/migratehq/migrate/api/shim/v1"
	"github.com/migratehq/migrate/runtime/container"
)

// Exec runs a process in the container with the init's user, capabilities and
// security settings, streaming its output. Cancelling the call kills the process.
func (s *server) Exec(r *shimv1.ExecRequest, stream shimv1.Shim_ExecServer) error {
	if len(r.Args) == 0 {
		return status.Error(codes.InvalidArgument, "exec: no command given")
	}
	base := s.c.Spec().Process
	if base == nil {
		return status.Error(codes.FailedPrecondition, "exec: container has no process")
	}
	p := *base
	p.Terminal, p.ConsoleSize = false, nil
	p.Args = slices.Clone(r.Args)
	p.Env = append(slices.Clone(base.Env), r.Env...)
	if r.Cwd != "" {
		p.Cwd = r.Cwd
	}
	outR, outW, err := os.Pipe()
	if err != nil {
		return status.Errorf(codes.Internal, "exec: %v", err)
	}
	defer outR.Close()
	errR, errW, err := os.Pipe()
	if err != nil {
		outW.Close()
		return status.Errorf(codes.Internal, "exec: %v", err)
	}
	defer errR.Close()
	var stdin *os.File
	if len(r.Stdin) > 0 {
		inR, inW, err := os.Pipe()
		if err != nil {
			outW.Close()
			errW.Close()
			return status.Errorf(codes.Internal, "exec: %v", err)
		}
		defer inR.Close()
		stdin = inR
		go func() {
			_, _ = inW.Write(r.Stdin) // EPIPE when the process does not read it all
			inW.Close()
		}()
	}
	proc, err := s.c.Exec(&p, container.ExecOptions{Stdin: stdin, Stdout: outW, Stderr: errW})
	outW.Close()
	errW.Close()
	if err != nil {
		return toStatus(err)
	}
	var sendMu sync.Mutex
	send := func(m *shimv1.ExecOutput) error {
		sendMu.Lock()
		defer sendMu.Unlock()
		return stream.Send(m)
	}
	var copies sync.WaitGroup
	for _, c := range []struct {
		n int32
		r io.Reader
	}{{1, outR}, {2, errR}} {
		copies.Add(1)
		go func() {
			defer copies.Done()
			buf := make([]byte, 32*1024)
			for {
				n, err := c.r.Read(buf)
				if n > 0 {
					if send(&shimv1.ExecOutput{Stream: c.n, Data: slices.Clone(buf[:n])}) != nil {
						_ = unix.Kill(proc.Pid, unix.SIGKILL) // the caller is gone
					}
				}
				if err != nil {
					return
				}
			}
		}()
	}
	waited := make(chan struct{})
	go func() {
		select {
		case <-stream.Context().Done():
			_ = unix.Kill(proc.Pid, unix.SIGKILL) // still our unreaped child: the pid is its own
		case <-waited:
		}
	}()
	code, err := proc.Wait()
	close(waited)
	if err != nil {
		return status.Errorf(codes.Internal, "exec: wait: %v", err)
	}
	// A background child may hold the pipes; do not wait for it beyond a grace period.
	drained := make(chan struct{})
	go func() { copies.Wait(); close(drained) }()
	select {
	case <-drained:
	case <-time.After(time.Second):
		outR.Close()
		errR.Close()
		<-drained
	}
	return send(&shimv1.ExecOutput{Exited: true, ExitCode: int32(code)})
}
