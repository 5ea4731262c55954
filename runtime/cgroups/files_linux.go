package cgroups

import (
	"strings"

	"github.com/opencontainers/cgroups"
)

type fileReq struct {
	controller string // v1 subsystem or v2 controller name
	file       string // the file the library would write
}

// requestedFiles lists, per requested limit, the controller it needs and the
// main file the library writes for it, so an unavailable controller can be
// reported by file name before anything is written. Device rules are not
// listed: v1 requires the devices controller at New, v2 uses eBPF.
func requestedFiles(mode string, r *cgroups.Resources) []fileReq {
	v2 := mode == ModeV2
	var out []fileReq
	add := func(ctrl, v1file, v2file string) {
		f := v1file
		if v2 {
			f = v2file
		}
		out = append(out, fileReq{controller: ctrl, file: f})
	}
	if r.Memory != 0 {
		add("memory", "memory.limit_in_bytes", "memory.max")
	}
	if r.MemoryReservation != 0 {
		add("memory", "memory.soft_limit_in_bytes", "memory.low")
	}
	if r.MemorySwap != 0 {
		add("memory", "memory.memsw.limit_in_bytes", "memory.swap.max")
	}
	if r.MemorySwappiness != nil {
		add("memory", "memory.swappiness", "")
	}
	if r.OomKillDisable {
		add("memory", "memory.oom_control", "")
	}
	if r.CpuShares != 0 {
		add("cpu", "cpu.shares", "cpu.weight")
	}
	if r.CpuQuota != 0 || r.CpuPeriod != 0 {
		add("cpu", "cpu.cfs_quota_us", "cpu.max")
	}
	if r.CpuBurst != nil {
		add("cpu", "cpu.cfs_burst_us", "cpu.max.burst")
	}
	if r.CpuRtRuntime != 0 || r.CpuRtPeriod != 0 {
		add("cpu", "cpu.rt_runtime_us", "")
	}
	if r.CPUIdle != nil {
		add("cpu", "cpu.idle", "cpu.idle")
	}
	if r.CpusetCpus != "" {
		add("cpuset", "cpuset.cpus", "cpuset.cpus")
	}
	if r.CpusetMems != "" {
		add("cpuset", "cpuset.mems", "cpuset.mems")
	}
	if r.PidsLimit != nil {
		add("pids", "pids.max", "pids.max")
	}
	io := "blkio"
	if v2 {
		io = "io"
	}
	if r.BlkioWeight != 0 || len(r.BlkioWeightDevice) > 0 {
		add(io, "blkio.weight", "io.weight")
	}
	if r.BlkioLeafWeight != 0 {
		add(io, "blkio.leaf_weight", "")
	}
	if len(r.BlkioThrottleReadBpsDevice)+len(r.BlkioThrottleWriteBpsDevice)+
		len(r.BlkioThrottleReadIOPSDevice)+len(r.BlkioThrottleWriteIOPSDevice) > 0 {
		add(io, "blkio.throttle.read_bps_device", "io.max")
	}
	for _, h := range r.HugetlbLimit {
		add("hugetlb", "hugetlb."+h.Pagesize+".limit_in_bytes", "hugetlb."+h.Pagesize+".max")
	}
	if r.NetClsClassid != 0 {
		add("net_cls", "net_cls.classid", "")
	}
	if len(r.NetPrioIfpriomap) > 0 {
		add("net_prio", "net_prio.ifpriomap", "")
	}
	if len(r.Rdma) > 0 {
		add("rdma", "rdma.max", "rdma.max")
	}
	for k := range r.Unified {
		if c, _, _ := strings.Cut(k, "."); c != "cgroup" {
			out = append(out, fileReq{controller: c, file: k})
		}
	}
	return out
}
