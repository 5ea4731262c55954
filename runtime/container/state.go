package container

import (
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"time"

	specs "github.com/opencontainers/runtime-spec/specs-go"

	"github.com/migratehq/migrate/runtime/atomicfile"
	"github.com/migratehq/migrate/runtime/cgroups"
)

const (
	stateFile = "state.json"
	fifoName  = "exec.fifo"
)

var idPattern = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9_.+-]{0,127}$`)

// ValidateID checks that id can name a state directory safely.
func ValidateID(id string) error {
	if !idPattern.MatchString(id) {
		return fmt.Errorf("%w %q: use 1-128 characters of [A-Za-z0-9_.+-], starting with a letter or digit", ErrInvalidID, id)
	}
	return nil
}

// persisted is the container's state.json. The process is identified by pid
// plus start time so a recycled pid is never mistaken for the container.
type persisted struct {
	ID             string            `json:"id"`
	Bundle         string            `json:"bundle"`
	Rootfs         string            `json:"rootfs"`
	InitPid        int               `json:"initPid"`
	InitStartTime  uint64            `json:"initStartTime"`
	Created        time.Time         `json:"created"`
	Cgroup         cgroups.State     `json:"cgroup"`
	Spec           *specs.Spec       `json:"spec"`
	Annotations    map[string]string `json:"annotations,omitempty"`
	NamespacePaths map[string]string `json:"namespacePaths,omitempty"`
}

func (p *persisted) save(dir string) error {
	data, err := json.MarshalIndent(p, "", "  ")
	if err != nil {
		return err
	}
	return atomicfile.WriteFileNoSync(filepath.Join(dir, stateFile), data, 0o600)
}

func loadPersisted(dir string) (*persisted, error) {
	data, err := os.ReadFile(filepath.Join(dir, stateFile))
	if err != nil {
		return nil, err
	}
	var p persisted
	if err := json.Unmarshal(data, &p); err != nil {
		return nil, fmt.Errorf("corrupt %s: %w", filepath.Join(dir, stateFile), err)
	}
	return &p, nil
}
