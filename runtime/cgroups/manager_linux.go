package cgroups

import (
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"maps"
	"path/filepath"
	"strings"
	"sync"

	"github.com/opencontainers/cgroups"
	// Registers the device-rule writers (v1 files, v2 eBPF program) with the
	// library; without it every device policy fails with ErrDevicesUnsupported.
	_ "github.com/opencontainers/cgroups/devices"
	devconfig "github.com/opencontainers/cgroups/devices/config"
	"github.com/opencontainers/cgroups/manager"
	specs "github.com/opencontainers/runtime-spec/specs-go"
)

// Host cgroup layouts reported by Mode.
const (
	ModeV1     = "v1"     // only v1 hierarchies
	ModeHybrid = "hybrid" // v1 controllers plus a v2 hierarchy at /sys/fs/cgroup/unified
	ModeV2     = "v2"     // unified hierarchy at /sys/fs/cgroup
)

// Mode reports the host's cgroup layout: ModeV1, ModeHybrid or ModeV2.
// Hybrid hosts are managed like v1 (limits go to the v1 controllers); the
// container also joins the same path in the v2 hierarchy.
func Mode() string {
	if cgroups.IsCgroup2UnifiedMode() {
		return ModeV2
	}
	if cgroups.IsCgroup2HybridMode() {
		return ModeHybrid
	}
	return ModeV1
}

// Config selects a container's cgroup.
type Config struct {
	// ID is the container id; with an empty CgroupsPath the cgroup is
	// DefaultParent/<ID>.
	ID string
	// CgroupsPath is spec.Linux.CgroupsPath: absolute (relative to each
	// hierarchy root) or relative (placed under DefaultParent). The systemd
	// "slice:prefix:name" form is refused with ErrUnsupported.
	CgroupsPath string
	// Resources are the container's limits; may be nil.
	Resources *specs.LinuxResources
}

// Manager manages one container's cgroup. Its methods are safe for
// concurrent use.
type Manager struct {
	mu sync.Mutex // serialises all calls; the library managers are not goroutine-safe

	mode  string
	path  string                // cgroup path below each hierarchy root, e.g. /migrate/<id>
	paths map[string]string     // controller -> absolute dir; fixed at New/Load
	spec  *specs.LinuxResources // private copy of Config.Resources, persisted in State
	lib   cgroups.Manager
}

// New validates cfg, translates its resources and prepares a manager. It
// creates nothing; Apply does.
func New(cfg Config) (*Manager, error) {
	p, err := cgroupPath(cfg.ID, cfg.CgroupsPath)
	if err != nil {
		return nil, err
	}
	return newManager(Mode(), p, cfg.Resources, nil)
}

func newManager(mode, p string, spec *specs.LinuxResources, paths map[string]string) (*Manager, error) {
	spec, err := cloneResources(spec)
	if err != nil {
		return nil, err
	}
	res, _, err := translate(mode, spec)
	if err != nil {
		return nil, err
	}
	// The library reads Resources during Apply (cpuset and real-time
	// settings must be in place before a pid joins) and during Freeze; it
	// never sees the device rules, which Apply writes separately.
	cg := &cgroups.Cgroup{Path: p, Resources: res}
	lib, err := manager.NewWithPaths(cg, paths)
	if err != nil {
		return nil, fmt.Errorf("cgroups: %s: %w", p, err)
	}
	return &Manager{mode: mode, path: p, paths: maps.Clone(lib.GetPaths()), spec: spec, lib: lib}, nil
}

// Apply creates the cgroup in every hierarchy, installs the device policy
// (the spec's device rules plus DefaultDevices, on a deny-all base) and moves
// pid in. The device policy is written here rather than left to Set so that
// no container ever runs with unrestricted device access. A pid of -1 only
// creates the cgroup (for a CRIU restore that places tasks itself). On error
// the caller should Destroy.
func (m *Manager) Apply(pid int) error {
	if pid <= 0 && pid != -1 {
		return fmt.Errorf("cgroups: apply %s: invalid pid %d", m.path, pid)
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	if err := m.lib.Apply(-1); err != nil {
		return fmt.Errorf("cgroups: create %s: %w", m.path, err)
	}
	_, rules, err := translate(m.mode, m.spec)
	if err != nil {
		return err // validated in New; cannot happen unless the host mode changed
	}
	if err := m.setDevices(rules); err != nil {
		return fmt.Errorf("cgroups: device policy for %s: %w", m.path, err)
	}
	if pid == -1 {
		return nil
	}
	if err := m.lib.Apply(pid); err != nil {
		return fmt.Errorf("cgroups: move pid %d into %s: %w", pid, m.path, err)
	}
	return nil
}

// Join moves pid into the existing cgroup (for exec into a running
// container) without touching limits or the device policy; Apply would
// reinstall the Config's device policy, undoing an update.
func (m *Manager) Join(pid int) error {
	if pid <= 0 {
		return fmt.Errorf("cgroups: join %s: invalid pid %d", m.path, pid)
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	if !m.lib.Exists() {
		return fmt.Errorf("cgroups: join %s: %w", m.path, fs.ErrNotExist)
	}
	if err := m.lib.AddPid("", pid); err != nil {
		return fmt.Errorf("cgroups: move pid %d into %s: %w", pid, m.path, err)
	}
	return nil
}

func (m *Manager) setDevices(rules []*devconfig.Rule) error {
	res := &cgroups.Resources{Devices: rules}
	if m.mode == ModeV2 {
		if cgroups.DevicesSetV2 == nil {
			return cgroups.ErrDevicesUnsupported
		}
		return cgroups.DevicesSetV2(m.lib.Path(""), res)
	}
	if cgroups.DevicesSetV1 == nil {
		return cgroups.ErrDevicesUnsupported
	}
	return cgroups.DevicesSetV1(m.lib.Path("devices"), res)
}

// Set validates r and writes it to the cgroup. With r == nil it writes the
// resources given to New (or restored by Load). Fields left nil in r are not
// touched; in particular r.Devices == nil keeps the current device policy,
// while a non-nil r.Devices (even empty) replaces it, DefaultDevices
// included. Set does not remember r: State keeps the resources given to New.
//
// Before writing anything, Set checks that every controller r needs exists
// and returns an *UnavailableError (ErrUnavailable) naming the files if not.
// A file missing inside an existing controller is only found on write; it is
// reported the same way, after the writes that preceded it.
func (m *Manager) Set(r *specs.LinuxResources) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	src := r
	if src == nil {
		src = m.spec
	}
	res, rules, err := translate(m.mode, src)
	if err != nil {
		return err
	}
	res.Devices = rules
	res.SkipDevices = r != nil && r.Devices == nil
	if err := m.checkAvailable(res); err != nil {
		return err
	}
	if err := m.lib.Set(res); err != nil {
		return fmt.Errorf("cgroups: set %s: %w", m.path, asUnavailable(err))
	}
	return nil
}

// checkAvailable refuses a request that needs a controller this cgroup lacks.
func (m *Manager) checkAvailable(res *cgroups.Resources) error {
	var have func(controller string) bool
	if m.mode == ModeV2 {
		data, err := cgroups.ReadFile(m.paths[""], "cgroup.controllers")
		if err != nil {
			return fmt.Errorf("cgroups: read controllers of %s: %w", m.path, err)
		}
		set := make(map[string]bool)
		for _, c := range strings.Fields(data) {
			set[c] = true
		}
		have = func(c string) bool { return set[c] }
	} else {
		have = func(c string) bool { return m.paths[c] != "" }
	}
	var missing []string
	for _, f := range requestedFiles(m.mode, res) {
		if !have(f.controller) {
			missing = append(missing, f.file)
		}
	}
	if len(missing) > 0 {
		return &UnavailableError{Files: missing}
	}
	return nil
}

// asUnavailable turns the library's "no such file" into an UnavailableError
// carrying the path, so callers can branch on ErrUnavailable.
func asUnavailable(err error) error {
	var pe *fs.PathError
	if errors.As(err, &pe) && errors.Is(err, fs.ErrNotExist) {
		return &UnavailableError{Files: []string{pe.Path}, Err: err}
	}
	return err
}

// Freeze stops every process in the cgroup and waits until they are frozen.
func (m *Manager) Freeze() error {
	m.mu.Lock()
	defer m.mu.Unlock()
	if err := m.lib.Freeze(cgroups.Frozen); err != nil {
		return fmt.Errorf("cgroups: freeze %s: %w", m.path, err)
	}
	return nil
}

// Thaw resumes the processes stopped by Freeze.
func (m *Manager) Thaw() error {
	m.mu.Lock()
	defer m.mu.Unlock()
	if err := m.lib.Freeze(cgroups.Thawed); err != nil {
		return fmt.Errorf("cgroups: thaw %s: %w", m.path, err)
	}
	return nil
}

// Freezer states returned by FreezerState.
const (
	StateFrozen    = string(cgroups.Frozen)    // "FROZEN"
	StateThawed    = string(cgroups.Thawed)    // "THAWED"
	StateUndefined = string(cgroups.Undefined) // "": no freezer for this cgroup
)

// FreezerState reports StateFrozen or StateThawed (or StateUndefined without
// a freezer). A cgroup frozen only because an ancestor is frozen reports
// StateThawed, as the library does.
func (m *Manager) FreezerState() (string, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	s, err := m.lib.GetFreezerState()
	if err != nil {
		return "", fmt.Errorf("cgroups: freezer state of %s: %w", m.path, err)
	}
	return string(s), nil
}

// Pids returns the pids of all processes in the cgroup and its descendants.
func (m *Manager) Pids() ([]int, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	pids, err := m.lib.GetAllPids()
	if err != nil {
		return nil, fmt.Errorf("cgroups: pids of %s: %w", m.path, err)
	}
	return pids, nil
}

// Exists reports whether the cgroup directory exists.
func (m *Manager) Exists() bool {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.lib.Exists()
}

// Destroy removes the cgroup directories (and any sub-cgroups). It kills
// nothing: with processes still inside, removal fails with EBUSY. Removing
// an already removed cgroup succeeds.
func (m *Manager) Destroy() error {
	m.mu.Lock()
	defer m.mu.Unlock()
	// The v1 library forgets paths it removed; give it a fresh copy so a
	// retry after a partial failure covers every hierarchy.
	if err := cgroups.RemovePaths(maps.Clone(m.paths)); err != nil {
		return fmt.Errorf("cgroups: destroy %s: %w", m.path, err)
	}
	return nil
}

// Paths returns controller -> absolute directory; the "" key is the v2
// directory (the only key on v2; the v2 side of a hybrid host otherwise).
func (m *Manager) Paths() map[string]string { return maps.Clone(m.paths) }

// Path returns the directory for one controller ("" for v2), or "" if the
// controller is not available.
func (m *Manager) Path(controller string) string { return m.paths[controller] }

// CgroupPath returns the cgroup path below each hierarchy root, for example
// "/migrate/<id>" (what /proc/PID/cgroup shows for a member process).
func (m *Manager) CgroupPath() string { return m.path }

// State is what the runtime persists (in its state.json) to reopen the
// manager later, possibly from another process, with Load.
type State struct {
	Mode      string                `json:"mode"`
	Path      string                `json:"path"`
	Paths     map[string]string     `json:"paths"`
	Resources *specs.LinuxResources `json:"resources,omitempty"`
}

// State returns the manager's persistent state.
func (m *Manager) State() State {
	m.mu.Lock()
	defer m.mu.Unlock()
	spec, _ := cloneResources(m.spec) // cannot fail: it round-tripped in New
	return State{Mode: m.mode, Path: m.path, Paths: maps.Clone(m.paths), Resources: spec}
}

// Load reopens a manager from State. It refuses state written under another
// cgroup mode and paths outside /sys/fs/cgroup or not ending in Path.
func Load(s State) (*Manager, error) {
	if mode := Mode(); s.Mode != mode {
		return nil, fmt.Errorf("%w: written on a cgroup %q host, this host is %q", ErrState, s.Mode, mode)
	}
	if !filepath.IsAbs(s.Path) || filepath.Clean(s.Path) != s.Path || s.Path == "/" {
		return nil, fmt.Errorf("%w: path %q is not a clean absolute cgroup path", ErrState, s.Path)
	}
	if len(s.Paths) == 0 {
		return nil, fmt.Errorf("%w: no controller paths", ErrState)
	}
	for c, p := range s.Paths {
		if filepath.Clean(p) != p || !strings.HasPrefix(p, "/sys/fs/cgroup/") || !strings.HasSuffix(p, s.Path) {
			return nil, fmt.Errorf("%w: controller %q path %q is not %s below /sys/fs/cgroup", ErrState, c, p, s.Path)
		}
	}
	return newManager(s.Mode, s.Path, s.Resources, maps.Clone(s.Paths))
}

// cloneResources deep-copies r so that callers mutating their spec do not
// change what the manager applies or persists.
func cloneResources(r *specs.LinuxResources) (*specs.LinuxResources, error) {
	if r == nil {
		return nil, nil
	}
	b, err := json.Marshal(r)
	if err != nil {
		return nil, fmt.Errorf("cgroups: copy resources: %w", err)
	}
	out := new(specs.LinuxResources)
	if err := json.Unmarshal(b, out); err != nil {
		return nil, fmt.Errorf("cgroups: copy resources: %w", err)
	}
	return out, nil
}
