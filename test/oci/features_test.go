package oci

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	specs "github.com/opencontainers/runtime-spec/specs-go"
)

// inside runs script in a container made from edit and fails the test unless
// it exits 0; it returns the output.
func inside(t *testing.T, edit func(*specs.Spec), script string) string {
	t.Helper()
	r := newRuntime(t)
	res := r.runIn(edit, script)
	if res.code != 0 {
		t.Fatalf("container exited %d\nstdout:\n%s\nstderr:\n%s", res.code, res.stdout, res.stderr)
	}
	return res.stdout
}

func wantLines(t *testing.T, out string, want ...string) {
	t.Helper()
	for _, w := range want {
		if !strings.Contains(out, w) {
			t.Errorf("output lacks %q:\n%s", w, out)
		}
	}
}

func TestProcessSettings(t *testing.T) {
	t.Parallel()
	umask := uint32(0o027)
	oom := 123
	out := inside(t, func(s *specs.Spec) {
		s.Process.User = specs.User{UID: 1000, GID: 1001, AdditionalGids: []uint32{5, 2000}, Umask: &umask}
		s.Process.Env = append(s.Process.Env, "GREETING=hi there")
		s.Process.Cwd = "/tmp"
		s.Process.Rlimits = []specs.POSIXRlimit{{Type: "RLIMIT_NOFILE", Soft: 321, Hard: 654}, {Type: "RLIMIT_NPROC", Soft: 77, Hard: 88}}
		s.Process.OOMScoreAdj = &oom
		s.Process.NoNewPrivileges = true
		c := []string{"CAP_CHOWN", "CAP_KILL"}
		s.Process.Capabilities = &specs.LinuxCapabilities{Bounding: c, Effective: c, Permitted: c, Inheritable: c, Ambient: c}
	}, `id; umask; echo "env=$GREETING"; pwd; cat /proc/self/limits | grep -E 'open files|processes'; cat /proc/self/oom_score_adj; grep -E '^(Cap|NoNewPrivs)' /proc/self/status`)
	wantLines(t, out, "uid=1000 gid=1001 groups=5(tty),2000", "0027", "env=hi there", "/tmp\n", "123\n", "NoNewPrivs:\t1",
		// CAP_CHOWN (0) + CAP_KILL (5) = 0x21
		"CapEff:\t0000000000000021", "CapPrm:\t0000000000000021", "CapBnd:\t0000000000000021", "CapAmb:\t0000000000000021")
	if !strings.Contains(out, "321                  654") && !strings.Contains(out, "321") {
		t.Errorf("rlimit not applied:\n%s", out)
	}
	for _, l := range strings.Split(out, "\n") {
		if strings.HasPrefix(l, "Max open files") && !(strings.Contains(l, " 321 ") && strings.Contains(l, " 654 ")) {
			t.Errorf("NOFILE limit: %q", l)
		}
		if strings.HasPrefix(l, "Max processes") && !(strings.Contains(l, " 77 ") && strings.Contains(l, " 88 ")) {
			t.Errorf("NPROC limit: %q", l)
		}
	}
}

func TestHostnameAndNamespaces(t *testing.T) {
	t.Parallel()
	out := inside(t, func(s *specs.Spec) {
		s.Hostname = "box1"
		s.Domainname = "example.org"
	}, `hostname; cat /proc/sys/kernel/domainname; echo self=$$; ls /sys/class/net | tr '\n' ' '; echo; echo lo-up=$(( $(cat /sys/class/net/lo/flags) & 1 )); cat /proc/self/cgroup | head -n 3`)
	// lo is up (IFF_UP), as runc leaves it.
	wantLines(t, out, "box1\n", "example.org\n", "self=1\n", "lo \n", "lo-up=1")
	host, _ := os.Hostname()
	if host == "box1" {
		t.Fatal("hostname leaked to the host")
	}
}

func TestUserNamespace(t *testing.T) {
	t.Parallel()
	r := newRuntime(t)
	b := r.bundle(func(s *specs.Spec) {
		s.Linux.Namespaces = append(s.Linux.Namespaces, specs.LinuxNamespace{Type: specs.UserNamespace})
		s.Linux.UIDMappings = []specs.LinuxIDMapping{{ContainerID: 0, HostID: 100000, Size: 65536}}
		s.Linux.GIDMappings = []specs.LinuxIDMapping{{ContainerID: 0, HostID: 100000, Size: 65536}}
		s.Root.Readonly = false
		s.Linux.Resources = nil // device cgroup rules need the host's user namespace on v1
	}, "sh", "-c", "cat /proc/self/uid_map; id -u; sleep 1000")
	// The mapped root must reach the bundle, and own the rootfs.
	for d := b; d != "/tmp"; d = filepath.Dir(d) {
		if err := os.Chmod(d, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	if err := exec.Command("chown", "-R", "100000:100000", filepath.Join(b, "rootfs")).Run(); err != nil {
		t.Fatal(err)
	}
	cid := id(t)
	t.Cleanup(func() { r.cli("delete", "--force", cid) })
	out := r.must("run", "--detach", "--bundle", b, cid)
	_ = out
	st := r.state(cid)
	data, err := os.ReadFile(fmt.Sprintf("/proc/%d/uid_map", st.Pid))
	if err != nil {
		t.Fatal(err)
	}
	if f := strings.Fields(string(data)); len(f) != 3 || f[0] != "0" || f[1] != "100000" || f[2] != "65536" {
		t.Fatalf("uid_map %q", data)
	}
	status, _ := os.ReadFile(fmt.Sprintf("/proc/%d/status", st.Pid))
	if !strings.Contains(string(status), "Uid:\t100000") {
		t.Fatalf("container root is not host uid 100000:\n%s", status)
	}
	ex := r.must("exec", cid, "id", "-u")
	if strings.TrimSpace(ex) != "0" {
		t.Fatalf("exec in user ns: id -u = %q", ex)
	}
}

func TestJoinNetworkNamespaceByPath(t *testing.T) {
	t.Parallel()
	r := newRuntime(t)
	ns := fmt.Sprintf("oci-test-%d", os.Getpid())
	if out, err := exec.Command("ip", "netns", "add", ns).CombinedOutput(); err != nil {
		t.Fatalf("ip netns add: %v %s", err, out)
	}
	t.Cleanup(func() { exec.Command("ip", "netns", "del", ns).Run() })
	if out, err := exec.Command("ip", "-n", ns, "link", "add", "vtest7", "type", "veth", "peer", "name", "vtest8").CombinedOutput(); err != nil {
		t.Fatalf("add dummy: %v %s", err, out)
	}
	res := r.runIn(func(s *specs.Spec) {
		for i, n := range s.Linux.Namespaces {
			if n.Type == specs.NetworkNamespace {
				s.Linux.Namespaces[i].Path = "/var/run/netns/" + ns
			}
		}
	}, "ls /sys/class/net")
	if res.code != 0 || !strings.Contains(res.stdout, "vtest7") {
		t.Fatalf("container did not join %s: %+v", ns, res)
	}
}

func TestMounts(t *testing.T) {
	t.Parallel()
	src := t.TempDir()
	if err := os.WriteFile(filepath.Join(src, "hello"), []byte("from host\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	out := inside(t, func(s *specs.Spec) {
		s.Mounts = append(s.Mounts,
			specs.Mount{Destination: "/data", Type: "bind", Source: src, Options: []string{"rbind", "ro"}},
			specs.Mount{Destination: "/scratch", Type: "tmpfs", Source: "tmpfs", Options: []string{"size=1m", "nosuid", "noexec"}},
		)
		s.Linux.MaskedPaths = append(s.Linux.MaskedPaths, "/etc/passwd")
	}, `cat /data/hello; touch /data/x 2>&1; touch /x 2>&1; grep -E ' /(data|scratch|proc|sys) ' /proc/self/mountinfo; df -k /scratch | tail -n1;
echo keys=$(wc -c < /proc/keys); echo passwd=$(wc -c < /etc/passwd); echo 1 > /proc/sys/vm/overcommit_memory 2>&1; echo $?`)
	wantLines(t, out, "from host", "/data/x: Read-only file system", "/x: Read-only file system", "keys=0", "passwd=0")
	for _, l := range strings.Split(out, "\n") {
		switch {
		case strings.Contains(l, " /scratch "):
			if !strings.Contains(l, "nosuid") || !strings.Contains(l, "noexec") || !strings.Contains(l, "tmpfs") {
				t.Errorf("tmpfs options: %s", l)
			}
		case strings.Contains(l, " /data "):
			if !strings.Contains(l, " ro,") && !strings.HasSuffix(strings.Fields(l)[5], "ro") {
				t.Errorf("bind not read-only: %s", l)
			}
		}
	}
	if !strings.Contains(out, "1024") {
		t.Errorf("tmpfs size=1m not honoured:\n%s", out)
	}
	if strings.HasSuffix(strings.TrimSpace(out), "\n0") {
		t.Errorf("/proc/sys is writable:\n%s", out)
	}
}

func TestDevices(t *testing.T) {
	t.Parallel()
	mode := os.FileMode(0o666)
	uid, gid := uint32(5), uint32(6)
	out := inside(t, func(s *specs.Spec) {
		s.Linux.Devices = []specs.LinuxDevice{{Path: "/dev/mynull", Type: "c", Major: 1, Minor: 3, FileMode: &mode, UID: &uid, GID: &gid}}
		s.Linux.Resources.Devices = append(s.Linux.Resources.Devices, specs.LinuxDeviceCgroup{Allow: true, Type: "c", Major: i64(1), Minor: i64(3), Access: "rwm"})
	}, `ls -ln /dev/null /dev/zero /dev/mynull /dev/tty /dev/urandom; echo x > /dev/mynull && echo wrote; readlink /dev/fd; readlink /dev/ptmx`)
	wantLines(t, out, "crw-rw-rw-    1 5        6           1,   3", "/dev/mynull", "wrote", "/proc/self/fd", "pts/ptmx")
}

func i64(v int64) *int64 { return &v }

func TestSysctl(t *testing.T) {
	t.Parallel()
	out := inside(t, func(s *specs.Spec) {
		s.Linux.Sysctl = map[string]string{"net.ipv4.ip_forward": "1", "kernel.shmmni": "1234"}
	}, "cat /proc/sys/net/ipv4/ip_forward /proc/sys/kernel/shmmni")
	wantLines(t, out, "1\n1234")
}

func TestCgroupLimits(t *testing.T) {
	t.Parallel()
	limit := int64(64 << 20)
	pids := int64(33)
	shares := uint64(512)
	out := inside(t, func(s *specs.Spec) {
		s.Linux.Resources.Memory = &specs.LinuxMemory{Limit: &limit}
		s.Linux.Resources.Pids = &specs.LinuxPids{Limit: &pids}
		s.Linux.Resources.CPU = &specs.LinuxCPU{Shares: &shares, Cpus: "0"}
		for i := range s.Mounts {
			if s.Mounts[i].Type == "cgroup" {
				s.Mounts[i].Options = []string{"nosuid", "noexec", "nodev", "relatime", "ro"}
			}
		}
	}, `for f in memory/memory.limit_in_bytes memory.max pids/pids.max pids.max cpu/cpu.shares cpuset/cpuset.cpus; do [ -f /sys/fs/cgroup/$f ] && echo "$f=$(cat /sys/fs/cgroup/$f)"; done; true`)
	if !(strings.Contains(out, "memory.limit_in_bytes=67108864") || strings.Contains(out, "memory.max=67108864")) {
		t.Errorf("memory limit not visible inside:\n%s", out)
	}
	if !(strings.Contains(out, "pids/pids.max=33") || strings.Contains(out, "pids.max=33")) {
		t.Errorf("pids limit not visible inside:\n%s", out)
	}
	if _, err := os.Stat("/sys/fs/cgroup/cpu"); err == nil {
		wantLines(t, out, "cpu/cpu.shares=512", "cpuset/cpuset.cpus=0")
	}
}

func TestSeccompDenies(t *testing.T) {
	t.Parallel()
	out := inside(t, func(s *specs.Spec) {
		s.Linux.Seccomp = &specs.LinuxSeccomp{
			DefaultAction: specs.ActAllow,
			Architectures: []specs.Arch{specs.ArchX86_64},
			Syscalls:      []specs.LinuxSyscall{{Names: []string{"mkdir", "mkdirat"}, Action: specs.ActErrno, ErrnoRet: u(1)}},
		}
	}, "mkdir /tmp/blocked 2>&1; echo rc=$?")
	wantLines(t, out, "Operation not permitted", "rc=1")
}

func u(v uint) *uint { return &v }

func TestHooks(t *testing.T) {
	t.Parallel()
	r := newRuntime(t)
	dir := t.TempDir()
	hook := func(name string) specs.Hook {
		return specs.Hook{Path: "/bin/sh", Args: []string{"sh", "-c", "cat > " + filepath.Join(dir, name)}}
	}
	b := r.bundle(func(s *specs.Spec) {
		s.Hooks = &specs.Hooks{
			CreateRuntime:   []specs.Hook{hook("createRuntime")},
			CreateContainer: []specs.Hook{hook("createContainer")},
			StartContainer:  []specs.Hook{{Path: "/bin/sh", Args: []string{"sh", "-c", "cat > /tmp/startContainer"}}},
			Poststart:       []specs.Hook{hook("poststart")},
			Poststop:        []specs.Hook{hook("poststop")},
		}
		s.Root.Readonly = false
	}, "sh", "-c", "cat /tmp/startContainer; sleep 1000")
	cid := id(t)
	r.must("create", "--bundle", b, cid)
	for _, n := range []string{"createRuntime", "createContainer"} {
		data, err := os.ReadFile(filepath.Join(dir, n))
		if err != nil || !strings.Contains(string(data), `"id":"`+cid+`"`) || !strings.Contains(string(data), `"status":"creating"`) {
			t.Fatalf("%s hook state: %s %v", n, data, err)
		}
	}
	if _, err := os.Stat(filepath.Join(dir, "poststart")); err == nil {
		t.Fatal("poststart ran before start")
	}
	r.must("start", cid)
	if data, err := os.ReadFile(filepath.Join(dir, "poststart")); err != nil || !strings.Contains(string(data), `"status":"running"`) {
		t.Fatalf("poststart: %s %v", data, err)
	}
	// startContainer runs in the container after `start` returned, before the
	// user process: wait for it before the delete kills the container.
	sc := filepath.Join(b, "rootfs", "tmp", "startContainer")
	var data []byte
	var err error
	for deadline := time.Now().Add(10 * time.Second); time.Now().Before(deadline); time.Sleep(50 * time.Millisecond) {
		if data, err = os.ReadFile(sc); err == nil && strings.Contains(string(data), cid) {
			break
		}
	}
	if err != nil || !strings.Contains(string(data), cid) {
		t.Fatalf("startContainer hook did not run inside the container: %s %v", data, err)
	}
	r.must("delete", "--force", cid)
	if data, err := os.ReadFile(filepath.Join(dir, "poststop")); err != nil || !strings.Contains(string(data), `"status":"stopped"`) {
		t.Fatalf("poststop: %s %v", data, err)
	}
}

// TestExecGetsContainerSecurity: an exec'd process joins the container's
// cgroup and gets its seccomp profile and no_new_privs, and its own
// capabilities.
func TestExecGetsContainerSecurity(t *testing.T) {
	t.Parallel()
	r := newRuntime(t)
	b := r.bundle(func(s *specs.Spec) {
		s.Linux.Seccomp = &specs.LinuxSeccomp{
			DefaultAction: specs.ActAllow,
			Architectures: []specs.Arch{specs.ArchX86_64},
			Syscalls:      []specs.LinuxSyscall{{Names: []string{"mkdir", "mkdirat"}, Action: specs.ActErrno, ErrnoRet: u(1)}},
		}
	}, "sleep", "1000")
	cid := id(t)
	t.Cleanup(func() { r.cli("delete", "--force", cid) })
	r.must("run", "--detach", "--bundle", b, cid)
	out := r.must("exec", cid, "sh", "-c", "mkdir /tmp/x 2>&1; grep -E '^(NoNewPrivs|Seccomp):' /proc/self/status; "+
		"[ \"$(cat /proc/self/cgroup)\" = \"$(cat /proc/1/cgroup)\" ] && echo same-cgroup")
	wantLines(t, out, "Operation not permitted", "NoNewPrivs:\t1", "Seccomp:\t2", "same-cgroup")
	// And from the host: the container's cgroup holds both processes.
	if pids := r.must("ps", "--format", "json", cid); !strings.Contains(pids, fmt.Sprint(r.state(cid).Pid)) {
		t.Fatalf("ps: %s", pids)
	}
}
