package shim

import (
	"os"
	"strconv"

	"golang.org/x/sys/unix"
)

// CloexecInherited marks every fd above stderr close-on-exec, except keep. A process
// that starts children (the agent, a shim) must not pass on fds it inherited from
// whatever started it (CVE-2024-21626 was a leaked fd): exec.Cmd only controls the fds
// it is given, and Go opens its own fds with O_CLOEXEC already.
func CloexecInherited(keep ...int) {
	des, err := os.ReadDir("/proc/self/fd")
	if err != nil {
		return
	}
next:
	for _, de := range des {
		fd, err := strconv.Atoi(de.Name())
		if err != nil || fd <= 2 {
			continue
		}
		for _, k := range keep {
			if fd == k {
				continue next
			}
		}
		unix.CloseOnExec(fd)
	}
}
