package checkpoint

import (
	"context"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing"

	"github.com/migratehq/migrate/agent/network"
	"github.com/migratehq/migrate/runtime/container"
)

// mountTable is the container's mount table as a restore must rebuild it:
// root, mount point, mount and file-system options, type; ids and peer
// group numbers aside.
func mountTable(t *testing.T, c *container.Container) string {
	t.Helper()
	var out []string
	for _, l := range strings.Split(strings.TrimSpace(execIn(t, c, "cat", "/proc/self/mountinfo")), "\n") {
		f := strings.Fields(l)
		sep := 6
		for sep < len(f) && f[sep] != "-" {
			sep++
		}
		if sep+3 >= len(f) || f[4] == "/" {
			continue // the root, whose options name this host's paths
		}
		out = append(out, strings.Join([]string{f[3], f[4], f[5], f[sep+1], f[sep+3]}, " "))
	}
	slices.Sort(out) // CRIU mounts in an order of its own
	return strings.Join(out, "\n")
}

// devListing lists /dev and /dev/shm as the container sees them: names,
// modes, owners, device numbers, link targets and a file's content.
func devListing(t *testing.T, c *container.Container) string {
	t.Helper()
	return execIn(t, c, "sh", "-c", "stat -c '%n %a %u:%g %F %t:%T %N' /dev/* /dev/shm/*; cat /dev/shm/note")
}

// pausedRoundTrip pauses c, checkpoints it (it stops), checks the manifest
// with check, deletes it and restores it under the same id; it returns the
// restored container once it counts on. With ahead, the restore gets what a
// standby shim makes ahead: a fresh namespace with its loopback up and a CRIU
// swrk holding it and the stdio.
func pausedRoundTrip(t *testing.T, cp *Checkpointer, c *container.Container, io *stdio, dir string, ahead bool, check func(*Manifest)) *container.Container {
	t.Helper()
	if err := c.Pause(); err != nil {
		t.Fatal(err)
	}
	ckpt := filepath.Join(dir, "ck")
	m, err := cp.Checkpoint(context.Background(), c, ckpt, Options{})
	if err != nil {
		t.Fatal(err)
	}
	check(m)
	c.Wait()
	if err := c.Delete(false); err != nil {
		t.Fatal(err)
	}
	io2 := newStdio(t)
	ro := RestoreOptions{Stdio: io2.files}
	if ahead {
		if ro.FreshNetNS, err = network.NewLoopback(true); err != nil {
			t.Fatal(err)
		}
		if ro.Prepared, err = cp.CRIU.Prepare(context.Background(), ro.FreshNetNS, io2.files[2], io2.files[1], io2.files[0]); err != nil {
			t.Fatal(err)
		}
	}
	r, err := cp.Restore(context.Background(), ckpt, c.ID(), ro)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = r.Delete(true) })
	io2.out.waitNumber(t, io.out.last()+1)
	return r
}

// TestPausedDumpCarriesNetNSAndTmpfs checkpoints a paused container whose
// network namespace holds only its loopback: the namespace stays out of
// CRIU's images and the restore makes a fresh one, and its tmpfs mounts go
// as tars the restore mounts again. The restored container has the same
// mount table, /dev and /dev/shm content and a working loopback.
func TestPausedDumpCarriesNetNSAndTmpfs(t *testing.T) {
	for _, ahead := range []bool{false, true} {
		t.Run(map[bool]string{false: "made at restore", true: "made ahead"}[ahead], func(t *testing.T) {
			carryRoundTrip(t, ahead)
		})
	}
}

func carryRoundTrip(t *testing.T, ahead bool) {
	cp, dir := setup(t)
	c, io := startCounter(t, cp, "carry")
	io.out.waitNumber(t, 2)
	execIn(t, c, "sh", "-c", "echo kept > /dev/shm/note && mkdir /dev/shm/d && ln -s note /dev/shm/link")
	// Names the container cannot set itself (no CAP_SYS_ADMIN), set from outside.
	uts := exec.Command("nsenter", "-u", "-t", strconv.Itoa(c.InitPid()), "sh", "-c", "hostname renamed && echo dom.example > /proc/sys/kernel/domainname")
	if out, err := uts.CombinedOutput(); err != nil {
		t.Fatalf("set the container's host and domain name: %v: %s", err, out)
	}
	mounts, dev := mountTable(t, c), devListing(t, c)
	r := pausedRoundTrip(t, cp, c, io, dir, ahead, func(m *Manifest) {
		if m.Network == nil || m.Network.Loopback == nil || !m.Network.Loopback.Up || m.NetworkInImages != "" {
			t.Fatalf("manifest network %+v, in images %q: want a fresh loopback namespace (up)", m.Network, m.NetworkInImages)
		}
		carried := map[string]bool{}
		for _, tf := range m.Tmpfs {
			carried[tf.Mountpoint] = true
		}
		for _, mp := range []string{"/dev", "/dev/shm"} {
			if !carried[mp] {
				t.Errorf("tmpfs %s not carried: %+v", mp, m.Tmpfs)
			}
		}
	})
	if got := mountTable(t, r); got != mounts {
		t.Errorf("mount table after restore:\n%s\nwant:\n%s", got, mounts)
	}
	if got := devListing(t, r); got != dev {
		t.Errorf("/dev after restore:\n%s\nwant:\n%s", got, dev)
	}
	if out := execIn(t, r, "sh", "-c", "hostname; cat /proc/sys/kernel/domainname"); out != "renamed\ndom.example\n" {
		t.Errorf("host and domain name after restore: %q, want renamed, dom.example", out)
	}
	if out := execIn(t, r, "sh", "-c", "ls /sys/class/net; cat /sys/class/net/lo/flags"); out != "lo\n0x9\n" {
		t.Errorf("network namespace after restore: %q, want lo only, up (flags 0x9)", out)
	}
}

// TestChangedNetNSStaysInImages: a namespace the container changed (here a
// sysctl, set from outside for the test) is CRIU's to dump and restore, and
// the change survives.
func TestChangedNetNSStaysInImages(t *testing.T) {
	cp, dir := setup(t)
	c, io := startCounter(t, cp, "netchanged")
	io.out.waitNumber(t, 2)
	ns := "--net=/proc/" + strconv.Itoa(c.InitPid()) + "/ns/net"
	if out, err := exec.Command("nsenter", ns, "sysctl", "-w", "net.ipv4.conf.lo.accept_local=1").CombinedOutput(); err != nil {
		t.Fatalf("nsenter sysctl: %v: %s", err, out)
	}
	r := pausedRoundTrip(t, cp, c, io, dir, false, func(m *Manifest) {
		if m.Network != nil || !regexp.MustCompile(`accept_local`).MatchString(m.NetworkInImages) {
			t.Fatalf("manifest network %+v, in images %q: want the namespace in the images, the sysctl named", m.Network, m.NetworkInImages)
		}
	})
	if got := strings.TrimSpace(execIn(t, r, "cat", "/proc/sys/net/ipv4/conf/lo/accept_local")); got != "1" {
		t.Errorf("accept_local after restore = %q, want 1", got)
	}
}
