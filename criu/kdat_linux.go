package criu

import (
	"bytes"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	goruntime "runtime"
	"sync"
	"time"

	"golang.org/x/sys/unix"

	"github.com/migratehq/migrate/runtime/atomicfile"
)

// kdatTmp is where CRIU writes its kernel-feature cache (/run/criu.kdat)
// before renaming it into place. CRIU creates it with O_EXCL and skips saving
// the cache when it exists, so a copy left by a CRIU killed while writing it
// makes every later CRIU probe the kernel again: 0.1-0.8 s of every dump,
// restore and lazy-pages daemon, all of it inside a move's downtime.
const kdatTmp = "/run/criu.kdat.tmp"

// kdatTmpMaxAge is the age from which a cache temporary file is stale: CRIU
// writes and renames it within milliseconds.
const kdatTmpMaxAge = time.Minute

// removeStaleKdatTmp removes path if it is on a tmpfs and older than
// kdatTmpMaxAge at now, and reports whether it did.
func removeStaleKdatTmp(path string, now time.Time) bool {
	var st unix.Statfs_t
	if unix.Statfs(filepath.Dir(path), &st) != nil || st.Type != unix.TMPFS_MAGIC {
		return false
	}
	fi, err := os.Lstat(path)
	if err != nil || !fi.Mode().IsRegular() || now.Sub(fi.ModTime()) < kdatTmpMaxAge {
		return false
	}
	return os.Remove(path) == nil
}

// kdatFile is CRIU's kernel-feature cache. CRIU reads it from any file
// system, but writes it only on a tmpfs (so that a reboot, maybe into
// another kernel, drops it).
const kdatFile = "/run/criu.kdat"

var kdatMu sync.Mutex

// ensureKdatCache gives CRIU a kernel-feature cache on hosts where it cannot
// keep one: /run is not a tmpfs. There every CRIU process probes the kernel
// again (70 ms on an idle 2-core VM, several times that under load), twice
// inside a move's downtime. The cache is made by `criu check` run in a
// private mount namespace with a tmpfs on /run, then copied to /run, where
// CRIU reads it. force remakes an existing one: the agent does at start, so
// a cache never outlives a reboot into another kernel by more than the time
// until the agent starts. CRIU drops a cache another build of it wrote (its
// magic carries the build time); it is made again on the next call.
func ensureKdatCache(criuPath string, force bool) (bool, error) {
	var st unix.Statfs_t
	if err := unix.Statfs(filepath.Dir(kdatFile), &st); err != nil || st.Type == unix.TMPFS_MAGIC {
		return false, nil // CRIU keeps it there itself
	}
	kdatMu.Lock()
	defer kdatMu.Unlock()
	if !force {
		if _, err := os.Lstat(kdatFile); err == nil {
			return false, nil
		}
	}
	b, err := probeKdat(criuPath)
	if err != nil {
		return false, fmt.Errorf("criu kernel-feature cache: %w", err)
	}
	if err := atomicfile.WriteFile(kdatFile, b, 0o600); err != nil {
		return false, fmt.Errorf("criu kernel-feature cache: %w", err)
	}
	return true, nil
}

// probeKdat runs `criu check` with a private tmpfs on /run and returns the
// cache it wrote there. The thread that does it is never unlocked, so its
// mount namespace goes with it and nothing else in the process sees it.
func probeKdat(criuPath string) ([]byte, error) {
	type result struct {
		b   []byte
		err error
	}
	ch := make(chan result, 1)
	go func() {
		goruntime.LockOSThread()
		b, err := func() ([]byte, error) {
			if err := unix.Unshare(unix.CLONE_NEWNS); err != nil {
				return nil, fmt.Errorf("unshare mount namespace: %w", err)
			}
			if err := unix.Mount("", "/", "", unix.MS_REC|unix.MS_PRIVATE, ""); err != nil {
				return nil, fmt.Errorf("make mounts private: %w", err)
			}
			if err := unix.Mount("tmpfs", filepath.Dir(kdatFile), "tmpfs", unix.MS_NOSUID|unix.MS_NODEV|unix.MS_NOEXEC, "size=1m,mode=0755"); err != nil {
				return nil, fmt.Errorf("mount tmpfs: %w", err)
			}
			// The child forks from this thread and so inherits its namespace.
			out, runErr := exec.Command(criuPath, "check").CombinedOutput()
			b, err := os.ReadFile(kdatFile)
			if err != nil {
				return nil, fmt.Errorf("%s check wrote no cache (%v): %s", criuPath, runErr, bytes.TrimSpace(out))
			}
			return b, nil
		}()
		ch <- result{b, err}
	}()
	r := <-ch
	return r.b, r.err
}

// PrimeKdatCache remakes CRIU's kernel-feature cache where CRIU cannot keep
// it (see ensureKdatCache) and reports whether it did: the agent calls it at
// start. Every CRIU this package starts makes a missing cache first.
func (c *Client) PrimeKdatCache() (bool, error) {
	return ensureKdatCache(c.path(), true)
}
