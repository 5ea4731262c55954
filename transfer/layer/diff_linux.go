package layer

import (
	"archive/tar"
	"bufio"
	"bytes"
	"fmt"
	"io"
	"os"
	"path"
	"strings"
	"time"

	"golang.org/x/sys/unix"
)

// copyBufSize is the buffer WriteDiff and ApplyDiff move file data with.
const copyBufSize = 1 << 20

// WriteDiff serialises the overlayfs upper directory upper to w as a tar
// stream (PAX format) and returns the bytes written.
//
// Entries come in walk order (parents first, names in byte order), the
// upper directory itself first as "./". Each carries mode (with setuid,
// setgid, sticky), uid/gid as numbers, mtime and atime with nanoseconds,
// and xattrs as PAX "SCHILY.xattr.<name>" records. The second and later
// paths to an inode are hard links (TypeLink) to the first. Overlay state
// becomes OCI image-layer form: a whiteout (0:0 character device, or a file
// with the overlay "whiteout" xattr) is an empty ".wh.<name>" file; an
// opaque directory (overlay "opaque" xattr = "y") is followed by an empty
// ".wh..wh..opq" file inside it.
//
// Not carried: sockets (meaningless once their owner is gone), the
// security.selinux label, overlay-private xattrs (origin, impure, uuid...:
// handles into the sender's lower file system). An upper that needs its
// lower layer to make sense (redirect_dir or metacopy) or holds a file
// whose name starts with ".wh." gives ErrUnsupported.
//
// On error the stream written so far has no end-of-archive marker, so
// ApplyDiff refuses it.
func WriteDiff(upper string, w io.Writer) (int64, error) {
	cw := &countingWriter{w: w}
	bw := bufio.NewWriterSize(cw, 256<<10)
	d := &differ{
		tw:    tar.NewWriter(bw),
		links: map[fileID]string{},
	}
	wk := walker{root: upper}
	if err := wk.walk(d.add); err != nil {
		bw.Flush()
		return cw.n, fmt.Errorf("write diff of %s: %w", upper, err)
	}
	if err := d.tw.Close(); err != nil {
		return cw.n, fmt.Errorf("write diff of %s: %w", upper, err)
	}
	if err := bw.Flush(); err != nil {
		return cw.n, fmt.Errorf("write diff of %s: %w", upper, err)
	}
	return cw.n, nil
}

type differ struct {
	tw    *tar.Writer
	links map[fileID]string // first path of each multiply-linked inode
	buf   []byte            // made at the first file with data: small trees need none
}

func (d *differ) add(n *node) error {
	if n.typ() == unix.S_IFSOCK {
		return nil
	}
	_, base := splitName(n.rel)
	if n.rel != "." && strings.HasPrefix(base, whiteoutPrefix) {
		return entryErr(n.rel, fmt.Errorf("%w: a file named like a whiteout cannot be carried", ErrUnsupported))
	}
	hdr := &tar.Header{
		Format:     tar.FormatPAX,
		Mode:       int64(n.st.Mode & 07777),
		Uid:        int(n.st.Uid),
		Gid:        int(n.st.Gid),
		ModTime:    time.Unix(n.st.Mtim.Sec, n.st.Mtim.Nsec),
		AccessTime: time.Unix(n.st.Atim.Sec, n.st.Atim.Nsec),
	}
	var opaque, whiteout bool
	for _, x := range n.xattrs {
		if x.name == selinuxXattr {
			continue
		}
		if key, ok := overlayXattr(x.name); ok {
			switch key {
			case "opaque":
				// "x" marks a directory holding xattr whiteouts, not an opaque one.
				opaque = n.typ() == unix.S_IFDIR && bytes.Equal(x.value, []byte("y"))
			case "whiteout":
				whiteout = n.typ() == unix.S_IFREG
			case "redirect", "metacopy":
				return entryErr(n.rel, fmt.Errorf("%w: overlay %s xattr: the upper directory depends on its lower layer (mount with redirect_dir=off,metacopy=off)", ErrUnsupported, key))
			}
			continue // other overlay state refers to the sender's lower layer
		}
		if hdr.PAXRecords == nil {
			hdr.PAXRecords = map[string]string{}
		}
		hdr.PAXRecords[paxXattr+x.name] = string(x.value)
	}
	if n.typ() == unix.S_IFCHR && n.st.Rdev == 0 {
		whiteout = true
	}
	if whiteout {
		dir, _ := splitName(n.rel)
		return d.marker(path.Join(dir, whiteoutPrefix+base), hdr)
	}

	if n.typ() != unix.S_IFDIR && n.st.Nlink > 1 {
		if first, ok := d.links[n.id()]; ok {
			hdr.Typeflag, hdr.Name, hdr.Linkname = tar.TypeLink, n.rel, first
			hdr.PAXRecords = nil // the inode's xattrs travel with the first path
			return d.writeHeader(n.rel, hdr)
		}
		d.links[n.id()] = n.rel
	}
	hdr.Name = tarName(n.rel, n.typ() == unix.S_IFDIR)
	switch n.typ() {
	case unix.S_IFDIR:
		hdr.Typeflag = tar.TypeDir
	case unix.S_IFREG:
		hdr.Typeflag, hdr.Size = tar.TypeReg, n.st.Size
	case unix.S_IFLNK:
		hdr.Typeflag, hdr.Linkname = tar.TypeSymlink, n.target
	case unix.S_IFCHR, unix.S_IFBLK:
		hdr.Typeflag = tar.TypeChar
		if n.typ() == unix.S_IFBLK {
			hdr.Typeflag = tar.TypeBlock
		}
		hdr.Devmajor, hdr.Devminor = int64(unix.Major(n.st.Rdev)), int64(unix.Minor(n.st.Rdev))
	case unix.S_IFIFO:
		hdr.Typeflag = tar.TypeFifo
	default:
		return entryErr(n.rel, fmt.Errorf("%w: file type %#o", ErrUnsupported, n.typ()))
	}
	if err := d.writeHeader(n.rel, hdr); err != nil {
		return err
	}
	if hdr.Typeflag == tar.TypeReg {
		if err := d.copyFile(n, hdr.Size); err != nil {
			return entryErr(n.rel, err)
		}
	}
	if opaque {
		return d.marker(path.Join(n.rel, opaqueMarker), hdr)
	}
	return nil
}

// marker writes an empty whiteout or opaque-marker file.
func (d *differ) marker(name string, from *tar.Header) error {
	return d.writeHeader(name, &tar.Header{
		Format:   tar.FormatPAX,
		Typeflag: tar.TypeReg,
		Name:     name,
		Uid:      from.Uid,
		Gid:      from.Gid,
		ModTime:  from.ModTime,
	})
}

func (d *differ) writeHeader(rel string, hdr *tar.Header) error {
	if err := d.tw.WriteHeader(hdr); err != nil {
		return entryErr(rel, err)
	}
	return nil
}

// copyFile writes exactly size bytes of n's contents: a file that changed
// size since it was stat'ed is an error, not a silently wrong entry.
func (d *differ) copyFile(n *node, size int64) error {
	f, err := os.OpenFile(n.path, os.O_RDONLY|unix.O_NOFOLLOW, 0)
	if err != nil {
		return err
	}
	defer f.Close()
	if d.buf == nil {
		d.buf = make([]byte, copyBufSize)
	}
	var done int64
	for {
		k, err := f.Read(d.buf)
		if int64(k) > size-done {
			return fmt.Errorf("file grew while being read (expected %d bytes)", size)
		}
		if k > 0 {
			if _, werr := d.tw.Write(d.buf[:k]); werr != nil {
				return werr
			}
			done += int64(k)
		}
		if err == io.EOF {
			break
		}
		if err != nil {
			return fmt.Errorf("read: %w", err)
		}
	}
	if done != size {
		return fmt.Errorf("file shrank while being read (%d of %d bytes)", done, size)
	}
	return nil
}
