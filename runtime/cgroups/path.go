package cgroups

import (
	"path"
	"regexp"
	"strings"
)

// DefaultParent is the cgroup, at the root of every hierarchy, under which
// containers are placed when the spec gives no absolute path. It is outside
// the agent's own cgroup so that stopping or restarting the agent (a systemd
// unit, a pod) does not kill the containers.
const DefaultParent = "/migrate"

// validID matches the container ids this package accepts: one path element,
// no dot-dot, nothing that needs quoting.
var validID = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9_.-]{0,199}$`)

// cgroupPath returns the container's cgroup, relative to each hierarchy root.
//
//	""            -> /migrate/<id>
//	"/a/b"        -> /a/b   (absolute: used as given, cleaned)
//	"a/b"         -> /migrate/a/b (relative: below DefaultParent, never above it)
//	"x.slice:p:n" -> refused (systemd driver not implemented)
func cgroupPath(id, cgroupsPath string) (string, error) {
	if cgroupsPath == "" {
		if !validID.MatchString(id) {
			return "", &ValidationError{Field: "id", Msg: quote(id) + " is not a valid container id (letters, digits, '_', '.', '-'; at most 200)"}
		}
		return DefaultParent + "/" + id, nil
	}
	if strings.ContainsRune(cgroupsPath, 0) || strings.ContainsAny(cgroupsPath, "\n") {
		return "", &ValidationError{Field: "cgroupsPath", Msg: quote(cgroupsPath) + " contains a NUL or newline"}
	}
	if !strings.HasPrefix(cgroupsPath, "/") {
		if strings.Count(cgroupsPath, ":") == 2 {
			return "", &UnsupportedError{Field: "cgroupsPath " + quote(cgroupsPath),
				Msg: `the systemd "slice:prefix:name" form needs the systemd cgroup driver, which this runtime does not implement; give a cgroupfs path`}
		}
		// Joining onto "/" first makes ".." unable to climb above the parent.
		p := path.Join(DefaultParent, path.Clean("/"+cgroupsPath))
		if p == DefaultParent {
			return "", &ValidationError{Field: "cgroupsPath", Msg: quote(cgroupsPath) + " names the shared parent " + DefaultParent + ", not a container cgroup"}
		}
		return p, nil
	}
	p := path.Clean(cgroupsPath)
	if p == "/" {
		return "", &ValidationError{Field: "cgroupsPath", Msg: quote(cgroupsPath) + " is the root cgroup; a container needs its own"}
	}
	return p, nil
}

func quote(s string) string { return `"` + s + `"` }
