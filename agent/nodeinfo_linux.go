package agent

import (
	"bufio"
	"context"
	"os"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"time"

	"golang.org/x/sys/unix"
	"google.golang.org/protobuf/proto"

	"github.com/migratehq/migrate/agent/config"
	migratev1 "github.com/migratehq/migrate/api/migrate/v1"
	"github.com/migratehq/migrate/criu"
)

// nodeInfo caches what does not change while the agent runs.
type nodeInfo struct {
	cfg *config.Config

	once   sync.Once
	kernel string
	cgroup string
	criu   *migratev1.CriuInfo // NetworkLock is what shims get for checkpoints
}

func newNodeInfo(cfg *config.Config) *nodeInfo { return &nodeInfo{cfg: cfg} }

func (n *nodeInfo) get(ctx context.Context) *migratev1.NodeInfo {
	n.once.Do(func() {
		var u unix.Utsname
		if unix.Uname(&u) == nil {
			n.kernel = unix.ByteSliceToString(u.Release[:])
		}
		n.cgroup = CgroupMode()
		n.criu = probeCRIU(context.WithoutCancel(ctx), &criu.Client{Path: n.cfg.CRIU})
	})
	return &migratev1.NodeInfo{Name: n.cfg.Node, Kernel: n.kernel, CgroupMode: n.cgroup, Criu: proto.CloneOf(n.criu), Capacity: n.capacity()}
}

// criuVersion is CRIU's version on this node, "" when unknown: shims record it
// in checkpoints without asking CRIU again.
func (n *nodeInfo) criuVersion(ctx context.Context) string {
	n.get(ctx)
	return n.criu.GetVersion()
}

// networkLock is CRIU's network lock backend on this node, "" when unknown.
func (n *nodeInfo) networkLock(ctx context.Context) string {
	n.get(ctx)
	return n.criu.GetNetworkLock()
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

// probeCRIU asks CRIU for its version and features (criu.Client.Version and
// Features). A missing or broken CRIU is reported in the result, not as an error:
// the node still runs containers, only checkpoints need CRIU.
func probeCRIU(ctx context.Context, c *criu.Client) *migratev1.CriuInfo {
	ctx, cancel := context.WithTimeout(ctx, 20*time.Second)
	defer cancel()
	info := &migratev1.CriuInfo{Path: c.Path, Features: map[string]bool{}}
	if info.Path == "" {
		info.Path = criu.DefaultPath
	}
	v, err := c.Version(ctx)
	if err != nil {
		info.Error = oneLine(err)
		return info
	}
	info.Version = v.Raw
	if info.Version == "" {
		info.Version = v.String()
	}
	f, err := c.Features(ctx)
	if err != nil {
		info.Error = oneLine(err)
		return info
	}
	info.NetworkLock = f.NetworkLock
	for name, ok := range map[string]bool{
		"lazy_pages": f.LazyPages, "mem_track": f.MemTrack, "pidfd_store": f.PidfdStore,
		"network_lock_nftables": f.NFTablesLock, "userfaultfd": f.Userfaultfd, "timens": f.TimeNS,
	} {
		info.Features[name] = ok
	}
	return info
}

// oneLine keeps the first line of a (CRIU) error, which may quote its log below.
func oneLine(err error) string {
	s, _, _ := strings.Cut(err.Error(), "\n")
	return s
}
