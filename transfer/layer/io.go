package layer

import "io"

// countingWriter counts the bytes its writer accepted.
type countingWriter struct {
	w io.Writer
	n int64
}

func (c *countingWriter) Write(p []byte) (int, error) {
	n, err := c.w.Write(p)
	c.n += int64(n)
	return n, err
}

// tailSize is what countingReader remembers: a tar end-of-archive marker.
const tailSize = 2 * 512

// countingReader counts the bytes read through it, remembers the last
// tailSize of them, and keeps the first error of its reader other than
// io.EOF, so a failing source is reported as itself rather than as a
// corrupt archive.
type countingReader struct {
	r    io.Reader
	n    int64
	err  error
	tail [tailSize]byte
}

func (c *countingReader) Read(p []byte) (int, error) {
	n, err := c.r.Read(p)
	c.n += int64(n)
	if n >= tailSize {
		copy(c.tail[:], p[n-tailSize:n])
	} else if n > 0 {
		copy(c.tail[:], c.tail[n:])
		copy(c.tail[tailSize-n:], p[:n])
	}
	if err != nil && err != io.EOF && c.err == nil {
		c.err = err
	}
	return n, err
}

// endsWithMarker reports whether the last tailSize bytes read were zeros.
func (c *countingReader) endsWithMarker() bool {
	if c.n < tailSize {
		return false
	}
	for _, b := range c.tail {
		if b != 0 {
			return false
		}
	}
	return true
}
