package criu

import (
	"os"
	"path/filepath"
	"time"

	"golang.org/x/sys/unix"
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
