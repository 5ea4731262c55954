package pagestore

import (
	"errors"
	"strings"
	"testing"
)

func TestValidateName(t *testing.T) {
	for _, ok := range []string{"a", "snap-2024.01.01_1", "A_b", strings.Repeat("x", 128)} {
		if err := validateName(ok); err != nil {
			t.Errorf("%q: %v", ok, err)
		}
	}
	for _, bad := range []string{"", ".", "..", ".x", "-x", "a/b", "a b", "a\x00", strings.Repeat("x", 129)} {
		if err := validateName(bad); !errors.Is(err, ErrInvalidName) {
			t.Errorf("%q: %v, want ErrInvalidName", bad, err)
		}
	}
}

func TestManifestValidate(t *testing.T) {
	key := strings.Repeat("ab", 32)
	good := func() *manifest {
		return &manifest{Version: manifestVersion, Name: "s", Files: []fileEntry{
			{Path: "images", Type: typeDir, Mode: 0o755},
			{Path: "images/pages-1.img", Type: typeFile, Mode: 0o600, Size: 3 * PageSize, ChunkSize: 2 * PageSize, Chunks: []string{key, key}},
			{Path: "images/core.img", Type: typeFile, Mode: 0o600, Size: 10, Sizes: []int64{10}, Chunks: []string{key}},
			{Path: "link", Type: typeSymlink, Target: "/etc"},
		}}
	}
	b, err := encodeManifest(good())
	if err != nil {
		t.Fatal(err)
	}
	m, err := decodeManifest("s", b)
	if err != nil {
		t.Fatal(err)
	}
	if got := m.Files[1].Chunks; len(got) != 2 || got[1] != key || m.Files[1].chunkSizeAt(1) != PageSize {
		t.Errorf("round trip lost chunks: %v", got)
	}
	for name, breakIt := range map[string]func(m *manifest){
		"dotdot":          func(m *manifest) { m.Files[2].Path = "images/../../x" },
		"absolute":        func(m *manifest) { m.Files[2].Path = "/etc/passwd" },
		"through symlink": func(m *manifest) { m.Files = append(m.Files, fileEntry{Path: "link/passwd", Type: typeFile}) },
		"parent missing":  func(m *manifest) { m.Files[1].Path = "other/pages-1.img" },
		"duplicate":       func(m *manifest) { m.Files[2].Path = "images/pages-1.img" },
		"short chunks":    func(m *manifest) { m.Files[1].Size = 5 * PageSize },
		"sizes mismatch":  func(m *manifest) { m.Files[2].Sizes = []int64{9} },
		"bad type":        func(m *manifest) { m.Files[3].Type = "fifo" },
		"device mode":     func(m *manifest) { m.Files[2].Mode = 1 << 26 },
		"other name":      func(m *manifest) { m.Name = "t" },
	} {
		m := good()
		breakIt(m)
		b, err := encodeManifest(m)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := decodeManifest("s", b); !errors.Is(err, ErrBadManifest) {
			t.Errorf("%s: %v, want ErrBadManifest", name, err)
		}
	}
}
