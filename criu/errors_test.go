package criu

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

const sampleLog = `(00.000000) Version: 4.2.1 (gitid 0)
(00.000011) Running on host Linux 6.18.44 #1 SMP x86_64
(00.000120) Dumping processes (pid: 4194000 comm: )
(00.000131) ========================================
(00.000145) Error (criu/seize.c:1013): Can't seize 4194000: No such process
(00.000150) Warn  (criu/cr-dump.c:2011): something harmless
(00.000160) Error (criu/cr-dump.c:2105): Dumping FAILED.
(00.000161) Unlock network
(00.000170) Unfreezing tasks into 1
`

func TestExtractLogLines(t *testing.T) {
	got, err := ExtractLogLines(strings.NewReader(sampleLog), 20, 3)
	if err != nil {
		t.Fatal(err)
	}
	want := []string{
		"(00.000145) Error (criu/seize.c:1013): Can't seize 4194000: No such process",
		"(00.000160) Error (criu/cr-dump.c:2105): Dumping FAILED.",
		// The tail's last 3 lines minus the error line already quoted.
		"(00.000161) Unlock network",
		"(00.000170) Unfreezing tasks into 1",
	}
	if fmt.Sprint(got) != fmt.Sprint(want) {
		t.Errorf("got\n%s\nwant\n%s", strings.Join(got, "\n"), strings.Join(want, "\n"))
	}
}

func TestExtractLogLinesLimits(t *testing.T) {
	var b strings.Builder
	for i := range 50 {
		fmt.Fprintf(&b, "Error (criu/x.c:%d): failure %d\n", i, i)
	}
	b.WriteString("pie: 123: Error (criu/pie/restorer.c:1): restorer failed\n")
	b.WriteString(strings.Repeat("x", 2000) + "\n")
	got, err := ExtractLogLines(strings.NewReader(b.String()), 5, 2)
	if err != nil {
		t.Fatal(err)
	}
	if len(got) != 7 {
		t.Fatalf("got %d lines, want 5 errors + 2 tail: %q", len(got), got)
	}
	if got[0] != "Error (criu/x.c:0): failure 0" || got[4] != "Error (criu/x.c:4): failure 4" {
		t.Errorf("errors not the first ones: %q", got[:5])
	}
	if got[5] != "pie: 123: Error (criu/pie/restorer.c:1): restorer failed" {
		t.Errorf("tail[0] = %q", got[5])
	}
	if len(got[6]) != maxLineLen+3 || !strings.HasSuffix(got[6], "...") {
		t.Errorf("long line not cut: %d bytes", len(got[6]))
	}
	// With room for it, a pid-prefixed restorer error is an error line too.
	got, _ = ExtractLogLines(strings.NewReader("pie: 9: Error (a.c:1): bad\nok\n"), 5, 0)
	if len(got) != 1 || !strings.Contains(got[0], "bad") {
		t.Errorf("pie error not extracted: %q", got)
	}
}

func TestErrorMessage(t *testing.T) {
	dir := t.TempDir()
	log := filepath.Join(dir, "dump.log")
	if err := os.WriteFile(log, []byte(sampleLog), 0o600); err != nil {
		t.Fatal(err)
	}
	e := &Error{Op: "dump", LogFile: log, Lines: logLines(log), Err: fmt.Errorf("%w: Can't seize", ErrFailed)}
	var err error = e
	msg := err.Error()
	for _, want := range []string{"criu dump: criu reported failure", log, "Can't seize 4194000: No such process", "Dumping FAILED."} {
		if !strings.Contains(msg, want) {
			t.Errorf("message lacks %q:\n%s", want, msg)
		}
	}
	if !errors.Is(err, ErrFailed) {
		t.Error("errors.Is(err, ErrFailed) = false")
	}
	missing := logLines(filepath.Join(dir, "nope.log"))
	if len(missing) != 1 || !strings.Contains(missing[0], "cannot read criu log") {
		t.Errorf("missing log: %q", missing)
	}
}
