package criu

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"slices"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/checkpoint-restore/go-criu/v8/rpc"
	"golang.org/x/sys/unix"
)

// DefaultPath is where scripts/setup.sh installs CRIU.
const DefaultPath = "/usr/local/sbin/criu"

// Client runs CRIU operations, each in a `criu swrk` process of its own. The
// zero value uses DefaultPath. A Client is safe for concurrent use.
type Client struct {
	// Path of the CRIU binary; never looked up in $PATH.
	Path string
}

func (c *Client) path() string {
	if c == nil || c.Path == "" {
		return DefaultPath
	}
	return c.Path
}

// checkBinary returns an error wrapping ErrNotFound when path is missing.
func checkBinary(path string) error {
	st, err := os.Stat(path)
	if errors.Is(err, os.ErrNotExist) {
		return fmt.Errorf("%w at %s: run scripts/setup.sh (or make test) to build CRIU >= %d.%d", ErrNotFound, path, MinVersion.Major, MinVersion.Minor)
	}
	if err != nil {
		return fmt.Errorf("criu at %s: %w", path, err)
	}
	if st.IsDir() || st.Mode().Perm()&0o111 == 0 {
		return fmt.Errorf("criu at %s: not an executable file", path)
	}
	return nil
}

const (
	// maxRespSize bounds one CriuResp; CRIU's answers are a few hundred bytes.
	maxRespSize = 64 * 1024
	// swrkExitGrace is how long a swrk may take to exit once its socket is
	// closed before it is killed.
	swrkExitGrace = 10 * time.Second
)

// swrk is one running `criu swrk` and our end of its socket.
type swrk struct {
	cmd    *exec.Cmd
	sk     *os.File // our end; non-blocking, so deadlines interrupt reads
	stderr *os.File // unlinked temporary file: swrk's stderr, for early failures
	stop   func() bool

	mu      sync.Mutex
	reaping bool // guarded by mu: Wait has started, the process group may be gone
	killed  bool // guarded by mu: killed because the context ended
}

// start runs `criu swrk 3` with CRIU's end of a fresh socketpair as fd 3 and
// extra as fds 4, 5, ... Cancelling ctx kills swrk and its workers.
func (c *Client) start(ctx context.Context, extra []*os.File) (*swrk, error) {
	path := c.path()
	if err := checkBinary(path); err != nil {
		return nil, err
	}
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	removeStaleKdatTmp(kdatTmp, time.Now())
	_, _ = ensureKdatCache(path, false) // without it CRIU probes the kernel itself
	// CLOEXEC on both ends: a concurrent fork/exec elsewhere in the daemon
	// must not inherit either (CVE-2024-21626 class leaks); CRIU gets its end
	// through ExtraFiles, which dup2s it without CLOEXEC in the child only.
	fds, err := unix.Socketpair(unix.AF_UNIX, unix.SOCK_SEQPACKET|unix.SOCK_CLOEXEC|unix.SOCK_NONBLOCK, 0)
	if err != nil {
		return nil, fmt.Errorf("criu swrk socketpair: %w", err)
	}
	// Non-blocking is per open file description: ours stays non-blocking (so the
	// Go poller can interrupt reads), CRIU's must block.
	if err := unix.SetNonblock(fds[1], false); err != nil {
		unix.Close(fds[0])
		unix.Close(fds[1])
		return nil, fmt.Errorf("criu swrk socketpair: %w", err)
	}
	ours := os.NewFile(uintptr(fds[0]), "criu-swrk-client")
	theirs := os.NewFile(uintptr(fds[1]), "criu-swrk-server")
	defer theirs.Close()

	stderr, err := os.CreateTemp("", "criu-swrk-stderr-")
	if err != nil {
		ours.Close()
		return nil, fmt.Errorf("criu swrk stderr: %w", err)
	}
	os.Remove(stderr.Name())

	cmd := exec.Command(path, "swrk", "3")
	cmd.ExtraFiles = append([]*os.File{theirs}, extra...)
	cmd.Stderr = stderr
	cmd.Dir = "/"
	// Own process group: cancellation kills swrk and the workers it forks.
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := cmd.Start(); err != nil {
		ours.Close()
		stderr.Close()
		return nil, fmt.Errorf("start %s swrk: %w", path, err)
	}
	s := &swrk{cmd: cmd, sk: ours, stderr: stderr}
	s.stop = context.AfterFunc(ctx, s.kill)
	return s, nil
}

// kill stops swrk and its process group, and interrupts a pending read.
func (s *swrk) kill() {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.reaping {
		return
	}
	s.killed = true
	// The group leader is not reaped yet (reaping is false), so its pgid
	// cannot have been reused.
	_ = unix.Kill(-s.cmd.Process.Pid, unix.SIGKILL)
	_ = s.sk.SetDeadline(time.Now())
}

// close closes our end (swrk exits on EOF) and reaps swrk. Its exit status is
// not an error: swrk exits non-zero when its client hangs up, which is how
// every session ends.
func (s *swrk) close() {
	s.stop()
	s.sk.Close()
	s.mu.Lock()
	s.reaping = true
	s.mu.Unlock()
	done := make(chan struct{})
	t := time.AfterFunc(swrkExitGrace, func() {
		select {
		case <-done:
		default:
			// Process.Kill is safe after Wait: it goes through a pidfd.
			_ = s.cmd.Process.Kill()
		}
	})
	_ = s.cmd.Wait()
	close(done)
	t.Stop()
	s.stderr.Close()
}

// stderrTail returns the last lines swrk wrote to stderr.
func (s *swrk) stderrTail() []string {
	st, err := s.stderr.Stat()
	if err != nil || st.Size() == 0 {
		return nil
	}
	off := max(st.Size()-4096, 0)
	buf := make([]byte, st.Size()-off)
	n, _ := s.stderr.ReadAt(buf, off)
	lines, _ := ExtractLogLines(strings.NewReader(string(buf[:n])), maxErrorLines, logTailLines)
	return lines
}

func (s *swrk) send(req *rpc.CriuReq) error {
	b, err := req.MarshalVT()
	if err != nil {
		return fmt.Errorf("marshal %v request: %w", req.GetType(), err)
	}
	if _, err := s.sk.Write(b); err != nil {
		return fmt.Errorf("send %v request: %w", req.GetType(), err)
	}
	return nil
}

// recv reads one CriuResp and the file that may come with it.
func (s *swrk) recv() (*rpc.CriuResp, *os.File, error) {
	raw, err := s.sk.SyscallConn()
	if err != nil {
		return nil, nil, err
	}
	buf := make([]byte, maxRespSize)
	oob := make([]byte, unix.CmsgSpace(4*4))
	var n, oobn, flags int
	var rerr error
	err = raw.Read(func(fd uintptr) bool {
		n, oobn, flags, _, rerr = unix.Recvmsg(int(fd), buf, oob, unix.MSG_CMSG_CLOEXEC)
		return !errors.Is(rerr, unix.EAGAIN)
	})
	if err == nil {
		err = rerr
	}
	if err != nil {
		return nil, nil, fmt.Errorf("receive: %w", err)
	}
	files, ferr := unixRights(oob[:oobn])
	if ferr != nil || flags&(unix.MSG_TRUNC|unix.MSG_CTRUNC) != 0 {
		for _, f := range files {
			f.Close()
		}
		if ferr == nil {
			ferr = fmt.Errorf("message truncated (flags %#x)", flags)
		}
		return nil, nil, fmt.Errorf("receive: %w", ferr)
	}
	if n == 0 {
		return nil, nil, fmt.Errorf("receive: %w (criu swrk exited)", io.ErrUnexpectedEOF)
	}
	resp := &rpc.CriuResp{}
	if err := resp.UnmarshalVT(buf[:n]); err != nil {
		for _, f := range files {
			f.Close()
		}
		return nil, nil, fmt.Errorf("unmarshal response: %w", err)
	}
	var f *os.File
	for i, g := range files {
		if i == 0 {
			f = g
		} else {
			g.Close() // CRIU sends at most one
		}
	}
	return resp, f, nil
}

func unixRights(oob []byte) ([]*os.File, error) {
	if len(oob) == 0 {
		return nil, nil
	}
	msgs, err := unix.ParseSocketControlMessage(oob)
	if err != nil {
		return nil, err
	}
	var files []*os.File
	for _, m := range msgs {
		fds, err := unix.ParseUnixRights(&m)
		if err != nil {
			continue
		}
		for _, fd := range fds {
			files = append(files, os.NewFile(uintptr(fd), "criu-notify-fd"))
		}
	}
	return files, nil
}

// call is one request to CRIU.
type call struct {
	op  string // for errors: "dump", "restore", ...
	req *rpc.CriuReq
	// want is the type of CRIU's final answer when it is not req's type.
	want     rpc.CriuReqType
	notify   Notify     // nil: no notifications requested
	extra    []*os.File // fds 4, 5, ... in a fresh swrk
	logFile  string     // absolute path of CRIU's log, "" if none
	prepared *Prepared  // swrk to use instead of a fresh one (its own extra fds)
	// reapLater lets a successful call return before swrk exits (~10 ms of
	// unmapping here); WaitReaped waits for such exits.
	reapLater bool
}

// Prepared is a `criu swrk` started ahead of its request, so that CRIU's
// exec and start (20-40 ms here: it links two dozen shared libraries) are
// paid before a dump or restore rather than inside it (DumpOptions.Prepared,
// RestoreOptions.Prepared). A restore hands CRIU its inherited files at that
// start: Prepare takes them.
type Prepared struct {
	mu    sync.Mutex
	s     *swrk      // nil once used or closed
	files []*os.File // fds 4, 5, ... in swrk
}

// Prepare starts swrk for one later dump or restore, with files open in it
// from fd 4 on (a restore's InheritFds may then name any of them). The
// process lives until that call ends, ctx ends or Close.
func (c *Client) Prepare(ctx context.Context, files ...*os.File) (*Prepared, error) {
	s, err := c.start(ctx, files)
	if err != nil {
		return nil, err
	}
	return &Prepared{s: s, files: slices.Clone(files)}, nil
}

// inheritFds returns the fd each of fds' files has in the prepared swrk, or
// false if one of them was not handed to it. A file named twice needs two
// fds: CRIU takes each inherited fd over (and closes it).
func (p *Prepared) inheritFds(fds []InheritFd) ([]int, bool) {
	nums := make([]int, len(fds))
	used := make([]bool, len(p.files))
	for i, f := range fds {
		j := -1
		for k, pf := range p.files {
			if pf == f.File && !used[k] {
				j = k
				break
			}
		}
		if j < 0 {
			return nil, false
		}
		used[j] = true
		nums[i] = 4 + j
	}
	return nums, true
}

// take hands the process to one call.
func (p *Prepared) take() *swrk {
	p.mu.Lock()
	defer p.mu.Unlock()
	s := p.s
	p.s = nil
	return s
}

// Close stops the process if no call took it.
func (p *Prepared) Close() {
	if s := p.take(); s != nil {
		s.close()
	}
}

// reaping counts swrk processes of successful calls still exiting.
var reaping sync.WaitGroup

// WaitReaped waits until every swrk of a call that returned has exited. A
// process that leaves the cgroup it shares with them calls it first.
func WaitReaped() { reaping.Wait() }

// do runs a call in a fresh swrk, or the prepared one, and returns CRIU's
// final response.
func (c *Client) do(ctx context.Context, cl call) (*rpc.CriuResp, error) {
	if cl.notify != nil && cl.req.Opts != nil {
		cl.req.Opts.NotifyScripts = ptr(true)
	}
	var s *swrk
	if cl.prepared != nil {
		if s = cl.prepared.take(); s != nil {
			// The call's context may end it too.
			stop := context.AfterFunc(ctx, s.kill)
			defer stop()
		}
	}
	if s == nil {
		var err error
		if s, err = c.start(ctx, cl.extra); err != nil {
			if errors.Is(err, ErrNotFound) {
				return nil, err
			}
			return nil, &Error{Op: cl.op, Err: err}
		}
	}
	ok := false
	defer func() {
		if ok && cl.reapLater {
			reaping.Add(1)
			go func() {
				defer reaping.Done()
				s.close()
			}()
			return
		}
		s.close()
	}()

	fail := func(err error, resp *rpc.CriuResp) *Error {
		s.mu.Lock()
		killed := s.killed
		s.mu.Unlock()
		if killed && ctx.Err() != nil {
			err = fmt.Errorf("%w (criu swrk killed)", ctx.Err())
		}
		e := &Error{Op: cl.op, Err: err, LogFile: cl.logFile}
		e.Lines = logLines(cl.logFile)
		if msg := strings.TrimSpace(resp.GetCrErrmsg()); msg != "" && !containsLine(e.Lines, msg) {
			e.Lines = append([]string{msg}, e.Lines...)
		}
		e.Lines = append(e.Lines, s.stderrTail()...)
		return e
	}

	if err := s.send(cl.req); err != nil {
		return nil, fail(err, nil)
	}
	var notifyErr error
	for {
		resp, fd, err := s.recv()
		if err != nil {
			return nil, fail(errors.Join(notifyErr, err), nil)
		}
		if resp.GetType() == rpc.CriuReqType_NOTIFY && resp.GetSuccess() {
			script := resp.GetNotify().GetScript()
			var ext []string
			var nerr error
			if cl.notify != nil {
				ext, nerr = dispatchNotify(cl.notify, script, resp.GetNotify().GetPid(), fd)
			} else if fd != nil {
				fd.Close()
			}
			reply := &rpc.CriuReq{Type: rpc.CriuReqType_NOTIFY.Enum(), NotifySuccess: ptr(nerr == nil)}
			if len(ext) > 0 {
				reply.Opts = &rpc.CriuOpts{ImagesDirFd: ptr(int32(-1)), External: ext}
			}
			if nerr != nil {
				// CRIU aborts and still sends its final answer: keep reading.
				notifyErr = errors.Join(notifyErr, fmt.Errorf("notify %s: %w", script, nerr))
			}
			if err := s.send(reply); err != nil {
				return nil, fail(errors.Join(notifyErr, err), nil)
			}
			continue
		}
		if fd != nil {
			fd.Close()
		}
		if !resp.GetSuccess() {
			// CRIU's cr_errmsg is its first error, often a harmless one
			// (e.g. a failed rlimit raise); it is quoted among the lines,
			// not used as the summary.
			ferr := fmt.Errorf("%w", ErrFailed)
			if errno := resp.GetCrErrno(); errno != 0 {
				ferr = fmt.Errorf("%w: %w", ErrFailed, syscall.Errno(errno))
			}
			return resp, fail(errors.Join(notifyErr, ferr), resp)
		}
		if notifyErr != nil {
			return resp, fail(notifyErr, resp)
		}
		want := cl.req.GetType()
		if cl.want != rpc.CriuReqType_EMPTY {
			want = cl.want
		}
		if resp.GetType() != want {
			return resp, fail(fmt.Errorf("unexpected response %v to %v", resp.GetType(), cl.req.GetType()), resp)
		}
		ok = true
		return resp, nil
	}
}

func containsLine(lines []string, s string) bool {
	for _, l := range lines {
		if strings.Contains(l, s) {
			return true
		}
	}
	return false
}
