package caps

import (
	"errors"
	"fmt"
	"strings"

	"github.com/moby/sys/capability"
	specs "github.com/opencontainers/runtime-spec/specs-go"
)

// ErrUnknownCapability is wrapped when a name is not a capability this
// package knows (misspelt, lower case, or newer than the library).
var ErrUnknownCapability = errors.New("unknown capability")

// byName maps "CAP_SYS_ADMIN" style names to capabilities.
var byName = func() map[string]capability.Cap {
	m := make(map[string]capability.Cap)
	for _, c := range capability.ListKnown() {
		m[Name(c)] = c
	}
	return m
}()

// Name returns the spec spelling of c, such as "CAP_SYS_ADMIN".
func Name(c capability.Cap) string {
	return "CAP_" + strings.ToUpper(c.String())
}

// Parse returns the capability named name ("CAP_SYS_ADMIN"). The match is
// exact: the spec spells names in upper case with the CAP_ prefix.
func Parse(name string) (capability.Cap, error) {
	c, ok := byName[name]
	if !ok {
		return 0, fmt.Errorf("%w: %q", ErrUnknownCapability, name)
	}
	return c, nil
}

// Validate checks that every name in the five sets of c is a known
// capability; the error names the set and the capability. Whether the
// running kernel has a capability is not checked: ones it predates are
// skipped when applying. A nil c is valid.
func Validate(c *specs.LinuxCapabilities) error {
	if c == nil {
		return nil
	}
	for _, s := range sets(c) {
		if _, err := parseSet(s.name, s.names); err != nil {
			return err
		}
	}
	return nil
}

// namedSet is one of the five lists of a LinuxCapabilities.
type namedSet struct {
	name  string
	names []string
}

func sets(c *specs.LinuxCapabilities) []namedSet {
	return []namedSet{
		{"bounding", c.Bounding},
		{"effective", c.Effective},
		{"permitted", c.Permitted},
		{"inheritable", c.Inheritable},
		{"ambient", c.Ambient},
	}
}

// parseSet parses every name of one set; set names the set in errors.
func parseSet(set string, names []string) ([]capability.Cap, error) {
	out := make([]capability.Cap, 0, len(names))
	for _, n := range names {
		c, err := Parse(n)
		if err != nil {
			return nil, fmt.Errorf("%s capabilities: %w", set, err)
		}
		out = append(out, c)
	}
	return out, nil
}

// supported drops from cs the capabilities above last, the highest one the
// running kernel knows.
func supported(cs []capability.Cap, last capability.Cap) []capability.Cap {
	out := cs[:0]
	for _, c := range cs {
		if c <= last {
			out = append(out, c)
		}
	}
	return out
}
