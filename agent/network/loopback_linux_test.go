package network

import (
	"os"
	"os/exec"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/google/nftables"
	"github.com/vishvananda/netlink"

	"github.com/migratehq/migrate/test/testutil"
)

// sleeperIn starts a process in the fresh namespace ns (from NewLoopback)
// and returns its pid.
func sleeperIn(t *testing.T, ns *os.File) int {
	t.Helper()
	cmd := exec.Command("nsenter", "--net=/proc/self/fd/3", "sleep", "60")
	cmd.ExtraFiles = []*os.File{ns}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = cmd.Process.Kill(); _ = cmd.Wait() })
	// nsenter execs sleep: wait until the pid is in the namespace.
	want, err := os.Readlink("/proc/self/fd/" + strconv.Itoa(int(ns.Fd())))
	if err != nil {
		t.Fatal(err)
	}
	for i := 0; ; i++ {
		got, _ := os.Readlink("/proc/" + strconv.Itoa(cmd.Process.Pid) + "/ns/net")
		if got == want {
			return cmd.Process.Pid
		}
		if i > 200 {
			t.Fatalf("process %d did not enter %s", cmd.Process.Pid, want)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func TestLoopbackOnly(t *testing.T) {
	testutil.RequireRoot(t)
	for _, up := range []bool{true, false} {
		ns, err := NewLoopback(up)
		if err != nil {
			t.Fatal(err)
		}
		defer ns.Close()
		pid := sleeperIn(t, ns)
		loUp, why, err := LoopbackOnly(pid, nil)
		if err != nil || why != "" || loUp != up {
			t.Fatalf("fresh namespace, lo up %v: LoopbackOnly = %v, %q, %v; want %v, \"\", nil", up, loUp, why, err, up)
		}
		// Compared with a fresh namespace read ahead: of either loopback state
		// (one of the other state is not used).
		for _, aheadUp := range []bool{true, false} {
			fresh, err := FreshState(aheadUp)
			if err != nil {
				t.Fatal(err)
			}
			if loUp, why, err := LoopbackOnly(pid, fresh); err != nil || why != "" || loUp != up {
				t.Fatalf("lo up %v, read ahead with lo up %v: LoopbackOnly = %v, %q, %v; want %v, \"\", nil", up, aheadUp, loUp, why, err, up)
			}
		}
	}

	// Each change a container can make in its namespace is seen.
	fresh, err := FreshState(true)
	if err != nil {
		t.Fatal(err)
	}
	for _, c := range []struct {
		name, want string
		change     func(t *testing.T, h *netlink.Handle, nsPath string)
	}{
		{"bridge", "interface app0", func(t *testing.T, h *netlink.Handle, _ string) {
			if err := h.LinkAdd(&netlink.Bridge{LinkAttrs: netlink.LinkAttrs{Name: "app0"}}); err != nil {
				t.Fatal(err)
			}
		}},
		{"address on lo", "addresses", func(t *testing.T, h *netlink.Handle, _ string) {
			lo, _ := h.LinkByName("lo")
			a, _ := netlink.ParseAddr("10.9.9.9/32")
			if err := h.AddrAdd(lo, a); err != nil {
				t.Fatal(err)
			}
		}},
		{"rule", "rules", func(t *testing.T, h *netlink.Handle, _ string) {
			r := netlink.NewRule()
			r.Priority, r.Table = 100, 100
			if err := h.RuleAdd(r); err != nil {
				t.Fatal(err)
			}
		}},
		{"sysctl", "sysctl net/ipv4/conf/lo/", func(t *testing.T, _ *netlink.Handle, nsPath string) {
			if err := inNetNS(nsPath, func() error {
				return os.WriteFile("/proc/sys/net/ipv4/conf/lo/accept_local", []byte("1"), 0o644)
			}); err != nil {
				t.Fatal(err)
			}
		}},
		{"nftables table", "nftables tables: inet app", func(t *testing.T, _ *netlink.Handle, nsPath string) {
			c, done, err := nftConn(nsPath)
			if err != nil {
				t.Fatal(err)
			}
			defer done()
			c.AddTable(&nftables.Table{Name: "app", Family: nftables.TableFamilyINet})
			if err := c.Flush(); err != nil {
				t.Fatal(err)
			}
		}},
	} {
		t.Run(c.name, func(t *testing.T) {
			ns, err := NewLoopback(true)
			if err != nil {
				t.Fatal(err)
			}
			defer ns.Close()
			pid := sleeperIn(t, ns)
			nsPath := "/proc/" + strconv.Itoa(pid) + "/ns/net"
			h := handleAt(t, nsPath)
			c.change(t, h, nsPath)
			_, why, err := LoopbackOnly(pid, fresh)
			if err != nil {
				t.Fatal(err)
			}
			if !strings.Contains(why, c.want) {
				t.Fatalf("LoopbackOnly after a %s: why = %q, want it to name %q", c.name, why, c.want)
			}
		})
	}
}
