package shim

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/moby/sys/mountinfo"
	"golang.org/x/sys/unix"
)

// cgroupParent is the directory, in every cgroup hierarchy, that holds one cgroup per
// shim. It is outside any systemd unit, so stopping the agent's unit does not reach it.
const cgroupParent = "migrate-shim"

// joinOwnCgroup moves the calling process into <hierarchy>/migrate-shim/<name> in every
// mounted hierarchy (v1 and v2) and returns the directories. Failing to leave the
// agent's cgroup in the v2 or the systemd (name=systemd) hierarchy is an error, since
// that is where service managers find processes to kill; other v1 hierarchies are best
// effort.
func joinOwnCgroup(name string) ([]string, error) {
	mounts, err := mountinfo.GetMounts(func(m *mountinfo.Info) (skip, stop bool) {
		return m.FSType != "cgroup" && m.FSType != "cgroup2", false
	})
	if err != nil {
		return nil, fmt.Errorf("list cgroup mounts: %w", err)
	}
	pid := []byte(strconv.Itoa(os.Getpid()))
	seen := map[string]bool{}
	var dirs []string
	for _, m := range mounts {
		// Mounts of the same hierarchy share their super options.
		key := m.FSType + ":" + m.VFSOptions
		if seen[key] || m.Root != "/" {
			continue // bind mounts of a hierarchy, or a hierarchy we see only part of
		}
		seen[key] = true
		essential := m.FSType == "cgroup2" || strings.Contains(m.VFSOptions, "name=systemd")
		dir := filepath.Join(m.Mountpoint, cgroupParent, name)
		err := join(dir, pid)
		if err != nil {
			os.Remove(dir)
			if essential {
				return dirs, fmt.Errorf("join own cgroup %s: %w", dir, err)
			}
			continue
		}
		dirs = append(dirs, dir)
	}
	return dirs, nil
}

func join(dir string, pid []byte) error {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return err
	}
	// A new v1 cpuset cgroup starts with no cpus or mems; inherit them.
	for _, f := range []string{"cpuset.cpus", "cpuset.mems"} {
		for _, d := range []string{filepath.Dir(dir), dir} {
			b, err := os.ReadFile(filepath.Join(d, f))
			if err != nil || strings.TrimSpace(string(b)) != "" {
				continue
			}
			parent, err := os.ReadFile(filepath.Join(filepath.Dir(d), f))
			if err != nil {
				return err
			}
			if err := os.WriteFile(filepath.Join(d, f), parent, 0); err != nil {
				return err
			}
		}
	}
	return os.WriteFile(filepath.Join(dir, "cgroup.procs"), pid, 0)
}

// leaveOwnCgroup undoes joinOwnCgroup for a shim that gives up: it moves back to the
// parent directory, which holds no other process, and removes its own.
func leaveOwnCgroup(dirs []string) {
	pid := []byte(strconv.Itoa(os.Getpid()))
	for _, d := range dirs {
		_ = os.WriteFile(filepath.Join(filepath.Dir(d), "cgroup.procs"), pid, 0)
	}
	_ = RemoveCgroups(dirs, 0)
}

// RemoveCgroups removes a shim's cgroup directories once the shim has exited. An
// exited shim that is not yet reaped still populates its cgroup (EBUSY): retry for
// up to wait.
func RemoveCgroups(dirs []string, wait time.Duration) error {
	deadline := time.Now().Add(wait)
	var errs []error
	for _, d := range dirs {
		if filepath.Base(filepath.Dir(d)) != cgroupParent {
			errs = append(errs, fmt.Errorf("refusing to remove %s: not a shim cgroup", d))
			continue
		}
		for {
			err := os.Remove(d)
			if errors.Is(err, unix.EBUSY) && time.Now().Before(deadline) {
				time.Sleep(20 * time.Millisecond)
				continue
			}
			if err != nil && !errors.Is(err, os.ErrNotExist) {
				errs = append(errs, err)
			}
			break
		}
	}
	return errors.Join(errs...)
}
