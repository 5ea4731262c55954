package shim

import (
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"time"

	"github.com/migratehq/migrate/runtime/atomicfile"
)

// File names in a container directory.
const (
	MetaFile   = "meta.json"
	StateFile  = "shim.json"
	ExitFile   = "exit.json"
	SocketFile = "shim.sock"
	LogFile    = "shim.log"
)

// Meta is what the agent records about a container before its shim exists.
type Meta struct {
	ID      string    `json:"id"`
	Bundle  string    `json:"bundle"`
	Created time.Time `json:"created"`
}

// State is what a shim records about itself once the container is created.
type State struct {
	ID            string    `json:"id"`
	Bundle        string    `json:"bundle"`
	ShimPid       int       `json:"shimPid"`
	ShimStartTime uint64    `json:"shimStartTime"` // /proc/<pid>/stat field 22
	InitPid       int       `json:"initPid"`
	Cgroups       []string  `json:"cgroups"` // the shim's own cgroup directories
	StdoutPipe    uint64    `json:"stdoutPipeInode"`
	StderrPipe    uint64    `json:"stderrPipeInode"`
	StdinPipe     uint64    `json:"stdinPipeInode,omitempty"`
	StartedAt     time.Time `json:"startedAt,omitzero"`
}

// Exit is the recorded exit of a container's init.
type Exit struct {
	Code int       `json:"code"`
	At   time.Time `json:"at"`
	// Checkpoint is set when the init ended because a checkpoint without
	// leave-running dumped it: the container's state lives there.
	Checkpoint string `json:"checkpoint,omitempty"`
}

// WriteJSON writes v to dir/name atomically: temp file, fsync, rename, fsync dir.
func WriteJSON(dir, name string, v any) error {
	b, err := json.Marshal(v)
	if err != nil {
		return err
	}
	return atomicfile.WriteFile(filepath.Join(dir, name), b, 0o600)
}

// writeState writes the shim's state record (StateFile): atomically, without
// fsync, as it describes running processes.
func writeState(dir string, st State) error {
	b, err := json.Marshal(st)
	if err != nil {
		return err
	}
	return atomicfile.WriteFileNoSync(filepath.Join(dir, StateFile), b, 0o600)
}

// ReadJSON reads dir/name into v; errors wrap os.ErrNotExist when it is missing.
func ReadJSON(dir, name string, v any) error {
	b, err := os.ReadFile(filepath.Join(dir, name))
	if err != nil {
		return err
	}
	if err := json.Unmarshal(b, v); err != nil {
		return fmt.Errorf("%s: %w", filepath.Join(dir, name), err)
	}
	return nil
}
