package agent

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"testing"
	"time"

	"golang.org/x/sys/unix"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/migratehq/migrate/agent/checkpoint"
	"github.com/migratehq/migrate/agent/config"
	"github.com/migratehq/migrate/transfer"
)

func TestMoveMode(t *testing.T) {
	for m, want := range map[string]string{"": "auto", "auto": "auto", "cold": "cold", "postcopy": "postcopy", "precopy": "precopy"} {
		if got, err := moveMode(m); err != nil || got != want {
			t.Errorf("moveMode(%q) = %q, %v; want %s", m, got, err, want)
		}
	}
	for _, m := range []string{"live", "COLD", "warp"} {
		if _, err := moveMode(m); !errors.Is(err, ErrInvalid) {
			t.Errorf("moveMode(%q): %v, want ErrInvalid", m, err)
		}
	}
}

func TestResolveCgroup(t *testing.T) {
	for _, c := range []struct{ path, id, want string }{
		{"", "c1", "/migrate/c1"},
		{"n2/c1", "c1", "/migrate/n2/c1"},
		{"../../etc", "c1", "/migrate/etc"},
		{"/a/b/../c", "c1", "/a/c"},
	} {
		if got := resolveCgroup(c.path, c.id); got != c.want {
			t.Errorf("resolveCgroup(%q, %q) = %q, want %q", c.path, c.id, got, c.want)
		}
	}
}

func TestMoveFiles(t *testing.T) {
	work := t.TempDir()
	for _, p := range []string{"checkpoint/manifest.json", "checkpoint/images/pages-1.img", "base.tar"} {
		if err := os.MkdirAll(filepath.Join(work, filepath.Dir(p)), 0o700); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(work, p), []byte(p), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	if err := os.Symlink("/etc/passwd", filepath.Join(work, "checkpoint", "link")); err != nil {
		t.Fatal(err)
	}
	m := &checkpoint.Manifest{Files: []checkpoint.File{{Path: "images/pages-1.img", SHA256: "abc"}}}
	files, sums, err := moveFiles(work, m)
	if err != nil {
		t.Fatal(err)
	}
	slices.Sort(files)
	want := []string{"base.tar", "checkpoint/images/pages-1.img", "checkpoint/manifest.json"}
	if !slices.Equal(files, want) {
		t.Errorf("files %v, want %v (regular files only)", files, want)
	}
	if len(sums) != 1 || sums["checkpoint/images/pages-1.img"] != "abc" {
		t.Errorf("sums %v", sums)
	}
}

func TestMoveTable(t *testing.T) {
	mt := newMoveTable()
	if !mt.reserveOutgoing("c") || mt.reserveOutgoing("c") {
		t.Fatal("a second move of the same container was not refused")
	}
	mt.releaseOutgoing("c")
	if !mt.reserveOutgoing("c") {
		t.Fatal("released container cannot be moved again")
	}
	first, again, other := mt.in("t1"), mt.in("t1"), mt.in("t2")
	if first != again || first == other {
		t.Fatal("incoming moves are not tracked per transfer")
	}
}

func TestResendable(t *testing.T) {
	for _, c := range []struct {
		err  error
		want bool
	}{
		{fmt.Errorf("send: %w", transfer.ErrIncomplete), true},
		{fmt.Errorf("send: %w", transfer.ErrBusy), true},
		{status.Error(codes.Unavailable, "connection refused"), true},
		{status.Error(codes.DeadlineExceeded, "keepalive ping failed"), true},
		{&transfer.FileError{File: "pages-1.img", Err: transfer.ErrDigestMismatch}, false},
		{&transfer.ChunkError{File: "pages-1.img", Err: transfer.ErrChunkChecksum}, false},
		{status.Error(codes.PermissionDenied, "not a node of this cluster"), false},
		{fmt.Errorf("send: %w", context.Canceled), false},
	} {
		if got := resendable(c.err); got != c.want {
			t.Errorf("resendable(%v) = %v, want %v", c.err, got, c.want)
		}
	}
}

// TestExpireIncoming removes an incoming transfer nobody wrote to for the expiry,
// and keeps a fresh one, one being restored, and one that is locked by a receive.
func TestExpireIncoming(t *testing.T) {
	dir := t.TempDir()
	s := &Service{cfg: &config.Config{DataDir: dir}, moves: newMoveTable(),
		incoming: &transfer.Receiver{Root: incomingDir(dir)}, log: slog.New(slog.DiscardHandler)}
	old := time.Now().Add(-2 * incomingExpiry)
	mk := func(id string, mtime time.Time) string {
		p := filepath.Join(incomingDir(dir), id)
		if err := os.MkdirAll(filepath.Join(p, "files"), 0o700); err != nil {
			t.Fatal(err)
		}
		for _, f := range []string{"journal", "lock"} {
			if err := os.WriteFile(filepath.Join(p, f), nil, 0o600); err != nil {
				t.Fatal(err)
			}
		}
		for _, f := range []string{filepath.Join(p, "journal"), filepath.Join(p, "lock"), filepath.Join(p, "files"), p} {
			if err := os.Chtimes(f, mtime, mtime); err != nil {
				t.Fatal(err)
			}
		}
		return p
	}
	stale, fresh, busy, receiving := mk("stale", old), mk("fresh", time.Now()), mk("busy", old), mk("receiving", old)
	lock, err := os.Open(filepath.Join(receiving, "lock"))
	if err != nil {
		t.Fatal(err)
	}
	defer lock.Close()
	if err := unix.Flock(int(lock.Fd()), unix.LOCK_EX); err != nil {
		t.Fatal(err)
	}
	in := s.moves.in("busy")
	in.mu.Lock()
	s.expireIncomingOnce(time.Now().Add(-incomingExpiry))
	in.mu.Unlock()
	if _, err := os.Stat(stale); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("stale transfer kept: %v", err)
	}
	for _, p := range []string{fresh, busy, receiving} {
		if _, err := os.Stat(p); err != nil {
			t.Errorf("%s removed: %v", p, err)
		}
	}
	if !s.moves.in("stale").aborted {
		t.Error("an expired transfer can still be restored")
	}
}
