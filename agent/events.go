package agent

import (
	"sync"

	migratev1 "github.com/migratehq/migrate/api/migrate/v1"
)

// events fans container events out to watchers. A slow watcher loses events rather
// than stalling the agent.
type events struct {
	mu   sync.Mutex
	subs map[chan *migratev1.Event]struct{} // guarded by mu
}

func newEvents() *events { return &events{subs: map[chan *migratev1.Event]struct{}{}} }

func (e *events) publish(ev *migratev1.Event) {
	e.mu.Lock()
	defer e.mu.Unlock()
	for ch := range e.subs {
		select {
		case ch <- ev:
		default:
		}
	}
}

func (e *events) subscribe() (<-chan *migratev1.Event, func()) {
	ch := make(chan *migratev1.Event, 64)
	e.mu.Lock()
	e.subs[ch] = struct{}{}
	e.mu.Unlock()
	return ch, func() {
		e.mu.Lock()
		delete(e.subs, ch)
		e.mu.Unlock()
	}
}
