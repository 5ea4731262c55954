package caps

import (
	"fmt"

	"github.com/moby/sys/capability"
	specs "github.com/opencontainers/runtime-spec/specs-go"
	"golang.org/x/sys/unix"
)

// DropBounding removes from the calling thread's bounding set every
// capability the kernel knows that c.Bounding does not list, including ones
// newer than this package. It needs CAP_SETPCAP, so it runs before Apply and
// before any uid change. A nil c changes nothing.
func DropBounding(c *specs.LinuxCapabilities) error {
	if c == nil {
		return nil
	}
	keep, err := resolve("bounding", c.Bounding)
	if err != nil {
		return err
	}
	last, err := capability.LastCap()
	if err != nil {
		return fmt.Errorf("drop bounding capabilities: %w", err)
	}
	kept := make(map[capability.Cap]bool, len(keep))
	for _, k := range keep {
		kept[k] = true
	}
	for v := capability.Cap(0); v <= last; v++ {
		if kept[v] {
			continue
		}
		if err := capability.DropBound(v); err != nil {
			return fmt.Errorf("drop %s from bounding set: %w", Name(v), err)
		}
	}
	return nil
}

// KeepCapsForUserSwitch sets PR_SET_KEEPCAPS on the calling thread so that
// the caller's following change away from uid 0 keeps the permitted set
// (the effective set is still emptied by the kernel; Apply refills it).
// Apply clears the flag again; execve clears it too.
func KeepCapsForUserSwitch() error {
	if err := unix.Prctl(unix.PR_SET_KEEPCAPS, 1, 0, 0, 0); err != nil {
		return fmt.Errorf("set PR_SET_KEEPCAPS: %w", err)
	}
	return nil
}

// Apply sets the calling thread's effective, permitted and inheritable sets
// to exactly what c lists, then makes the ambient set exactly c.Ambient.
// The kernel's rules apply: permitted may only shrink, effective must be a
// subset of permitted, inheritable of bounding, and an ambient capability
// must be both permitted and inheritable. PR_SET_KEEPCAPS is cleared.
// A nil c changes nothing.
func Apply(c *specs.LinuxCapabilities) error {
	if c == nil {
		return nil
	}
	var parsed [5][]capability.Cap
	for i, s := range sets(c) {
		cs, err := resolve(s.name, s.names)
		if err != nil {
			return err
		}
		parsed[i] = cs
	}
	// Order of sets(): bounding, effective, permitted, inheritable, ambient.
	eff, perm, inh, amb := parsed[1], parsed[2], parsed[3], parsed[4]

	// Cleared first so that a failure below does not leave it set.
	if err := unix.Prctl(unix.PR_SET_KEEPCAPS, 0, 0, 0, 0); err != nil {
		return fmt.Errorf("clear PR_SET_KEEPCAPS: %w", err)
	}

	p, err := capability.NewPid2(0)
	if err != nil {
		return fmt.Errorf("apply capabilities: %w", err)
	}
	p.Clear(capability.CAPS)
	p.Set(capability.EFFECTIVE, eff...)
	p.Set(capability.PERMITTED, perm...)
	p.Set(capability.INHERITABLE, inh...)
	if err := p.Apply(capability.CAPS); err != nil {
		return fmt.Errorf("set effective/permitted/inheritable capabilities "+
			"(permitted may only shrink, effective must be within permitted, inheritable within bounding): %w", err)
	}

	if err := capability.ResetAmbient(); err != nil {
		return fmt.Errorf("clear ambient capabilities: %w", err)
	}
	// The kernel only raises an ambient capability that is permitted and
	// inheritable; others are skipped, as runc does (its default spec lists
	// ambient capabilities without an inheritable set).
	raisable := map[capability.Cap]bool{}
	for _, c := range inh {
		raisable[c] = true
	}
	allowed := map[capability.Cap]bool{}
	for _, c := range perm {
		allowed[c] = raisable[c]
	}
	for _, a := range amb {
		if !allowed[a] {
			continue
		}
		if err := capability.SetAmbient(true, a); err != nil {
			return fmt.Errorf("raise ambient capability %s: %w", Name(a), err)
		}
	}
	return nil
}

// resolve parses one set and drops capabilities the kernel predates.
func resolve(set string, names []string) ([]capability.Cap, error) {
	cs, err := parseSet(set, names)
	if err != nil {
		return nil, err
	}
	last, err := capability.LastCap()
	if err != nil {
		return nil, fmt.Errorf("%s capabilities: %w", set, err)
	}
	return supported(cs, last), nil
}
