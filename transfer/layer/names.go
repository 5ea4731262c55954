package layer

import (
	"fmt"
	"path"
	"strings"
)

// AUFS-style whiteout names, as in OCI image layers (image-spec layer.md).
const (
	whiteoutPrefix     = ".wh."
	whiteoutMetaPrefix = ".wh..wh."
	opaqueMarker       = ".wh..wh..opq"
)

// paxXattr prefixes an xattr name in a PAX record, as GNU tar and OCI
// tooling write it.
const paxXattr = "SCHILY.xattr."

// Overlay keeps its private state in xattrs under one of these prefixes
// ("user." when the mount uses userxattr).
const (
	overlayTrusted = "trusted.overlay."
	overlayUser    = "user.overlay."
)

// selinuxXattr is the host's policy label, not container content: the
// receiver labels files itself (mount context or restorecon).
const selinuxXattr = "security.selinux"

// overlayXattr reports whether name is overlay-private and returns the part
// after the prefix ("opaque", "origin", ...).
func overlayXattr(name string) (string, bool) {
	if s, ok := strings.CutPrefix(name, overlayTrusted); ok {
		return s, true
	}
	return strings.CutPrefix(name, overlayUser)
}

// cleanName validates a tar entry name (or hard-link target) and returns it
// relative to the upper directory, "." for the directory itself. Absolute
// names and any ".." component are refused outright, even when cleaning
// would keep them inside: a well-formed diff never has them.
func cleanName(name string) (string, error) {
	if name == "" {
		return "", fmt.Errorf("%w: empty name", ErrUnsafeEntry)
	}
	if strings.IndexByte(name, 0) >= 0 {
		return "", fmt.Errorf("%w: NUL in name", ErrUnsafeEntry)
	}
	if strings.HasPrefix(name, "/") {
		return "", fmt.Errorf("%w: absolute path", ErrUnsafeEntry)
	}
	for c := range strings.SplitSeq(name, "/") {
		if c == ".." {
			return "", fmt.Errorf("%w: \"..\" component", ErrUnsafeEntry)
		}
	}
	return path.Clean(name), nil
}

// splitName splits a cleaned relative name into its parent ("." at the top)
// and last component.
func splitName(rel string) (dir, base string) {
	dir, base = path.Split(rel)
	dir = strings.TrimSuffix(dir, "/")
	if dir == "" {
		dir = "."
	}
	return dir, base
}

// whiteoutKind says what a name's last component means in a diff.
type whiteoutKind int

const (
	plainEntry whiteoutKind = iota
	whiteoutEntry
	opaqueEntry
)

// classify interprets the last component of an entry name: a plain name, a
// whiteout of target (".wh.<target>"), or the opaque marker of its parent.
func classify(base string) (kind whiteoutKind, target string, err error) {
	switch {
	case base == opaqueMarker:
		return opaqueEntry, "", nil
	case strings.HasPrefix(base, whiteoutMetaPrefix):
		return 0, "", fmt.Errorf("%w: reserved whiteout name %q", ErrUnsupported, base)
	case strings.HasPrefix(base, whiteoutPrefix):
		target = base[len(whiteoutPrefix):]
		if target == "" || target == "." || target == ".." {
			return 0, "", fmt.Errorf("%w: whiteout of %q", ErrUnsafeEntry, target)
		}
		return whiteoutEntry, target, nil
	}
	return plainEntry, "", nil
}

// tarName is the entry name WriteDiff gives a walked path.
func tarName(rel string, dir bool) string {
	switch {
	case rel == ".":
		return "./"
	case dir:
		return rel + "/"
	}
	return rel
}
