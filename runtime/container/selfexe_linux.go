package container

import (
	"fmt"
	"io"
	"os"
	"sync"

	"golang.org/x/sys/unix"
)

// CVE-2019-5736: a container process could open /proc/<init>/exe while our
// init runs inside it and overwrite the host binary. The init is therefore
// executed from a sealed in-memory copy: writing to it fails, and the host file
// is never exposed to the container.

var (
	selfOnce sync.Once
	selfPath string
	selfErr  error
)

// minSelfFd keeps the memfd above the fds that exec.Cmd.ExtraFiles dup2 onto,
// so /proc/self/fd/N still names the copy in the child at execve time.
const minSelfFd = 100

func sealedSelf() (string, error) {
	selfOnce.Do(func() { selfPath, selfErr = cloneSelf() })
	return selfPath, selfErr
}

func cloneSelf() (string, error) {
	src, err := os.Open("/proc/self/exe")
	if err != nil {
		return "", fmt.Errorf("open own binary: %w", err)
	}
	defer src.Close()
	fd, err := unix.MemfdCreate("migrated-init", unix.MFD_CLOEXEC|unix.MFD_ALLOW_SEALING)
	if err != nil {
		return "", fmt.Errorf("memfd_create: %w", err)
	}
	mem := os.NewFile(uintptr(fd), "migrated-init")
	st, err := src.Stat()
	if err != nil {
		mem.Close()
		return "", err
	}
	// copy_file_range/sendfile through io.Copy; no user-space buffer copy.
	if n, err := io.Copy(mem, src); err != nil || n != st.Size() {
		mem.Close()
		return "", fmt.Errorf("copy own binary to memfd: %d/%d bytes: %v", n, st.Size(), err)
	}
	seals := unix.F_SEAL_SEAL | unix.F_SEAL_SHRINK | unix.F_SEAL_GROW | unix.F_SEAL_WRITE
	if _, err := unix.FcntlInt(mem.Fd(), unix.F_ADD_SEALS, seals); err != nil {
		mem.Close()
		return "", fmt.Errorf("seal memfd: %w", err)
	}
	high, err := unix.FcntlInt(mem.Fd(), unix.F_DUPFD_CLOEXEC, minSelfFd)
	mem.Close()
	if err != nil {
		return "", fmt.Errorf("dup memfd: %w", err)
	}
	// Kept open for the life of the process: every init is exec'd from it.
	return fmt.Sprintf("/proc/self/fd/%d", high), nil
}
