package criu

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"os"
	"strings"
)

// ErrNotFound is returned when the CRIU binary does not exist at the
// configured path.
var ErrNotFound = errors.New("criu not found")

// ErrFailed is wrapped by the Err of an *Error when CRIU answered that the
// operation failed (as opposed to a transport failure or a cancellation).
var ErrFailed = errors.New("criu reported failure")

// Error is a failed CRIU operation. It quotes CRIU's failing log lines and
// names the log file so that the reason is visible without digging.
type Error struct {
	Op      string   // "dump", "pre-dump", "restore", "check", "version", ...
	LogFile string   // absolute path of CRIU's log for the operation, "" if none
	Lines   []string // CRIU's "Error (" lines, then the last lines of its log
	Err     error    // wraps ErrFailed, a context error or a transport error
}

func (e *Error) Error() string {
	var b strings.Builder
	fmt.Fprintf(&b, "criu %s: %v", e.Op, e.Err)
	if e.LogFile != "" {
		fmt.Fprintf(&b, " (log: %s)", e.LogFile)
	}
	for _, l := range e.Lines {
		b.WriteString("\n\t")
		b.WriteString(l)
	}
	return b.String()
}

func (e *Error) Unwrap() error { return e.Err }

// Limits for the lines an *Error quotes.
const (
	maxErrorLines = 20
	logTailLines  = 8
	maxLineLen    = 400
)

// ExtractLogLines returns what matters in a CRIU log: the lines reporting an
// error ("Error (file:line): ..."; at most maxErrors, first ones first, since
// the first error is usually the cause), followed by the last tail lines that
// were not already quoted. Long lines are cut.
func ExtractLogLines(r io.Reader, maxErrors, tail int) ([]string, error) {
	var errs []string
	ring := make([]string, 0, tail)
	isErr := make(map[string]bool)
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 64*1024), 1024*1024)
	for sc.Scan() {
		line := strings.TrimRight(sc.Text(), " \t\r")
		if line == "" {
			continue
		}
		if len(line) > maxLineLen {
			line = line[:maxLineLen] + "..."
		}
		if isErrorLine(line) && len(errs) < maxErrors {
			errs = append(errs, line)
			isErr[line] = true
		}
		if tail > 0 {
			if len(ring) == tail {
				ring = append(ring[:0], ring[1:]...)
			}
			ring = append(ring, line)
		}
	}
	if err := sc.Err(); err != nil && !errors.Is(err, bufio.ErrTooLong) {
		return errs, fmt.Errorf("read criu log: %w", err)
	}
	out := errs
	for _, l := range ring {
		if !isErr[l] {
			out = append(out, l)
		}
	}
	return out, nil
}

// isErrorLine matches CRIU's pr_err/pr_perror output, with or without the
// "(seconds.micros) " timestamp prefix of log level 4.
func isErrorLine(line string) bool {
	if strings.HasPrefix(line, "(") {
		if i := strings.Index(line, ") "); i > 0 {
			line = line[i+2:]
		}
	}
	// A pid prefix ("pie: 12: Error (...)") appears for messages of restored tasks.
	return strings.HasPrefix(line, "Error (") || strings.Contains(line, ": Error (")
}

// logLines reads a CRIU log file for an *Error; a missing or unreadable log
// yields a line saying so instead of failing the error path.
func logLines(path string) []string {
	if path == "" {
		return nil
	}
	f, err := os.Open(path)
	if err != nil {
		return []string{fmt.Sprintf("(cannot read criu log: %v)", err)}
	}
	defer f.Close()
	lines, err := ExtractLogLines(f, maxErrorLines, logTailLines)
	if err != nil {
		lines = append(lines, fmt.Sprintf("(%v)", err))
	}
	return lines
}
