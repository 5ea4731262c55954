package memcheck

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
)

// States a Status reports.
const (
	StateReady   = "ready"   // filled, first checksum computed
	StateOK      = "ok"      // verified: memory holds the pattern
	StateTouched = "touched" // a Touch round rewrote pages
	StateCorrupt = "corrupt" // verification found a page that differs
)

// ErrStatus reports a status line that does not parse.
var ErrStatus = errors.New("malformed memwriter status")

// Status is what memwriter reports after each event, on stdout in short form and in
// its status file in full. Seq grows by one per event, so a reader can tell a fresh
// verification from an old one with the same checksum.
type Status struct {
	Seq   uint64
	State string
	Round uint32  // touch rounds done
	Sum   string  // hex SHA-256 of the region (empty when corrupt)
	Pid   int     // pid as the process sees it (inside its pid namespace)
	Addr  uintptr // address of the region in the process, for fault-injection tests
	Size  int     // region size in bytes
}

// String returns the one-line form stored in the status file.
func (s Status) String() string {
	return fmt.Sprintf("seq=%d state=%s round=%d sha256=%s pid=%d addr=%#x size=%d",
		s.Seq, s.State, s.Round, s.Sum, s.Pid, s.Addr, s.Size)
}

// ParseStatus parses the form String produces.
func ParseStatus(line string) (Status, error) {
	var s Status
	fields := strings.Fields(line)
	if len(fields) != 7 {
		return s, fmt.Errorf("%w: %q", ErrStatus, line)
	}
	for _, f := range fields {
		k, v, ok := strings.Cut(f, "=")
		if !ok {
			return s, fmt.Errorf("%w: field %q", ErrStatus, f)
		}
		var err error
		switch k {
		case "seq":
			s.Seq, err = strconv.ParseUint(v, 10, 64)
		case "state":
			s.State = v
		case "round":
			var r uint64
			r, err = strconv.ParseUint(v, 10, 32)
			s.Round = uint32(r)
		case "sha256":
			s.Sum = v
		case "pid":
			s.Pid, err = strconv.Atoi(v)
		case "addr":
			var a uint64
			a, err = strconv.ParseUint(v, 0, 64)
			s.Addr = uintptr(a)
		case "size":
			s.Size, err = strconv.Atoi(v)
		default:
			err = errors.New("unknown key")
		}
		if err != nil {
			return s, fmt.Errorf("%w: field %q: %v", ErrStatus, f, err)
		}
	}
	return s, nil
}

// ReadStatus reads and parses a status file.
func ReadStatus(path string) (Status, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return Status{}, fmt.Errorf("read memwriter status: %w", err)
	}
	s, err := ParseStatus(strings.TrimSpace(string(b)))
	if err != nil {
		return s, fmt.Errorf("%s: %w", path, err)
	}
	return s, nil
}

// WriteStatus replaces path with s atomically: a temp file in the same directory
// renamed over it, so a reader never sees a partial line.
func WriteStatus(path string, s Status) error {
	f, err := os.CreateTemp(filepath.Dir(path), "."+filepath.Base(path)+".*")
	if err != nil {
		return fmt.Errorf("write memwriter status: %w", err)
	}
	_, err = f.WriteString(s.String() + "\n")
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = os.Rename(f.Name(), path)
	}
	if err != nil {
		os.Remove(f.Name())
		return fmt.Errorf("write memwriter status %s: %w", path, err)
	}
	return nil
}
