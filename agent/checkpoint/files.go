package checkpoint

import (
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
)

// localPath checks that rel names a path inside a checkpoint directory and
// returns it in the host's form.
func localPath(rel string) (string, error) {
	clean := filepath.Clean(filepath.FromSlash(rel))
	if rel == "" || filepath.IsAbs(clean) || clean == "." || clean == ".." ||
		strings.HasPrefix(clean, ".."+string(filepath.Separator)) {
		return "", fmt.Errorf("%q is not a path inside the checkpoint", rel)
	}
	return clean, nil
}

// copyInto copies src into dir at the relative path rel. A destination that
// exists (a CRIU image, the manifest) is an error, not an overwrite.
func copyInto(dir, rel, src string) error {
	clean, err := localPath(rel)
	if err != nil {
		return err
	}
	if filepath.ToSlash(clean) == ManifestName {
		return fmt.Errorf("%s is reserved for the manifest", rel)
	}
	dst := filepath.Join(dir, clean)
	if err := os.MkdirAll(filepath.Dir(dst), 0o700); err != nil {
		return err
	}
	return copyFile(dst, src)
}

func copyFile(dst, src string) error {
	in, err := os.Open(src)
	if err != nil {
		return err
	}
	defer in.Close()
	out, err := os.OpenFile(dst, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
	if err != nil {
		return err
	}
	if _, err := io.Copy(out, in); err != nil {
		out.Close()
		return fmt.Errorf("copy %s: %w", src, err)
	}
	return out.Close()
}
