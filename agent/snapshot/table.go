package snapshot

import (
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"sort"
	"sync"

	"github.com/migratehq/migrate/runtime/atomicfile"
)

// Table is the set of schedules, one per container, persisted as one JSON
// file written atomically (temp file, fsync, rename, fsync of the directory)
// on every change, so a crash leaves either the old or the new table.
type Table struct {
	path string

	mu    sync.Mutex
	items map[string]*Schedule // guarded by mu
}

// tableFile is the schedules' format on disk.
type tableFile struct {
	Version   int         `json:"version"`
	Schedules []*Schedule `json:"schedules"`
}

// LoadTable reads the table at path; a missing file is an empty table.
func LoadTable(path string) (*Table, error) {
	t := &Table{path: path, items: map[string]*Schedule{}}
	b, err := os.ReadFile(path)
	if errors.Is(err, os.ErrNotExist) {
		return t, nil
	}
	if err != nil {
		return nil, fmt.Errorf("load schedules: %w", err)
	}
	var f tableFile
	if err := json.Unmarshal(b, &f); err != nil {
		return nil, fmt.Errorf("load schedules %s: %w", path, err)
	}
	if f.Version != 1 {
		return nil, fmt.Errorf("load schedules %s: unknown version %d", path, f.Version)
	}
	for _, s := range f.Schedules {
		if err := s.Validate(); err != nil {
			return nil, fmt.Errorf("load schedules %s: %s: %w", path, s.ContainerID, err)
		}
		t.items[s.ContainerID] = s
	}
	return t, nil
}

// List returns copies of the schedules, by container id.
func (t *Table) List() []Schedule {
	t.mu.Lock()
	defer t.mu.Unlock()
	out := make([]Schedule, 0, len(t.items))
	for _, s := range t.items {
		out = append(out, *s)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].ContainerID < out[j].ContainerID })
	return out
}

// Get returns a copy of the schedule of container id.
func (t *Table) Get(id string) (Schedule, bool) {
	t.mu.Lock()
	defer t.mu.Unlock()
	s, ok := t.items[id]
	if !ok {
		return Schedule{}, false
	}
	return *s, true
}

// Set adds or replaces a schedule and saves the table.
func (t *Table) Set(s Schedule) error {
	if err := s.Validate(); err != nil {
		return err
	}
	t.mu.Lock()
	defer t.mu.Unlock()
	old := t.items[s.ContainerID]
	t.items[s.ContainerID] = &s
	if err := t.saveLocked(); err != nil {
		if old != nil {
			t.items[s.ContainerID] = old
		} else {
			delete(t.items, s.ContainerID)
		}
		return err
	}
	return nil
}

// Update applies fn to the schedule of id, if it still exists, and saves.
func (t *Table) Update(id string, fn func(*Schedule)) error {
	t.mu.Lock()
	defer t.mu.Unlock()
	s, ok := t.items[id]
	if !ok {
		return nil
	}
	fn(s)
	return t.saveLocked()
}

// Remove deletes the schedule of id and saves; it reports whether there was one.
func (t *Table) Remove(id string) (bool, error) {
	t.mu.Lock()
	defer t.mu.Unlock()
	old, ok := t.items[id]
	if !ok {
		return false, nil
	}
	delete(t.items, id)
	if err := t.saveLocked(); err != nil {
		t.items[id] = old
		return true, err
	}
	return true, nil
}

func (t *Table) saveLocked() error {
	f := tableFile{Version: 1, Schedules: make([]*Schedule, 0, len(t.items))}
	for _, s := range t.items {
		f.Schedules = append(f.Schedules, s)
	}
	sort.Slice(f.Schedules, func(i, j int) bool { return f.Schedules[i].ContainerID < f.Schedules[j].ContainerID })
	b, err := json.MarshalIndent(f, "", "  ")
	if err != nil {
		return err
	}
	if err := atomicfile.WriteFile(t.path, b, 0o600); err != nil {
		return fmt.Errorf("save schedules: %w", err)
	}
	return nil
}
