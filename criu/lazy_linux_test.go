package criu

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"testing"
	"time"
)

type readyRecorder struct {
	NoNotify
	n int
}

func (r *readyRecorder) StatusReady() error { r.n++; return nil }

func TestStatusReadyDispatch(t *testing.T) {
	r := &readyRecorder{}
	if _, err := dispatchNotify(r, "status-ready", 0, nil); err != nil || r.n != 1 {
		t.Fatalf("status-ready: err %v, calls %d", err, r.n)
	}
	// A Notify without the method accepts it.
	if _, err := dispatchNotify(NoNotify{}, "status-ready", 0, nil); err != nil {
		t.Fatal(err)
	}
}

func TestLazyAddressConfig(t *testing.T) {
	dir := t.TempDir()
	p, err := lazyAddressConfig(filepath.Join(dir, "images"), dir, "127.0.0.1")
	if err != nil {
		t.Fatal(err)
	}
	b, err := os.ReadFile(p)
	if err != nil || string(b) != "address 127.0.0.1\n" || filepath.Dir(p) != dir {
		t.Fatalf("%s: %q, %v", p, b, err)
	}
}

func TestStartLazyPagesChecksOptions(t *testing.T) {
	c := &Client{Path: "/bin/true"}
	for _, o := range []LazyPagesOptions{
		{WorkDir: "/w", Address: "127.0.0.1", Port: 1},
		{ImagesDir: "/i", WorkDir: "/w", Address: "127.0.0.1", Port: 0},
		{ImagesDir: "/i", WorkDir: "/w", Address: "127.0.0.1", Port: 1, LogFile: "a/b"},
	} {
		if _, err := c.StartLazyPages(context.Background(), o); err == nil {
			t.Errorf("%+v: no error", o)
		}
	}
}

// A daemon that exits before it is ready is an error quoting its log, not a hang.
func TestStartLazyPagesExitsEarly(t *testing.T) {
	needRoot(t)
	dir := t.TempDir()
	c := &Client{}
	_, err := c.StartLazyPages(context.Background(), LazyPagesOptions{
		ImagesDir: filepath.Join(dir, "missing"), WorkDir: dir, Address: "127.0.0.1", Port: 1,
	})
	var ce *Error
	if !errors.As(err, &ce) || ce.Op != "lazy-pages" {
		t.Fatalf("err %v, want a lazy-pages *Error", err)
	}
	t.Logf("%v", err)
}

func TestWaitLazyPagesDaemon(t *testing.T) {
	dir := t.TempDir()
	// No daemon starting there: at once.
	if err := waitLazyPagesDaemon(context.Background(), dir); err != nil {
		t.Fatal(err)
	}
	marker := filepath.Join(dir, lazyStartingFile)
	if err := os.WriteFile(marker, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
	defer cancel()
	if err := waitLazyPagesDaemon(ctx, dir); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("marker present: %v, want the context's deadline", err)
	}
	removed := time.Now().Add(30 * time.Millisecond)
	time.AfterFunc(30*time.Millisecond, func() { os.Remove(marker) })
	if err := waitLazyPagesDaemon(context.Background(), dir); err != nil {
		t.Fatal(err)
	}
	if time.Now().Before(removed) {
		t.Fatal("returned before the marker was removed")
	}
}

// A launched daemon that exits before it listens releases a waiting restore
// and WaitReady reports its failure.
func TestLaunchLazyPagesExitsEarly(t *testing.T) {
	needRoot(t)
	dir := t.TempDir()
	l, err := (&Client{}).LaunchLazyPages(context.Background(), LazyPagesOptions{
		ImagesDir: filepath.Join(dir, "missing"), WorkDir: dir, Address: "127.0.0.1", Port: 1,
	})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	if err := waitLazyPagesDaemon(ctx, dir); err != nil {
		t.Fatal(err)
	}
	var ce *Error
	if err := l.WaitReady(ctx); !errors.As(err, &ce) || ce.Op != "lazy-pages" {
		t.Fatalf("WaitReady: %v, want a lazy-pages *Error", err)
	}
	<-l.Done()
}
