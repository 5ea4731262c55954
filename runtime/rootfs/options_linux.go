package rootfs

import (
	"fmt"
	"strings"

	"golang.org/x/sys/unix"
)

// mountFlag is one option that sets or clears an MS_* flag.
type mountFlag struct {
	clear bool
	flag  uintptr
}

// flagOptions are the options turned into mount(2) flags.
var flagOptions = map[string]mountFlag{
	"ro":            {false, unix.MS_RDONLY},
	"rw":            {true, unix.MS_RDONLY},
	"nosuid":        {false, unix.MS_NOSUID},
	"suid":          {true, unix.MS_NOSUID},
	"nodev":         {false, unix.MS_NODEV},
	"dev":           {true, unix.MS_NODEV},
	"noexec":        {false, unix.MS_NOEXEC},
	"exec":          {true, unix.MS_NOEXEC},
	"sync":          {false, unix.MS_SYNCHRONOUS},
	"async":         {true, unix.MS_SYNCHRONOUS},
	"dirsync":       {false, unix.MS_DIRSYNC},
	"remount":       {false, unix.MS_REMOUNT},
	"mand":          {false, unix.MS_MANDLOCK},
	"nomand":        {true, unix.MS_MANDLOCK},
	"atime":         {true, unix.MS_NOATIME},
	"noatime":       {false, unix.MS_NOATIME},
	"diratime":      {true, unix.MS_NODIRATIME},
	"nodiratime":    {false, unix.MS_NODIRATIME},
	"relatime":      {false, unix.MS_RELATIME},
	"norelatime":    {true, unix.MS_RELATIME},
	"strictatime":   {false, unix.MS_STRICTATIME},
	"nostrictatime": {true, unix.MS_STRICTATIME},
	"lazytime":      {false, unix.MS_LAZYTIME},
	"nolazytime":    {true, unix.MS_LAZYTIME},
	"bind":          {false, unix.MS_BIND},
	"rbind":         {false, unix.MS_BIND | unix.MS_REC},
}

// recAttrOptions are the recursive options applied with mount_setattr(2) and
// AT_RECURSIVE, so that submounts of an rbind are covered too.
var recAttrOptions = map[string]struct {
	clear bool
	attr  uint64
}{
	"rro":            {false, unix.MOUNT_ATTR_RDONLY},
	"rrw":            {true, unix.MOUNT_ATTR_RDONLY},
	"rnosuid":        {false, unix.MOUNT_ATTR_NOSUID},
	"rsuid":          {true, unix.MOUNT_ATTR_NOSUID},
	"rnodev":         {false, unix.MOUNT_ATTR_NODEV},
	"rdev":           {true, unix.MOUNT_ATTR_NODEV},
	"rnoexec":        {false, unix.MOUNT_ATTR_NOEXEC},
	"rexec":          {true, unix.MOUNT_ATTR_NOEXEC},
	"rnodiratime":    {false, unix.MOUNT_ATTR_NODIRATIME},
	"rdiratime":      {true, unix.MOUNT_ATTR_NODIRATIME},
	"rrelatime":      {false, unix.MOUNT_ATTR_RELATIME},
	"rnorelatime":    {true, unix.MOUNT_ATTR_RELATIME},
	"rnoatime":       {false, unix.MOUNT_ATTR_NOATIME},
	"ratime":         {true, unix.MOUNT_ATTR_NOATIME},
	"rstrictatime":   {false, unix.MOUNT_ATTR_STRICTATIME},
	"rnostrictatime": {true, unix.MOUNT_ATTR_STRICTATIME},
}

// propagationOptions maps propagation names, in mount options and in
// linux.rootfsPropagation, to mount(2) flags.
var propagationOptions = map[string]uintptr{
	"shared":      unix.MS_SHARED,
	"rshared":     unix.MS_SHARED | unix.MS_REC,
	"slave":       unix.MS_SLAVE,
	"rslave":      unix.MS_SLAVE | unix.MS_REC,
	"private":     unix.MS_PRIVATE,
	"rprivate":    unix.MS_PRIVATE | unix.MS_REC,
	"unbindable":  unix.MS_UNBINDABLE,
	"runbindable": unix.MS_UNBINDABLE | unix.MS_REC,
}

// unsupportedOptions are refused rather than passed to the kernel as data,
// where they would be silently ignored or misread.
var unsupportedOptions = map[string]string{
	"idmap":     "idmapped mounts are not supported",
	"ridmap":    "idmapped mounts are not supported",
	"tmpcopyup": "tmpcopyup is not supported",
}

const propagationMask = unix.MS_SHARED | unix.MS_SLAVE | unix.MS_PRIVATE | unix.MS_UNBINDABLE

// atimeModes are mutually exclusive access-time modes.
const atimeModes = unix.MS_NOATIME | unix.MS_RELATIME | unix.MS_STRICTATIME

// perMountFlags are the flags a bind remount can change on one mount.
const perMountFlags = unix.MS_RDONLY | unix.MS_NOSUID | unix.MS_NODEV | unix.MS_NOEXEC |
	unix.MS_NODIRATIME | atimeModes

// mountOptions is the parsed form of one spec mount's options.
type mountOptions struct {
	flags       uintptr   // MS_* flags to set
	cleared     uintptr   // MS_* flags the spec explicitly cleared ("rw", "suid"...)
	propagation []uintptr // applied in order after the mount
	recSet      uint64    // MOUNT_ATTR_* to set recursively
	recClr      uint64    // MOUNT_ATTR_* to clear recursively
	data        []string  // filesystem-specific options, passed as mount data
}

func (o *mountOptions) isBind() bool { return o.flags&unix.MS_BIND != 0 }

// dataString is the data argument for mount(2).
func (o *mountOptions) dataString() string { return strings.Join(o.data, ",") }

// optionError is a parse error tied to one option; Validate and Prepare wrap it
// into a MountError.
type optionError struct {
	option string
	err    error
}

func (e *optionError) Error() string { return fmt.Sprintf("option %q: %v", e.option, e.err) }
func (e *optionError) Unwrap() error { return e.err }

// parseMountOptions turns spec mount options into flags, propagation and data.
// Options that contradict each other (ro with rw, two propagation kinds, two
// access-time modes) are refused: the kernel would silently pick one.
func parseMountOptions(mountType string, options []string) (*mountOptions, error) {
	o := &mountOptions{}
	var (
		setBy     = map[uintptr]string{} // flag -> option that set or cleared it
		propKind  uintptr
		propName  string
		recSetBy  = map[uint64]string{}
		atimeName string
	)
	for _, opt := range options {
		if opt == "" {
			return nil, &optionError{opt, fmt.Errorf("%w: empty option", ErrInvalidMount)}
		}
		if reason, ok := unsupportedOptions[opt]; ok {
			return nil, &optionError{opt, fmt.Errorf("%w: %s", ErrUnsupportedOption, reason)}
		}
		if f, ok := flagOptions[opt]; ok {
			if prev, seen := setBy[f.flag]; seen && prev != opt && !sameBind(prev, opt) {
				pf := flagOptions[prev]
				if pf.clear != f.clear {
					return nil, &optionError{opt, fmt.Errorf("%w: conflicts with %q", ErrInvalidMount, prev)}
				}
			}
			setBy[f.flag] = opt
			if f.flag&atimeModes != 0 && !f.clear {
				if atimeName != "" && atimeName != opt {
					return nil, &optionError{opt, fmt.Errorf("%w: conflicts with %q", ErrInvalidMount, atimeName)}
				}
				atimeName = opt
			}
			if f.clear {
				o.flags &^= f.flag
				o.cleared |= f.flag
			} else {
				o.flags |= f.flag
				o.cleared &^= f.flag
			}
			continue
		}
		if p, ok := propagationOptions[opt]; ok {
			kind := p & propagationMask
			if propKind != 0 && propKind != kind {
				return nil, &optionError{opt, fmt.Errorf("%w: conflicts with %q", ErrInvalidPropagation, propName)}
			}
			propKind, propName = kind, opt
			o.propagation = append(o.propagation, p)
			continue
		}
		if r, ok := recAttrOptions[opt]; ok {
			if prev, seen := recSetBy[r.attr]; seen && prev != opt && recAttrOptions[prev].clear != r.clear {
				return nil, &optionError{opt, fmt.Errorf("%w: conflicts with %q", ErrInvalidMount, prev)}
			}
			recSetBy[r.attr] = opt
			if r.clear {
				o.recClr |= r.attr
			} else {
				o.recSet |= r.attr
				// mount_setattr(2): an access-time mode in attr_set needs
				// MOUNT_ATTR__ATIME in attr_clr.
				if r.attr&unix.MOUNT_ATTR__ATIME == r.attr {
					o.recClr |= unix.MOUNT_ATTR__ATIME
				}
			}
			continue
		}
		o.data = append(o.data, opt)
	}
	if mountType == "bind" {
		o.flags |= unix.MS_BIND
	}
	if o.isBind() {
		// The kernel ignores data for MS_BIND. key=value options (mode=,
		// uid=...) are dropped as runc passes them on to be ignored; a bare
		// unknown word is refused, since a typo such as "nosiud" would
		// silently leave the bind mount without the protection asked for.
		kept := o.data[:0]
		for _, d := range o.data {
			if !strings.Contains(d, "=") {
				return nil, &optionError{d, fmt.Errorf("%w: not a known flag, and a bind mount takes no filesystem options", ErrInvalidMount)}
			}
		}
		o.data = kept
	}
	return o, nil
}

// sameBind reports whether two options are "bind" and "rbind", which do not
// conflict: rbind wins.
func sameBind(a, b string) bool {
	return (a == "bind" || a == "rbind") && (b == "bind" || b == "rbind")
}

// parseRootfsPropagation maps linux.rootfsPropagation to flags; "" gives 0.
func parseRootfsPropagation(s string) (uintptr, error) {
	if s == "" {
		return 0, nil
	}
	p, ok := propagationOptions[s]
	if !ok {
		return 0, fmt.Errorf("rootfsPropagation %q: %w", s, ErrInvalidPropagation)
	}
	return p, nil
}
