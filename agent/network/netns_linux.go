package network

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"runtime"

	"github.com/vishvananda/netns"
	"golang.org/x/sys/unix"
)

// newNetNS creates a network namespace and bind-mounts it on path (a new
// file), so it lives without a process in it. The namespace is made on a
// locked thread that is thrown away if it cannot return to its own namespace.
func newNetNS(path string) error {
	if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
		return err
	}
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_EXCL|unix.O_CLOEXEC, 0o600)
	if err != nil {
		return fmt.Errorf("netns %s: %w", path, err)
	}
	f.Close()
	err = inFreshNetNS(false, func(netns.NsHandle) error {
		return unix.Mount(fmt.Sprintf("/proc/self/task/%d/ns/net", unix.Gettid()), path, "none", unix.MS_BIND, "")
	})
	if err != nil {
		os.Remove(path)
		return fmt.Errorf("netns %s: %w", path, err)
	}
	return nil
}

// inFreshNetNS runs fn on a thread inside a new network namespace, with its
// loopback up if loUp; the thread goes back to its namespace after.
func inFreshNetNS(loUp bool, fn func(netns.NsHandle) error) error {
	return onThreadIn(func() error {
		ns, err := netns.New()
		if err == nil {
			ns.Close()
		}
		return err
	}, func() error {
		ns, err := netns.Get()
		if err != nil {
			return err
		}
		defer ns.Close()
		if loUp {
			if err := loopbackUp(ns); err != nil {
				return err
			}
		}
		return fn(ns)
	})
}

// removeNetNS unmounts and removes a namespace file; a missing one is fine.
func removeNetNS(path string) error {
	if err := unix.Unmount(path, unix.MNT_DETACH); err != nil && !errors.Is(err, unix.EINVAL) && !errors.Is(err, unix.ENOENT) {
		return fmt.Errorf("netns %s: unmount: %w", path, err)
	}
	if err := os.Remove(path); err != nil && !errors.Is(err, os.ErrNotExist) {
		return fmt.Errorf("netns %s: %w", path, err)
	}
	return nil
}

// inNetNS runs fn on a thread inside the namespace at path, for what netlink
// handles cannot do (sockets bound to a namespace at creation).
func inNetNS(path string, fn func() error) error {
	target, err := netns.GetFromPath(path)
	if err != nil {
		return fmt.Errorf("netns %s: %w", path, err)
	}
	defer target.Close()
	return onThreadIn(func() error { return netns.Set(target) }, fn)
}

// onThreadIn runs fn on a locked thread that enter moved into another network
// namespace, then moves the thread back. If enter fails, the thread is still in
// its own namespace and is released; if the way back fails, the thread stays
// locked and ends with its goroutine rather than serve others in the wrong
// namespace.
func onThreadIn(enter, fn func() error) error {
	errc := make(chan error, 1)
	go func() {
		runtime.LockOSThread()
		orig, err := netns.Get()
		if err != nil {
			runtime.UnlockOSThread()
			errc <- err
			return
		}
		defer orig.Close()
		if err := enter(); err != nil {
			runtime.UnlockOSThread()
			errc <- err
			return
		}
		ferr := fn()
		if err := netns.Set(orig); err != nil {
			errc <- errors.Join(ferr, fmt.Errorf("return to the agent's namespace: %w", err))
			return
		}
		runtime.UnlockOSThread()
		errc <- ferr
	}()
	return <-errc
}
