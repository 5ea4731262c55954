package cgroups

import (
	"fmt"

	"github.com/opencontainers/cgroups"
)

// Stats is a summary of the cgroup's usage. Byte counts are bytes, times are
// nanoseconds. A limit of 0 means "no limit".
type Stats struct {
	MemoryUsage    uint64 `json:"memoryUsage"`
	MemoryMaxUsage uint64 `json:"memoryMaxUsage"` // peak; 0 where the kernel does not track it
	MemoryLimit    uint64 `json:"memoryLimit"`
	SwapUsage      uint64 `json:"swapUsage"` // swap only, not memory+swap
	OOMKills       uint64 `json:"oomKills"`

	PidsCurrent uint64 `json:"pidsCurrent"`
	PidsLimit   uint64 `json:"pidsLimit"`

	CPUUsage            uint64 `json:"cpuUsage"`
	CPUUser             uint64 `json:"cpuUser"`
	CPUSystem           uint64 `json:"cpuSystem"`
	CPUThrottledPeriods uint64 `json:"cpuThrottledPeriods"`
	CPUThrottledTime    uint64 `json:"cpuThrottledTime"`
}

// unlimited is the threshold above which a kernel limit means "none": v1
// reports PAGE_COUNTER_MAX pages as 9223372036854771712, v2 reads "max".
const unlimited = 1 << 62

// Stats reads memory, pids and cpu statistics.
func (m *Manager) Stats() (*Stats, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	st, err := m.lib.Stats(&cgroups.StatsOptions{Controllers: cgroups.Memory | cgroups.Pids | cgroups.CPU})
	if err != nil {
		return nil, fmt.Errorf("cgroups: stats of %s: %w", m.path, err)
	}
	oom, err := m.lib.OOMKillCount()
	if err != nil {
		return nil, fmt.Errorf("cgroups: oom kill count of %s: %w", m.path, err)
	}
	mem := st.MemoryStats
	out := &Stats{
		MemoryUsage:         mem.Usage.Usage,
		MemoryMaxUsage:      mem.Usage.MaxUsage,
		MemoryLimit:         mem.Usage.Limit,
		SwapUsage:           mem.SwapOnlyUsage.Usage,
		OOMKills:            oom,
		PidsCurrent:         st.PidsStats.Current,
		PidsLimit:           st.PidsStats.Limit,
		CPUUsage:            st.CpuStats.CpuUsage.TotalUsage,
		CPUUser:             st.CpuStats.CpuUsage.UsageInUsermode,
		CPUSystem:           st.CpuStats.CpuUsage.UsageInKernelmode,
		CPUThrottledPeriods: st.CpuStats.ThrottlingData.ThrottledPeriods,
		CPUThrottledTime:    st.CpuStats.ThrottlingData.ThrottledTime,
	}
	if out.MemoryLimit >= unlimited {
		out.MemoryLimit = 0
	}
	if out.PidsLimit >= unlimited {
		out.PidsLimit = 0
	}
	return out, nil
}
