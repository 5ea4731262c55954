package checkpoint

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"time"

	specs "github.com/opencontainers/runtime-spec/specs-go"
	"golang.org/x/sys/unix"

	"github.com/migratehq/migrate/agent/network"
	"github.com/migratehq/migrate/criu"
	"github.com/migratehq/migrate/runtime/container"
	"github.com/migratehq/migrate/runtime/spec"
)

// Checkpointer dumps and restores containers of one runtime.
type Checkpointer struct {
	Runtime *container.Runtime
	CRIU    *criu.Client
	// NetworkLock is CRIU's network locking backend (criu.NetworkLock*).
	NetworkLock string

	// Version is CRIU's version when the caller knows it (the agent probes
	// once); zero means ask CRIU. Each CRIU call re-probes the kernel
	// (hundreds of ms where /run is not tmpfs), so it is asked at most once.
	Version criu.Version

	versionOnce sync.Once
	version     criu.Version
	versionErr  error
}

func (cp *Checkpointer) criuVersion(ctx context.Context) (criu.Version, error) {
	cp.versionOnce.Do(func() {
		if cp.Version.Major > 0 {
			cp.version = cp.Version
			return
		}
		cp.version, cp.versionErr = cp.CRIU.Version(ctx)
	})
	return cp.version, cp.versionErr
}

// Options are a checkpoint's choices.
type Options struct {
	ID           string // checkpoint id, recorded in the manifest
	LeaveRunning bool
	// Layer, when the container's root is an overlay, serialises its
	// writable layer into the named file of the checkpoint directory.
	Layer *Layer
	// Files, when set, is called after a successful dump with a function that
	// copies the file src into the checkpoint at dst, a path relative to the
	// checkpoint directory. The copies are in the manifest's file list like
	// CRIU's images. It runs after the dump so the caller can first collect
	// what the dumped processes wrote (their logs), and can hold its own locks
	// while it copies.
	Files func(copy func(dst, src string) error) error
	// Lazy, when set, makes a post-copy dump: memory pages stay out of the
	// images and CRIU serves them from the frozen tasks (see Lazy).
	Lazy *Lazy
}

// Lazy configures a lazy-pages dump. The container must be paused, unless
// Pause is set. Once the
// checkpoint directory is complete (its manifest written and renamed into
// place) and CRIU's page server listens on 127.0.0.1:Port, Ready is called;
// Checkpoint then returns only when the page server has served every page (a
// lazy-pages daemon took them all) or failed. Cancelling the context kills
// CRIU: the pages not served yet are lost, and the container stays paused.
type Lazy struct {
	Port  int
	Ready func(m *Manifest) error
	// Pause: the container may be running; the dump freezes it once CRIU's
	// process is started (its exec and start, ~30 ms, are then not downtime)
	// and sets Paused to the moment. On failure it stays frozen, as a paused
	// container does: the caller resumes it.
	Pause  bool
	Paused time.Time
}

// Layer is a layered root filesystem: a base with a content digest and the
// function that writes the writable changes into a file.
type Layer struct {
	BaseDigest string
	WriteDiff  func(path string) error
}

// Checkpoint dumps a running container into dir, which must not exist; dir
// appears complete (manifest last, then renamed into place) or not at all.
// If the dump fails the container keeps running: CRIU resumes it.
func (cp *Checkpointer) Checkpoint(ctx context.Context, c *container.Container, dir string, o Options) (_ *Manifest, retErr error) {
	id := c.ID()
	st, err := c.State()
	if err != nil {
		return nil, fmt.Errorf("checkpoint %s: %w", id, err)
	}
	if st.Status != specs.StateRunning && st.Status != "paused" {
		return nil, fmt.Errorf("checkpoint %s: container is %s: %w", id, st.Status, container.ErrNotRunning)
	}
	s := c.Spec()
	if s.Process.Terminal {
		return nil, fmt.Errorf("checkpoint %s: %w: it has a terminal", id, ErrNotCheckable)
	}
	if _, err := os.Lstat(dir); err == nil {
		return nil, fmt.Errorf("checkpoint %s: %s already exists", id, dir)
	}
	tmp := dir + ".partial"
	if err := os.RemoveAll(tmp); err != nil {
		return nil, err
	}
	images := filepath.Join(tmp, "images")
	if err := os.MkdirAll(images, 0o700); err != nil {
		return nil, fmt.Errorf("checkpoint %s: %w", id, err)
	}
	defer func() {
		if retErr != nil {
			os.RemoveAll(tmp)
		}
	}()
	v, err := cp.criuVersion(ctx)
	if err != nil {
		return nil, fmt.Errorf("checkpoint %s: %w", id, err)
	}
	m := &Manifest{
		FormatVersion: FormatVersion, ID: o.ID, ContainerID: id, Created: time.Now().UTC(), Spec: s,
		Runtime:     RuntimeState{InitPid: c.InitPid(), CgroupPath: c.Cgroup().CgroupPath(), Bundle: c.Bundle(), Status: string(st.Status)},
		CRIUVersion: v.String(), Kernel: kernel(), LeaveRunning: o.LeaveRunning,
		Rootfs: Rootfs{Path: c.Rootfs()},
	}
	for fd := 0; fd < 3; fd++ {
		link, err := os.Readlink(fmt.Sprintf("/proc/%d/fd/%d", c.InitPid(), fd))
		if err == nil && strings.HasPrefix(link, "pipe:") {
			m.Stdio[fd] = link
		}
	}
	opts := criu.DumpOptions{
		ImagesDir: images, Pid: c.InitPid(), LeaveRunning: o.LeaveRunning,
		TCPEstablished: true, TCPSkipInFlight: true, ExtUnixSk: true, FileLocks: true,
		ManageCgroups: true, CgroupMode: criu.CgroupModeSoft,
		ExtMounts: bindMounts(s), NetworkLock: cp.NetworkLock,
		FreezeCgroup: freezerPath(c),
	}
	// A container left running must not change its files between the dump
	// and the rootfs diff, or a copy would run memory and files of different
	// moments: keep it frozen across both. CRIU leaves a frozen cgroup frozen.
	// Frozen from here, what the dump leaves out of CRIU's hands (below) is
	// of the same moment too.
	start := time.Now()
	pausedHere := false
	var fresh *network.Fresh
	if o.Lazy != nil && o.Lazy.Pause && st.Status == specs.StateRunning {
		// Before the freeze: CRIU's start, and what a fresh network namespace
		// holds for leaveOut to compare the container's with.
		freshc := make(chan *network.Fresh, 1)
		go func() {
			f, _ := network.FreshState(true) // on error leaveOut reads one itself
			freshc <- f
		}()
		if p, err := cp.CRIU.Prepare(ctx); err == nil {
			opts.Prepared = p
			defer p.Close() // unless the dump took it
		}
		fresh = <-freshc
		if err := c.Pause(); err != nil {
			return nil, fmt.Errorf("checkpoint %s: %w", id, err)
		}
		o.Lazy.Paused = time.Now()
		st.Status = "paused"
	}
	if o.Lazy == nil && o.LeaveRunning && o.Layer != nil && st.Status == specs.StateRunning {
		if err := c.Pause(); err != nil {
			return nil, fmt.Errorf("checkpoint %s: %w", id, err)
		}
		pausedHere = true
		defer func() {
			if pausedHere {
				_ = c.Resume()
			}
		}()
	}
	if err := leaveOut(c, tmp, m, &opts, st.Status == "paused" || pausedHere, fresh); err != nil {
		return nil, fmt.Errorf("checkpoint %s: %w", id, err)
	}
	if o.Lazy != nil {
		return cp.lazyCheckpoint(ctx, c, dir, tmp, m, opts, o)
	}
	if err := cp.CRIU.Dump(ctx, opts, criu.NoNotify{}); err != nil {
		return nil, fmt.Errorf("checkpoint %s: %w", id, err)
	}
	if o.Layer != nil {
		m.Rootfs.BaseDigest = o.Layer.BaseDigest
		m.Rootfs.Diff = "rootfs-diff.tar"
		if err := o.Layer.WriteDiff(filepath.Join(tmp, m.Rootfs.Diff)); err != nil {
			return nil, fmt.Errorf("checkpoint %s: rootfs diff: %w", id, err)
		}
	}
	if pausedHere {
		pausedHere = false
		if err := c.Resume(); err != nil {
			return nil, fmt.Errorf("checkpoint %s: resume: %w", id, err)
		}
	}
	m.Downtime = time.Since(start)
	if o.Files != nil {
		if err := o.Files(func(dst, src string) error { return copyInto(tmp, dst, src) }); err != nil {
			return nil, fmt.Errorf("checkpoint %s: extra files: %w", id, err)
		}
	}
	if m.Files, err = listFiles(tmp); err != nil {
		return nil, fmt.Errorf("checkpoint %s: %w", id, err)
	}
	if err := writeManifest(tmp, m, true); err != nil {
		return nil, fmt.Errorf("checkpoint %s: %w", id, err)
	}
	if err := os.Rename(tmp, dir); err != nil {
		return nil, fmt.Errorf("checkpoint %s: %w", id, err)
	}
	return m, nil
}

// freezerPath lets CRIU freeze the whole cgroup at once (faster and atomic
// against forks) instead of seizing tasks one by one.
func freezerPath(c *container.Container) string {
	if p := c.Cgroup().Path("freezer"); p != "" {
		return p
	}
	return c.Cgroup().Path("")
}

// leaveOut takes out of CRIU's hands what a restore can make anew: the
// network namespace when given by path or, in a frozen container, holding
// only its loopback (externalNetNS), and a frozen container's tmpfs mounts
// (carryTmpfs). The two looks run side by side, ~5 ms each in the downtime
// of a move; fresh is the fresh namespace the container's is compared with,
// read before the freeze (nil: read here).
func leaveOut(c *container.Container, tmp string, m *Manifest, opts *criu.DumpOptions, frozen bool, fresh *network.Fresh) error {
	var tmpfs []Tmpfs
	ext := maps.Clone(opts.ExtMounts)
	tmpfsErr := make(chan error, 1)
	if frozen {
		go func() {
			var err error
			tmpfs, err = carryTmpfs(c.InitPid(), tmp, ext)
			tmpfsErr <- err
		}()
	} else {
		tmpfsErr <- nil
	}
	netErr := externalNetNS(c, m, opts, frozen, fresh)
	if err := errors.Join(netErr, <-tmpfsErr); err != nil {
		return err
	}
	for _, t := range tmpfs {
		if opts.ExtMounts == nil {
			opts.ExtMounts = map[string]string{}
		}
		opts.ExtMounts[t.Mountpoint] = t.Key
	}
	m.Tmpfs = tmpfs
	if m.Network != nil && m.Network.Loopback != nil {
		// Nothing outside can send to it, and all that can is frozen: CRIU's
		// lock (nftables or iptables rules, ~15 ms each way) guards nothing.
		opts.NetworkLock = criu.NetworkLockSkip
	}
	return nil
}

// bindMounts marks every bind mount from the host as external: CRIU cannot
// dump another filesystem's content, the restore binds it again.
func bindMounts(s *specs.Spec) map[string]string {
	ext := map[string]string{}
	for _, mnt := range s.Mounts {
		if spec.IsBind(mnt) {
			ext[mnt.Destination] = mnt.Destination
		}
	}
	return ext
}

func kernel() string {
	var u unix.Utsname
	if unix.Uname(&u) != nil {
		return ""
	}
	return unix.ByteSliceToString(u.Release[:])
}

// RestoreOptions are a restore's choices.
type RestoreOptions struct {
	// Rootfs is where the container's root is on this host; the checkpoint's
	// recorded path when empty.
	Rootfs string
	Bundle string
	// Stdio replaces the init's fds 0-2 that were pipes at dump time.
	Stdio [3]*os.File
	// NetNS is the network namespace file to restore into, for a checkpoint
	// whose namespace was external (Manifest.Network).
	NetNS string
	// LazyPagesDir, when set, restores a lazy-pages checkpoint: a `criu
	// lazy-pages` daemon listens in this directory (criu.StartLazyPages), which
	// is then CRIU's work directory for the restore.
	LazyPagesDir string
	// Verified: the caller checked every file against the manifest (Verify or
	// VerifyKnown) and nobody else can write the directory: only the manifest is
	// read.
	Verified bool
	// Prepared is a CRIU swrk started ahead (criu.Client.Prepare) with the
	// Stdio files and FreshNetNS among its files; Restore uses it if it can
	// and closes it in any case.
	Prepared *criu.Prepared
	// FreshNetNS is a fresh network namespace with its loopback up, made
	// ahead: a loopback-only checkpoint whose loopback was up is restored
	// into it. Restore closes it.
	FreshNetNS *os.File
}

// Restore verifies the checkpoint in dir and restores it as container id.
// The restored init is a child of the calling process. On failure nothing is
// left: no cgroup, state, mount or process.
func (cp *Checkpointer) Restore(ctx context.Context, dir, id string, o RestoreOptions) (_ *container.Container, retErr error) {
	if o.Prepared != nil {
		defer o.Prepared.Close() // unless CRIU took it
	}
	if o.FreshNetNS != nil {
		defer o.FreshNetNS.Close()
	}
	verify := Verify
	if o.Verified {
		verify = Read
	}
	m, err := verify(dir)
	if err != nil {
		return nil, fmt.Errorf("restore %s: %w", id, err)
	}
	if _, err := cp.Runtime.Get(id); err == nil {
		return nil, fmt.Errorf("restore %s: %w", id, container.ErrExist)
	}
	rootfs := o.Rootfs
	if rootfs == "" {
		rootfs = m.Rootfs.Path
	}
	if st, err := os.Stat(rootfs); err != nil || !st.IsDir() {
		return nil, fmt.Errorf("restore %s: rootfs %s is not a directory", id, rootfs)
	}
	bundle := o.Bundle
	if bundle == "" {
		bundle = m.Runtime.Bundle
	}
	netns, err := restoreNetNS(m, o.NetNS, o.FreshNetNS)
	if err != nil {
		return nil, fmt.Errorf("restore %s: %w", id, err)
	}
	if netns != nil && netns != o.FreshNetNS {
		defer netns.Close()
	}
	// The container's state and cgroups (~8 ms on cgroup v1) are made while
	// the mounts below are.
	xc := make(chan error, 1)
	var x *container.Restoring
	go func() {
		var err error
		x, err = cp.Runtime.PrepareRestore(id, container.RestoreOptions{Bundle: bundle, Rootfs: rootfs, Spec: m.Spec, Child: true})
		xc <- err
	}()
	prepared := sync.OnceValue(func() error { return <-xc })
	defer func() {
		if prepared() == nil && retErr != nil {
			x.Abort()
		}
	}()
	// CRIU restores the mount namespace's root onto a mount point: a private
	// bind of the rootfs, removed again once the container has its own copy.
	// The work directory keeps CRIU's restore log beside the checkpoint (not
	// inside it, so its file list stays verifiable).
	work := dir + ".restore-" + id
	if o.LazyPagesDir != "" {
		work = o.LazyPagesDir // the daemon's socket is there already
	} else if err := os.RemoveAll(work); err != nil {
		return nil, err
	}
	// The staging mounts (the root, carried tmpfs mounts) sit in one private
	// tmpfs: a single detach removes them all at once, with one RCU grace
	// period (several ms here) instead of one per mount.
	stage := filepath.Join(work, "stage")
	if err := os.MkdirAll(stage, 0o700); err != nil {
		return nil, fmt.Errorf("restore %s: %w", id, err)
	}
	defer os.Remove(stage)
	if err := unix.Mount("tmpfs", stage, "tmpfs", unix.MS_NOSUID|unix.MS_NODEV|unix.MS_NOEXEC, "mode=0700,size=64k"); err != nil {
		return nil, fmt.Errorf("restore %s: staging mount: %w", id, err)
	}
	defer unix.Unmount(stage, unix.MNT_DETACH)
	if err := unix.Mount("", stage, "", unix.MS_PRIVATE, ""); err != nil {
		return nil, fmt.Errorf("restore %s: staging mount: %w", id, err)
	}
	root := filepath.Join(stage, "root")
	if err := os.Mkdir(root, 0o700); err != nil {
		return nil, fmt.Errorf("restore %s: %w", id, err)
	}
	if err := unix.Mount(rootfs, root, "", unix.MS_BIND|unix.MS_REC, ""); err != nil {
		return nil, fmt.Errorf("restore %s: bind rootfs: %w", id, err)
	}
	if err := unix.Mount("", root, "", unix.MS_PRIVATE|unix.MS_REC, ""); err != nil {
		return nil, fmt.Errorf("restore %s: rootfs propagation: %w", id, err)
	}

	ext := map[string]string{}
	for _, mnt := range m.Spec.Mounts {
		if spec.IsBind(mnt) {
			src := mnt.Source
			if !filepath.IsAbs(src) {
				src = filepath.Join(bundle, src)
			}
			ext[mnt.Destination] = src
		}
	}
	if err := restoreTmpfs(m, dir, stage, ext); err != nil {
		return nil, fmt.Errorf("restore %s: %w", id, err)
	}
	if err := prepared(); err != nil {
		return nil, fmt.Errorf("restore %s: %w", id, err)
	}
	var inherit []criu.InheritFd
	for fd, key := range m.Stdio {
		if key != "" && o.Stdio[fd] != nil {
			inherit = append(inherit, criu.InheritFd{Key: key, File: o.Stdio[fd]})
		}
	}
	if netns != nil {
		inherit = append(inherit, criu.InheritFd{Key: m.Network.NetNSKey, File: netns})
	}
	// The images of a checkpoint are read-only input; CRIU writes its log
	// next to them only in the work directory.
	opts := criu.RestoreOptions{
		Prepared:  o.Prepared,
		ImagesDir: filepath.Join(dir, "images"), WorkDir: work, Root: root,
		InheritFds: inherit, ExtMounts: ext,
		ManageCgroups: true, CgroupMode: criu.CgroupModeSoft,
		CgroupRoots:    map[string]string{"": x.CgroupPath()},
		TCPEstablished: true, ExtUnixSk: true, FileLocks: true, RstSibling: true,
		NetworkLock: cp.NetworkLock, LazyPages: o.LazyPagesDir != "",
	}
	if m.Network != nil && m.Network.Loopback != nil {
		opts.NetworkLock = criu.NetworkLockSkip // a fresh namespace: nothing to guard
	}
	pid, err := cp.CRIU.Restore(ctx, opts, criu.NoNotify{})
	if err != nil {
		return nil, fmt.Errorf("restore %s: %w", id, err)
	}
	c, err := x.Commit(pid)
	if err != nil {
		_ = unix.Kill(pid, unix.SIGKILL)
		_, _ = unix.Wait4(pid, nil, 0, nil)
		return nil, err
	}
	return c, nil
}

// Remove deletes a checkpoint directory and the restore logs beside it.
func Remove(dir string) error {
	if _, err := Read(dir); err != nil && !errors.Is(err, ErrNewerFormat) {
		return err
	}
	logs, _ := filepath.Glob(dir + ".restore-*")
	for _, l := range logs {
		os.RemoveAll(l)
	}
	return os.RemoveAll(dir)
}
