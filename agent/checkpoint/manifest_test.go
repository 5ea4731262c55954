package checkpoint

import (
	"errors"
	"os"
	"path/filepath"
	"testing"
)

// TestVerifyKnown trusts known digests instead of hashing, but still checks what
// is cheap: presence, size, unlisted files. A digest that differs from the
// manifest's makes it hash the file.
func TestVerifyKnown(t *testing.T) {
	dir := fakeCheckpoint(t)
	m, err := Verify(dir)
	if err != nil {
		t.Fatal(err)
	}
	known := map[string]string{}
	for _, f := range m.Files {
		known[f.Path] = f.SHA256
	}
	// Same size, other bytes: only hashing notices.
	pages := filepath.Join(dir, "images", "pages-1.img")
	b, err := os.ReadFile(pages)
	if err != nil {
		t.Fatal(err)
	}
	b[0] ^= 0xff
	if err := os.WriteFile(pages, b, 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := Verify(dir); !errors.Is(err, ErrCorrupt) {
		t.Fatalf("Verify of a changed file: %v, want ErrCorrupt", err)
	}
	if _, err := VerifyKnown(dir, known); err != nil {
		t.Fatalf("VerifyKnown hashed a file whose digest is known: %v", err)
	}
	other := map[string]string{"images/pages-1.img": "00"}
	if _, err := VerifyKnown(dir, other); !errors.Is(err, ErrCorrupt) {
		t.Fatalf("VerifyKnown with a differing known digest: %v, want ErrCorrupt (hashed)", err)
	}
	// Cheap checks stay.
	if err := os.WriteFile(pages, b[:len(b)-1], 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := VerifyKnown(dir, known); !errors.Is(err, ErrCorrupt) {
		t.Fatalf("VerifyKnown of a truncated file: %v, want ErrCorrupt", err)
	}
	if err := os.WriteFile(pages, b, 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "images", "extra.img"), nil, 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := VerifyKnown(dir, known); !errors.Is(err, ErrCorrupt) {
		t.Fatalf("VerifyKnown with an unlisted file: %v, want ErrCorrupt", err)
	}
}
