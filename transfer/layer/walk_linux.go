package layer

import (
	"errors"
	"fmt"
	"os"
	"slices"
	"strings"

	"golang.org/x/sys/unix"
)

// xattr is one extended attribute of a walked file.
type xattr struct {
	name  string
	value []byte
}

// node is one walked file, directory or special file.
type node struct {
	rel    string // relative to the walk root, "." for the root
	path   string // full path
	st     unix.Stat_t
	xattrs []xattr // sorted by name
	target string  // symlink target
}

func (n *node) typ() uint32 { return n.st.Mode & unix.S_IFMT }

// fileID identifies an inode for hard-link detection.
type fileID struct{ dev, ino uint64 }

func (n *node) id() fileID { return fileID{dev: n.st.Dev, ino: n.st.Ino} }

// walker visits a tree depth-first, parents before children, names in byte
// order within each directory: the canonical order of both the digest and
// the diff. It does not follow symlinks and does not stop at mount points.
type walker struct {
	root    string
	listBuf []byte
	valBuf  []byte
}

func (w *walker) walk(fn func(*node) error) error {
	var st unix.Stat_t
	if err := unix.Lstat(w.root, &st); err != nil {
		return fmt.Errorf("lstat %s: %w", w.root, err)
	}
	if st.Mode&unix.S_IFMT != unix.S_IFDIR {
		return fmt.Errorf("%s: %w", w.root, unix.ENOTDIR)
	}
	return w.visit(".", w.root, fn)
}

func (w *walker) visit(rel, p string, fn func(*node) error) error {
	n := node{rel: rel, path: p}
	if err := unix.Lstat(p, &n.st); err != nil {
		return entryErr(rel, fmt.Errorf("lstat: %w", err))
	}
	var err error
	if n.xattrs, err = w.readXattrs(p); err != nil {
		return entryErr(rel, err)
	}
	if n.typ() == unix.S_IFLNK {
		if n.target, err = os.Readlink(p); err != nil {
			return entryErr(rel, err)
		}
	}
	if err := fn(&n); err != nil {
		return err
	}
	if n.typ() != unix.S_IFDIR {
		return nil
	}
	names, err := readDirNames(p)
	if err != nil {
		return entryErr(rel, err)
	}
	for _, name := range names {
		crel := name
		if rel != "." {
			crel = rel + "/" + name
		}
		if err := w.visit(crel, p+"/"+name, fn); err != nil {
			return err
		}
	}
	return nil
}

func readDirNames(p string) ([]string, error) {
	f, err := os.Open(p)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	names, err := f.Readdirnames(-1)
	if err != nil {
		return nil, fmt.Errorf("read directory: %w", err)
	}
	slices.Sort(names)
	return names, nil
}

// readXattrs returns p's xattrs sorted by name (without following a
// symlink). A file system without xattr support has none.
func (w *walker) readXattrs(p string) ([]xattr, error) {
	if w.listBuf == nil {
		w.listBuf = make([]byte, 1024)
		w.valBuf = make([]byte, 1024)
	}
	var n int
	for {
		var err error
		n, err = unix.Llistxattr(p, w.listBuf)
		if err == nil {
			break
		}
		if errors.Is(err, unix.ENOTSUP) {
			return nil, nil
		}
		if !errors.Is(err, unix.ERANGE) {
			return nil, fmt.Errorf("list xattrs: %w", err)
		}
		sz, err := unix.Llistxattr(p, nil)
		if err != nil {
			return nil, fmt.Errorf("list xattrs: %w", err)
		}
		w.listBuf = make([]byte, max(sz, 2*len(w.listBuf)))
	}
	if n == 0 {
		return nil, nil
	}
	var out []xattr
	for name := range strings.SplitSeq(strings.TrimSuffix(string(w.listBuf[:n]), "\x00"), "\x00") {
		v, err := w.getXattr(p, name)
		if errors.Is(err, unix.ENODATA) {
			continue // removed since the list was read
		}
		if err != nil {
			return nil, fmt.Errorf("get xattr %s: %w", name, err)
		}
		out = append(out, xattr{name: name, value: v})
	}
	slices.SortFunc(out, func(a, b xattr) int { return strings.Compare(a.name, b.name) })
	return out, nil
}

func (w *walker) getXattr(p, name string) ([]byte, error) {
	for {
		n, err := unix.Lgetxattr(p, name, w.valBuf)
		if err == nil {
			return slices.Clone(w.valBuf[:n]), nil
		}
		if !errors.Is(err, unix.ERANGE) {
			return nil, err
		}
		sz, err := unix.Lgetxattr(p, name, nil)
		if err != nil {
			return nil, err
		}
		w.valBuf = make([]byte, max(sz, 2*len(w.valBuf)))
	}
}
