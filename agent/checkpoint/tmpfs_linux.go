package checkpoint

import (
	"bufio"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	goruntime "runtime"
	"strings"

	"github.com/moby/sys/mountinfo"
	"golang.org/x/sys/unix"

	"github.com/migratehq/migrate/transfer/layer"
)

// tmpfsDir holds the content of the carried tmpfs mounts in a checkpoint.
const tmpfsDir = "tmpfs"

// carryTmpfs takes the container's own tmpfs mounts (its /dev, /dev/shm,
// masked directories, the cgroup v1 directory...) out of CRIU's hands: CRIU
// archives each with tar and gzip in a process of its own and extracts it
// again at restore, ~20 ms per mount each way, 5 mounts in a default spec.
// Here each is copied into the checkpoint in-process (a tar under tmpfsDir)
// and returned, for the dump to declare external (ext: the mounts it
// declares external already); the restore mounts a tmpfs with the same options,
// fills it and hands it to CRIU (restoreTmpfs), which binds it in place with
// the mount's own flags. The container must be frozen: nothing may change
// between the copy and the dump. A mount that is not plainly the container's
// own (shared with the host or bound from it, several roots of one file
// system, propagation to or from elsewhere) stays with CRIU.
func carryTmpfs(pid int, tmp string, ext map[string]string) ([]Tmpfs, error) {
	f, err := os.Open(fmt.Sprintf("/proc/%d/mountinfo", pid))
	if err != nil {
		return nil, fmt.Errorf("tmpfs: %w", err)
	}
	infos, err := mountinfo.GetMountsFromReader(f, nil)
	f.Close()
	if err != nil {
		return nil, fmt.Errorf("tmpfs: %w", err)
	}
	mounts := carriable(infos, ext)
	if len(mounts) == 0 {
		return nil, nil
	}
	fds, err := cloneMounts(pid, mounts)
	if err != nil {
		return nil, fmt.Errorf("tmpfs: %w", err)
	}
	// Closing a detached copy unmounts it, which waits for an RCU grace period
	// (ms each): not while the container is frozen.
	defer func() {
		go func() {
			for _, fd := range fds {
				unix.Close(fd)
			}
		}()
	}()
	var out []Tmpfs
	for i, mi := range mounts {
		t := Tmpfs{
			Mountpoint: mi.Mountpoint,
			Key:        fmt.Sprintf("tmpfs%d", len(out)),
			File:       fmt.Sprintf("%s/%d.tar", tmpfsDir, len(out)),
		}
		t.Options, t.ReadOnly = superOptions(mi.VFSOptions)
		ok, err := copyTmpfs(fds[i], filepath.Join(tmp, filepath.FromSlash(t.File)))
		if err != nil {
			return nil, fmt.Errorf("tmpfs %s: %w", mi.Mountpoint, err)
		}
		if ok {
			out = append(out, t)
		} // else content a tar cannot carry: CRIU's
	}
	return out, nil
}

// carriable picks the tmpfs mounts carryTmpfs may take: the only mount of
// its file system's root, no propagation peers, not "/" and not a bind the
// dump declares external already.
func carriable(infos []*mountinfo.Info, ext map[string]string) []*mountinfo.Info {
	type fsUse struct{ roots, propagated int }
	uses := map[[2]int]*fsUse{}
	for _, mi := range infos {
		k := [2]int{mi.Major, mi.Minor}
		if uses[k] == nil {
			uses[k] = &fsUse{}
		}
		if mi.Root == "/" {
			uses[k].roots++
		}
		if strings.Contains(mi.Optional, "shared:") || strings.Contains(mi.Optional, "master:") {
			uses[k].propagated++
		}
	}
	var out []*mountinfo.Info
	for _, mi := range infos {
		u := uses[[2]int{mi.Major, mi.Minor}]
		if mi.FSType != "tmpfs" || mi.Root != "/" || mi.Mountpoint == "/" || u.roots != 1 || u.propagated != 0 {
			continue
		}
		if _, ok := ext[mi.Mountpoint]; ok {
			continue
		}
		out = append(out, mi)
	}
	return out
}

// superOptions returns a tmpfs's file-system options for mounting a copy,
// without rw/ro, and whether it was read-only.
func superOptions(vfs string) (string, bool) {
	var keep []string
	ro := false
	for _, o := range strings.Split(vfs, ",") {
		switch o {
		case "ro":
			ro = true
		case "rw", "":
		default:
			keep = append(keep, o)
		}
	}
	return strings.Join(keep, ","), ro
}

// copyTmpfs writes the content of the detached mount fd (cloneMounts) to
// path as a tar. It reports false, leaving no file, when the content has
// what a tar of layer.WriteDiff cannot carry.
func copyTmpfs(fd int, path string) (bool, error) {
	if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
		return false, err
	}
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_EXCL|unix.O_CLOEXEC, 0o600)
	if err != nil {
		return false, err
	}
	_, err = layer.WriteDiff(fmt.Sprintf("/proc/self/fd/%d/.", fd), f) // "/." follows the fd's link
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		os.Remove(path)
		if errors.Is(err, layer.ErrUnsupported) {
			return false, nil
		}
		return false, err
	}
	return true, nil
}

// cloneMounts returns fds of detached copies of the mounts in pid's mount
// namespace, without their submounts. open_tree clones only mounts of the
// caller's namespace: a locked thread with its own fs context enters pid's
// and is thrown away after (never unlocked).
func cloneMounts(pid int, mounts []*mountinfo.Info) ([]int, error) {
	type result struct {
		fds []int
		err error
	}
	ch := make(chan result, 1)
	go func() {
		goruntime.LockOSThread()
		var fds []int
		err := func() error {
			ns, err := os.Open(fmt.Sprintf("/proc/%d/ns/mnt", pid))
			if err != nil {
				return err
			}
			defer ns.Close()
			if err := unix.Unshare(unix.CLONE_FS); err != nil {
				return fmt.Errorf("unshare fs: %w", err)
			}
			if err := unix.Setns(int(ns.Fd()), unix.CLONE_NEWNS); err != nil {
				return fmt.Errorf("enter mount namespace of %d: %w", pid, err)
			}
			for _, mi := range mounts {
				fd, err := unix.OpenTree(unix.AT_FDCWD, mi.Mountpoint, unix.OPEN_TREE_CLONE|unix.OPEN_TREE_CLOEXEC|unix.AT_SYMLINK_NOFOLLOW)
				if err != nil {
					return fmt.Errorf("clone mount %s: %w", mi.Mountpoint, err)
				}
				fds = append(fds, fd)
			}
			return nil
		}()
		if err != nil {
			for _, fd := range fds {
				unix.Close(fd)
			}
			fds = nil
		}
		ch <- result{fds, err}
	}()
	r := <-ch
	return r.fds, r.err
}

// restoreTmpfs mounts a fresh tmpfs for each carried one under dir, fills it
// from the checkpoint in ckpt and adds it to ext under its key. The caller
// detaches them with dir (a mount of its own) once CRIU has bound them into
// the container (which keeps them), also when this fails.
func restoreTmpfs(m *Manifest, ckpt, dir string, ext map[string]string) error {
	for i, t := range m.Tmpfs {
		if t.Key == "" || !strings.HasPrefix(t.Mountpoint, "/") {
			return fmt.Errorf("%w: tmpfs entry %d: no key or mount point", ErrCorrupt, i)
		}
		src, err := listedPath(ckpt, m, t.File)
		if err != nil {
			return err
		}
		p := filepath.Join(dir, fmt.Sprintf("tmpfs%d", i))
		if err := os.MkdirAll(p, 0o700); err != nil {
			return err
		}
		if err := unix.Mount("tmpfs", p, "tmpfs", 0, t.Options); err != nil {
			return fmt.Errorf("tmpfs %s: mount with %q: %w", t.Mountpoint, t.Options, err)
		}
		// Its own peer group: the container's copy must not propagate to the
		// host's mount tree.
		if err := unix.Mount("", p, "", unix.MS_PRIVATE, ""); err != nil {
			return fmt.Errorf("tmpfs %s: %w", t.Mountpoint, err)
		}
		if err := fillTmpfs(src, p); err != nil {
			return fmt.Errorf("tmpfs %s: %w", t.Mountpoint, err)
		}
		if t.ReadOnly {
			if err := unix.Mount("", p, "", unix.MS_REMOUNT|unix.MS_RDONLY, t.Options); err != nil {
				return fmt.Errorf("tmpfs %s: read-only: %w", t.Mountpoint, err)
			}
		}
		ext[t.Key] = p
	}
	return nil
}

// fillTmpfs extracts a carried tmpfs's tar into dir. It came with the
// checkpoint: layer.ApplyDiff refuses entries that would leave dir. Device
// nodes are allowed (a container's /dev is a tmpfs); the container's device
// cgroup still decides what it may open.
func fillTmpfs(src, dir string) error {
	f, err := os.Open(src)
	if err != nil {
		return err
	}
	defer f.Close()
	if _, err := layer.ApplyDiff(bufio.NewReader(f), dir, layer.ApplyOptions{AllowDevices: true}); err != nil {
		return err
	}
	return nil
}

// listedPath returns the path of rel in the checkpoint in dir if the
// manifest lists it: a verified checkpoint has it, inside dir.
func listedPath(dir string, m *Manifest, rel string) (string, error) {
	for _, f := range m.Files {
		if f.Path == rel {
			return filepath.Join(dir, filepath.FromSlash(filepath.ToSlash(filepath.Clean(rel)))), nil
		}
	}
	return "", fmt.Errorf("%s: %w: %s is not in the manifest", dir, ErrCorrupt, rel)
}
