package ops

import (
	"context"
	"errors"
	"testing"
	"time"
)

func TestWatchReplaysAndEnds(t *testing.T) {
	r := NewRegistry()
	release := make(chan struct{})
	op := r.Start(context.Background(), "stop", "c1", func(ctx context.Context, report func(Progress)) (any, error) {
		report(Progress{Phase: "one"})
		<-release
		report(Progress{Phase: "two"})
		return "result", nil
	})
	var phases []string
	var final Snapshot
	done := make(chan error)
	go func() {
		done <- op.Watch(context.Background(), func(s Snapshot, p *Progress) error {
			if p != nil {
				phases = append(phases, p.Phase)
			} else {
				final = s
			}
			return nil
		})
	}()
	time.Sleep(10 * time.Millisecond)
	close(release)
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	if len(phases) != 2 || phases[0] != "one" || phases[1] != "two" {
		t.Errorf("phases %v", phases)
	}
	if final.State != Succeeded || final.Result != "result" {
		t.Errorf("final %+v", final)
	}
	// A late watcher replays the history.
	n := 0
	_ = op.Watch(context.Background(), func(_ Snapshot, p *Progress) error {
		if p != nil {
			n++
		}
		return nil
	})
	if n != 2 {
		t.Errorf("late watcher saw %d reports", n)
	}
	if got, err := r.Get(op.Snapshot().ID); err != nil || got != op {
		t.Errorf("Get: %v", err)
	}
	if _, err := r.Get("nope"); !errors.Is(err, ErrNotFound) {
		t.Errorf("Get(nope) = %v", err)
	}
}

func TestCancel(t *testing.T) {
	r := NewRegistry()
	op := r.Start(context.Background(), "move", "c1", func(ctx context.Context, _ func(Progress)) (any, error) {
		<-ctx.Done()
		return nil, ctx.Err()
	})
	op.Cancel()
	var final Snapshot
	_ = op.Watch(context.Background(), func(s Snapshot, p *Progress) error { final = s; return nil })
	if final.State != Cancelled {
		t.Errorf("state %v, want Cancelled", final.State)
	}
	if len(r.List()) != 1 {
		t.Errorf("List: %v", r.List())
	}
}

func TestFailed(t *testing.T) {
	r := NewRegistry()
	boom := errors.New("boom")
	op := r.Start(context.Background(), "stop", "c", func(context.Context, func(Progress)) (any, error) { return nil, boom })
	var final Snapshot
	_ = op.Watch(context.Background(), func(s Snapshot, p *Progress) error { final = s; return nil })
	if final.State != Failed || !errors.Is(final.Err, boom) {
		t.Errorf("final %+v", final)
	}
}
