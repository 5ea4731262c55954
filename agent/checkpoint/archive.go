package checkpoint

import (
	"archive/tar"
	"errors"
	"fmt"
	"io"
	"os"
	"path"
	"path/filepath"
	"sort"

	"github.com/klauspost/compress/zstd"
)

// ArchiveExt is the conventional file name extension of an exported checkpoint.
const ArchiveExt = ".tar.zst"

// Export writes the checkpoint in dir to w as one archive: a tar stream,
// zstd-compressed, holding the manifest first and then exactly the files the
// manifest lists, with the directories they need. Nothing else of dir (restore
// logs beside it, stray files) goes in. The archive is as trustworthy as the
// directory: Import checks its structure, Verify its content.
func Export(dir string, w io.Writer) error {
	m, err := Read(dir)
	if err != nil {
		return fmt.Errorf("export %s: %w", dir, err)
	}
	zw, err := zstd.NewWriter(w, zstd.WithEncoderConcurrency(1))
	if err != nil {
		return fmt.Errorf("export %s: %w", dir, err)
	}
	tw := tar.NewWriter(zw)
	entries := []string{ManifestName}
	dirs := map[string]bool{}
	for _, f := range m.Files {
		rel, err := localPath(f.Path)
		if err != nil {
			return fmt.Errorf("export %s: %w: %v", dir, ErrCorrupt, err)
		}
		rel = filepath.ToSlash(rel)
		for d := path.Dir(rel); d != "."; d = path.Dir(d) {
			dirs[d] = true
		}
		entries = append(entries, rel)
	}
	dirList := make([]string, 0, len(dirs))
	for d := range dirs {
		dirList = append(dirList, d)
	}
	sort.Strings(dirList) // parents before children
	for _, d := range dirList {
		hdr := &tar.Header{Typeflag: tar.TypeDir, Name: d + "/", Mode: 0o700, ModTime: m.Created, Format: tar.FormatPAX}
		if err := tw.WriteHeader(hdr); err != nil {
			return fmt.Errorf("export %s: %w", dir, err)
		}
	}
	for _, rel := range entries {
		if err := addFile(tw, filepath.Join(dir, filepath.FromSlash(rel)), rel); err != nil {
			return fmt.Errorf("export %s: %w", dir, err)
		}
	}
	if err := tw.Close(); err != nil {
		return fmt.Errorf("export %s: %w", dir, err)
	}
	if err := zw.Close(); err != nil {
		return fmt.Errorf("export %s: %w", dir, err)
	}
	return nil
}

func addFile(tw *tar.Writer, src, name string) error {
	f, err := os.Open(src)
	if err != nil {
		return err
	}
	defer f.Close()
	st, err := f.Stat()
	if err != nil {
		return err
	}
	if !st.Mode().IsRegular() {
		return fmt.Errorf("%s: not a regular file", name)
	}
	hdr := &tar.Header{Typeflag: tar.TypeReg, Name: name, Mode: 0o600, Size: st.Size(), ModTime: st.ModTime(), Format: tar.FormatPAX}
	if err := tw.WriteHeader(hdr); err != nil {
		return err
	}
	// A file that changed size under us makes the tar writer fail: better than an
	// archive whose manifest cannot match.
	if _, err := io.Copy(tw, f); err != nil {
		return fmt.Errorf("%s: %w", name, err)
	}
	return nil
}

// Import extracts an archive written by Export into dir, which must not exist.
// Archives are untrusted input: every entry must be a directory or a regular
// file at a relative path inside dir (no absolute paths, "..", symlinks, hard
// links, devices or duplicates). On any error dir is removed again and the error
// wraps ErrCorrupt. Import does not check the files against the manifest: call
// Verify on dir next.
func Import(r io.Reader, dir string) (retErr error) {
	if err := os.Mkdir(dir, 0o700); err != nil {
		return fmt.Errorf("import: %w", err)
	}
	defer func() {
		if retErr != nil {
			os.RemoveAll(dir)
		}
	}()
	zr, err := zstd.NewReader(r, zstd.WithDecoderConcurrency(1))
	if err != nil {
		return fmt.Errorf("import: %w: %v", ErrCorrupt, err)
	}
	defer zr.Close()
	tr := tar.NewReader(zr)
	n := 0
	for {
		hdr, err := tr.Next()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			return fmt.Errorf("import: %w: archive is truncated or not a checkpoint archive: %v", ErrCorrupt, err)
		}
		n++
		rel, err := localPath(hdr.Name)
		if err != nil {
			return fmt.Errorf("import: %w: entry %v", ErrCorrupt, err)
		}
		dst := filepath.Join(dir, rel)
		switch hdr.Typeflag {
		case tar.TypeDir:
			if err := os.MkdirAll(dst, 0o700); err != nil {
				return fmt.Errorf("import: %w", err)
			}
		case tar.TypeReg:
			if err := extract(tr, hdr, dst); err != nil {
				return err
			}
		default:
			return fmt.Errorf("import: %w: entry %q is not a regular file or directory (type %q): a checkpoint holds only those", ErrCorrupt, hdr.Name, hdr.Typeflag)
		}
	}
	if n == 0 {
		return fmt.Errorf("import: %w: empty archive", ErrCorrupt)
	}
	return nil
}

// extract writes one regular file. Only directories and regular files exist
// under dir (we create nothing else), so the joined path cannot leave it.
func extract(tr *tar.Reader, hdr *tar.Header, dst string) error {
	if err := os.MkdirAll(filepath.Dir(dst), 0o700); err != nil {
		return fmt.Errorf("import: %w", err)
	}
	f, err := os.OpenFile(dst, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
	if err != nil {
		if errors.Is(err, os.ErrExist) {
			return fmt.Errorf("import: %w: entry %q appears twice", ErrCorrupt, hdr.Name)
		}
		return fmt.Errorf("import: %w", err)
	}
	n, err := io.Copy(f, tr)
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return fmt.Errorf("import: %w: %s: archive is truncated or corrupt: %v", ErrCorrupt, hdr.Name, err)
	}
	if n != hdr.Size {
		return fmt.Errorf("import: %w: %s: %d of %d bytes", ErrCorrupt, hdr.Name, n, hdr.Size)
	}
	return nil
}
