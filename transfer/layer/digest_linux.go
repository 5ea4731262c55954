package layer

import (
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"fmt"
	"hash"
	"io"
	"os"
	"runtime"
	"sync"

	"golang.org/x/sys/unix"
)

// digestMagic starts every digest's input so a change of encoding changes
// every digest.
const digestMagic = "migrate layer digest v1\n"

// hashBufSize is the read buffer of one hashing worker.
const hashBufSize = 256 << 10

// Digest computes the content digest ("sha256:<hex>") of the tree at dir.
//
// The digest covers, for every entry in walk order (depth-first, names in
// byte order): its relative path, type, permission bits (with setuid,
// setgid, sticky), uid, gid, xattrs sorted by name except security.selinux
// (a host policy label, not content), symlink target, device numbers, and
// for regular files the size and SHA-256 of the contents. A second or later
// path to an inode already seen is recorded as a link to the first path, so
// hard-link structure counts but inode numbers do not. Timestamps do not
// count: a copy of the same content digests equal.
//
// Regular files are hashed by GOMAXPROCS workers while the walk goes on.
func Digest(dir string) (string, error) {
	return digest(dir, runtime.GOMAXPROCS(0))
}

// fileRec is one walked entry: its encoded metadata and, for the first
// path of a regular file, the contents' size and hash filled by a worker.
type fileRec struct {
	meta []byte
	path string // regular file to hash; "" for other entries
	size int64
	sum  [sha256.Size]byte
}

// digest with workers <= 1 hashes inline, without goroutines.
func digest(dir string, workers int) (string, error) {
	var (
		recs   []*fileRec
		seen   = map[fileID]string{}
		jobs   chan *fileRec
		wg     sync.WaitGroup
		mu     sync.Mutex
		jobErr error // guarded by mu
	)
	fail := func(err error) {
		mu.Lock()
		if jobErr == nil {
			jobErr = err
		}
		mu.Unlock()
	}
	firstErr := func() error {
		mu.Lock()
		defer mu.Unlock()
		return jobErr
	}
	if workers > 1 {
		jobs = make(chan *fileRec, 4*workers)
		for range workers {
			wg.Go(func() {
				h, buf := sha256.New(), make([]byte, hashBufSize)
				for r := range jobs {
					if firstErr() != nil {
						continue // drain after a failure
					}
					if err := r.hash(h, buf); err != nil {
						fail(err)
					}
				}
			})
		}
	}
	var inlineHash hash.Hash
	var inlineBuf []byte
	if jobs == nil {
		inlineHash, inlineBuf = sha256.New(), make([]byte, hashBufSize)
	}

	w := walker{root: dir}
	walkErr := w.walk(func(n *node) error {
		r := &fileRec{}
		link := ""
		if n.typ() != unix.S_IFDIR && n.st.Nlink > 1 {
			if first, ok := seen[n.id()]; ok {
				link = first
			} else {
				seen[n.id()] = n.rel
			}
		}
		r.meta = appendMeta(nil, n, link)
		recs = append(recs, r)
		if link != "" || n.typ() != unix.S_IFREG {
			return nil
		}
		r.path = n.path
		if jobs == nil {
			return r.hash(inlineHash, inlineBuf)
		}
		if err := firstErr(); err != nil {
			return err
		}
		jobs <- r
		return nil
	})
	if jobs != nil {
		close(jobs)
		wg.Wait()
	}
	if walkErr == nil {
		walkErr = jobErr
	}
	if walkErr != nil {
		return "", fmt.Errorf("digest %s: %w", dir, walkErr)
	}

	h := sha256.New()
	io.WriteString(h, digestMagic)
	var b []byte
	for _, r := range recs {
		h.Write(r.meta)
		if r.path != "" {
			b = binary.AppendUvarint(b[:0], uint64(r.size))
			h.Write(b)
			h.Write(r.sum[:])
		}
	}
	return "sha256:" + hex.EncodeToString(h.Sum(nil)), nil
}

// hash streams the file through h with buf, recording size and sum.
func (r *fileRec) hash(h hash.Hash, buf []byte) error {
	f, err := os.OpenFile(r.path, os.O_RDONLY|unix.O_NOFOLLOW, 0)
	if err != nil {
		return err
	}
	defer f.Close()
	h.Reset()
	var size int64
	for {
		n, err := f.Read(buf)
		h.Write(buf[:n])
		size += int64(n)
		if err == io.EOF {
			break
		}
		if err != nil {
			return fmt.Errorf("read %s: %w", r.path, err)
		}
	}
	r.size = size
	h.Sum(r.sum[:0])
	return nil
}

// appendMeta encodes one entry's metadata: length-prefixed strings and
// uvarints, so no two different entries encode the same.
func appendMeta(b []byte, n *node, link string) []byte {
	b = appendString(b, n.rel)
	if link != "" {
		b = append(b, 'h')
		return appendString(b, link)
	}
	b = append(b, typeCode(n.typ()))
	b = binary.AppendUvarint(b, uint64(n.st.Mode&07777))
	b = binary.AppendUvarint(b, uint64(n.st.Uid))
	b = binary.AppendUvarint(b, uint64(n.st.Gid))
	count := 0
	for _, x := range n.xattrs {
		if x.name != selinuxXattr {
			count++
		}
	}
	b = binary.AppendUvarint(b, uint64(count))
	for _, x := range n.xattrs {
		if x.name != selinuxXattr {
			b = appendString(b, x.name)
			b = appendString(b, string(x.value))
		}
	}
	switch n.typ() {
	case unix.S_IFLNK:
		b = appendString(b, n.target)
	case unix.S_IFCHR, unix.S_IFBLK:
		b = binary.AppendUvarint(b, uint64(unix.Major(n.st.Rdev)))
		b = binary.AppendUvarint(b, uint64(unix.Minor(n.st.Rdev)))
	}
	return b
}

func appendString(b []byte, s string) []byte {
	b = binary.AppendUvarint(b, uint64(len(s)))
	return append(b, s...)
}

func typeCode(t uint32) byte {
	switch t {
	case unix.S_IFDIR:
		return 'd'
	case unix.S_IFREG:
		return 'f'
	case unix.S_IFLNK:
		return 'l'
	case unix.S_IFCHR:
		return 'c'
	case unix.S_IFBLK:
		return 'b'
	case unix.S_IFIFO:
		return 'p'
	case unix.S_IFSOCK:
		return 's'
	}
	return '?'
}
