package criu

import (
	"errors"
	"path/filepath"
	"strings"
	"testing"
)

func TestNotFound(t *testing.T) {
	c := &Client{Path: filepath.Join(t.TempDir(), "criu")}
	_, err := c.Version(t.Context())
	if !errors.Is(err, ErrNotFound) {
		t.Fatalf("err = %v, want ErrNotFound", err)
	}
	want := "criu not found at " + c.Path + ": run scripts/setup.sh (or make test) to build CRIU >= 4.1"
	if err.Error() != want {
		t.Errorf("message %q, want %q", err, want)
	}
	if err := checkBinary(DefaultPath + ".does-not-exist"); err == nil || !strings.Contains(err.Error(), DefaultPath+".does-not-exist") {
		t.Errorf("checkBinary: %v", err)
	}
}
