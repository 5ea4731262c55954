package rootfs

import (
	"errors"
	"os"
	"reflect"
	"strings"
	"testing"

	specs "github.com/opencontainers/runtime-spec/specs-go"
	"golang.org/x/sys/unix"
)

func TestParseMountOptions(t *testing.T) {
	tests := []struct {
		name     string
		typ      string
		opts     []string
		flags    uintptr
		cleared  uintptr
		prop     []uintptr
		recSet   uint64
		recClr   uint64
		data     string
		errIs    error
		errOpt   string
		errMatch string
	}{
		{name: "tmpfs", typ: "tmpfs", opts: []string{"nosuid", "strictatime", "mode=755", "size=65536k"},
			flags: unix.MS_NOSUID | unix.MS_STRICTATIME, data: "mode=755,size=65536k"},
		{name: "bind ro", typ: "none", opts: []string{"rbind", "ro", "nosuid", "rprivate"},
			flags: unix.MS_BIND | unix.MS_REC | unix.MS_RDONLY | unix.MS_NOSUID,
			prop:  []uintptr{unix.MS_PRIVATE | unix.MS_REC}},
		{name: "type bind implies bind", typ: "bind", opts: nil, flags: unix.MS_BIND},
		{name: "rw clears", typ: "cgroup", opts: []string{"rw", "nosuid"}, flags: unix.MS_NOSUID, cleared: unix.MS_RDONLY},
		{name: "last of pair wins when not conflicting", typ: "tmpfs", opts: []string{"ro", "ro"}, flags: unix.MS_RDONLY},
		{name: "devpts data", typ: "devpts", opts: []string{"nosuid", "noexec", "newinstance", "ptmxmode=0666", "mode=0620", "gid=5"},
			flags: unix.MS_NOSUID | unix.MS_NOEXEC, data: "newinstance,ptmxmode=0666,mode=0620,gid=5"},
		{name: "rro", typ: "bind", opts: []string{"rbind", "rro", "rnoatime"},
			flags: unix.MS_BIND | unix.MS_REC, recSet: unix.MOUNT_ATTR_RDONLY | unix.MOUNT_ATTR_NOATIME, recClr: unix.MOUNT_ATTR__ATIME},
		{name: "rrw", typ: "bind", opts: []string{"rbind", "rrw"}, flags: unix.MS_BIND | unix.MS_REC, recClr: unix.MOUNT_ATTR_RDONLY},
		{name: "ro rw conflict", typ: "tmpfs", opts: []string{"ro", "rw"}, errIs: ErrInvalidMount, errOpt: "rw", errMatch: `conflicts with "ro"`},
		{name: "suid conflict", typ: "tmpfs", opts: []string{"suid", "nosuid"}, errIs: ErrInvalidMount, errOpt: "nosuid"},
		{name: "atime modes conflict", typ: "tmpfs", opts: []string{"noatime", "relatime"}, errIs: ErrInvalidMount, errOpt: "relatime"},
		{name: "propagation conflict", typ: "tmpfs", opts: []string{"shared", "rslave"}, errIs: ErrInvalidPropagation, errOpt: "rslave"},
		{name: "rro rrw conflict", typ: "bind", opts: []string{"rbind", "rro", "rrw"}, errIs: ErrInvalidMount, errOpt: "rrw"},
		{name: "idmap", typ: "bind", opts: []string{"rbind", "idmap"}, errIs: ErrUnsupportedOption, errOpt: "idmap"},
		{name: "tmpcopyup", typ: "tmpfs", opts: []string{"tmpcopyup"}, errIs: ErrUnsupportedOption, errOpt: "tmpcopyup"},
		{name: "typo on bind", typ: "bind", opts: []string{"rbind", "nosiud"}, errIs: ErrInvalidMount, errOpt: "nosiud"},
		{name: "empty option", typ: "tmpfs", opts: []string{""}, errIs: ErrInvalidMount},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			o, err := parseMountOptions(tc.typ, tc.opts)
			if tc.errIs != nil {
				if !errors.Is(err, tc.errIs) {
					t.Fatalf("err = %v, want %v", err, tc.errIs)
				}
				var oe *optionError
				if !errors.As(err, &oe) || oe.option != tc.errOpt {
					t.Fatalf("err = %v, want option %q", err, tc.errOpt)
				}
				if tc.errMatch != "" && !strings.Contains(err.Error(), tc.errMatch) {
					t.Fatalf("err = %v, want it to contain %q", err, tc.errMatch)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if o.flags != tc.flags || o.cleared != tc.cleared || o.recSet != tc.recSet || o.recClr != tc.recClr {
				t.Errorf("flags=%#x cleared=%#x recSet=%#x recClr=%#x, want %#x %#x %#x %#x",
					o.flags, o.cleared, o.recSet, o.recClr, tc.flags, tc.cleared, tc.recSet, tc.recClr)
			}
			if !reflect.DeepEqual(o.propagation, tc.prop) {
				t.Errorf("propagation = %v, want %v", o.propagation, tc.prop)
			}
			if o.dataString() != tc.data {
				t.Errorf("data = %q, want %q", o.dataString(), tc.data)
			}
		})
	}
}

func mode(m os.FileMode) *os.FileMode { return &m }

func TestValidate(t *testing.T) {
	good := func() *specs.Spec {
		return &specs.Spec{
			Root: &specs.Root{Path: "rootfs"},
			Mounts: []specs.Mount{
				{Destination: "/proc", Type: "proc", Source: "proc"},
				{Destination: "/dev", Type: "tmpfs", Source: "tmpfs", Options: []string{"nosuid", "mode=755"}},
				{Destination: "/data", Type: "bind", Source: "data", Options: []string{"rbind", "ro"}},
				{Destination: "/proc/meminfo", Type: "bind", Source: "/var/lib/lxcfs/proc/meminfo", Options: []string{"bind"}},
			},
			Linux: &specs.Linux{
				RootfsPropagation: "rslave",
				Devices:           []specs.LinuxDevice{{Path: "/dev/fuse", Type: "c", Major: 10, Minor: 229, FileMode: mode(0o666)}},
				MaskedPaths:       []string{"/proc/kcore"},
				ReadonlyPaths:     []string{"/proc/sys"},
			},
		}
	}
	if err := Validate(good()); err != nil {
		t.Fatalf("valid spec: %v", err)
	}
	tests := []struct {
		name   string
		mutate func(s *specs.Spec)
		errIs  error
		want   string // substring of the one-line message
	}{
		{"relative destination", func(s *specs.Spec) { s.Mounts[0].Destination = "proc" }, ErrInvalidMount, "mount[0] proc: "},
		{"unclean destination", func(s *specs.Spec) { s.Mounts[2].Destination = "/data/../etc" }, ErrInvalidMount, `mount[2] /data/../etc`},
		{"root destination", func(s *specs.Spec) { s.Mounts[2].Destination = "/" }, ErrInvalidMount, "container root"},
		{"unknown propagation option", func(s *specs.Spec) { s.Mounts[2].Options = []string{"rbind", "rsharde"} }, ErrInvalidMount, `option "rsharde"`},
		{"unknown rootfsPropagation", func(s *specs.Spec) { s.Linux.RootfsPropagation = "slaved" }, ErrInvalidPropagation, `"slaved"`},
		{"conflicting options", func(s *specs.Spec) { s.Mounts[1].Options = []string{"ro", "rw"} }, ErrInvalidMount, `mount[1] /dev: option "rw"`},
		{"idmapped", func(s *specs.Spec) {
			s.Mounts[2].UIDMappings = []specs.LinuxIDMapping{{ContainerID: 0, HostID: 1000, Size: 1}}
		}, ErrUnsupportedOption, "mount[2] /data"},
		{"bind without source", func(s *specs.Spec) { s.Mounts[2].Source = "" }, ErrInvalidMount, "without source"},
		{"no type", func(s *specs.Spec) { s.Mounts[1].Type = "" }, ErrInvalidMount, "no type"},
		{"mount inside /proc", func(s *specs.Spec) {
			s.Mounts = append(s.Mounts, specs.Mount{Destination: "/proc/self/attr", Type: "tmpfs", Source: "tmpfs"})
		}, ErrInvalidMount, "inside /proc"},
		{"tmpfs over /proc", func(s *specs.Spec) { s.Mounts[0].Type = "tmpfs" }, ErrInvalidMount, "cover /proc"},
		{"rro without bind", func(s *specs.Spec) { s.Mounts[1].Options = []string{"rro"} }, ErrInvalidMount, "need a bind"},
		{"device outside /dev", func(s *specs.Spec) { s.Linux.Devices[0].Path = "/etc/fuse" }, ErrInvalidDevice, "/etc/fuse"},
		{"device /dev itself", func(s *specs.Spec) { s.Linux.Devices[0].Path = "/dev" }, ErrInvalidDevice, "under /dev/"},
		{"device escaping /dev", func(s *specs.Spec) { s.Linux.Devices[0].Path = "/dev/../etc/x" }, ErrInvalidDevice, "clean"},
		{"device type", func(s *specs.Spec) { s.Linux.Devices[0].Type = "x" }, ErrInvalidDevice, `type "x"`},
		{"device negative", func(s *specs.Spec) { s.Linux.Devices[0].Major = -1 }, ErrInvalidDevice, "out of range"},
		{"device duplicate", func(s *specs.Spec) { s.Linux.Devices = append(s.Linux.Devices, s.Linux.Devices[0]) }, ErrInvalidDevice, "twice"},
		{"device mode", func(s *specs.Spec) { s.Linux.Devices[0].FileMode = mode(os.ModeSetuid | 0o666) }, ErrInvalidDevice, "fileMode"},
		{"relative masked path", func(s *specs.Spec) { s.Linux.MaskedPaths = []string{"proc/kcore"} }, ErrInvalidPath, "maskedPaths"},
		{"unclean readonly path", func(s *specs.Spec) { s.Linux.ReadonlyPaths = []string{"/proc//sys"} }, ErrInvalidPath, "readonlyPaths"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			s := good()
			tc.mutate(s)
			err := Validate(s)
			if !errors.Is(err, tc.errIs) {
				t.Fatalf("err = %v, want %v", err, tc.errIs)
			}
			if msg := err.Error(); !strings.Contains(msg, tc.want) || strings.Contains(msg, "\n") {
				t.Fatalf("err = %q, want one line containing %q", msg, tc.want)
			}
		})
	}
	// The S_IFCHR bits some generators put in fileMode are tolerated.
	s := good()
	s.Linux.Devices[0].FileMode = mode(unix.S_IFCHR | 0o666)
	if err := Validate(s); err != nil {
		t.Fatalf("S_IFCHR|0666 fileMode: %v", err)
	}
}

func TestValidateSysctls(t *testing.T) {
	ns := func(types ...specs.LinuxNamespaceType) []specs.LinuxNamespace {
		var out []specs.LinuxNamespace
		for _, t := range types {
			out = append(out, specs.LinuxNamespace{Type: t})
		}
		return out
	}
	tests := []struct {
		name   string
		sysctl map[string]string
		ns     []specs.LinuxNamespace
		ok     bool
	}{
		{"ipc key with ipc ns", map[string]string{"kernel.shmmax": "1"}, ns(specs.IPCNamespace), true},
		{"mqueue with ipc ns", map[string]string{"fs.mqueue.msg_max": "1"}, ns(specs.IPCNamespace), true},
		{"ipc key without ipc ns", map[string]string{"kernel.msgmax": "1"}, ns(specs.NetworkNamespace), false},
		{"net with net ns", map[string]string{"net.ipv4.ip_forward": "1"}, ns(specs.NetworkNamespace), true},
		{"net slash form", map[string]string{"net/ipv4/conf/eth0.100/forwarding": "1"}, ns(specs.NetworkNamespace), true},
		{"net without net ns", map[string]string{"net.ipv4.ip_forward": "1"}, ns(specs.IPCNamespace), false},
		{"net joining own ns", map[string]string{"net.ipv4.ip_forward": "1"},
			[]specs.LinuxNamespace{{Type: specs.NetworkNamespace, Path: "/proc/self/ns/net"}}, false},
		{"domainname with uts", map[string]string{"kernel.domainname": "x"}, ns(specs.UTSNamespace), true},
		{"domainname without uts", map[string]string{"kernel.domainname": "x"}, ns(specs.IPCNamespace), false},
		{"hostname refused", map[string]string{"kernel.hostname": "x"}, ns(specs.UTSNamespace), false},
		{"not namespaced", map[string]string{"vm.swappiness": "1"}, ns(specs.IPCNamespace, specs.UTSNamespace, specs.NetworkNamespace), false},
		{"kernel not namespaced", map[string]string{"kernel.pid_max": "1"}, ns(specs.IPCNamespace, specs.UTSNamespace), false},
		{"dotdot", map[string]string{"net/../kernel/pid_max": "1"}, ns(specs.NetworkNamespace), false},
		{"empty component", map[string]string{"net..ipv4": "1"}, ns(specs.NetworkNamespace), false},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			err := ValidateSysctls(&specs.Spec{Linux: &specs.Linux{Sysctl: tc.sysctl, Namespaces: tc.ns}})
			if tc.ok && err != nil {
				t.Fatalf("unexpected error: %v", err)
			}
			if !tc.ok && !errors.Is(err, ErrInvalidSysctl) {
				t.Fatalf("err = %v, want ErrInvalidSysctl", err)
			}
		})
	}
}

func TestSysctlKey(t *testing.T) {
	for key, want := range map[string][2]string{
		"net.ipv4.ip_forward":               {"net.ipv4.ip_forward", "net/ipv4/ip_forward"},
		"net/ipv4/conf/eth0.100/forwarding": {"net.ipv4.conf.eth0.100.forwarding", "net/ipv4/conf/eth0.100/forwarding"},
		"kernel.shm_rmid_forced":            {"kernel.shm_rmid_forced", "kernel/shm_rmid_forced"},
	} {
		d, r, err := sysctlKey(key)
		if err != nil || d != want[0] || r != want[1] {
			t.Errorf("sysctlKey(%q) = %q, %q, %v; want %q, %q", key, d, r, err, want[0], want[1])
		}
	}
}

func TestDevicesMerge(t *testing.T) {
	uid := uint32(7)
	s := &specs.Spec{Linux: &specs.Linux{Devices: []specs.LinuxDevice{
		{Path: "/dev/null", Type: "c", Major: 1, Minor: 3, UID: &uid},
		{Path: "/dev/fuse", Type: "c", Major: 10, Minor: 229},
	}}}
	got := devices(s)
	if len(got) != len(defaultDevices)+1 {
		t.Fatalf("got %d devices, want %d", len(got), len(defaultDevices)+1)
	}
	n := 0
	for _, d := range got {
		if d.Path == "/dev/null" {
			n++
			if d.UID == nil || *d.UID != 7 {
				t.Errorf("/dev/null from the spec did not replace the default")
			}
		}
	}
	if n != 1 {
		t.Errorf("/dev/null appears %d times", n)
	}
}

func TestNeedsDevSetup(t *testing.T) {
	tmpfsDev := &specs.Spec{Mounts: []specs.Mount{{Destination: "/dev", Type: "tmpfs", Source: "tmpfs"}}}
	bindDev := &specs.Spec{Mounts: []specs.Mount{{Destination: "/dev", Type: "bind", Source: "/dev", Options: []string{"rbind"}}}}
	none := &specs.Spec{}
	if !needsDevSetup(tmpfsDev) || needsDevSetup(bindDev) || needsDevSetup(none) {
		t.Fatal("needsDevSetup: want true only for a non-bind /dev")
	}
}
