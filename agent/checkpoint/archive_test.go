package checkpoint

import (
	"archive/tar"
	"bytes"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/klauspost/compress/zstd"
	specs "github.com/opencontainers/runtime-spec/specs-go"
)

// fakeCheckpoint writes a checkpoint directory with a valid manifest and a few
// files, as Checkpoint would (no CRIU needed to test the archive format).
func fakeCheckpoint(t *testing.T) string {
	t.Helper()
	dir := filepath.Join(t.TempDir(), "ckpt")
	for rel, data := range map[string]string{
		"images/pages-1.img":    strings.Repeat("page", 4096),
		"images/core-1.img":     "core",
		"logs/container.log":    "2024-01-01T00:00:00Z stdout F 1\n",
		"logs/container.log.1":  "2024-01-01T00:00:00Z stdout F 0\n",
		"images/nested/x/y.img": "deep",
	} {
		p := filepath.Join(dir, rel)
		if err := os.MkdirAll(filepath.Dir(p), 0o700); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(p, []byte(data), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	files, err := listFiles(dir)
	if err != nil {
		t.Fatal(err)
	}
	m := &Manifest{FormatVersion: FormatVersion, ID: "ckpt", ContainerID: "c1", Created: time.Now().UTC(),
		Spec: &specs.Spec{Process: &specs.Process{Args: []string{"sh"}}, Linux: &specs.Linux{}}, Files: files}
	if err := writeManifest(dir, m, true); err != nil {
		t.Fatal(err)
	}
	return dir
}

func TestExportImportRoundTrip(t *testing.T) {
	src := fakeCheckpoint(t)
	// A restore log beside the images and a stray file are not part of the checkpoint.
	os.WriteFile(filepath.Join(src, "stray"), []byte("x"), 0o600)
	var buf bytes.Buffer
	if err := Export(src, &buf); err != nil {
		t.Fatal(err)
	}
	dst := filepath.Join(t.TempDir(), "imported")
	if err := Import(bytes.NewReader(buf.Bytes()), dst); err != nil {
		t.Fatal(err)
	}
	m, err := Verify(dst)
	if err != nil {
		t.Fatalf("imported checkpoint does not verify: %v", err)
	}
	if m.ContainerID != "c1" || len(m.Files) != 5 {
		t.Fatalf("manifest after import: %+v", m)
	}
	if _, err := os.Stat(filepath.Join(dst, "stray")); err == nil {
		t.Fatal("an unlisted file was exported")
	}
	// Import refuses an existing directory rather than merging into it.
	if err := Import(bytes.NewReader(buf.Bytes()), dst); err == nil {
		t.Fatal("import into an existing directory succeeded")
	}
}

func TestImportTruncated(t *testing.T) {
	src := fakeCheckpoint(t)
	var buf bytes.Buffer
	if err := Export(src, &buf); err != nil {
		t.Fatal(err)
	}
	for _, n := range []int{0, 10, buf.Len() / 2, buf.Len() - 3} {
		dst := filepath.Join(t.TempDir(), "imported")
		err := Import(bytes.NewReader(buf.Bytes()[:n]), dst)
		if !errors.Is(err, ErrCorrupt) {
			t.Errorf("truncated to %d bytes: %v, want ErrCorrupt", n, err)
		}
		if _, serr := os.Stat(dst); serr == nil {
			t.Errorf("truncated to %d bytes: %s left behind", n, dst)
		}
	}
}

// archive builds a zstd tar from headers (regular files get body "data").
func archive(t *testing.T, hdrs ...*tar.Header) []byte {
	t.Helper()
	var buf bytes.Buffer
	zw, _ := zstd.NewWriter(&buf)
	tw := tar.NewWriter(zw)
	for _, h := range hdrs {
		if h.Typeflag == tar.TypeReg {
			h.Size = 4
		}
		if h.Mode == 0 {
			h.Mode = 0o600
		}
		if err := tw.WriteHeader(h); err != nil {
			t.Fatal(err)
		}
		if h.Typeflag == tar.TypeReg {
			tw.Write([]byte("data"))
		}
	}
	tw.Close()
	zw.Close()
	return buf.Bytes()
}

func TestImportRejectsUnsafeEntries(t *testing.T) {
	manifest := &tar.Header{Typeflag: tar.TypeReg, Name: ManifestName}
	outside := filepath.Join(t.TempDir(), "outside")
	cases := map[string]*tar.Header{
		"absolute":  {Typeflag: tar.TypeReg, Name: outside},
		"dotdot":    {Typeflag: tar.TypeReg, Name: "../escape"},
		"dotdot2":   {Typeflag: tar.TypeReg, Name: "images/../../escape"},
		"symlink":   {Typeflag: tar.TypeSymlink, Name: "images/link", Linkname: "/etc/passwd"},
		"hardlink":  {Typeflag: tar.TypeLink, Name: "images/hl", Linkname: "/etc/passwd"},
		"device":    {Typeflag: tar.TypeChar, Name: "images/null", Devmajor: 1, Devminor: 3},
		"fifo":      {Typeflag: tar.TypeFifo, Name: "images/fifo"},
		"duplicate": {Typeflag: tar.TypeReg, Name: ManifestName},
	}
	for name, bad := range cases {
		dst := filepath.Join(t.TempDir(), "imported")
		err := Import(bytes.NewReader(archive(t, manifest, bad)), dst)
		if !errors.Is(err, ErrCorrupt) {
			t.Errorf("%s: %v, want ErrCorrupt", name, err)
		}
		if _, serr := os.Stat(dst); serr == nil {
			t.Errorf("%s: %s left behind", name, dst)
		}
	}
	if _, err := os.Lstat(outside); err == nil {
		t.Error("an absolute entry was written outside the checkpoint")
	}
	if _, err := os.Lstat(filepath.Join(os.TempDir(), "escape")); err == nil {
		t.Error("a .. entry escaped")
	}
	if err := Import(bytes.NewReader([]byte("not zstd at all")), filepath.Join(t.TempDir(), "x")); !errors.Is(err, ErrCorrupt) {
		t.Errorf("garbage: %v, want ErrCorrupt", err)
	}
}

func TestCopyIntoRefusesEscapes(t *testing.T) {
	dir := t.TempDir()
	src := filepath.Join(t.TempDir(), "src")
	os.WriteFile(src, []byte("x"), 0o600)
	for _, rel := range []string{"../x", "/abs", "", ".", "logs/../../x", ManifestName} {
		if err := copyInto(dir, rel, src); err == nil {
			t.Errorf("copyInto accepted %q", rel)
		}
	}
	if err := copyInto(dir, "logs/container.log", src); err != nil {
		t.Fatal(err)
	}
	if b, _ := os.ReadFile(filepath.Join(dir, "logs", "container.log")); string(b) != "x" {
		t.Errorf("copied content %q", b)
	}
	if err := copyInto(dir, "logs/container.log", src); err == nil {
		t.Error("copyInto overwrote an existing file")
	}
}
