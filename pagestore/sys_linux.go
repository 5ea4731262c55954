package pagestore

import "golang.org/x/sys/unix"

// noFollow refuses to open a symlink swapped in for a regular file between
// the directory walk and the open.
const noFollow = unix.O_NOFOLLOW
