package criu

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strings"

	"github.com/checkpoint-restore/go-criu/v8/rpc"
)

// CgroupMode is CRIU's --manage-cgroups mode. The zero value leaves CRIU's
// default (soft).
type CgroupMode string

const (
	CgroupModeDefault CgroupMode = ""
	CgroupModeIgnore  CgroupMode = "ignore"
	CgroupModeNone    CgroupMode = "none"
	CgroupModeProps   CgroupMode = "props"
	CgroupModeSoft    CgroupMode = "soft"
	CgroupModeFull    CgroupMode = "full"
	CgroupModeStrict  CgroupMode = "strict"
)

var cgroupModes = map[CgroupMode]rpc.CriuCgMode{
	CgroupModeIgnore: rpc.CriuCgMode_IGNORE,
	CgroupModeNone:   rpc.CriuCgMode_CG_NONE,
	CgroupModeProps:  rpc.CriuCgMode_PROPS,
	CgroupModeSoft:   rpc.CriuCgMode_SOFT,
	CgroupModeFull:   rpc.CriuCgMode_FULL,
	CgroupModeStrict: rpc.CriuCgMode_STRICT,
}

// Network lock backends, for DumpOptions.NetworkLock and
// RestoreOptions.NetworkLock. The empty string leaves CRIU's default
// (iptables).
const (
	NetworkLockIPTables = "iptables"
	NetworkLockNFTables = "nftables"
	NetworkLockSkip     = "skip"
)

var networkLocks = map[string]rpc.CriuNetworkLockMethod{
	NetworkLockIPTables: rpc.CriuNetworkLockMethod_IPTABLES,
	NetworkLockNFTables: rpc.CriuNetworkLockMethod_NFTABLES,
	NetworkLockSkip:     rpc.CriuNetworkLockMethod_SKIP,
}

// DefaultLogLevel is CRIU's debug level (4): dump and restore failures are
// rarely explained at lower levels.
const DefaultLogLevel = 4

// PageServer is the address of a CRIU page server that receives the memory
// pages of a dump or pre-dump instead of ImagesDir.
type PageServer struct {
	Address string
	Port    int
}

// DumpOptions configure Dump and PreDump. ImagesDir and Pid are required.
type DumpOptions struct {
	// Prepared, when set, is the swrk the dump runs in (Client.Prepare).
	Prepared  *Prepared
	ImagesDir string // where CRIU writes the images; must exist
	WorkDir   string // where CRIU writes its log; ImagesDir if empty
	// ParentImg is the previous pre-dump's images directory, relative to
	// ImagesDir (CRIU resolves it from there), e.g. "../pre-1".
	ParentImg string
	Pid       int // root of the process tree to dump; must be > 0
	// LeaveRunning resumes the tree after the dump instead of killing it.
	LeaveRunning bool

	TCPEstablished  bool
	TCPSkipInFlight bool
	ExtUnixSk       bool
	FileLocks       bool
	ShellJob        bool
	LinkRemap       bool
	ManageCgroups   bool
	CgroupMode      CgroupMode
	// External lists objects CRIU must not dump but expect at restore, in
	// CRIU's --external syntax: "pipe:[12345]", "mnt[/path]:key", "net[ino]:key"...
	External []string
	// ExtMounts maps a mount point inside the tree to the key a restore will
	// bind it to (CRIU's "mnt[path]:key").
	ExtMounts   map[string]string
	SkipMounts  []string
	NetworkLock string // "", NetworkLockIPTables, NetworkLockNFTables or NetworkLockSkip
	// LazyPages leaves memory pages out of the images, to be served later by a
	// page server (post-copy migration).
	LazyPages    bool
	PageServer   *PageServer
	TrackMem     bool // soft-dirty tracking for a later incremental dump
	AutoDedup    bool
	FreezeCgroup string // freeze through this cgroup rather than with ptrace
	Root         string
	LogFile      string // name inside WorkDir (no '/'); default "dump.log"/"pre-dump.log"
	LogLevel     int    // 0 means DefaultLogLevel
}

// InheritFd passes an open file to a restore in place of the external object
// named Key ("pipe:[12345]", "file[mnt_id:inode]"...).
type InheritFd struct {
	Key  string
	File *os.File
}

// RestoreOptions configure Restore. ImagesDir is required.
//
// A restore through the RPC is always detached: the restored tree is not a
// child of CRIU's worker. With RstSibling it becomes a child of the calling
// process (which must then reap it); without, it is re-parented to the nearest
// child subreaper or init when swrk exits.
type RestoreOptions struct {
	// Prepared, when set, is the swrk the restore runs in (Client.Prepare
	// with every file of InheritFds); if it lacks one, a fresh swrk does
	// and Prepared is closed.
	Prepared  *Prepared
	ImagesDir string
	WorkDir   string
	Root      string // root directory the tree is restored in (a container rootfs)

	InheritFds    []InheritFd
	External      []string
	ExtMounts     map[string]string // key from DumpOptions.ExtMounts -> host path
	ManageCgroups bool
	CgroupMode    CgroupMode
	// CgroupRoots moves the restored tree's cgroups: controller -> new root
	// path; the key "" applies to all controllers.
	CgroupRoots map[string]string

	TCPEstablished  bool
	ExtUnixSk       bool
	FileLocks       bool
	ShellJob        bool
	LinkRemap       bool
	RstSibling      bool
	LazyPages       bool
	OrphanPtsMaster bool // hand the pty master to OrphanPtsMasterNotify
	NetworkLock     string
	LsmProfile      string
	LogFile         string // name inside WorkDir; default "restore.log"
	LogLevel        int
}

// logPath returns the absolute path of the log CRIU writes for an operation.
func logPath(imagesDir, workDir, logFile string) string {
	dir := workDir
	if dir == "" {
		dir = imagesDir
	}
	if abs, err := filepath.Abs(dir); err == nil {
		dir = abs
	}
	return filepath.Join(dir, logFile)
}

func ptr[T any](v T) *T { return &v }

func checkLogFile(name string) error {
	if name == "" || strings.ContainsRune(name, '/') || name == "." || name == ".." {
		return fmt.Errorf("log file %q: want a plain file name (it is created in the work directory)", name)
	}
	return nil
}

// commonOpts fills what dump and restore share.
func commonOpts(imagesFd, workFd int, logFile string, logLevel int, cg CgroupMode, manage bool, netLock string, external []string, extMounts map[string]string) (*rpc.CriuOpts, error) {
	if err := checkLogFile(logFile); err != nil {
		return nil, err
	}
	if logLevel == 0 {
		logLevel = DefaultLogLevel
	}
	if logLevel < 0 || logLevel > 4 {
		return nil, fmt.Errorf("log level %d: want 0..4", logLevel)
	}
	o := &rpc.CriuOpts{
		ImagesDirFd: ptr(int32(imagesFd)),
		LogFile:     ptr(logFile),
		LogLevel:    ptr(int32(logLevel)),
	}
	if workFd >= 0 {
		o.WorkDirFd = ptr(int32(workFd))
	}
	if manage {
		o.ManageCgroups = ptr(true)
	}
	if cg != CgroupModeDefault {
		m, ok := cgroupModes[cg]
		if !ok {
			return nil, fmt.Errorf("cgroup mode %q: unknown", cg)
		}
		o.ManageCgroupsMode = &m
	}
	if netLock != "" {
		m, ok := networkLocks[netLock]
		if !ok {
			return nil, fmt.Errorf("network lock %q: want %q, %q or %q", netLock, NetworkLockIPTables, NetworkLockNFTables, NetworkLockSkip)
		}
		o.NetworkLock = &m
	}
	o.External = append(o.External, external...)
	keys := make([]string, 0, len(extMounts))
	for k := range extMounts {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	for _, k := range keys {
		o.External = append(o.External, fmt.Sprintf("mnt[%s]:%s", k, extMounts[k]))
	}
	return o, nil
}

// rpcOpts converts o for CRIU. imagesFd and workFd are descriptors of the
// calling process (CRIU opens them through /proc/<caller>/fd); workFd < 0
// means none.
func (o *DumpOptions) rpcOpts(imagesFd, workFd int, defaultLog string) (*rpc.CriuOpts, error) {
	if o.Pid <= 0 {
		// CRIU would dump the requesting process (us) when pid is unset.
		return nil, fmt.Errorf("pid %d: want the root of the tree to dump", o.Pid)
	}
	if o.ImagesDir == "" {
		return nil, errors.New("images directory not set")
	}
	logFile := o.LogFile
	if logFile == "" {
		logFile = defaultLog
	}
	r, err := commonOpts(imagesFd, workFd, logFile, o.LogLevel, o.CgroupMode, o.ManageCgroups, o.NetworkLock, o.External, o.ExtMounts)
	if err != nil {
		return nil, err
	}
	r.Pid = ptr(int32(o.Pid))
	setTrue(&r.LeaveRunning, o.LeaveRunning)
	setTrue(&r.TcpSkipInFlight, o.TCPSkipInFlight)
	setTrue(&r.TcpEstablished, o.TCPEstablished)
	setTrue(&r.ExtUnixSk, o.ExtUnixSk)
	setTrue(&r.FileLocks, o.FileLocks)
	setTrue(&r.ShellJob, o.ShellJob)
	setTrue(&r.LinkRemap, o.LinkRemap)
	setTrue(&r.LazyPages, o.LazyPages)
	setTrue(&r.TrackMem, o.TrackMem)
	setTrue(&r.AutoDedup, o.AutoDedup)
	r.SkipMnt = append(r.SkipMnt, o.SkipMounts...)
	setString(&r.ParentImg, o.ParentImg)
	setString(&r.FreezeCgroup, o.FreezeCgroup)
	setString(&r.Root, o.Root)
	if o.PageServer != nil {
		if o.PageServer.Port <= 0 || o.PageServer.Port > 65535 {
			return nil, fmt.Errorf("page server port %d: out of range", o.PageServer.Port)
		}
		r.Ps = &rpc.CriuPageServerInfo{Port: ptr(int32(o.PageServer.Port))}
		setString(&r.Ps.Address, o.PageServer.Address)
	}
	return r, nil
}

// rpcOpts converts o for CRIU; fds[i] is the fd of o.InheritFds[i] in swrk.
func (o *RestoreOptions) rpcOpts(imagesFd, workFd int, fds []int) (*rpc.CriuOpts, error) {
	if o.ImagesDir == "" {
		return nil, errors.New("images directory not set")
	}
	logFile := o.LogFile
	if logFile == "" {
		logFile = "restore.log"
	}
	r, err := commonOpts(imagesFd, workFd, logFile, o.LogLevel, o.CgroupMode, o.ManageCgroups, o.NetworkLock, o.External, o.ExtMounts)
	if err != nil {
		return nil, err
	}
	setTrue(&r.TcpEstablished, o.TCPEstablished)
	setTrue(&r.ExtUnixSk, o.ExtUnixSk)
	setTrue(&r.FileLocks, o.FileLocks)
	setTrue(&r.ShellJob, o.ShellJob)
	setTrue(&r.LinkRemap, o.LinkRemap)
	setTrue(&r.RstSibling, o.RstSibling)
	setTrue(&r.LazyPages, o.LazyPages)
	setTrue(&r.OrphanPtsMaster, o.OrphanPtsMaster)
	setString(&r.Root, o.Root)
	setString(&r.LsmProfile, o.LsmProfile)
	for i, f := range o.InheritFds {
		if f.Key == "" || f.File == nil {
			return nil, fmt.Errorf("inherit fd %d: key and file are required", i)
		}
		if i >= len(fds) {
			return nil, fmt.Errorf("inherit fd %d: no fd number", i)
		}
		r.InheritFd = append(r.InheritFd, &rpc.InheritFd{Key: ptr(f.Key), Fd: ptr(int32(fds[i]))})
	}
	ctrls := make([]string, 0, len(o.CgroupRoots))
	for k := range o.CgroupRoots {
		ctrls = append(ctrls, k)
	}
	sort.Strings(ctrls)
	for _, k := range ctrls {
		cr := &rpc.CgroupRoot{Path: ptr(o.CgroupRoots[k])}
		setString(&cr.Ctrl, k)
		r.CgRoot = append(r.CgRoot, cr)
	}
	return r, nil
}

func setTrue(dst **bool, v bool) {
	if v {
		*dst = ptr(true)
	}
}

func setString(dst **string, v string) {
	if v != "" {
		*dst = ptr(v)
	}
}
