package pagestore

import (
	"bufio"
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"sync"
	"syscall"
	"testing"
	"time"
)

// The crash tests run a Put in a child process (this test binary re-run
// with crashChildEnv set) that stops at a failpoint and tells the parent,
// which SIGKILLs it: nothing of the Put gets to clean up.
const crashChildEnv = "PAGESTORE_CRASH_CHILD"

// TestCrashChild is the child's side; it does nothing in a normal run.
func TestCrashChild(t *testing.T) {
	if os.Getenv(crashChildEnv) == "" {
		t.Skip("crash child only")
	}
	root, src, point := os.Getenv("PS_ROOT"), os.Getenv("PS_SRC"), os.Getenv("PS_POINT")
	after, err := strconv.Atoi(os.Getenv("PS_AFTER"))
	if err != nil {
		t.Fatal(err)
	}
	s, err := Open(root, Options{})
	if err != nil {
		t.Fatal(err)
	}
	var once sync.Once
	s.failpoint = func(p string, n int) {
		if p == point && n >= after {
			once.Do(func() { fmt.Fprintln(os.Stdout, "paused") })
			time.Sleep(time.Hour) // until SIGKILL (a bare select{} trips the deadlock detector)
		}
	}
	_, err = s.Put(context.Background(), "crashed", src, nil)
	t.Fatalf("put returned %v instead of being killed", err)
}

func crashPut(t *testing.T, root, src, point string, after int) {
	t.Helper()
	cmd := exec.Command(os.Args[0], "-test.run=^TestCrashChild$", "-test.count=1")
	cmd.Env = append(os.Environ(), crashChildEnv+"=1", "PS_ROOT="+root, "PS_SRC="+src,
		"PS_POINT="+point, "PS_AFTER="+strconv.Itoa(after))
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	cmd.Stderr = os.Stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	line, err := bufio.NewReader(out).ReadString('\n')
	if err != nil || line != "paused\n" {
		cmd.Process.Kill()
		cmd.Wait()
		t.Fatalf("child did not reach failpoint %s: %q %v", point, line, err)
	}
	if err := cmd.Process.Signal(syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	cmd.Wait()
}

func TestCrashMidPut(t *testing.T) {
	for _, tc := range []struct {
		point string
		after int
	}{
		{"batch", 1},  // after a first batch of chunks is in place
		{"chunk", 40}, // chunks written and synced in tmp/, renames pending
	} {
		t.Run(tc.point, func(t *testing.T) {
			t.Parallel()
			dir := t.TempDir()
			srcA, srcB := filepath.Join(dir, "a"), filepath.Join(dir, "b")
			checkpointDir(t, srcA, 256, 30)
			checkpointDir(t, srcB, 3*1024*4, 31) // 48 MiB of pages: several batches
			root := filepath.Join(dir, "store")
			s := openStore(t, root, Options{})
			ctx := context.Background()
			if _, err := s.Put(ctx, "base", srcA, nil); err != nil {
				t.Fatal(err)
			}
			base := usage(t, s)

			crashPut(t, root, srcB, tc.point, tc.after)

			left := usage(t, s)
			if left.TmpFiles == 0 || (tc.point == "batch" && left.Chunks <= base.Chunks) {
				t.Fatalf("crash left nothing behind (%+v): the failpoint is not mid-Put", left)
			}
			list, err := s.List()
			if err != nil {
				t.Fatal(err)
			}
			if len(list) != 1 || list[0].Name != "base" {
				t.Fatalf("list after crash = %+v", list)
			}
			mustVerify(t, s)
			freed, err := s.GC(ctx)
			if err != nil {
				t.Fatal(err)
			}
			after := usage(t, s)
			if after.Chunks != base.Chunks || after.ChunkBytes != base.ChunkBytes || after.TmpFiles != 0 {
				t.Errorf("after gc %+v, before crash %+v", after, base)
			}
			if want := left.ChunkBytes - base.ChunkBytes + left.TmpBytes; freed < want-left.TmpBytes || freed > want {
				t.Errorf("gc freed %d, want between %d and %d", freed, want-left.TmpBytes, want)
			}
			if _, err := s.Put(ctx, "again", srcB, nil); err != nil {
				t.Fatal(err)
			}
			dst := filepath.Join(dir, "out")
			if err := s.Get(ctx, "again", dst); err != nil {
				t.Fatal(err)
			}
			sameTree(t, srcB, dst)
			mustVerify(t, s)
		})
	}
}
