package criu

import (
	"fmt"
	"strconv"
	"strings"
)

// Version is a CRIU release number.
type Version struct {
	Major, Minor, Sublevel int
	// Raw is the version as CRIU reports it, with its git id when it has one
	// ("4.2.1" or "4.2 (v4.2-12-gabcdef)").
	Raw string
}

// MinVersion is the oldest CRIU migrate supports: 4.1 is the first release
// that restores the vDSO correctly on current kernels (CRIU issue 2532).
var MinVersion = Version{Major: 4, Minor: 1}

// String returns "major.minor.sublevel".
func (v Version) String() string {
	return fmt.Sprintf("%d.%d.%d", v.Major, v.Minor, v.Sublevel)
}

// Compare returns -1, 0 or 1 as v is older than, equal to or newer than w.
// Raw is ignored.
func (v Version) Compare(w Version) int {
	for _, d := range [3]int{v.Major - w.Major, v.Minor - w.Minor, v.Sublevel - w.Sublevel} {
		switch {
		case d < 0:
			return -1
		case d > 0:
			return 1
		}
	}
	return 0
}

// AtLeast reports whether v is w or newer.
func (v Version) AtLeast(w Version) bool { return v.Compare(w) >= 0 }

// ParseVersion parses a CRIU version: "4.2.1", "4.2", or the output of
// `criu --version` ("Version: 4.2.1\nGitID: ..."). A suffix after the numbers
// ("4.2-rc1") is kept in Raw only.
func ParseVersion(s string) (Version, error) {
	text := strings.TrimSpace(s)
	for _, line := range strings.Split(text, "\n") {
		if v, ok := strings.CutPrefix(strings.TrimSpace(line), "Version:"); ok {
			text = strings.TrimSpace(v)
			break
		}
	}
	num := text
	if i := strings.IndexFunc(num, func(r rune) bool { return r != '.' && (r < '0' || r > '9') }); i >= 0 {
		num = num[:i]
	}
	parts := strings.Split(num, ".")
	if len(parts) < 2 || len(parts) > 3 {
		return Version{}, fmt.Errorf("parse criu version %q: want major.minor[.sublevel]", s)
	}
	var n [3]int
	for i, p := range parts {
		v, err := strconv.Atoi(p)
		if err != nil || v < 0 {
			return Version{}, fmt.Errorf("parse criu version %q: bad number %q", s, p)
		}
		n[i] = v
	}
	return Version{Major: n[0], Minor: n[1], Sublevel: n[2], Raw: text}, nil
}
