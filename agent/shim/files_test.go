package shim

import (
	"errors"
	"os"
	"strings"
	"testing"
	"time"
)

func TestJSONFiles(t *testing.T) {
	dir := t.TempDir()
	want := Exit{Code: 137, At: time.Now().UTC().Truncate(time.Millisecond)}
	if err := WriteJSON(dir, ExitFile, want); err != nil {
		t.Fatal(err)
	}
	var got Exit
	if err := ReadJSON(dir, ExitFile, &got); err != nil || got != want {
		t.Errorf("read back %+v, %v; want %+v", got, err, want)
	}
	if err := ReadJSON(dir, StateFile, &got); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("missing file: %v, want ErrNotExist", err)
	}
	des, _ := os.ReadDir(dir)
	if len(des) != 1 {
		t.Errorf("temp files left: %v", des)
	}
}

func TestProcStartTime(t *testing.T) {
	a, err := ProcStartTime(os.Getpid())
	if err != nil || a == 0 {
		t.Fatalf("ProcStartTime(self) = %d, %v", a, err)
	}
	if b, _ := ProcStartTime(os.Getpid()); a != b {
		t.Errorf("start time changed: %d then %d", a, b)
	}
	if _, err := ProcStartTime(1 << 30); err == nil {
		t.Error("no error for a pid that cannot exist")
	}
}

func TestArgs(t *testing.T) {
	o := Options{ID: "c1", Bundle: "/b", Dir: "/d", RuntimeRoot: "/r", LogMaxBytes: 100, LogMaxFiles: 2}
	got := o.Args()
	want := []string{"shim", "--id", "c1", "--bundle", "/b", "--dir", "/d", "--runtime-root", "/r", "--log-max-bytes", "100", "--log-max-files", "2"}
	if len(got) != len(want) {
		t.Fatalf("Args() = %v", got)
	}
	for i := range want {
		if got[i] != want[i] {
			t.Fatalf("Args() = %v, want %v", got, want)
		}
	}
}

func TestArgsRestore(t *testing.T) {
	o := Options{ID: "c1", Bundle: "/b", Dir: "/d", RuntimeRoot: "/r", LogMaxBytes: 100, LogMaxFiles: 2, Restore: "/ck", NetworkLock: "nftables"}
	got := strings.Join(o.Args(), " ")
	if !strings.HasSuffix(got, " --network-lock nftables --restore /ck") {
		t.Fatalf("Args() = %s", got)
	}
}
