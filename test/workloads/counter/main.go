// Command counter counts in memory: it prints "pid <pid>" on start, then every
// -interval increments its counter and prints "N" on stdout and appends "N\n" to
// -file. The count lives only in the process's memory, so after a checkpoint and
// restore it must continue from where it was, not restart at 1.
//
//	counter [-interval D] [-file PATH]
//
// The file is opened, appended to and closed on every tick, never held open: a
// checkpoint then almost never catches an open file whose size CRIU would check at
// restore, and the file can be read or truncated by tests at any time.
package main

import (
	"flag"
	"fmt"
	"os"
	"os/signal"
	"syscall"
	"time"
)

func main() {
	interval := flag.Duration("interval", time.Second, "time between increments")
	file := flag.String("file", "", "file to append each value to")
	flag.Parse()
	if *interval <= 0 {
		fmt.Fprintln(os.Stderr, "counter: -interval must be positive")
		os.Exit(2)
	}
	// A closed stdout must not kill the counter (see os/signal on SIGPIPE).
	signal.Notify(make(chan os.Signal, 1), syscall.SIGPIPE)
	fmt.Printf("pid %d\n", os.Getpid())
	var n uint64
	t := time.NewTicker(*interval)
	defer t.Stop()
	for range t.C {
		n++
		// The file first: a reader that saw N on stdout finds N in the file.
		if *file != "" {
			if err := appendLine(*file, n); err != nil {
				fmt.Fprintln(os.Stderr, "counter:", err)
				os.Exit(1)
			}
		}
		fmt.Println(n)
	}
}

func appendLine(path string, n uint64) error {
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_APPEND|os.O_CREATE, 0o644)
	if err != nil {
		return fmt.Errorf("append to %s: %w", path, err)
	}
	_, err = fmt.Fprintf(f, "%d\n", n)
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return fmt.Errorf("append to %s: %w", path, err)
	}
	return nil
}
