package logs

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strconv"
	"sync"
	"syscall"
	"time"
)

// FileName is the current log file's name in a log directory.
const FileName = "container.log"

// EOFMarker is created in the log directory once the writer has been closed for good: a
// follower that sees it reads to the end and stops.
const EOFMarker = "container.log.eof"

// maxLine splits longer lines into partial entries, bounding a single entry.
const maxLine = 16 * 1024

// Stream names.
const (
	Stdout = "stdout"
	Stderr = "stderr"
)

// Writer appends entries to a rotated log. It is safe for concurrent use.
type Writer struct {
	dir      string
	maxBytes int64
	maxFiles int
	now      func() time.Time

	mu   sync.Mutex
	f    *os.File // guarded by mu
	size int64    // guarded by mu
}

// NewWriter opens (appending) or creates the log in dir. Each file holds at most
// maxBytes; at most maxFiles files are kept.
func NewWriter(dir string, maxBytes int64, maxFiles int) (*Writer, error) {
	if maxBytes < 2*maxLine || maxFiles < 1 {
		return nil, fmt.Errorf("log %s: maxBytes must be >= %d and maxFiles >= 1", dir, 2*maxLine)
	}
	w := &Writer{dir: dir, maxBytes: maxBytes, maxFiles: maxFiles, now: time.Now}
	if err := w.open(); err != nil {
		return nil, err
	}
	return w, nil
}

func (w *Writer) open() error {
	f, err := os.OpenFile(filepath.Join(w.dir, FileName), os.O_WRONLY|os.O_APPEND|os.O_CREATE, 0o640)
	if err != nil {
		return fmt.Errorf("open log: %w", err)
	}
	st, err := f.Stat()
	if err != nil {
		f.Close()
		return fmt.Errorf("open log: %w", err)
	}
	w.f, w.size = f, st.Size()
	return nil
}

// rotate shifts the files: container.log.<n-1> is dropped, container.log becomes .1.
func (w *Writer) rotate() error {
	if err := w.f.Close(); err != nil {
		return err
	}
	base := filepath.Join(w.dir, FileName)
	if w.maxFiles == 1 {
		if err := os.Remove(base); err != nil && !errors.Is(err, os.ErrNotExist) {
			return err
		}
	}
	for i := w.maxFiles - 1; i >= 1; i-- {
		src := base
		if i > 1 {
			src = base + "." + strconv.Itoa(i-1)
		}
		if err := os.Rename(src, base+"."+strconv.Itoa(i)); err != nil && !errors.Is(err, os.ErrNotExist) {
			return err
		}
	}
	return w.open()
}

// Write records one chunk read from stream: each complete line becomes an F entry, a
// trailing incomplete line a P entry.
func (w *Writer) Write(stream string, chunk []byte) error {
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.f == nil {
		return os.ErrClosed
	}
	ts := w.now().UTC().Format(time.RFC3339Nano)
	for len(chunk) > 0 {
		line, tag := chunk, byte('P')
		if i := bytes.IndexByte(chunk, '\n'); i >= 0 && i <= maxLine {
			line, tag, chunk = chunk[:i], 'F', chunk[i+1:]
		} else if len(line) > maxLine {
			line, chunk = chunk[:maxLine], chunk[maxLine:]
		} else {
			chunk = nil
		}
		entry := make([]byte, 0, len(ts)+len(stream)+len(line)+5)
		entry = append(entry, ts...)
		entry = append(entry, ' ')
		entry = append(entry, stream...)
		entry = append(entry, ' ', tag, ' ')
		entry = append(entry, line...)
		entry = append(entry, '\n')
		if w.size > 0 && w.size+int64(len(entry)) > w.maxBytes {
			if err := w.rotate(); err != nil {
				return fmt.Errorf("rotate log %s: %w", w.dir, err)
			}
		}
		n, err := w.f.Write(entry)
		w.size += int64(n)
		if err != nil {
			return fmt.Errorf("write log %s: %w", w.dir, err)
		}
	}
	return nil
}

// Copy writes everything read from r to stream until EOF.
func (w *Writer) Copy(stream string, r io.Reader) error {
	buf := make([]byte, 32*1024)
	for {
		n, err := r.Read(buf)
		if n > 0 {
			if werr := w.Write(stream, buf[:n]); werr != nil {
				return werr
			}
		}
		if errors.Is(err, io.EOF) {
			return nil
		}
		if err != nil {
			return err
		}
	}
}

// Close closes the current file. With final, it also creates EOFMarker: no more
// entries will come.
func (w *Writer) Close(final bool) error {
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.f == nil {
		return nil
	}
	err := w.f.Close()
	w.f = nil
	if final {
		if f, merr := os.OpenFile(filepath.Join(w.dir, EOFMarker), os.O_WRONLY|os.O_CREATE, 0o640); merr == nil {
			f.Close()
		} else if err == nil {
			err = merr
		}
	}
	return err
}

// Adopt makes the log files in src, named as this writer names its own (a
// container's log before a move), the history before this writer's files.
// Their current file and this writer's are joined into one when this writer
// has not rotated yet and both fit in maxBytes, so a move does not cut the
// log into more, smaller files; their other files follow this writer's
// oldest, as far as maxFiles allows (their oldest are dropped first). Files
// are renamed into place, or copied from another file system.
func (w *Writer) Adopt(src string) error {
	w.mu.Lock()
	defer w.mu.Unlock()
	theirs := Files(src)
	if n := len(theirs); n > 0 && theirs[n-1] == FileName && len(Files(w.dir)) == 1 {
		if st, err := os.Stat(filepath.Join(src, FileName)); err == nil && st.Size()+w.size <= w.maxBytes {
			if err := w.join(filepath.Join(src, FileName)); err != nil {
				return fmt.Errorf("adopt log: %w", err)
			}
			theirs = theirs[:n-1]
		}
	}
	own := len(Files(w.dir))
	room := w.maxFiles - own
	if room <= 0 {
		return nil
	}
	if len(theirs) > room {
		theirs = theirs[len(theirs)-room:]
	}
	base := filepath.Join(w.dir, FileName)
	for i := range theirs {
		from := filepath.Join(src, theirs[len(theirs)-1-i]) // newest first
		to := base + "." + strconv.Itoa(own+i)
		if err := os.Rename(from, to); err != nil {
			if !errors.Is(err, syscall.EXDEV) {
				return fmt.Errorf("adopt log %s: %w", from, err)
			}
			if err := CopyFile(to, from); err != nil {
				return fmt.Errorf("adopt log %s: %w", from, err)
			}
		}
	}
	return nil
}

// join replaces the current file with older's content followed by its own,
// and goes on appending to the result. w.mu is held.
func (w *Writer) join(older string) error {
	cur := filepath.Join(w.dir, FileName)
	tmp := filepath.Join(w.dir, "."+FileName+".adopt")
	if err := CopyFile(tmp, older); err != nil {
		os.Remove(tmp)
		return err
	}
	out, err := os.OpenFile(tmp, os.O_WRONLY|os.O_APPEND, 0)
	if err == nil {
		var in *os.File
		if in, err = os.Open(cur); err == nil {
			_, err = io.Copy(out, in)
			in.Close()
		}
		if cerr := out.Close(); err == nil {
			err = cerr
		}
	}
	if err == nil {
		err = os.Rename(tmp, cur)
	}
	if err != nil {
		os.Remove(tmp)
		return err
	}
	w.f.Close()
	return w.open()
}

// CopyFile copies the log file src to dst (created or truncated, 0640).
func CopyFile(dst, src string) error {
	in, err := os.Open(src)
	if err != nil {
		return err
	}
	defer in.Close()
	out, err := os.OpenFile(dst, os.O_WRONLY|os.O_CREATE|os.O_TRUNC, 0o640)
	if err != nil {
		return err
	}
	if _, err := io.Copy(out, in); err != nil {
		out.Close()
		return err
	}
	return out.Close()
}

// Hold runs fn while no entry is written and no file rotated, so fn sees the log
// files in a consistent state (a checkpoint copies them).
func (w *Writer) Hold(fn func() error) error {
	w.mu.Lock()
	defer w.mu.Unlock()
	return fn()
}

// Files returns the names of the log files present in dir, oldest first
// (container.log.N ... container.log.1, container.log); not the EOF marker.
func Files(dir string) []string {
	var out []string
	for _, p := range files(dir, maxRotated) {
		if st, err := os.Lstat(p); err == nil && st.Mode().IsRegular() {
			out = append(out, filepath.Base(p))
		}
	}
	return out
}
