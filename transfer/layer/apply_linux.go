package layer

import (
	"archive/tar"
	"errors"
	"fmt"
	"io"
	"os"
	"slices"
	"strconv"
	"strings"
	"time"

	"golang.org/x/sys/unix"
)

// ApplyOptions tune ApplyDiff.
type ApplyOptions struct {
	// AllowDevices lets the diff create character and block devices. Off,
	// a device entry is refused (ErrDeviceNotAllowed): a container that
	// may mknod has its devices from its spec, not from its data.
	AllowDevices bool
	// UserXattr writes the opaque marker as user.overlay.opaque, for an
	// overlay mounted with the userxattr option, instead of
	// trusted.overlay.opaque.
	UserXattr bool
}

// ApplyDiff extracts a diff written by WriteDiff (or an OCI image layer)
// into the directory upper, empty or not, and returns the bytes read from r.
// ".wh.<name>" entries become overlay whiteouts (0:0 character devices) and
// ".wh..wh..opq" entries set the opaque xattr on their directory, so upper
// mounted as an overlay upper directory over the same base shows the tree
// the diff was written from. An entry replaces what is at its path, except
// that a directory entry over a directory only updates its metadata.
//
// The stream is untrusted. Every entry name and hard-link target must be
// relative without "..", and is resolved from an fd of upper with
// openat2(RESOLVE_BENEATH|RESOLVE_NO_SYMLINKS|RESOLVE_NO_XDEV), so a path
// through a symlink (one the stream made or one already there), out of
// upper or across a mount is refused with an *EntryError naming the entry
// and wrapping ErrUnsafeEntry; nothing is created outside upper. Entries
// are then made with *at calls on the parent fd that never follow a final
// symlink. Setuid/setgid bits and file capabilities are kept: they are the
// container's data. Overlay-private xattrs in the stream are refused.
//
// A stream without its end-of-archive marker gives ErrTruncated, a
// malformed one ErrCorrupt. On any error upper holds a partial tree and
// should be discarded. ApplyDiff reads r in small pieces: wrap an
// unbuffered file or pipe in a bufio.Reader.
func ApplyDiff(r io.Reader, upper string, o ApplyOptions) (int64, error) {
	return applyDiff(r, upper, o, false)
}

// applyDiff with walkOnly resolves by components as without openat2.
func applyDiff(r io.Reader, upper string, o ApplyOptions, walkOnly bool) (int64, error) {
	root, err := unix.Open(upper, unix.O_PATH|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
	if err != nil {
		return 0, fmt.Errorf("apply diff to %s: open: %w", upper, err)
	}
	defer unix.Close(root)
	a := &applier{root: root, opts: o, noOpenat2: walkOnly}
	cr := &countingReader{r: r}
	n, err := a.apply(cr)
	if err != nil {
		return n, fmt.Errorf("apply diff to %s: %w", upper, err)
	}
	return n, nil
}

type applier struct {
	root      int // O_PATH fd of the upper directory
	opts      ApplyOptions
	buf       []byte
	dirs      []dirMeta // mode and times, set once all entries are in
	noOpenat2 bool      // openat2 unavailable (old kernel, seccomp): walk by components
}

// dirMeta is what a directory gets last: its mode (so a read-only
// directory can still be filled) and times (children change them).
type dirMeta struct {
	rel          string
	mode         uint32
	atime, mtime unix.Timespec
}

func (a *applier) apply(cr *countingReader) (int64, error) {
	tr := tar.NewReader(cr)
	for {
		start := cr.n
		hdr, err := tr.Next()
		if errors.Is(err, tar.ErrInsecurePath) {
			err = nil // GODEBUG=tarinsecurepath=0; cleanName refuses it by name
		}
		if err == io.EOF {
			// archive/tar also says io.EOF when the input just stops at a
			// block boundary, after an entry or its PAX header. Only a real
			// end-of-archive marker counts: two zero blocks read by this
			// Next, not file data.
			if cr.n-start < tailSize || !cr.endsWithMarker() {
				return cr.n, fmt.Errorf("%w: no end-of-archive marker after %d bytes", ErrTruncated, cr.n)
			}
			break
		}
		if err != nil {
			return cr.n, streamErr(cr, err)
		}
		if err := a.entry(hdr, tr); err != nil {
			if cr.err != nil || errors.Is(err, io.ErrUnexpectedEOF) {
				err = streamErr(cr, err) // the data of a file ran out
			}
			return cr.n, entryErr(hdr.Name, err)
		}
		// Consume the rest of the entry's data here so that Next reads only
		// padding and headers, which the end-marker check relies on.
		if _, err := io.Copy(io.Discard, tr); err != nil {
			return cr.n, entryErr(hdr.Name, streamErr(cr, err))
		}
	}
	if err := a.finish(); err != nil {
		return cr.n, err
	}
	return cr.n, nil
}

// streamErr classifies a tar reading error: the source's own error, a
// truncation, or a malformed archive.
func streamErr(cr *countingReader, err error) error {
	switch {
	case cr.err != nil:
		return fmt.Errorf("read diff: %w", cr.err)
	case errors.Is(err, io.ErrUnexpectedEOF), errors.Is(err, io.EOF):
		return fmt.Errorf("%w: %v", ErrTruncated, err)
	}
	return fmt.Errorf("%w: %v", ErrCorrupt, err)
}

func (a *applier) entry(hdr *tar.Header, data io.Reader) error {
	if hdr.Typeflag == tar.TypeXGlobalHeader {
		return nil // defaults for other tar readers; nothing here uses them
	}
	rel, err := cleanName(hdr.Name)
	if err != nil {
		return err
	}
	xattrs, err := headerXattrs(hdr)
	if err != nil {
		return err
	}
	if isSparse(hdr) {
		// A few bytes of sparse map can expand to terabytes written out;
		// WriteDiff never makes sparse entries.
		return fmt.Errorf("%w: sparse entry", ErrUnsupported)
	}
	if rel == "." {
		if hdr.Typeflag != tar.TypeDir {
			return fmt.Errorf("%w: top-level entry of type %q is not a directory", ErrUnsupported, hdr.Typeflag)
		}
		return a.dir(a.root, ".", rel, hdr, xattrs)
	}
	dir, base := splitName(rel)
	kind, target, err := classify(base)
	if err != nil {
		return err
	}
	switch kind {
	case opaqueEntry:
		return a.opaque(dir)
	case whiteoutEntry:
		return a.whiteout(dir, target)
	}
	if (hdr.Typeflag == tar.TypeChar || hdr.Typeflag == tar.TypeBlock) && !a.opts.AllowDevices {
		return ErrDeviceNotAllowed
	}
	pfd, err := a.parent(dir, true)
	if err != nil {
		return err
	}
	defer unix.Close(pfd)
	switch hdr.Typeflag {
	case tar.TypeDir:
		return a.dir(pfd, base, rel, hdr, xattrs)
	case tar.TypeReg: // the reader turns old TypeRegA entries into TypeReg
		return a.file(pfd, base, hdr, data, xattrs)
	case tar.TypeSymlink:
		return a.symlink(pfd, base, hdr, xattrs)
	case tar.TypeLink:
		return a.hardlink(pfd, base, rel, hdr.Linkname)
	case tar.TypeChar, tar.TypeBlock, tar.TypeFifo:
		return a.special(pfd, base, hdr, xattrs)
	}
	return fmt.Errorf("%w: entry type %q", ErrUnsupported, hdr.Typeflag)
}

func isSparse(hdr *tar.Header) bool {
	if hdr.Typeflag == tar.TypeGNUSparse {
		return true
	}
	for k := range hdr.PAXRecords {
		if strings.HasPrefix(k, "GNU.sparse.") {
			return true
		}
	}
	return false
}

// headerXattrs returns the xattrs of an entry, sorted by name. A stream may
// not set overlay-private xattrs: a redirect or metacopy xattr would make
// overlay look anywhere in the lower layers.
func headerXattrs(hdr *tar.Header) ([]xattr, error) {
	var out []xattr
	for k, v := range hdr.PAXRecords {
		name, ok := strings.CutPrefix(k, paxXattr)
		if !ok {
			continue
		}
		if name == "" {
			return nil, fmt.Errorf("%w: empty xattr name", ErrCorrupt)
		}
		if _, ok := overlayXattr(name); ok {
			return nil, fmt.Errorf("%w: overlay-private xattr %q in diff", ErrUnsupported, name)
		}
		if name == selinuxXattr {
			continue // labels are the receiving host's policy
		}
		out = append(out, xattr{name: name, value: []byte(v)})
	}
	slices.SortFunc(out, func(a, b xattr) int { return strings.Compare(a.name, b.name) })
	return out, nil
}

// resolveFlags confine a lookup to the upper directory: no symlinks at all
// (a diff never has an entry below a symlink), no "..", no mount crossing.
const resolveFlags = unix.RESOLVE_BENEATH | unix.RESOLVE_NO_SYMLINKS |
	unix.RESOLVE_NO_MAGICLINKS | unix.RESOLVE_NO_XDEV

// parent returns an O_PATH fd of the directory rel (cleaned, relative),
// creating missing directories (0755) if create is set.
func (a *applier) parent(rel string, create bool) (int, error) {
	for attempt := 0; !a.noOpenat2; attempt++ {
		fd, err := unix.Openat2(a.root, rel, &unix.OpenHow{
			Flags:   unix.O_PATH | unix.O_DIRECTORY | unix.O_CLOEXEC,
			Resolve: resolveFlags,
		})
		switch {
		case err == nil:
			return fd, nil
		case errors.Is(err, unix.EAGAIN) && attempt < 16:
			// A concurrent rename somewhere; the kernel asks to retry.
		case errors.Is(err, unix.ENOSYS), errors.Is(err, unix.EPERM):
			a.noOpenat2 = true // kernel < 5.6 or a seccomp filter
		case errors.Is(err, unix.ENOENT) && create:
			return a.walkParent(rel, create)
		case errors.Is(err, unix.ELOOP):
			return -1, fmt.Errorf("%w: %s goes through a symlink", ErrUnsafeEntry, rel)
		case errors.Is(err, unix.EXDEV):
			return -1, fmt.Errorf("%w: %s leaves the directory or crosses a mount", ErrUnsafeEntry, rel)
		default:
			return -1, fmt.Errorf("open %s: %w", rel, err)
		}
	}
	return a.walkParent(rel, create)
}

// walkParent opens rel one component at a time, never following a symlink:
// the fallback without openat2, and the way missing parents are made.
func (a *applier) walkParent(rel string, create bool) (int, error) {
	fd, err := unix.Openat(a.root, ".", unix.O_PATH|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
	if err != nil {
		return -1, err
	}
	if rel == "." {
		return fd, nil
	}
	for c := range strings.SplitSeq(rel, "/") {
		next, err := openDirNoFollow(fd, c)
		if errors.Is(err, unix.ENOENT) && create {
			if err = unix.Mkdirat(fd, c, 0o755); err == nil || errors.Is(err, unix.EEXIST) {
				next, err = openDirNoFollow(fd, c)
			}
		}
		unix.Close(fd)
		if err != nil {
			return -1, fmt.Errorf("open %s: component %q: %w", rel, c, err)
		}
		fd = next
	}
	return fd, nil
}

// openDirNoFollow opens name under dirfd as an O_PATH directory fd, refusing
// a symlink with ErrUnsafeEntry.
func openDirNoFollow(dirfd int, name string) (int, error) {
	fd, err := unix.Openat(dirfd, name, unix.O_PATH|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0)
	if err != nil {
		return -1, err
	}
	var st unix.Stat_t
	if err := unix.Fstat(fd, &st); err != nil {
		unix.Close(fd)
		return -1, err
	}
	switch st.Mode & unix.S_IFMT {
	case unix.S_IFDIR:
		return fd, nil
	case unix.S_IFLNK:
		unix.Close(fd)
		return -1, fmt.Errorf("%w: is a symlink", ErrUnsafeEntry)
	}
	unix.Close(fd)
	return -1, unix.ENOTDIR
}

// removeAt removes whatever is at name under dirfd, a directory with its
// contents; nothing there is fine. Symlinks are removed, not followed.
func removeAt(dirfd int, name string) error {
	err := unix.Unlinkat(dirfd, name, 0)
	if err == nil || errors.Is(err, unix.ENOENT) {
		return nil
	}
	if !errors.Is(err, unix.EISDIR) {
		return fmt.Errorf("remove %s: %w", name, err)
	}
	fd, err := unix.Openat(dirfd, name, unix.O_RDONLY|unix.O_DIRECTORY|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0)
	if err != nil {
		return fmt.Errorf("remove %s: %w", name, err)
	}
	d := os.NewFile(uintptr(fd), name)
	names, err := d.Readdirnames(-1)
	if err == nil {
		for _, n := range names {
			if err = removeAt(fd, n); err != nil {
				break
			}
		}
	}
	d.Close()
	if err != nil {
		return err
	}
	if err := unix.Unlinkat(dirfd, name, unix.AT_REMOVEDIR); err != nil {
		return fmt.Errorf("remove %s: %w", name, err)
	}
	return nil
}

func (a *applier) dir(pfd int, base, rel string, hdr *tar.Header, xattrs []xattr) error {
	if base != "." {
		var st unix.Stat_t
		err := unix.Fstatat(pfd, base, &st, unix.AT_SYMLINK_NOFOLLOW)
		if err == nil && st.Mode&unix.S_IFMT != unix.S_IFDIR {
			if err := removeAt(pfd, base); err != nil {
				return err
			}
			err = unix.ENOENT
		}
		if errors.Is(err, unix.ENOENT) {
			err = unix.Mkdirat(pfd, base, 0o700)
		}
		if err != nil {
			return fmt.Errorf("mkdir: %w", err)
		}
	}
	fd, err := unix.Openat(pfd, base, unix.O_RDONLY|unix.O_DIRECTORY|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0)
	if err != nil {
		return fmt.Errorf("open directory: %w", err)
	}
	defer unix.Close(fd)
	if err := unix.Fchown(fd, hdr.Uid, hdr.Gid); err != nil {
		return fmt.Errorf("chown: %w", err)
	}
	if err := fsetXattrs(fd, xattrs); err != nil {
		return err
	}
	a.dirs = append(a.dirs, dirMeta{rel: rel, mode: uint32(hdr.Mode & 07777), atime: atime(hdr), mtime: timespec(hdr.ModTime)})
	return nil
}

func (a *applier) file(pfd int, base string, hdr *tar.Header, data io.Reader, xattrs []xattr) error {
	if err := removeAt(pfd, base); err != nil {
		return err
	}
	fd, err := unix.Openat(pfd, base, unix.O_WRONLY|unix.O_CREAT|unix.O_EXCL|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0o600)
	if err != nil {
		return fmt.Errorf("create: %w", err)
	}
	f := os.NewFile(uintptr(fd), base)
	defer f.Close()
	if a.buf == nil {
		a.buf = make([]byte, copyBufSize) // at the first file with data: small trees need none
	}
	for {
		n, rerr := data.Read(a.buf)
		if n > 0 {
			if _, err := f.Write(a.buf[:n]); err != nil {
				return err
			}
		}
		if rerr == io.EOF {
			break
		}
		if rerr != nil {
			return fmt.Errorf("read data: %w", rerr)
		}
	}
	// chown clears setuid bits and file capabilities: mode and xattrs after.
	if err := f.Chown(hdr.Uid, hdr.Gid); err != nil {
		return err
	}
	if err := unix.Fchmod(fd, uint32(hdr.Mode&07777)); err != nil {
		return fmt.Errorf("chmod: %w", err)
	}
	if err := fsetXattrs(fd, xattrs); err != nil {
		return err
	}
	if err := f.Close(); err != nil {
		return err
	}
	return setTimes(pfd, base, hdr)
}

func (a *applier) symlink(pfd int, base string, hdr *tar.Header, xattrs []xattr) error {
	if err := removeAt(pfd, base); err != nil {
		return err
	}
	if err := unix.Symlinkat(hdr.Linkname, pfd, base); err != nil {
		return fmt.Errorf("symlink: %w", err)
	}
	return a.finishAt(pfd, base, hdr, xattrs, false)
}

func (a *applier) special(pfd int, base string, hdr *tar.Header, xattrs []xattr) error {
	typ := uint32(unix.S_IFIFO)
	switch hdr.Typeflag {
	case tar.TypeChar:
		typ = unix.S_IFCHR
	case tar.TypeBlock:
		typ = unix.S_IFBLK
	}
	if err := removeAt(pfd, base); err != nil {
		return err
	}
	dev := unix.Mkdev(uint32(hdr.Devmajor), uint32(hdr.Devminor))
	if err := unix.Mknodat(pfd, base, typ|uint32(hdr.Mode&07777), int(dev)); err != nil {
		return fmt.Errorf("mknod: %w", err)
	}
	return a.finishAt(pfd, base, hdr, xattrs, true)
}

// finishAt sets owner, mode (chmod follows symlinks, so only for the node
// just made that is not one), xattrs and times of base under pfd.
func (a *applier) finishAt(pfd int, base string, hdr *tar.Header, xattrs []xattr, chmod bool) error {
	if err := unix.Fchownat(pfd, base, hdr.Uid, hdr.Gid, unix.AT_SYMLINK_NOFOLLOW); err != nil {
		return fmt.Errorf("chown: %w", err)
	}
	if chmod {
		if err := unix.Fchmodat(pfd, base, uint32(hdr.Mode&07777), 0); err != nil {
			return fmt.Errorf("chmod: %w", err)
		}
	}
	for _, x := range xattrs {
		// No fd of a symlink or device can take fsetxattr; go through the
		// parent's fd instead of the path.
		p := "/proc/self/fd/" + strconv.Itoa(pfd) + "/" + base
		if err := unix.Lsetxattr(p, x.name, x.value, 0); err != nil {
			return fmt.Errorf("set xattr %s: %w", x.name, err)
		}
	}
	return setTimes(pfd, base, hdr)
}

func (a *applier) hardlink(pfd int, base, rel, linkname string) error {
	target, err := cleanName(linkname)
	if err != nil {
		return fmt.Errorf("hard link target %q: %w", linkname, err)
	}
	if target == "." || target == rel {
		return fmt.Errorf("%w: hard link to %q", ErrUnsafeEntry, linkname)
	}
	tdir, tbase := splitName(target)
	tfd, err := a.parent(tdir, false)
	if err != nil {
		return fmt.Errorf("hard link target %q: %w", linkname, err)
	}
	defer unix.Close(tfd)
	if err := removeAt(pfd, base); err != nil {
		return err
	}
	// Flags 0: a symlink target is linked itself, never followed.
	if err := unix.Linkat(tfd, tbase, pfd, base, 0); err != nil {
		return fmt.Errorf("hard link to %q: %w", linkname, err)
	}
	return nil
}

func (a *applier) whiteout(dir, target string) error {
	pfd, err := a.parent(dir, true)
	if err != nil {
		return err
	}
	defer unix.Close(pfd)
	if err := removeAt(pfd, target); err != nil {
		return err
	}
	if err := unix.Mknodat(pfd, target, unix.S_IFCHR, 0); err != nil {
		return fmt.Errorf("whiteout %s: %w", target, err)
	}
	return nil
}

func (a *applier) opaque(dir string) error {
	pfd, err := a.parent(dir, true)
	if err != nil {
		return err
	}
	defer unix.Close(pfd)
	fd, err := unix.Openat(pfd, ".", unix.O_RDONLY|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
	if err != nil {
		return fmt.Errorf("open %s: %w", dir, err)
	}
	defer unix.Close(fd)
	name := overlayTrusted + "opaque"
	if a.opts.UserXattr {
		name = overlayUser + "opaque"
	}
	if err := unix.Fsetxattr(fd, name, []byte("y"), 0); err != nil {
		return fmt.Errorf("mark %s opaque: %w", dir, err)
	}
	return nil
}

// finish sets directory modes and times, deepest first.
func (a *applier) finish() error {
	for _, d := range slices.Backward(a.dirs) {
		if err := a.finishDir(d); err != nil {
			return entryErr(d.rel, err)
		}
	}
	return nil
}

func (a *applier) finishDir(d dirMeta) error {
	pdir, base := splitName(d.rel)
	if d.rel == "." {
		pdir, base = ".", "."
	}
	pfd, err := a.parent(pdir, false)
	if err != nil {
		return err
	}
	defer unix.Close(pfd)
	fd, err := unix.Openat(pfd, base, unix.O_RDONLY|unix.O_DIRECTORY|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0)
	if errors.Is(err, unix.ENOTDIR) || errors.Is(err, unix.ELOOP) || errors.Is(err, unix.ENOENT) {
		return nil // a later entry replaced the directory
	}
	if err != nil {
		return err
	}
	defer unix.Close(fd)
	if err := unix.Fchmod(fd, d.mode); err != nil {
		return fmt.Errorf("chmod: %w", err)
	}
	if err := unix.UtimesNanoAt(pfd, base, []unix.Timespec{d.atime, d.mtime}, unix.AT_SYMLINK_NOFOLLOW); err != nil {
		return fmt.Errorf("set times: %w", err)
	}
	return nil
}

func fsetXattrs(fd int, xattrs []xattr) error {
	for _, x := range xattrs {
		if err := unix.Fsetxattr(fd, x.name, x.value, 0); err != nil {
			return fmt.Errorf("set xattr %s: %w", x.name, err)
		}
	}
	return nil
}

func setTimes(pfd int, base string, hdr *tar.Header) error {
	ts := []unix.Timespec{atime(hdr), timespec(hdr.ModTime)}
	if err := unix.UtimesNanoAt(pfd, base, ts, unix.AT_SYMLINK_NOFOLLOW); err != nil {
		return fmt.Errorf("set times: %w", err)
	}
	return nil
}

func atime(hdr *tar.Header) unix.Timespec {
	if hdr.AccessTime.IsZero() {
		return timespec(hdr.ModTime)
	}
	return timespec(hdr.AccessTime)
}

func timespec(t time.Time) unix.Timespec {
	return unix.Timespec{Sec: t.Unix(), Nsec: int64(t.Nanosecond())}
}
