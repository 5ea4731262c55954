// Package ops tracks long-running operations (stop now; checkpoint, restore, move and
// snapshot later): each has an id, a cancellable context, a progress history that
// late watchers replay, and a final state. Operations live in memory: an agent restart
// ends them (the work they drive is re-derived from persisted container state).
package ops
