package criu

import (
	"context"
	"errors"
	"fmt"
	"os"

	"github.com/checkpoint-restore/go-criu/v8/rpc"
)

// Version asks CRIU for its version (RPC VERSION).
func (c *Client) Version(ctx context.Context) (Version, error) {
	resp, err := c.do(ctx, call{op: "version", req: &rpc.CriuReq{Type: rpc.CriuReqType_VERSION.Enum()}})
	if err != nil {
		return Version{}, err
	}
	return versionFromRPC(resp.GetVersion())
}

func versionFromRPC(v *rpc.CriuVersion) (Version, error) {
	if v == nil {
		return Version{}, errors.New("criu version: empty answer")
	}
	out := Version{Major: int(v.GetMajorNumber()), Minor: int(v.GetMinorNumber()), Sublevel: int(v.GetSublevel())}
	out.Raw = fmt.Sprintf("%d.%d", out.Major, out.Minor)
	if v.Sublevel != nil {
		out.Raw += fmt.Sprintf(".%d", out.Sublevel)
	}
	if g := v.GetGitid(); g != "" {
		out.Raw += " (" + g + ")"
	}
	return out, nil
}

// dirs opens the images and work directories CRIU reaches through
// /proc/<our pid>/fd. close must be called when the operation is over.
type dirs struct {
	images, work *os.File
}

func openDirs(images, work string) (*dirs, error) {
	d := &dirs{}
	var err error
	if d.images, err = openDir(images); err != nil {
		return nil, err
	}
	if work != "" {
		if d.work, err = openDir(work); err != nil {
			d.close()
			return nil, err
		}
	}
	return d, nil
}

func openDir(path string) (*os.File, error) {
	f, err := os.Open(path) // O_CLOEXEC
	if err != nil {
		return nil, fmt.Errorf("open %s: %w", path, err)
	}
	st, err := f.Stat()
	if err != nil || !st.IsDir() {
		f.Close()
		return nil, fmt.Errorf("open %s: not a directory", path)
	}
	return f, nil
}

func (d *dirs) workFd() int {
	if d.work == nil {
		return -1
	}
	return int(d.work.Fd())
}

func (d *dirs) close() {
	if d.images != nil {
		d.images.Close()
	}
	if d.work != nil {
		d.work.Close()
	}
}

// Dump checkpoints the process tree rooted at o.Pid into o.ImagesDir. Unless
// o.LeaveRunning is set, the tree is killed once dumped. n may be nil.
func (c *Client) Dump(ctx context.Context, o DumpOptions, n Notify) error {
	return c.dump(ctx, o, n, rpc.CriuReqType_DUMP, "dump")
}

// PreDump copies the memory of the tree rooted at o.Pid into o.ImagesDir
// while it keeps running, so that a later Dump with ParentImg pointing here
// only writes the pages changed since. It needs memory tracking
// (Features.MemTrack) to be worth anything.
func (c *Client) PreDump(ctx context.Context, o DumpOptions, n Notify) error {
	return c.dump(ctx, o, n, rpc.CriuReqType_PRE_DUMP, "pre-dump")
}

func (c *Client) dump(ctx context.Context, o DumpOptions, n Notify, typ rpc.CriuReqType, op string) error {
	d, err := openDirs(o.ImagesDir, o.WorkDir)
	if err != nil {
		return fmt.Errorf("criu %s: %w", op, err)
	}
	defer d.close()
	opts, err := o.rpcOpts(int(d.images.Fd()), d.workFd(), op+".log")
	if err != nil {
		return fmt.Errorf("criu %s: %w", op, err)
	}
	if o.LazyPages && o.PageServer != nil && o.PageServer.Address != "" {
		// The RPC ignores the page server's address for a lazy dump (CRIU would
		// listen on every interface); a configuration file still sets it.
		conf, err := lazyAddressConfig(o.ImagesDir, o.WorkDir, o.PageServer.Address)
		if err != nil {
			return fmt.Errorf("criu %s: %w", op, err)
		}
		defer os.Remove(conf)
		opts.ConfigFile = ptr(conf)
	}
	_, err = c.do(ctx, call{
		op:       op,
		req:      &rpc.CriuReq{Type: typ.Enum(), Opts: opts},
		notify:   n,
		logFile:  logPath(o.ImagesDir, o.WorkDir, opts.GetLogFile()),
		prepared: o.Prepared,
	})
	return err
}

// Restore restores the tree dumped in o.ImagesDir and returns the pid of its
// root. See RestoreOptions for whose child the tree becomes. n may be nil.
func (c *Client) Restore(ctx context.Context, o RestoreOptions, n Notify) (int, error) {
	if o.LazyPages && o.WorkDir != "" {
		// CRIU connects to the daemon's socket early in the restore.
		if err := waitLazyPagesDaemon(ctx, o.WorkDir); err != nil {
			return 0, fmt.Errorf("criu restore: %w", err)
		}
	}
	d, err := openDirs(o.ImagesDir, o.WorkDir)
	if err != nil {
		return 0, fmt.Errorf("criu restore: %w", err)
	}
	defer d.close()
	// fd 3 in swrk is its socket; inherited files follow, in a fresh swrk in
	// the order of o.InheritFds.
	prepared := o.Prepared
	fds, ok := []int(nil), false
	if prepared != nil {
		if fds, ok = prepared.inheritFds(o.InheritFds); !ok {
			prepared.Close()
			prepared = nil
		}
	}
	var extra []*os.File
	if prepared == nil {
		fds = make([]int, len(o.InheritFds))
		for i, f := range o.InheritFds {
			fds[i] = 4 + i
			extra = append(extra, f.File)
		}
	}
	opts, err := o.rpcOpts(int(d.images.Fd()), d.workFd(), fds)
	if err != nil {
		if prepared != nil {
			prepared.Close()
		}
		return 0, fmt.Errorf("criu restore: %w", err)
	}
	resp, err := c.do(ctx, call{
		op:        "restore",
		req:       &rpc.CriuReq{Type: rpc.CriuReqType_RESTORE.Enum(), Opts: opts},
		notify:    n,
		extra:     extra,
		logFile:   logPath(o.ImagesDir, o.WorkDir, opts.GetLogFile()),
		prepared:  prepared,
		reapLater: true,
	})
	if err != nil {
		return 0, err
	}
	pid := int(resp.GetRestore().GetPid())
	if pid <= 0 {
		return 0, &Error{Op: "restore", Err: fmt.Errorf("criu answered pid %d", pid), LogFile: logPath(o.ImagesDir, o.WorkDir, opts.GetLogFile())}
	}
	return pid, nil
}

// PageServerOptions configure StartPageServer.
type PageServerOptions struct {
	ImagesDir string // where received pages are written
	WorkDir   string
	Address   string // listen address; CRIU's default (all) if empty
	Port      int    // 0: CRIU picks a free port and reports it
	// LazyPages serves pages to a lazy-pages daemon instead of receiving them.
	LazyPages bool
	LogFile   string // default "page-server.log"
	LogLevel  int
}

// PageServerInfo describes a running page server.
type PageServerInfo struct {
	Pid  int // the page server process; it exits after serving one dump
	Port int
}

// StartPageServer starts a CRIU page server that receives the pages of one
// dump or pre-dump (DumpOptions.PageServer) into o.ImagesDir, and returns once
// it listens. It is not our child (it is re-parented to init or the nearest
// subreaper when swrk exits): callers that abandon it should open a pidfd for
// Pid at once and kill it through that.
//
// It uses PAGE_SERVER_CHLD: CRIU 4.2's daemon-mode PAGE_SERVER answers pid 0.
func (c *Client) StartPageServer(ctx context.Context, o PageServerOptions) (PageServerInfo, error) {
	d, err := openDirs(o.ImagesDir, o.WorkDir)
	if err != nil {
		return PageServerInfo{}, fmt.Errorf("criu page-server: %w", err)
	}
	defer d.close()
	logFile := o.LogFile
	if logFile == "" {
		logFile = "page-server.log"
	}
	opts, err := commonOpts(int(d.images.Fd()), d.workFd(), logFile, o.LogLevel, CgroupModeDefault, false, "", nil, nil)
	if err != nil {
		return PageServerInfo{}, fmt.Errorf("criu page-server: %w", err)
	}
	if o.Port < 0 || o.Port > 65535 {
		return PageServerInfo{}, fmt.Errorf("criu page-server: port %d out of range", o.Port)
	}
	opts.Ps = &rpc.CriuPageServerInfo{Port: ptr(int32(o.Port))}
	setString(&opts.Ps.Address, o.Address)
	setTrue(&opts.LazyPages, o.LazyPages)
	lp := logPath(o.ImagesDir, o.WorkDir, logFile)
	resp, err := c.do(ctx, call{
		op:      "page-server",
		req:     &rpc.CriuReq{Type: rpc.CriuReqType_PAGE_SERVER_CHLD.Enum(), Opts: opts},
		want:    rpc.CriuReqType_PAGE_SERVER, // CRIU answers both requests with this type
		logFile: lp,
	})
	if err != nil {
		return PageServerInfo{}, err
	}
	ps := resp.GetPs()
	if ps.GetPid() <= 0 || ps.GetPort() <= 0 {
		return PageServerInfo{}, &Error{Op: "page-server", Err: fmt.Errorf("criu answered pid %d port %d", ps.GetPid(), ps.GetPort()), LogFile: lp}
	}
	return PageServerInfo{Pid: int(ps.GetPid()), Port: int(ps.GetPort())}, nil
}
