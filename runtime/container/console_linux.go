package container

import (
	"fmt"
	"os"

	specs "github.com/opencontainers/runtime-spec/specs-go"
	"golang.org/x/sys/unix"
)

// setupConsole makes a pty inside the container (its own devpts instance),
// sends the master over the console socket, and makes the slave our
// controlling terminal and stdio. It returns the slave's path.
func setupConsole(sock *os.File, size *specs.Box) (string, error) {
	defer sock.Close()
	master, err := os.OpenFile("/dev/ptmx", os.O_RDWR|unix.O_NOCTTY|unix.O_CLOEXEC, 0)
	if err != nil {
		return "", fmt.Errorf("console: open /dev/ptmx: %w", err)
	}
	defer master.Close()
	if err := unix.IoctlSetPointerInt(int(master.Fd()), unix.TIOCSPTLCK, 0); err != nil {
		return "", fmt.Errorf("console: unlockpt: %w", err)
	}
	n, err := unix.IoctlGetInt(int(master.Fd()), unix.TIOCGPTN)
	if err != nil {
		return "", fmt.Errorf("console: ptsname: %w", err)
	}
	slavePath := fmt.Sprintf("/dev/pts/%d", n)
	if size != nil {
		ws := &unix.Winsize{Row: uint16(size.Height), Col: uint16(size.Width)}
		if err := unix.IoctlSetWinsize(int(master.Fd()), unix.TIOCSWINSZ, ws); err != nil {
			return "", fmt.Errorf("console: set size: %w", err)
		}
	}
	rights := unix.UnixRights(int(master.Fd()))
	if err := unix.Sendmsg(int(sock.Fd()), []byte(master.Name()), rights, nil, 0); err != nil {
		return "", fmt.Errorf("console: send master: %w", err)
	}
	slave, err := os.OpenFile(slavePath, os.O_RDWR|unix.O_NOCTTY, 0)
	if err != nil {
		return "", fmt.Errorf("console: open %s: %w", slavePath, err)
	}
	defer slave.Close()
	for fd := 0; fd < 3; fd++ {
		if err := unix.Dup3(int(slave.Fd()), fd, 0); err != nil {
			return "", fmt.Errorf("console: dup: %w", err)
		}
	}
	if err := unix.IoctlSetInt(0, unix.TIOCSCTTY, 0); err != nil {
		return "", fmt.Errorf("console: set controlling terminal: %w", err)
	}
	return slavePath, nil
}
