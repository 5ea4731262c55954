package layer

import (
	"archive/tar"
	"bytes"
	"errors"
	"io"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"testing/iotest"

	"golang.org/x/sys/unix"
)

// TestRoundTripPlain writes a plain directory as a diff and applies it to an
// empty one: everything, times and hard links included, comes back.
func TestRoundTripPlain(t *testing.T) {
	t.Parallel()
	src, dst := tempDir(t), tempDir(t)
	plainTree(t, src)
	var buf bytes.Buffer
	n, err := WriteDiff(src, &buf)
	must(t, err)
	if n != int64(buf.Len()) {
		t.Errorf("WriteDiff returned %d, wrote %d", n, buf.Len())
	}
	for _, walkOnly := range []bool{false, true} {
		dst := filepath.Join(dst, map[bool]string{false: "openat2", true: "walk"}[walkOnly])
		must(t, os.Mkdir(dst, 0o700))
		m, err := applyDiff(bytes.NewReader(buf.Bytes()), dst, ApplyOptions{}, walkOnly)
		must(t, err)
		if m != n {
			t.Errorf("ApplyDiff read %d of %d bytes", m, n)
		}
		compareTrees(t, snapshot(t, src), snapshot(t, dst))
		ds, err := Digest(src)
		must(t, err)
		dd, err := Digest(dst)
		must(t, err)
		if ds != dd {
			t.Errorf("digest of source %s != digest of applied copy %s", ds, dd)
		}
	}
}

// TestApplyOverExisting applies a diff over a tree holding other content at
// the same paths: entries replace what is there (a directory by a file, a
// file by a directory, a symlink by a file), untouched paths stay.
func TestApplyOverExisting(t *testing.T) {
	t.Parallel()
	src, dst := tempDir(t), tempDir(t)
	writeFile(t, filepath.Join(src, "a"), "new a", 0o644)
	writeFile(t, filepath.Join(src, "b/inner"), "inner", 0o644)
	writeFile(t, filepath.Join(src, "c"), "new c", 0o644)

	must(t, os.MkdirAll(filepath.Join(dst, "a/deep/er"), 0o755))
	writeFile(t, filepath.Join(dst, "a/deep/er/x"), "old", 0o644)
	writeFile(t, filepath.Join(dst, "b"), "old b file", 0o644)
	outside := filepath.Join(tempDir(t), "outside")
	writeFile(t, outside, "outside", 0o644)
	must(t, os.Symlink(outside, filepath.Join(dst, "c")))
	writeFile(t, filepath.Join(dst, "keep"), "kept", 0o644)

	var buf bytes.Buffer
	_, err := WriteDiff(src, &buf)
	must(t, err)
	_, err = ApplyDiff(&buf, dst, ApplyOptions{})
	must(t, err)
	for p, want := range map[string]string{"a": "new a", "b/inner": "inner", "c": "new c", "keep": "kept"} {
		got, err := os.ReadFile(filepath.Join(dst, p))
		if err != nil || string(got) != want {
			t.Errorf("%s = %q, %v; want %q", p, got, err, want)
		}
	}
	if b, _ := os.ReadFile(outside); string(b) != "outside" {
		t.Errorf("file behind a replaced symlink changed: %q", b)
	}
}

func TestTruncatedStream(t *testing.T) {
	t.Parallel()
	src := tempDir(t)
	writeFile(t, filepath.Join(src, "a/one"), strings.Repeat("1", 700), 0o644)
	writeFile(t, filepath.Join(src, "a/two"), strings.Repeat("2", 1024), 0o644)
	writeFile(t, filepath.Join(src, "zeros"), string(make([]byte, 3000)), 0o644)
	must(t, os.Symlink("a/one", filepath.Join(src, "link")))
	must(t, os.Link(filepath.Join(src, "a/one"), filepath.Join(src, "hard")))
	var buf bytes.Buffer
	_, err := WriteDiff(src, &buf)
	must(t, err)
	full := buf.Bytes()

	// Every block boundary (where archive/tar alone would report a clean
	// end) plus cuts inside headers and data.
	var cuts []int
	for c := 0; c < len(full); c += 512 {
		cuts = append(cuts, c)
	}
	cuts = append(cuts, 1, 100, 513, 1500, 2100, len(full)-1, len(full)-513)
	root := tempDir(t)
	for i, c := range cuts {
		dst := filepath.Join(root, "cut", strings.Repeat("x", 1)+string(rune('a'+i%26))+strings.Repeat("y", i/26))
		must(t, os.MkdirAll(dst, 0o755))
		_, err := ApplyDiff(bytes.NewReader(full[:c]), dst, ApplyOptions{})
		if !errors.Is(err, ErrTruncated) {
			t.Errorf("cut at %d of %d: err = %v; want ErrTruncated", c, len(full), err)
		}
	}
	// Reads of odd sizes must not confuse the end-marker check.
	for name, r := range map[string]io.Reader{
		"one-byte": iotest.OneByteReader(bytes.NewReader(full[:len(full)-1024])),
		"half":     iotest.HalfReader(bytes.NewReader(full[:len(full)-1024])),
	} {
		if _, err := ApplyDiff(r, tempDir(t), ApplyOptions{}); !errors.Is(err, ErrTruncated) {
			t.Errorf("%s reads, no end marker: err = %v; want ErrTruncated", name, err)
		}
	}
	for name, r := range map[string]io.Reader{
		"plain":    bytes.NewReader(full),
		"one-byte": iotest.OneByteReader(bytes.NewReader(full)),
		"half":     iotest.HalfReader(bytes.NewReader(full)),
	} {
		if _, err := ApplyDiff(r, tempDir(t), ApplyOptions{}); err != nil {
			t.Errorf("full stream, %s reads: %v", name, err)
		}
	}
}

func TestCorruptStream(t *testing.T) {
	t.Parallel()
	src := tempDir(t)
	writeFile(t, filepath.Join(src, "f"), "content", 0o644)
	var buf bytes.Buffer
	_, err := WriteDiff(src, &buf)
	must(t, err)

	flipped := slices.Clone(buf.Bytes())
	flipped[520] ^= 0x55 // inside the second header block
	noise := bytes.Repeat([]byte("not a tar archive, just text. "), 100)
	for name, data := range map[string][]byte{"flipped": flipped, "noise": noise} {
		_, err := ApplyDiff(bytes.NewReader(data), tempDir(t), ApplyOptions{})
		if !errors.Is(err, ErrCorrupt) {
			t.Errorf("%s: err = %v; want ErrCorrupt", name, err)
		}
	}

	errSource := errors.New("connection reset by peer")
	r := io.MultiReader(bytes.NewReader(buf.Bytes()[:700]), errReader{errSource})
	if _, err := ApplyDiff(r, tempDir(t), ApplyOptions{}); !errors.Is(err, errSource) {
		t.Errorf("failing source: err = %v; want the source's error", err)
	}
}

type errReader struct{ err error }

func (e errReader) Read([]byte) (int, error) { return 0, e.err }

// tarEntry is one crafted entry of a hostile stream.
type tarEntry struct {
	name, link string
	typ        byte
	body       string
	pax        map[string]string
}

func craft(t testing.TB, entries ...tarEntry) []byte {
	t.Helper()
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	for _, e := range entries {
		typ := e.typ
		if typ == 0 {
			typ = tar.TypeReg
		}
		hdr := &tar.Header{
			Name: e.name, Linkname: e.link, Typeflag: typ, Mode: 0o644,
			Uid: os.Getuid(), Gid: os.Getgid(), Size: int64(len(e.body)),
			PAXRecords: e.pax, Format: tar.FormatPAX,
		}
		if typ == tar.TypeDir {
			hdr.Mode = 0o755
		}
		if typ == tar.TypeGNUSparse {
			hdr.Format = tar.FormatGNU
		}
		if typ == tar.TypeChar {
			hdr.Devmajor, hdr.Devminor = 1, 3
		}
		if typ != tar.TypeReg {
			hdr.Size = 0
		}
		must(t, tw.WriteHeader(hdr))
		if hdr.Size > 0 {
			_, err := tw.Write([]byte(e.body))
			must(t, err)
		}
	}
	must(t, tw.Close())
	// tar.Writer drops GNU.sparse.* PAX records; write them under a
	// same-length placeholder key and rename it in place.
	return bytes.ReplaceAll(buf.Bytes(), []byte(sparsePlaceholder), []byte("GNU.sparse."))
}

const sparsePlaceholder = "XXX.xxxxxx."

// TestHostileStreams feeds crafted archives that try to reach outside the
// upper directory. Each must fail naming the hostile entry, and the
// sandbox around upper must be exactly as before.
func TestHostileStreams(t *testing.T) {
	t.Parallel()
	for _, walkOnly := range []bool{false, true} {
		t.Run(map[bool]string{false: "openat2", true: "walk"}[walkOnly], func(t *testing.T) {
			t.Parallel()
			testHostile(t, walkOnly)
		})
	}
}

func testHostile(t *testing.T, walkOnly bool) {
	cases := []struct {
		name    string
		bad     string // the entry that must be named in the error
		want    error
		entries func(sandbox string) []tarEntry
		pre     func(t *testing.T, sandbox, upper string)
	}{
		{name: "dotdot", bad: "../escape", want: ErrUnsafeEntry, entries: func(string) []tarEntry {
			return []tarEntry{{name: "ok", body: "fine"}, {name: "../escape", body: "x"}}
		}},
		{name: "absolute", want: ErrUnsafeEntry, entries: func(sb string) []tarEntry {
			return []tarEntry{{name: sb + "/escape", body: "x"}}
		}},
		{name: "inner-dotdot", bad: "a/../../escape", want: ErrUnsafeEntry, entries: func(string) []tarEntry {
			return []tarEntry{{name: "a/", typ: tar.TypeDir}, {name: "a/../../escape", body: "x"}}
		}},
		{name: "symlink-parent", bad: "evil/escape", want: ErrUnsafeEntry, entries: func(sb string) []tarEntry {
			return []tarEntry{{name: "evil", typ: tar.TypeSymlink, link: sb}, {name: "evil/escape", body: "x"}}
		}},
		{name: "symlink-root", want: ErrUnsafeEntry, entries: func(sb string) []tarEntry {
			// evil -> / then evil/<sandbox>/escape: the same file via the host root.
			return []tarEntry{{name: "evil", typ: tar.TypeSymlink, link: "/"}, {name: "evil" + sb + "/escape", body: "x"}}
		}},
		{name: "symlink-relative-dotdot", bad: "evil/escape", want: ErrUnsafeEntry, entries: func(string) []tarEntry {
			return []tarEntry{{name: "evil", typ: tar.TypeSymlink, link: ".."}, {name: "evil/escape", body: "x"}}
		}},
		{name: "symlink-parent-dir", bad: "evil/escape/", want: ErrUnsafeEntry, entries: func(sb string) []tarEntry {
			return []tarEntry{{name: "evil", typ: tar.TypeSymlink, link: sb}, {name: "evil/escape/", typ: tar.TypeDir}}
		}},
		{name: "symlink-deep", bad: "d/evil/sub/escape", want: ErrUnsafeEntry, entries: func(sb string) []tarEntry {
			return []tarEntry{{name: "d/", typ: tar.TypeDir}, {name: "d/evil", typ: tar.TypeSymlink, link: sb},
				{name: "d/evil/sub/escape", body: "x"}}
		}},
		{name: "preexisting-symlink", bad: "pre/escape", want: ErrUnsafeEntry,
			pre: func(t *testing.T, sb, upper string) { must(t, os.Symlink(sb, filepath.Join(upper, "pre"))) },
			entries: func(string) []tarEntry {
				return []tarEntry{{name: "pre/escape", body: "x"}}
			}},
		{name: "hardlink-dotdot", bad: "x", want: ErrUnsafeEntry, entries: func(string) []tarEntry {
			return []tarEntry{{name: "x", typ: tar.TypeLink, link: "../../etc/passwd"}}
		}},
		{name: "hardlink-absolute", bad: "x", want: ErrUnsafeEntry, entries: func(sb string) []tarEntry {
			return []tarEntry{{name: "x", typ: tar.TypeLink, link: sb + "/canary"}}
		}},
		{name: "hardlink-via-symlink", bad: "x", want: ErrUnsafeEntry, entries: func(sb string) []tarEntry {
			return []tarEntry{{name: "evil", typ: tar.TypeSymlink, link: sb}, {name: "x", typ: tar.TypeLink, link: "evil/canary"}}
		}},
		{name: "whiteout-dotdot", bad: ".wh..", want: ErrUnsafeEntry, entries: func(string) []tarEntry {
			return []tarEntry{{name: ".wh.."}}
		}},
		{name: "whiteout-dotdotdot", bad: "a/.wh...", want: ErrUnsafeEntry, entries: func(string) []tarEntry {
			return []tarEntry{{name: "a/", typ: tar.TypeDir}, {name: "a/.wh..."}}
		}},
		{name: "whiteout-via-symlink", bad: "evil/.wh.canary", want: ErrUnsafeEntry, entries: func(sb string) []tarEntry {
			return []tarEntry{{name: "evil", typ: tar.TypeSymlink, link: sb}, {name: "evil/.wh.canary"}}
		}},
		{name: "opaque-via-symlink", bad: "evil/.wh..wh..opq", want: ErrUnsafeEntry, entries: func(sb string) []tarEntry {
			return []tarEntry{{name: "evil", typ: tar.TypeSymlink, link: sb}, {name: "evil/.wh..wh..opq"}}
		}},
		{name: "device", bad: "null", want: ErrDeviceNotAllowed, entries: func(string) []tarEntry {
			return []tarEntry{{name: "null", typ: tar.TypeChar}}
		}},
		{name: "overlay-xattr", bad: "f", want: ErrUnsupported, entries: func(string) []tarEntry {
			return []tarEntry{{name: "f", body: "x", pax: map[string]string{"SCHILY.xattr.trusted.overlay.redirect": "/etc"}}}
		}},
		{name: "sparse", bad: "s", want: ErrUnsupported, entries: func(string) []tarEntry {
			return []tarEntry{{name: "s", typ: tar.TypeGNUSparse}}
		}},
		{name: "pax-sparse-bomb", bad: "bomb", want: ErrUnsupported, entries: func(string) []tarEntry {
			// 1 TB of holes from a header: never expanded.
			return []tarEntry{{name: "bomb", body: "x", pax: map[string]string{sparsePlaceholder + "size": "1000000000000", sparsePlaceholder + "numblocks": "1", sparsePlaceholder + "map": "999999999999,1"}}}
		}},
		{name: "root-not-dir", bad: "./", want: ErrUnsupported, entries: func(string) []tarEntry {
			return []tarEntry{{name: "./", typ: tar.TypeSymlink, link: "/"}}
		}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			t.Parallel()
			sandbox := tempDir(t)
			upper := filepath.Join(sandbox, "upper")
			must(t, os.Mkdir(upper, 0o755))
			canary := filepath.Join(sandbox, "canary")
			writeFile(t, canary, "canary", 0o644)
			if c.pre != nil {
				c.pre(t, sandbox, upper)
			}
			entries := c.entries(sandbox)
			bad := c.bad
			if bad == "" {
				bad = entries[len(entries)-1].name
			}
			_, err := applyDiff(bytes.NewReader(craft(t, entries...)), upper, ApplyOptions{}, walkOnly)
			var ee *EntryError
			switch {
			case err == nil:
				t.Errorf("hostile stream applied without error")
			case !errors.Is(err, c.want):
				t.Errorf("err = %v; want %v", err, c.want)
			case !errors.As(err, &ee) || ee.Name != bad:
				t.Errorf("err = %v; want it to name entry %q", err, bad)
			}
			names, err := os.ReadDir(sandbox)
			must(t, err)
			if len(names) != 2 || names[0].Name() != "canary" || names[1].Name() != "upper" {
				t.Errorf("sandbox holds %v; want only canary and upper", names)
			}
			var st unix.Stat_t
			must(t, unix.Lstat(canary, &st))
			b, err := os.ReadFile(canary)
			must(t, err)
			if string(b) != "canary" || st.Nlink != 1 || st.Mode&07777 != 0o644 {
				t.Errorf("canary changed: %q nlink %d mode %o", b, st.Nlink, st.Mode&07777)
			}
		})
	}
}

// TestSymlinkReplacedNotFollowed: a file entry at the path of a symlink
// the stream made replaces the symlink; the file it pointed to is intact.
func TestSymlinkReplacedNotFollowed(t *testing.T) {
	t.Parallel()
	sandbox := tempDir(t)
	upper := filepath.Join(sandbox, "upper")
	must(t, os.Mkdir(upper, 0o755))
	canary := filepath.Join(sandbox, "canary")
	writeFile(t, canary, "canary", 0o644)
	data := craft(t,
		tarEntry{name: "evil", typ: tar.TypeSymlink, link: canary},
		tarEntry{name: "evil", body: "replaced"},
		tarEntry{name: "dir", typ: tar.TypeSymlink, link: sandbox},
		tarEntry{name: "dir/", typ: tar.TypeDir},
		tarEntry{name: "dir/inside", body: "inside"},
	)
	_, err := ApplyDiff(bytes.NewReader(data), upper, ApplyOptions{})
	must(t, err)
	if b, _ := os.ReadFile(canary); string(b) != "canary" {
		t.Errorf("canary = %q", b)
	}
	if b, err := os.ReadFile(filepath.Join(upper, "evil")); err != nil || string(b) != "replaced" {
		t.Errorf("upper/evil = %q, %v", b, err)
	}
	if fi, err := os.Lstat(filepath.Join(upper, "dir")); err != nil || !fi.IsDir() {
		t.Errorf("upper/dir is not a directory: %v", err)
	}
	if _, err := os.Lstat(filepath.Join(sandbox, "inside")); err == nil {
		t.Errorf("entry written through a replaced symlink")
	}
}

// TestMissingParents: entries whose directories the stream never listed
// (as some OCI layers have) get them made.
func TestMissingParents(t *testing.T) {
	t.Parallel()
	upper := tempDir(t)
	data := craft(t, tarEntry{name: "a/b/c/file", body: "deep"}, tarEntry{name: "a/b/link", typ: tar.TypeLink, link: "a/b/c/file"})
	_, err := ApplyDiff(bytes.NewReader(data), upper, ApplyOptions{})
	must(t, err)
	var st unix.Stat_t
	must(t, unix.Stat(filepath.Join(upper, "a/b/link"), &st))
	if st.Nlink != 2 {
		t.Errorf("hard link count %d; want 2", st.Nlink)
	}
}
