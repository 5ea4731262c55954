package logs

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strconv"
	"syscall"
	"time"
)

// Entry is one log entry.
type Entry struct {
	Time    time.Time
	Stream  string
	Line    []byte
	Partial bool
}

// ErrMalformed is returned for a line that is not a log entry.
var ErrMalformed = errors.New("malformed log entry")

// ParseEntry parses one line (without its newline).
func ParseEntry(b []byte) (Entry, error) {
	parts := bytes.SplitN(b, []byte{' '}, 4)
	if len(parts) < 3 {
		return Entry{}, ErrMalformed
	}
	t, err := time.Parse(time.RFC3339Nano, string(parts[0]))
	if err != nil {
		return Entry{}, fmt.Errorf("%w: %w", ErrMalformed, err)
	}
	e := Entry{Time: t, Stream: string(parts[1])}
	switch string(parts[2]) {
	case "F":
	case "P":
		e.Partial = true
	default:
		return Entry{}, ErrMalformed
	}
	if len(parts) == 4 {
		e.Line = parts[3]
	}
	return e, nil
}

// ReadOptions select what Read returns.
type ReadOptions struct {
	// Tail keeps only the last Tail entries of the retained log; 0 keeps all.
	Tail int
	// Since drops entries older than Since.
	Since time.Time
	// Follow keeps reading new entries until ctx ends or the EOF marker appears.
	Follow bool
	// Poll is the follow interval; 0 means 200ms.
	Poll time.Duration
}

// files returns the log's files, oldest first.
func files(dir string, rotated int) []string {
	var out []string
	for i := rotated; i >= 1; i-- {
		out = append(out, filepath.Join(dir, FileName+"."+strconv.Itoa(i)))
	}
	return append(out, filepath.Join(dir, FileName))
}

// maxRotated is how many rotated files Read looks for; writers keep fewer.
const maxRotated = 64

// Read calls fn for each entry of the log in dir, in order.
func Read(ctx context.Context, dir string, o ReadOptions, fn func(Entry) error) error {
	var tail []Entry
	emit := func(e Entry) error {
		if !o.Since.IsZero() && e.Time.Before(o.Since) {
			return nil
		}
		if o.Tail > 0 {
			tail = append(tail, e)
			if len(tail) > o.Tail {
				tail = tail[1:]
			}
			return nil
		}
		return fn(e)
	}
	paths := files(dir, maxRotated)
	var cur *os.File
	var pending []byte
	for i, p := range paths {
		f, err := os.Open(p)
		if errors.Is(err, os.ErrNotExist) {
			continue
		}
		if err != nil {
			return err
		}
		// A rotation between listing and opening can repeat or skip entries; following
		// readers of a live log accept that, as with any rotated log.
		if pending, err = readMore(f, nil, emit); err != nil {
			f.Close()
			return err
		}
		if i == len(paths)-1 {
			cur = f
		} else {
			f.Close()
		}
	}
	for _, e := range tail {
		if err := fn(e); err != nil {
			if cur != nil {
				cur.Close()
			}
			return err
		}
	}
	o.Tail = 0
	if !o.Follow {
		if cur != nil {
			cur.Close()
		}
		return nil
	}
	return follow(ctx, dir, cur, pending, o, emit)
}

// follow reads new entries of the current file; when the file is rotated away it
// drains the old one and continues with the new.
func follow(ctx context.Context, dir string, cur *os.File, pending []byte, o ReadOptions, emit func(Entry) error) error {
	poll := o.Poll
	if poll == 0 {
		poll = 200 * time.Millisecond
	}
	path := filepath.Join(dir, FileName)
	defer func() {
		if cur != nil {
			cur.Close()
		}
	}()
	t := time.NewTicker(poll)
	defer t.Stop()
	for {
		eof := false
		if _, err := os.Stat(filepath.Join(dir, EOFMarker)); err == nil {
			eof = true // read what is left, then stop
		}
		if cur == nil {
			f, err := os.Open(path)
			if err == nil {
				cur, pending = f, nil
			} else if !errors.Is(err, os.ErrNotExist) {
				return err
			}
		}
		if cur != nil {
			var err error
			if pending, err = readMore(cur, pending, emit); err != nil {
				return err
			}
			if rotated(cur, path) {
				// Drain the rotated file once more, then switch.
				if _, err := readMore(cur, pending, emit); err != nil {
					return err
				}
				cur.Close()
				cur = nil
				continue
			}
		}
		if eof {
			return nil
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-t.C:
		}
	}
}

func rotated(f *os.File, path string) bool {
	a, err := f.Stat()
	if err != nil {
		return true
	}
	b, err := os.Stat(path)
	if err != nil {
		return errors.Is(err, os.ErrNotExist)
	}
	as, aok := a.Sys().(*syscall.Stat_t)
	bs, bok := b.Sys().(*syscall.Stat_t)
	return aok && bok && (as.Ino != bs.Ino || as.Dev != bs.Dev)
}

// readMore reads complete lines appended to f, keeping an unterminated tail.
func readMore(f *os.File, pending []byte, emit func(Entry) error) ([]byte, error) {
	buf := make([]byte, 64*1024)
	for {
		n, err := f.Read(buf)
		pending = append(pending, buf[:n]...)
		for {
			i := bytes.IndexByte(pending, '\n')
			if i < 0 {
				break
			}
			// A malformed line (torn by a crash) is skipped.
			if e, perr := ParseEntry(pending[:i]); perr == nil {
				e.Line = append([]byte(nil), e.Line...)
				if err := emit(e); err != nil {
					return nil, err
				}
			}
			pending = pending[i+1:]
		}
		if errors.Is(err, io.EOF) || n == 0 {
			return append([]byte(nil), pending...), nil
		}
		if err != nil {
			return nil, err
		}
	}
}
