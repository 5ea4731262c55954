package agent

import (
	"errors"
	"strings"
	"testing"
)

func TestValidCheckpointName(t *testing.T) {
	for _, ok := range []string{"c1", "c1-20250101T120000Z", "a.b+c_d", strings.Repeat("x", 128)} {
		if err := validCheckpointName(ok); err != nil {
			t.Errorf("%q refused: %v", ok, err)
		}
	}
	// Path tricks, and the names of the directories kept beside a checkpoint.
	for _, bad := range []string{"", "../x", "a/b", ".hidden", "-x", "x.partial", "x.restore-c1", ".import-1", strings.Repeat("x", 129)} {
		if err := validCheckpointName(bad); !errors.Is(err, ErrInvalid) {
			t.Errorf("%q accepted (%v)", bad, err)
		}
	}
}

func TestHumanBytes(t *testing.T) {
	for n, want := range map[int64]string{0: "0 B", 1023: "1023 B", 1024: "1.0 KiB", 1536: "1.5 KiB", 5 << 20: "5.0 MiB", 3 << 30: "3.0 GiB"} {
		if got := humanBytes(n); got != want {
			t.Errorf("humanBytes(%d) = %q, want %q", n, got, want)
		}
	}
}
