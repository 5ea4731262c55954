package layer

import (
	"errors"
	"testing"
)

func TestCleanName(t *testing.T) {
	t.Parallel()
	good := map[string]string{
		"a":          "a",
		"a/":         "a",
		"./a/b":      "a/b",
		"./":         ".",
		".":          ".",
		"a//b/./c/":  "a/b/c",
		"..a/b..":    "..a/b..",
		".wh.x":      ".wh.x",
		"a/.wh..opq": "a/.wh..opq",
	}
	for in, want := range good {
		got, err := cleanName(in)
		if err != nil || got != want {
			t.Errorf("cleanName(%q) = %q, %v; want %q", in, got, err, want)
		}
	}
	for _, in := range []string{"", "/", "/etc/passwd", "..", "../x", "a/../b", "a/../../x", "./..", "a/..", "a\x00b"} {
		if got, err := cleanName(in); !errors.Is(err, ErrUnsafeEntry) {
			t.Errorf("cleanName(%q) = %q, %v; want ErrUnsafeEntry", in, got, err)
		}
	}
}

func TestSplitName(t *testing.T) {
	t.Parallel()
	for in, want := range map[string][2]string{
		"a":     {".", "a"},
		"a/b":   {"a", "b"},
		"a/b/c": {"a/b", "c"},
	} {
		if d, b := splitName(in); d != want[0] || b != want[1] {
			t.Errorf("splitName(%q) = %q, %q; want %q", in, d, b, want)
		}
	}
}

func TestClassify(t *testing.T) {
	t.Parallel()
	cases := []struct {
		base   string
		kind   whiteoutKind
		target string
		err    error
	}{
		{"file", plainEntry, "", nil},
		{".whx", plainEntry, "", nil},
		{".wh.file", whiteoutEntry, "file", nil},
		{".wh..hidden", whiteoutEntry, ".hidden", nil},
		{".wh..wh..opq", opaqueEntry, "", nil},
		{".wh..wh.plnk", 0, "", ErrUnsupported},
		{".wh.", 0, "", ErrUnsafeEntry},
		{".wh..", 0, "", ErrUnsafeEntry},
		{".wh...", 0, "", ErrUnsafeEntry},
	}
	for _, c := range cases {
		kind, target, err := classify(c.base)
		if c.err != nil {
			if !errors.Is(err, c.err) {
				t.Errorf("classify(%q) error = %v; want %v", c.base, err, c.err)
			}
			continue
		}
		if err != nil || kind != c.kind || target != c.target {
			t.Errorf("classify(%q) = %v, %q, %v; want %v, %q", c.base, kind, target, err, c.kind, c.target)
		}
	}
}

func TestOverlayXattr(t *testing.T) {
	t.Parallel()
	for name, want := range map[string]string{
		"trusted.overlay.opaque": "opaque",
		"user.overlay.redirect":  "redirect",
	} {
		if got, ok := overlayXattr(name); !ok || got != want {
			t.Errorf("overlayXattr(%q) = %q, %v", name, got, ok)
		}
	}
	for _, name := range []string{"user.foo", "trusted.overlayx", "security.capability", "user.overlayfoo"} {
		if _, ok := overlayXattr(name); ok {
			t.Errorf("overlayXattr(%q) = true", name)
		}
	}
}

func TestTarName(t *testing.T) {
	t.Parallel()
	if got := tarName(".", true); got != "./" {
		t.Errorf("root: %q", got)
	}
	if got := tarName("a/b", true); got != "a/b/" {
		t.Errorf("dir: %q", got)
	}
	if got := tarName("a/b", false); got != "a/b" {
		t.Errorf("file: %q", got)
	}
}
