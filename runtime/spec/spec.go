package spec

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"

	specs "github.com/opencontainers/runtime-spec/specs-go"
)

// ConfigName is the bundle file that holds the configuration.
const ConfigName = "config.json"

// ErrInvalid marks a configuration that parsed but cannot run.
var ErrInvalid = errors.New("invalid configuration")

// Load reads and validates bundle/config.json.
func Load(bundle string) (*specs.Spec, error) {
	path := filepath.Join(bundle, ConfigName)
	data, err := os.ReadFile(path)
	if err != nil {
		if errors.Is(err, os.ErrNotExist) {
			return nil, fmt.Errorf("bundle %s has no %s: %w", bundle, ConfigName, err)
		}
		return nil, fmt.Errorf("read %s: %w", path, err)
	}
	s, err := Parse(data)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	if err := Validate(s, bundle); err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	return s, nil
}

// Parse decodes a configuration, reporting the line and column of a syntax error.
func Parse(data []byte) (*specs.Spec, error) {
	var s specs.Spec
	dec := json.NewDecoder(bytes.NewReader(data))
	if err := dec.Decode(&s); err != nil {
		var se *json.SyntaxError
		var te *json.UnmarshalTypeError
		switch {
		case errors.As(err, &se):
			line, col := position(data, se.Offset)
			return nil, fmt.Errorf("malformed JSON at line %d column %d: %v", line, col, se)
		case errors.As(err, &te):
			line, col := position(data, te.Offset)
			return nil, fmt.Errorf("malformed JSON at line %d column %d: field %q wants %s, got %s", line, col, te.Field, te.Type, te.Value)
		case errors.Is(err, io.EOF):
			return nil, errors.New("malformed JSON: empty file")
		case errors.Is(err, io.ErrUnexpectedEOF):
			line, col := position(data, int64(len(data)))
			return nil, fmt.Errorf("malformed JSON at line %d column %d: unexpected end of file", line, col)
		}
		return nil, fmt.Errorf("malformed JSON: %w", err)
	}
	if dec.More() {
		return nil, errors.New("malformed JSON: trailing data after the configuration object")
	}
	return &s, nil
}

func position(data []byte, off int64) (line, col int) {
	if off > int64(len(data)) {
		off = int64(len(data))
	}
	prefix := data[:off]
	line = bytes.Count(prefix, []byte("\n")) + 1
	col = int(off) - bytes.LastIndexByte(prefix, '\n')
	return line, col
}

// RootfsPath returns the absolute host path of the container's root filesystem.
func RootfsPath(s *specs.Spec, bundle string) string {
	p := s.Root.Path
	if !filepath.IsAbs(p) {
		p = filepath.Join(bundle, p)
	}
	return filepath.Clean(p)
}

var nsTypes = map[specs.LinuxNamespaceType]bool{
	specs.PIDNamespace: true, specs.NetworkNamespace: true, specs.MountNamespace: true,
	specs.IPCNamespace: true, specs.UTSNamespace: true, specs.UserNamespace: true,
	specs.CgroupNamespace: true, specs.TimeNamespace: true,
}

// Validate checks what the runtime relies on before it creates anything.
func Validate(s *specs.Spec, bundle string) error {
	if s.Version == "" {
		return fmt.Errorf("%w: ociVersion is empty", ErrInvalid)
	}
	if !strings.HasPrefix(s.Version, "1.") {
		return fmt.Errorf("%w: ociVersion %q is not supported (want 1.x)", ErrInvalid, s.Version)
	}
	if s.Root == nil || s.Root.Path == "" {
		return fmt.Errorf("%w: root.path is required", ErrInvalid)
	}
	rootfs := RootfsPath(s, bundle)
	st, err := os.Stat(rootfs)
	if err != nil {
		return fmt.Errorf("%w: rootfs %s: %v", ErrInvalid, rootfs, errors.Unwrap(err))
	}
	if !st.IsDir() {
		return fmt.Errorf("%w: rootfs %s is not a directory", ErrInvalid, rootfs)
	}
	if s.Process != nil {
		if err := ValidateProcess(s.Process); err != nil {
			return err
		}
	}
	if s.Linux == nil {
		return fmt.Errorf("%w: linux section is required", ErrInvalid)
	}
	seen := map[specs.LinuxNamespaceType]bool{}
	for _, ns := range s.Linux.Namespaces {
		if !nsTypes[ns.Type] {
			return fmt.Errorf("%w: unknown namespace type %q", ErrInvalid, ns.Type)
		}
		if seen[ns.Type] {
			return fmt.Errorf("%w: namespace %q listed twice", ErrInvalid, ns.Type)
		}
		seen[ns.Type] = true
		if ns.Path != "" && !filepath.IsAbs(ns.Path) {
			return fmt.Errorf("%w: namespace %q path %q is not absolute", ErrInvalid, ns.Type, ns.Path)
		}
	}
	hasUserNS := seen[specs.UserNamespace]
	if hasUserNS && userNSPath(s) == "" && (len(s.Linux.UIDMappings) == 0 || len(s.Linux.GIDMappings) == 0) {
		return fmt.Errorf("%w: a new user namespace needs uidMappings and gidMappings", ErrInvalid)
	}
	if !hasUserNS && (len(s.Linux.UIDMappings) > 0 || len(s.Linux.GIDMappings) > 0) {
		return fmt.Errorf("%w: uidMappings/gidMappings given without a user namespace", ErrInvalid)
	}
	if s.Hostname != "" && !seen[specs.UTSNamespace] {
		return fmt.Errorf("%w: hostname needs a new uts namespace", ErrInvalid)
	}
	if s.Domainname != "" && !seen[specs.UTSNamespace] {
		return fmt.Errorf("%w: domainname needs a new uts namespace", ErrInvalid)
	}
	if !seen[specs.MountNamespace] {
		return fmt.Errorf("%w: a mount namespace is required", ErrInvalid)
	}
	for _, h := range allHooks(s.Hooks) {
		if !filepath.IsAbs(h.Path) {
			return fmt.Errorf("%w: hook path %q is not absolute", ErrInvalid, h.Path)
		}
	}
	return nil
}

// ValidateProcess checks a process section (also used for exec).
func ValidateProcess(p *specs.Process) error {
	if len(p.Args) == 0 && p.CommandLine == "" {
		return fmt.Errorf("%w: process.args must not be empty", ErrInvalid)
	}
	if p.Cwd == "" || !filepath.IsAbs(p.Cwd) {
		return fmt.Errorf("%w: process.cwd %q must be an absolute path", ErrInvalid, p.Cwd)
	}
	for _, e := range p.Env {
		if !strings.Contains(e, "=") {
			return fmt.Errorf("%w: process.env entry %q is not KEY=VALUE", ErrInvalid, e)
		}
	}
	for _, r := range p.Rlimits {
		if _, ok := Rlimits[r.Type]; !ok {
			return fmt.Errorf("%w: unknown rlimit %q", ErrInvalid, r.Type)
		}
		if r.Soft > r.Hard {
			return fmt.Errorf("%w: rlimit %s soft %d above hard %d", ErrInvalid, r.Type, r.Soft, r.Hard)
		}
	}
	if p.OOMScoreAdj != nil && (*p.OOMScoreAdj < -1000 || *p.OOMScoreAdj > 1000) {
		return fmt.Errorf("%w: oomScoreAdj %d out of [-1000, 1000]", ErrInvalid, *p.OOMScoreAdj)
	}
	return nil
}

func userNSPath(s *specs.Spec) string {
	for _, ns := range s.Linux.Namespaces {
		if ns.Type == specs.UserNamespace {
			return ns.Path
		}
	}
	return ""
}

func allHooks(h *specs.Hooks) []specs.Hook {
	if h == nil {
		return nil
	}
	var all []specs.Hook
	//lint:ignore SA1019 Prestart is deprecated in the spec but still honoured
	for _, l := range [][]specs.Hook{h.Prestart, h.CreateRuntime, h.CreateContainer, h.StartContainer, h.Poststart, h.Poststop} {
		all = append(all, l...)
	}
	return all
}

// HasNamespace reports whether the spec lists a namespace of type t, and its path.
func HasNamespace(s *specs.Spec, t specs.LinuxNamespaceType) (bool, string) {
	if s.Linux == nil {
		return false, ""
	}
	for _, ns := range s.Linux.Namespaces {
		if ns.Type == t {
			return true, ns.Path
		}
	}
	return false, ""
}

// IsBind reports whether m is a bind mount ("bind" type or a bind/rbind option).
func IsBind(m specs.Mount) bool {
	if m.Type == "bind" {
		return true
	}
	for _, o := range m.Options {
		if o == "bind" || o == "rbind" {
			return true
		}
	}
	return false
}
