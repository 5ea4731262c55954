package pagestore

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"strconv"
	"strings"
)

// owner identifies a process across pid reuse and reboots: boot id, pid and
// start time (clock ticks after boot, /proc/<pid>/stat field 22). Leases and
// partial files in tmp/ carry their owner in their name. Pids are those of
// the pid namespace the store is used from; processes sharing a store must
// share that namespace.
type owner struct {
	boot  string
	pid   int
	start uint64
}

func (o owner) String() string { return fmt.Sprintf("%s.%d.%d", o.boot, o.pid, o.start) }

func bootID() (string, error) {
	b, err := os.ReadFile("/proc/sys/kernel/random/boot_id")
	if err != nil {
		return "", fmt.Errorf("read boot id: %w", err)
	}
	return strings.ReplaceAll(strings.TrimSpace(string(b)), "-", ""), nil
}

// startTime returns field 22 of /proc/<pid>/stat. The command name (field 2)
// may hold spaces and parentheses, so fields are counted after the last ')'.
func startTime(pid int) (uint64, error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return 0, err
	}
	i := bytes.LastIndexByte(b, ')')
	if i < 0 {
		return 0, fmt.Errorf("parse /proc/%d/stat", pid)
	}
	f := strings.Fields(string(b[i+1:]))
	// f[0] is field 3 (state), so field 22 is f[19].
	if len(f) < 20 {
		return 0, fmt.Errorf("parse /proc/%d/stat: %d fields", pid, len(f))
	}
	return strconv.ParseUint(f[19], 10, 64)
}

func selfOwner() (owner, error) {
	boot, err := bootID()
	if err != nil {
		return owner{}, err
	}
	pid := os.Getpid()
	st, err := startTime(pid)
	if err != nil {
		return owner{}, fmt.Errorf("process start time: %w", err)
	}
	return owner{boot: boot, pid: pid, start: st}, nil
}

// parseOwner reads the owner from a tmp/ entry name "<boot>.<pid>.<start>.…".
func parseOwner(name string) (owner, bool) {
	f := strings.SplitN(name, ".", 4)
	if len(f) < 4 || len(f[0]) != 32 {
		return owner{}, false
	}
	pid, err := strconv.Atoi(f[1])
	if err != nil || pid <= 0 {
		return owner{}, false
	}
	st, err := strconv.ParseUint(f[2], 10, 64)
	if err != nil {
		return owner{}, false
	}
	return owner{boot: f[0], pid: pid, start: st}, true
}

// alive reports whether o still runs. When in doubt it says yes: a lease
// wrongly kept only delays GC, a lease wrongly dropped loses data.
func (o owner) alive(boot string) bool {
	if o.boot != boot {
		return false
	}
	st, err := startTime(o.pid)
	if errors.Is(err, os.ErrNotExist) {
		return false
	}
	if err != nil {
		return true
	}
	return st == o.start
}

// lease is a tmp/ file listing (as raw 32-byte keys) the chunks a Put or Get
// relies on. Keys are appended under the shared store lock before the
// existence of the chunks is checked, so a GC either ran before (and the
// chunks it left are there) or sees the keys. It is not fsync'd: after a
// crash its owner is dead and the lease void anyway.
type lease struct {
	path string
	f    *os.File
}

func (s *Store) newLease() (*lease, error) {
	p := s.tmpName("lease")
	f, err := os.OpenFile(p, os.O_WRONLY|os.O_CREATE|os.O_EXCL|os.O_APPEND, 0o600)
	if err != nil {
		return nil, fmt.Errorf("create lease: %w", err)
	}
	return &lease{path: p, f: f}, nil
}

func (l *lease) add(keys [][32]byte) error {
	if len(keys) == 0 {
		return nil
	}
	b := make([]byte, 0, 32*len(keys))
	for i := range keys {
		b = append(b, keys[i][:]...)
	}
	if _, err := l.f.Write(b); err != nil {
		return fmt.Errorf("write lease: %w", err)
	}
	return nil
}

func (l *lease) release() {
	l.f.Close()
	os.Remove(l.path)
}

// readLeaseKeys adds the keys of a lease file to set. A trailing partial
// record (a write cut short) is ignored.
func readLeaseKeys(path string, set map[string]struct{}) error {
	b, err := os.ReadFile(path)
	if err != nil {
		return err
	}
	for len(b) >= 32 {
		var k [32]byte
		copy(k[:], b[:32])
		set[keyHex(k)] = struct{}{}
		b = b[32:]
	}
	return nil
}
