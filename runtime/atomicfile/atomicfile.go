// Package atomicfile writes files so that readers, and a crash, see either the
// old content or the new, never a mix: temporary file in the same directory,
// fsync, rename over the target, fsync of the directory. The cluster's
// certificates and the agent's records use it; the runtime's state and the
// shims' state, which describe running processes, skip the fsyncs.
package atomicfile

import (
	"os"
	"path/filepath"
)

// WriteFile atomically and durably replaces path with data, with mode perm.
func WriteFile(path string, data []byte, perm os.FileMode) error {
	return write(path, data, perm, true)
}

// WriteFileNoSync is WriteFile without the fsyncs: atomic, not durable. For
// records of running processes, which a crash of the machine ends anyway
// (runc writes its state.json so): a crash of the writer still leaves the
// old content or the new.
func WriteFileNoSync(path string, data []byte, perm os.FileMode) error {
	return write(path, data, perm, false)
}

func write(path string, data []byte, perm os.FileMode, sync bool) error {
	dir := filepath.Dir(path)
	f, err := os.CreateTemp(dir, "."+filepath.Base(path)+".tmp*")
	if err != nil {
		return err
	}
	tmp := f.Name()
	defer os.Remove(tmp) // after a successful rename there is nothing to remove
	if err := f.Chmod(perm); err != nil {
		f.Close()
		return err
	}
	if _, err := f.Write(data); err != nil {
		f.Close()
		return err
	}
	if sync {
		if err := f.Sync(); err != nil {
			f.Close()
			return err
		}
	}
	if err := f.Close(); err != nil {
		return err
	}
	if err := os.Rename(tmp, path); err != nil {
		return err
	}
	if !sync {
		return nil
	}
	d, err := os.Open(dir)
	if err != nil {
		return err
	}
	defer d.Close()
	return d.Sync()
}
