package container

import (
	"bufio"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"

	specs "github.com/opencontainers/runtime-spec/specs-go"
)

// Parent <-> init protocol: newline-delimited JSON over a SOCK_STREAM
// socketpair (fd 3 in the child, CLOEXEC on both ends, so the child's end
// closes by itself when the user program is exec'd).
//
//	parent (create)                          init (child)
//	  start child (new namespaces by clone flags)
//	  put child in cgroup, set limits
//	  [nsenter: "go" byte, read {"pid"}]  -> [C constructor joins namespaces]
//	  -- {"type":"config"} ------------------> unshare cgroup/time ns, setsid
//	                                           mounts, devices (rootfs.Prepare)
//	  <- {"type":"hooks"} --------------------
//	  run prestart + createRuntime hooks
//	  -- {"type":"hooks-done"} -------------->  createContainer hooks, hostname,
//	                                            pivot_root, console, sysctl,
//	                                            masks/readonly, rlimits
//	  <- {"type":"ready"} --------------------  open exec.fifo for writing:
//	  write state.json, exit                    blocks until `start` reads it
//	                                            startContainer hooks, user, caps,
//	                                            no_new_privs, seccomp, execve
//
// Exec uses the same channel without hooks/ready: the parent learns of success
// when the socket reaches EOF at execve, of failure from {"type":"error"}.
// Any step may answer {"type":"error","message":...} instead; the parent then
// kills the child and removes everything it made.

type msgType string

const (
	msgConfig    msgType = "config"
	msgHooks     msgType = "hooks"
	msgHooksDone msgType = "hooks-done"
	msgReady     msgType = "ready"
	msgError     msgType = "error"
	msgPid       msgType = "pid"
)

type message struct {
	Type    msgType     `json:"type"`
	Message string      `json:"message,omitempty"`
	Pid     int         `json:"pid,omitempty"`
	Config  *initConfig `json:"config,omitempty"`
}

// initConfig is everything the init needs; the parent builds it from the
// validated spec so nothing in the child re-reads the bundle.
type initConfig struct {
	Mode        string            `json:"mode"` // "create" or "exec"
	ID          string            `json:"id"`
	Spec        *specs.Spec       `json:"spec"`
	Process     *specs.Process    `json:"process"`
	Bundle      string            `json:"bundle"`
	Rootfs      string            `json:"rootfs"`
	NoPivot     bool              `json:"noPivot,omitempty"`
	InitPid     int               `json:"initPid"`
	CgroupPaths map[string]string `json:"cgroupPaths,omitempty"`
	UserNS      bool              `json:"userNS,omitempty"`
	NewCgroupNS bool              `json:"newCgroupNS,omitempty"`
	NewTimeNS   bool              `json:"newTimeNS,omitempty"`
	Console     bool              `json:"console,omitempty"`
}

type syncConn struct {
	f *os.File
	r *bufio.Reader
}

func newSyncConn(f *os.File) *syncConn { return &syncConn{f: f, r: bufio.NewReader(f)} }

func (s *syncConn) send(m message) error {
	b, err := json.Marshal(m)
	if err != nil {
		return err
	}
	_, err = s.f.Write(append(b, '\n'))
	return err
}

// errInitGone is returned when the child closed the channel: on exec that is
// success (execve closed the CLOEXEC end), elsewhere a crash.
var errInitGone = errors.New("init closed the sync channel")

func (s *syncConn) recv() (message, error) {
	line, err := s.r.ReadBytes('\n')
	if err != nil {
		if errors.Is(err, io.EOF) && len(line) == 0 {
			return message{}, errInitGone
		}
		return message{}, fmt.Errorf("read from init: %w", err)
	}
	var m message
	if err := json.Unmarshal(line, &m); err != nil {
		return message{}, fmt.Errorf("bad message from init %q: %w", line, err)
	}
	if m.Type == msgError {
		return m, errors.New(m.Message)
	}
	return m, nil
}

func (s *syncConn) expect(t msgType) (message, error) {
	m, err := s.recv()
	if err != nil {
		return m, err
	}
	if m.Type != t {
		return m, fmt.Errorf("init protocol: got %q, want %q", m.Type, t)
	}
	return m, nil
}
