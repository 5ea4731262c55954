package agent

import (
	"bufio"
	"bytes"
	"context"
	"os"
	"os/exec"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"time"

	"golang.org/x/sys/unix"

	"github.com/migratehq/migrate/agent/config"
	migratev1 "github.com/migratehq/migrate/api/migrate/v1"
)

// criuFeatures are the `criu check --feature` names migrate's later work depends on:
// iterative pre-dump, lazy pages, restoring into existing pid namespaces, nftables
// network locking.
var criuFeatures = []string{"mem_dirty_track", "uffd-noncoop", "pidfd_store", "network_lock_nftables", "timens", "cgroupns", "clone3_set_tid"}

// nodeInfo caches what does not change while the agent runs.
type nodeInfo struct {
	cfg *config.Config

	once   sync.Once
	kernel string
	cgroup string
	criu   *migratev1.CriuInfo
}

func newNodeInfo(cfg *config.Config) *nodeInfo { return &nodeInfo{cfg: cfg} }

func (n *nodeInfo) get(ctx context.Context) *migratev1.NodeInfo {
	n.once.Do(func() {
		var u unix.Utsname
		if unix.Uname(&u) == nil {
			n.kernel = unix.ByteSliceToString(u.Release[:])
		}
		n.cgroup = CgroupMode()
		n.criu = probeCRIU(context.WithoutCancel(ctx))
	})
	return &migratev1.NodeInfo{Name: n.cfg.Node, Kernel: n.kernel, CgroupMode: n.cgroup, Criu: n.criu, Capacity: n.capacity()}
}

// CgroupMode reports "v2" (unified), "hybrid" (v1 controllers plus a v2 hierarchy) or
// "v1".
func CgroupMode() string {
	var st unix.Statfs_t
	if unix.Statfs("/sys/fs/cgroup", &st) == nil && st.Type == unix.CGROUP2_SUPER_MAGIC {
		return "v2"
	}
	if unix.Statfs("/sys/fs/cgroup/unified", &st) == nil && st.Type == unix.CGROUP2_SUPER_MAGIC {
		return "hybrid"
	}
	return "v1"
}

func (n *nodeInfo) capacity() *migratev1.Capacity {
	c := &migratev1.Capacity{Cpus: int32(runtime.NumCPU())}
	var set unix.CPUSet
	if unix.SchedGetaffinity(0, &set) == nil {
		c.Cpus = int32(set.Count())
	}
	if f, err := os.Open("/proc/meminfo"); err == nil {
		s := bufio.NewScanner(f)
		for s.Scan() {
			fields := strings.Fields(s.Text())
			if len(fields) < 2 {
				continue
			}
			kb, _ := strconv.ParseUint(fields[1], 10, 64)
			switch fields[0] {
			case "MemTotal:":
				c.MemoryBytes = kb * 1024
			case "MemAvailable:":
				c.MemoryAvailableBytes = kb * 1024
			}
		}
		f.Close()
	}
	var st unix.Statfs_t
	if unix.Statfs(n.cfg.DataDir, &st) == nil {
		c.DataDiskFreeBytes = st.Bavail * uint64(st.Bsize)
	}
	return c
}

// criuPaths are tried in order; setup.sh installs a current CRIU to the first.
var criuPaths = []string{"/usr/local/sbin/criu", "criu"}

func probeCRIU(ctx context.Context) *migratev1.CriuInfo {
	info := &migratev1.CriuInfo{Features: map[string]bool{}}
	for _, p := range criuPaths {
		if lp, err := exec.LookPath(p); err == nil {
			info.Path = lp
			break
		}
	}
	if info.Path == "" {
		info.Error = "criu not found"
		return info
	}
	ctx, cancel := context.WithTimeout(ctx, 20*time.Second)
	defer cancel()
	out, err := exec.CommandContext(ctx, info.Path, "--version").Output()
	if err != nil {
		info.Error = "criu --version: " + err.Error()
		return info
	}
	for _, l := range bytes.Split(out, []byte("\n")) {
		if v, ok := bytes.CutPrefix(l, []byte("Version:")); ok {
			info.Version = strings.TrimSpace(string(v))
		}
	}
	var mu sync.Mutex
	var wg sync.WaitGroup
	for _, f := range criuFeatures {
		wg.Add(1)
		go func() {
			defer wg.Done()
			err := exec.CommandContext(ctx, info.Path, "check", "--feature", f).Run()
			mu.Lock()
			info.Features[f] = err == nil
			mu.Unlock()
		}()
	}
	wg.Wait()
	return info
}
