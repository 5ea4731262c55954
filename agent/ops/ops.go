package ops

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"sort"
	"sync"
	"time"
)

// ErrNotFound is returned for an unknown operation id.
var ErrNotFound = errors.New("operation not found")

// State of an operation.
type State int

// Operation states.
const (
	Running State = iota + 1
	Succeeded
	Failed
	Cancelled
)

// Progress is one progress report.
type Progress struct {
	Phase   string
	Message string
	Done    int64
	Total   int64
	Unit    string
	Time    time.Time
}

// Snapshot is an operation's state at one moment.
type Snapshot struct {
	ID       string
	Kind     string
	Target   string
	State    State
	Started  time.Time
	Ended    time.Time
	Err      error
	Result   any // set by the operation function on success
	Progress Progress
}

// Op is one operation.
type Op struct {
	cancel context.CancelFunc

	mu      sync.Mutex
	snap    Snapshot      // guarded by mu
	history []Progress    // guarded by mu
	changed chan struct{} // guarded by mu; closed and replaced on every change
}

// Registry holds operations; finished ones are kept for Retain.
type Registry struct {
	Retain time.Duration

	mu  sync.Mutex
	ops map[string]*Op // guarded by mu
}

// NewRegistry returns an empty registry keeping finished operations for 10 minutes.
func NewRegistry() *Registry { return &Registry{Retain: 10 * time.Minute, ops: map[string]*Op{}} }

// Func does an operation's work, reporting progress; its result is stored on success.
type Func func(ctx context.Context, report func(Progress)) (any, error)

// Start runs fn in the background under a context derived from parent (not from a
// caller's RPC, so the operation outlives the call) and returns it.
func (r *Registry) Start(parent context.Context, kind, target string, fn Func) *Op {
	ctx, cancel := context.WithCancel(parent)
	b := make([]byte, 8)
	_, _ = rand.Read(b)
	op := &Op{cancel: cancel, changed: make(chan struct{})}
	op.snap = Snapshot{ID: kind + "-" + hex.EncodeToString(b), Kind: kind, Target: target, State: Running, Started: time.Now().UTC()}
	r.mu.Lock()
	r.gcLocked()
	r.ops[op.snap.ID] = op
	r.mu.Unlock()
	go func() {
		defer cancel()
		res, err := fn(ctx, op.report)
		op.mu.Lock()
		op.snap.Ended = time.Now().UTC()
		switch {
		case err == nil:
			op.snap.State, op.snap.Result = Succeeded, res
		case errors.Is(err, context.Canceled) && ctx.Err() != nil:
			op.snap.State, op.snap.Err = Cancelled, err
		default:
			op.snap.State, op.snap.Err = Failed, err
		}
		op.notifyLocked()
		op.mu.Unlock()
	}()
	return op
}

func (o *Op) report(p Progress) {
	if p.Time.IsZero() {
		p.Time = time.Now().UTC()
	}
	o.mu.Lock()
	defer o.mu.Unlock()
	o.history = append(o.history, p)
	o.snap.Progress = p
	o.notifyLocked()
}

func (o *Op) notifyLocked() {
	close(o.changed)
	o.changed = make(chan struct{})
}

// Snapshot returns the operation's current state.
func (o *Op) Snapshot() Snapshot {
	o.mu.Lock()
	defer o.mu.Unlock()
	s := o.snap
	return s
}

// Cancel asks the operation to stop.
func (o *Op) Cancel() { o.cancel() }

// Watch calls fn with every progress report from the first one on, then with the final
// snapshot (State != Running), and returns; or returns ctx's error.
func (o *Op) Watch(ctx context.Context, fn func(Snapshot, *Progress) error) error {
	next := 0
	for {
		o.mu.Lock()
		pending := o.history[next:]
		next = len(o.history)
		snap := o.snap
		changed := o.changed
		o.mu.Unlock()
		for i := range pending {
			if err := fn(snap, &pending[i]); err != nil {
				return err
			}
		}
		if snap.State != Running {
			return fn(snap, nil)
		}
		select {
		case <-changed:
		case <-ctx.Done():
			return ctx.Err()
		}
	}
}

// Get returns the operation with id.
func (r *Registry) Get(id string) (*Op, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	op, ok := r.ops[id]
	if !ok {
		return nil, fmt.Errorf("%w: %s", ErrNotFound, id)
	}
	return op, nil
}

// List returns all retained operations, oldest first.
func (r *Registry) List() []Snapshot {
	r.mu.Lock()
	r.gcLocked()
	out := make([]Snapshot, 0, len(r.ops))
	for _, op := range r.ops {
		out = append(out, op.Snapshot())
	}
	r.mu.Unlock()
	sort.Slice(out, func(i, j int) bool { return out[i].Started.Before(out[j].Started) })
	return out
}

func (r *Registry) gcLocked() {
	now := time.Now()
	for id, op := range r.ops {
		s := op.Snapshot()
		if s.State != Running && now.Sub(s.Ended) > r.Retain {
			delete(r.ops, id)
		}
	}
}
