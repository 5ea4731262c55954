package oci

import (
	"bytes"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	specs "github.com/opencontainers/runtime-spec/specs-go"
	"golang.org/x/sys/unix"
)

// consoleSocket listens like a runc console-socket consumer and returns the
// pty master it receives.
func consoleSocket(t *testing.T) (string, <-chan *os.File) {
	t.Helper()
	path := filepath.Join(t.TempDir(), "console.sock")
	l, err := net.ListenUnix("unix", &net.UnixAddr{Name: path, Net: "unix"})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { l.Close() })
	ch := make(chan *os.File, 1)
	go func() {
		conn, err := l.AcceptUnix()
		if err != nil {
			return
		}
		defer conn.Close()
		buf, oob := make([]byte, 256), make([]byte, unix.CmsgSpace(4))
		_, oobn, _, _, err := conn.ReadMsgUnix(buf, oob)
		if err != nil {
			return
		}
		msgs, _ := unix.ParseSocketControlMessage(oob[:oobn])
		if len(msgs) == 1 {
			if fds, err := unix.ParseUnixRights(&msgs[0]); err == nil && len(fds) == 1 {
				ch <- os.NewFile(uintptr(fds[0]), "pty-master")
			}
		}
	}()
	return path, ch
}

func TestTerminalViaConsoleSocket(t *testing.T) {
	t.Parallel()
	r := newRuntime(t)
	b := r.bundle(func(s *specs.Spec) {
		s.Process.Terminal = true
		s.Process.ConsoleSize = &specs.Box{Height: 33, Width: 111}
	}, "sh", "-c", "tty; stty size; ls -l /dev/console; [ -t 0 ] && echo stdin-is-tty; sleep 1000")
	sock, masters := consoleSocket(t)
	cid := id(t)
	t.Cleanup(func() { r.cli("delete", "--force", cid) })
	r.must("create", "--bundle", b, "--console-socket", sock, cid)
	var master *os.File
	select {
	case master = <-masters:
	case <-time.After(5 * time.Second):
		t.Fatal("no pty master received on the console socket")
	}
	defer master.Close()
	r.must("start", cid)
	var out bytes.Buffer
	buf := make([]byte, 1024)
	deadline := time.Now().Add(5 * time.Second)
	for !strings.Contains(out.String(), "stdin-is-tty") && time.Now().Before(deadline) {
		_ = master.SetReadDeadline(time.Now().Add(time.Second))
		n, _ := master.Read(buf)
		out.Write(buf[:n])
	}
	for _, w := range []string{"/dev/pts/0", "136,   0 ", "33 111", "stdin-is-tty"} {
		if !strings.Contains(out.String(), w) {
			t.Fatalf("terminal output lacks %q:\n%s", w, out.String())
		}
	}
}

func TestTimeAndCgroupNamespaces(t *testing.T) {
	t.Parallel()
	out := inside(t, func(s *specs.Spec) {
		s.Linux.Namespaces = append(s.Linux.Namespaces, specs.LinuxNamespace{Type: specs.TimeNamespace})
		s.Linux.TimeOffsets = map[string]specs.LinuxTimeOffset{"monotonic": {Secs: 10 * 86400}, "boottime": {Secs: 20 * 86400}}
	}, `cut -d. -f1 /proc/uptime; grep -E '^[0-9]+:(memory|pids):' /proc/self/cgroup`)
	lines := strings.Split(strings.TrimSpace(out), "\n")
	var up int
	if _, err := fmtSscan(lines[0], &up); err != nil || up < 20*86400 {
		t.Fatalf("boottime offset not applied: uptime %q", lines[0])
	}
	// In its own cgroup namespace the container sees its cgroup as the root.
	for _, l := range lines[1:] {
		if !strings.HasSuffix(l, ":/") {
			t.Errorf("cgroup namespace not rooted at the container's cgroup: %q", l)
		}
	}
}

func TestNoPivotAndPropagation(t *testing.T) {
	t.Parallel()
	r := newRuntime(t)
	b := r.bundle(func(s *specs.Spec) {
		s.Linux.RootfsPropagation = "shared"
	}, "sh", "-c", "head -n 1 /proc/self/mountinfo; ls /")
	cid := id(t)
	t.Cleanup(func() { r.cli("delete", "--force", cid) })
	res := r.cli("run", "--no-pivot", "--bundle", b, cid)
	if res.code != 0 || !strings.Contains(res.stdout, "shared:") || !strings.Contains(res.stdout, "proc") {
		t.Fatalf("no-pivot run with shared root propagation: %+v", res)
	}
}
