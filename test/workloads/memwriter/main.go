// Command memwriter fills memory with a known pattern and checks it on demand, so a
// test can tell whether a process's memory survived checkpoint, restore or migration.
//
//	memwriter [-mib N] [-seed S] [-touch P] [-interval D] [-status FILE] [-tick D]
//
// It fills N MiB with memcheck's SplitMix64 pattern, prints "ready <sha256>", then
// waits for events, one at a time:
//
//	stdin line "" or "verify", SIGUSR1, every -interval: re-verify all pages and
//	    print "ok <sha256>", or "corrupt" (the bad page goes to stderr)
//	stdin line "touch", SIGUSR2: rewrite P percent of the pages with the next
//	    generation and print "touched <round> <sha256>"
//	stdin line "quit": exit 0
//
// After every event it atomically rewrites -status FILE with a full memcheck.Status
// line (sequence number, state, round, checksum, pid, region address), so tests can
// follow it without its stdio.
//
// With -tick D it also prints "tick <unix nanoseconds>" every D from a goroutine of
// its own, wall-clock time taken just before the write, so a benchmark can see the
// pause a migration caused from the process's side: the gap between the last tick
// before and the first after. Ticks do not wait for events, nor events for ticks.
//
// Losing stdin (EOF) or stdout (EPIPE) does not stop
// it: after a restore its stdio may be gone while the status file remains.
package main

import (
	"bufio"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"strconv"
	"strings"
	"syscall"
	"time"
	"unsafe"

	"github.com/migratehq/migrate/test/workloads/memcheck"
)

func main() {
	mib := flag.Int("mib", 64, "MiB of memory to fill")
	seed := flag.Uint64("seed", 1, "pattern seed")
	touch := flag.Int("touch", 10, "percent of pages a touch rewrites")
	interval := flag.Duration("interval", 0, "re-verify this often (0: only on request)")
	status := flag.String("status", "", "file to keep the latest status in")
	tick := flag.Duration("tick", 0, "print \"tick <unix ns>\" this often (0: never)")
	flag.Parse()
	if *touch < 0 || *touch > 100 {
		fmt.Fprintln(os.Stderr, "memwriter: -touch must be 0..100")
		os.Exit(2)
	}
	if *tick > 0 {
		go ticks(*tick)
	}
	if err := run(*mib, *seed, *touch, *interval, *status); err != nil {
		fmt.Fprintln(os.Stderr, "memwriter:", err)
		os.Exit(1)
	}
}

func run(mib int, seed uint64, touch int, interval time.Duration, statusFile string) error {
	// Being told about SIGPIPE turns a write to a closed stdout into an EPIPE error
	// instead of death (see os/signal).
	signal.Notify(make(chan os.Signal, 1), syscall.SIGPIPE)
	sigs := make(chan os.Signal, 4)
	signal.Notify(sigs, syscall.SIGUSR1, syscall.SIGUSR2)

	r, err := memcheck.NewRegion(mib<<20, seed)
	if err != nil {
		return err
	}
	st := memcheck.Status{
		State: memcheck.StateReady,
		Sum:   r.Sum(),
		Pid:   os.Getpid(),
		Addr:  uintptr(unsafe.Pointer(unsafe.SliceData(r.Bytes()))),
		Size:  len(r.Bytes()),
	}
	// The status file is written before the line is printed, so whoever reads the
	// line finds the file already up to date.
	report := func(line string) error {
		st.Seq++
		if statusFile != "" {
			if err := memcheck.WriteStatus(statusFile, st); err != nil {
				return err
			}
		}
		fmt.Println(line)
		return nil
	}
	verify := func() error {
		if err := r.Verify(); err != nil {
			fmt.Fprintln(os.Stderr, "memwriter:", err)
			st.State, st.Sum = memcheck.StateCorrupt, ""
			return report("corrupt")
		}
		st.State, st.Sum = memcheck.StateOK, r.Sum()
		return report("ok " + st.Sum)
	}
	doTouch := func() error {
		r.Touch(touch)
		st.State, st.Round, st.Sum = memcheck.StateTouched, r.Round(), r.Sum()
		return report(fmt.Sprintf("touched %d %s", st.Round, st.Sum))
	}
	if err := report("ready " + st.Sum); err != nil {
		return err
	}

	lines := make(chan string)
	go func() {
		sc := bufio.NewScanner(os.Stdin)
		for sc.Scan() {
			lines <- strings.TrimSpace(sc.Text())
		}
		// EOF: keep running on signals and the interval alone.
	}()
	var tick <-chan time.Time
	if interval > 0 {
		t := time.NewTicker(interval)
		defer t.Stop()
		tick = t.C
	}
	for {
		var err error
		select {
		case l := <-lines:
			switch l {
			case "", "verify":
				err = verify()
			case "touch":
				err = doTouch()
			case "quit":
				return nil
			default:
				fmt.Fprintf(os.Stderr, "memwriter: unknown command %q\n", l)
			}
		case s := <-sigs:
			if s == syscall.SIGUSR2 {
				err = doTouch()
			} else {
				err = verify()
			}
		case <-tick:
			err = verify()
		}
		if err != nil {
			return err
		}
	}
}

// ticks prints the wall-clock time every d. A failed write (stdout gone after a
// restore) is ignored like the event loop's: the ticks are for whoever still reads.
func ticks(d time.Duration) {
	t := time.NewTicker(d)
	defer t.Stop()
	for range t.C {
		// One write per line, so a tick never splits an event's line.
		_, _ = os.Stdout.WriteString("tick " + strconv.FormatInt(time.Now().UnixNano(), 10) + "\n")
	}
}
