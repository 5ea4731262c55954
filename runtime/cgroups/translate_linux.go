package cgroups

import (
	"errors"
	"fmt"
	"regexp"
	"strconv"
	"strings"

	"github.com/opencontainers/cgroups"
	devconfig "github.com/opencontainers/cgroups/devices/config"
	specs "github.com/opencontainers/runtime-spec/specs-go"
)

// Limits enforced before anything reaches the kernel. Where the kernel has a
// hard bound we use it, so the error names the spec field instead of a
// cgroup file.
const (
	// MinMemory is the smallest memory.limit accepted: below a few MiB the
	// runtime's own init cannot start in the cgroup and the container dies
	// before exec with an OOM that is hard to diagnose (Docker uses the same
	// bound).
	MinMemory = 6 << 20

	minShares, maxShares = 2, 262144 // kernel: MIN_SHARES, MAX_SHARES
	minCFSPeriod         = 1000      // 1ms, kernel min_cfs_quota_period
	maxCFSPeriod         = 1000000   // 1s, kernel max_cfs_quota_period
	minCFSQuota          = 1000      // 1ms, kernel min_cfs_quota_period
	minBlkioWeight       = 10
	maxBlkioWeight       = 1000
	maxSwappiness        = 100
	maxIfNameLen         = 15 // IFNAMSIZ - 1
)

var (
	pageSizeRe = regexp.MustCompile(`^[1-9][0-9]*[KMG]B$`)
	// cpusetRe matches the kernel's list format: "0-3,5,7-8".
	cpusetRe = regexp.MustCompile(`^[0-9]+(-[0-9]+)?(,[0-9]+(-[0-9]+)?)*$`)
)

// DefaultDevices are allowed in every container's device cgroup, in addition
// to the spec's rules: the devices the OCI spec says a runtime MUST provide
// (null, zero, full, random, urandom, tty, ptmx and the devpts slaves that back
// /dev/console), plus mknod of any device node, which is harmless because
// reading or writing the node is still governed by the rules (same list as
// runc, minus /dev/net/tun: a spec that needs it must allow it).
var DefaultDevices = []devconfig.Rule{
	{Type: devconfig.CharDevice, Major: devconfig.Wildcard, Minor: devconfig.Wildcard, Permissions: "m", Allow: true},
	{Type: devconfig.BlockDevice, Major: devconfig.Wildcard, Minor: devconfig.Wildcard, Permissions: "m", Allow: true},
	{Type: devconfig.CharDevice, Major: 1, Minor: 3, Permissions: "rwm", Allow: true},                    // /dev/null
	{Type: devconfig.CharDevice, Major: 1, Minor: 5, Permissions: "rwm", Allow: true},                    // /dev/zero
	{Type: devconfig.CharDevice, Major: 1, Minor: 7, Permissions: "rwm", Allow: true},                    // /dev/full
	{Type: devconfig.CharDevice, Major: 1, Minor: 8, Permissions: "rwm", Allow: true},                    // /dev/random
	{Type: devconfig.CharDevice, Major: 1, Minor: 9, Permissions: "rwm", Allow: true},                    // /dev/urandom
	{Type: devconfig.CharDevice, Major: 5, Minor: 0, Permissions: "rwm", Allow: true},                    // /dev/tty
	{Type: devconfig.CharDevice, Major: 5, Minor: 2, Permissions: "rwm", Allow: true},                    // /dev/ptmx
	{Type: devconfig.CharDevice, Major: 136, Minor: devconfig.Wildcard, Permissions: "rwm", Allow: true}, // /dev/pts/*
}

// errList collects every validation problem so a user fixes a spec in one go.
type errList []error

func (l *errList) invalid(field, format string, args ...any) {
	*l = append(*l, &ValidationError{Field: field, Msg: fmt.Sprintf(format, args...)})
}

func (l *errList) unsupported(field, mode, msg string) {
	*l = append(*l, &UnsupportedError{Field: field, Mode: mode, Msg: msg})
}

// translate validates r for a host with the given cgroup mode and converts it
// to the library's Resources. Devices are returned separately as the complete
// policy (spec rules plus DefaultDevices); res.Devices is left nil. A nil r
// yields empty Resources and the default policy.
//
// Zero in a pointer field the library cannot write (cpu.shares, cpu.quota,
// cpu.period, blockIO.weight, memory.reservation) means "leave as is", as in
// runc; other fields treat zero as a value.
func translate(mode string, r *specs.LinuxResources) (*cgroups.Resources, []*devconfig.Rule, error) {
	res := &cgroups.Resources{}
	var errs errList
	if r == nil {
		return res, devicePolicy(nil), nil
	}
	v2 := mode == ModeV2

	if m := r.Memory; m != nil {
		translateMemory(&errs, mode, m, res)
	}
	if c := r.CPU; c != nil {
		translateCPU(&errs, mode, c, res)
	}
	if p := r.Pids; p != nil && p.Limit != nil {
		switch l := *p.Limit; {
		case l < -1:
			errs.invalid("pids.limit", "%d is invalid: use -1 for no limit or a count >= 0", l)
		default:
			res.PidsLimit = ptr(l)
		}
	}
	if b := r.BlockIO; b != nil {
		translateBlockIO(&errs, mode, b, res)
	}
	for i, h := range r.HugepageLimits {
		field := fmt.Sprintf("hugepageLimits[%d].pageSize", i)
		if !pageSizeRe.MatchString(h.Pagesize) {
			errs.invalid(field, "%q is not a page size like \"2MB\" or \"1GB\"", h.Pagesize)
			continue
		}
		res.HugetlbLimit = append(res.HugetlbLimit, &cgroups.HugepageLimit{Pagesize: h.Pagesize, Limit: h.Limit})
	}
	if n := r.Network; n != nil {
		if n.ClassID != nil {
			if v2 {
				errs.unsupported("network.classID", mode, "net_cls has no cgroup v2 equivalent (use an eBPF or nftables cgroup match)")
			} else {
				res.NetClsClassid = *n.ClassID
			}
		}
		if len(n.Priorities) > 0 && v2 {
			errs.unsupported("network.priorities", mode, "net_prio has no cgroup v2 equivalent")
		}
		for i, p := range n.Priorities {
			if p.Name == "" || len(p.Name) > maxIfNameLen || strings.ContainsAny(p.Name, " \t\n/:") {
				errs.invalid(fmt.Sprintf("network.priorities[%d].name", i), "%q is not a network interface name", p.Name)
				continue
			}
			if !v2 {
				res.NetPrioIfpriomap = append(res.NetPrioIfpriomap, &cgroups.IfPrioMap{Interface: p.Name, Priority: int64(p.Priority)})
			}
		}
	}
	for name, l := range r.Rdma {
		field := "rdma[" + strconv.Quote(name) + "]"
		if name == "" || strings.ContainsAny(name, " \t\n=") {
			errs.invalid(field, "is not a valid RDMA device name")
			continue
		}
		if l.HcaHandles == nil && l.HcaObjects == nil {
			errs.invalid(field, "sets neither hcaHandles nor hcaObjects")
			continue
		}
		if res.Rdma == nil {
			res.Rdma = make(map[string]cgroups.LinuxRdma)
		}
		res.Rdma[name] = cgroups.LinuxRdma{HcaHandles: l.HcaHandles, HcaObjects: l.HcaObjects}
	}
	if len(r.Unified) > 0 {
		if !v2 {
			errs.unsupported("unified", mode, "unified resources are cgroup v2 files; this host manages containers with cgroup v1 controllers")
		} else {
			res.Unified = make(map[string]string, len(r.Unified))
			for k, v := range r.Unified {
				if msg := checkUnifiedKey(k); msg != "" {
					errs.invalid("unified["+strconv.Quote(k)+"]", "%s", msg)
					continue
				}
				res.Unified[k] = v
			}
		}
	}
	rules, derrs := deviceRules(r.Devices)
	errs = append(errs, derrs...)
	if len(errs) > 0 {
		return nil, nil, errors.Join(errs...)
	}
	return res, devicePolicy(rules), nil
}

func translateMemory(errs *errList, mode string, m *specs.LinuxMemory, res *cgroups.Resources) {
	v2 := mode == ModeV2
	if m.Limit != nil {
		switch l := *m.Limit; {
		case l == -1:
			res.Memory = -1
		case l < MinMemory:
			errs.invalid("memory.limit", "%d is below the minimum of %d bytes (use -1 for no limit)", l, MinMemory)
		default:
			res.Memory = l
		}
	}
	if m.Reservation != nil {
		switch v := *m.Reservation; {
		case v < -1:
			errs.invalid("memory.reservation", "%d is invalid: use -1 for none or a byte count", v)
		case res.Memory > 0 && v > res.Memory:
			errs.invalid("memory.reservation", "%d is above memory.limit %d", v, res.Memory)
		default:
			res.MemoryReservation = v
		}
	}
	if m.Swap != nil {
		// The OCI value is memory+swap (the v1 memsw file); the library
		// converts it for v2's memory.swap.max, which needs the memory
		// limit in the same request.
		switch s := *m.Swap; {
		case s == -1:
			res.MemorySwap = -1
		case m.Limit == nil:
			errs.invalid("memory.swap", "%d needs memory.limit in the same request: swap is the memory+swap total", s)
		case s < -1 || (res.Memory > 0 && s < res.Memory):
			errs.invalid("memory.swap", "%d is below memory.limit %d: it is the memory+swap total, or -1 for unlimited swap", s, res.Memory)
		case res.Memory == -1:
			errs.invalid("memory.swap", "%d cannot bound memory+swap while memory.limit is -1 (unlimited)", s)
		default:
			res.MemorySwap = s
		}
	}
	// memory.kernel and memory.kernelTCP are ignored: deprecated by the spec,
	// kmem limits are gone from kernels >= 5.16 / v2. useHierarchy is ignored:
	// hierarchical accounting is always on in supported kernels.
	if m.Swappiness != nil {
		switch s := *m.Swappiness; {
		case v2:
			errs.unsupported("memory.swappiness", mode, "cgroup v2 has no per-cgroup swappiness")
		case s > maxSwappiness:
			errs.invalid("memory.swappiness", "%d is out of range [0, %d]", s, maxSwappiness)
		default:
			res.MemorySwappiness = ptr(s)
		}
	}
	if m.DisableOOMKiller != nil && *m.DisableOOMKiller {
		if v2 {
			errs.unsupported("memory.disableOOMKiller", mode, "cgroup v2 cannot disable the OOM killer (consider memory.high in unified)")
		} else {
			res.OomKillDisable = true
		}
	}
	if m.CheckBeforeUpdate != nil {
		res.MemoryCheckBeforeUpdate = *m.CheckBeforeUpdate
	}
}

func translateCPU(errs *errList, mode string, c *specs.LinuxCPU, res *cgroups.Resources) {
	v2 := mode == ModeV2
	if c.Shares != nil && *c.Shares != 0 {
		if s := *c.Shares; s < minShares || s > maxShares {
			errs.invalid("cpu.shares", "%d is out of range [%d, %d]", s, minShares, maxShares)
		} else {
			res.CpuShares = s // the library converts to cpu.weight on v2
		}
	}
	if c.Quota != nil && *c.Quota != 0 {
		if q := *c.Quota; q != -1 && q < minCFSQuota {
			errs.invalid("cpu.quota", "%d is below the minimum of %d µs (use -1 for no limit)", q, minCFSQuota)
		} else {
			res.CpuQuota = q
		}
	}
	if c.Period != nil && *c.Period != 0 {
		if p := *c.Period; p < minCFSPeriod || p > maxCFSPeriod {
			errs.invalid("cpu.period", "%d is out of range [%d, %d] µs", p, minCFSPeriod, maxCFSPeriod)
		} else {
			res.CpuPeriod = p
		}
	}
	if c.Burst != nil {
		if b := *c.Burst; res.CpuQuota > 0 && b > uint64(res.CpuQuota) {
			errs.invalid("cpu.burst", "%d is above cpu.quota %d", b, res.CpuQuota)
		} else {
			res.CpuBurst = ptr(b)
		}
	}
	if c.RealtimeRuntime != nil || c.RealtimePeriod != nil {
		if v2 {
			errs.unsupported("cpu.realtimeRuntime/realtimePeriod", mode, "cgroup v2 has no real-time bandwidth controller")
		} else {
			if c.RealtimeRuntime != nil {
				if rt := *c.RealtimeRuntime; rt < -1 {
					errs.invalid("cpu.realtimeRuntime", "%d is invalid: use -1 for no limit or µs >= 0", rt)
				} else if c.RealtimePeriod != nil && rt > 0 && uint64(rt) > *c.RealtimePeriod {
					errs.invalid("cpu.realtimeRuntime", "%d is above cpu.realtimePeriod %d", rt, *c.RealtimePeriod)
				} else {
					res.CpuRtRuntime = rt
				}
			}
			if c.RealtimePeriod != nil {
				if p := *c.RealtimePeriod; p == 0 {
					errs.invalid("cpu.realtimePeriod", "0 is invalid: the period must be > 0 µs")
				} else {
					res.CpuRtPeriod = p
				}
			}
		}
	}
	if c.Cpus != "" {
		if msg := checkCPUList(c.Cpus); msg != "" {
			errs.invalid("cpu.cpus", "%q %s", c.Cpus, msg)
		} else {
			res.CpusetCpus = c.Cpus
		}
	}
	if c.Mems != "" {
		if msg := checkCPUList(c.Mems); msg != "" {
			errs.invalid("cpu.mems", "%q %s", c.Mems, msg)
		} else {
			res.CpusetMems = c.Mems
		}
	}
	if c.Idle != nil {
		if i := *c.Idle; i != 0 && i != 1 {
			errs.invalid("cpu.idle", "%d is invalid: 0 (normal) or 1 (SCHED_IDLE)", i)
		} else {
			res.CPUIdle = ptr(i)
		}
	}
}

func translateBlockIO(errs *errList, mode string, b *specs.LinuxBlockIO, res *cgroups.Resources) {
	v2 := mode == ModeV2
	weight := func(field string, w uint16) bool {
		if w < minBlkioWeight || w > maxBlkioWeight {
			errs.invalid(field, "%d is out of range [%d, %d]", w, minBlkioWeight, maxBlkioWeight)
			return false
		}
		return true
	}
	device := func(field string, d specs.LinuxBlockIODevice) bool {
		if d.Major < 0 || d.Minor < 0 {
			errs.invalid(field, "%d:%d is not a block device number", d.Major, d.Minor)
			return false
		}
		return true
	}
	if b.Weight != nil && *b.Weight != 0 && weight("blockIO.weight", *b.Weight) {
		res.BlkioWeight = *b.Weight // the library converts to io.weight on v2
	}
	if b.LeafWeight != nil {
		if v2 {
			errs.unsupported("blockIO.leafWeight", mode, "leaf weights were a CFQ feature with no cgroup v2 equivalent")
		} else if weight("blockIO.leafWeight", *b.LeafWeight) {
			res.BlkioLeafWeight = *b.LeafWeight
		}
	}
	for i, wd := range b.WeightDevice {
		field := fmt.Sprintf("blockIO.weightDevice[%d]", i)
		if !device(field, wd.LinuxBlockIODevice) {
			continue
		}
		if wd.Weight == nil && wd.LeafWeight == nil {
			errs.invalid(field, "sets neither weight nor leafWeight")
			continue
		}
		var w, lw uint16
		if wd.Weight != nil && weight(field+".weight", *wd.Weight) {
			w = *wd.Weight
		}
		if wd.LeafWeight != nil {
			if v2 {
				errs.unsupported(field+".leafWeight", mode, "leaf weights have no cgroup v2 equivalent")
			} else if weight(field+".leafWeight", *wd.LeafWeight) {
				lw = *wd.LeafWeight
			}
		}
		res.BlkioWeightDevice = append(res.BlkioWeightDevice, cgroups.NewWeightDevice(wd.Major, wd.Minor, w, lw))
	}
	throttle := func(name string, in []specs.LinuxThrottleDevice) []*cgroups.ThrottleDevice {
		var out []*cgroups.ThrottleDevice
		for i, td := range in {
			if device(fmt.Sprintf("blockIO.%s[%d]", name, i), td.LinuxBlockIODevice) {
				out = append(out, cgroups.NewThrottleDevice(td.Major, td.Minor, td.Rate))
			}
		}
		return out
	}
	res.BlkioThrottleReadBpsDevice = throttle("throttleReadBpsDevice", b.ThrottleReadBpsDevice)
	res.BlkioThrottleWriteBpsDevice = throttle("throttleWriteBpsDevice", b.ThrottleWriteBpsDevice)
	res.BlkioThrottleReadIOPSDevice = throttle("throttleReadIOPSDevice", b.ThrottleReadIOPSDevice)
	res.BlkioThrottleWriteIOPSDevice = throttle("throttleWriteIOPSDevice", b.ThrottleWriteIOPSDevice)
}

// deviceRules converts the spec's rules, in order, with the spec's defaults:
// no type means all ('a'), no major/minor means any, no access means "rwm".
func deviceRules(in []specs.LinuxDeviceCgroup) ([]*devconfig.Rule, errList) {
	var errs errList
	out := make([]*devconfig.Rule, 0, len(in))
	for i, d := range in {
		field := fmt.Sprintf("devices[%d]", i)
		rule := &devconfig.Rule{Allow: d.Allow, Major: devconfig.Wildcard, Minor: devconfig.Wildcard}
		switch d.Type {
		case "", "a":
			rule.Type = devconfig.WildcardDevice
		case "b":
			rule.Type = devconfig.BlockDevice
		case "c":
			rule.Type = devconfig.CharDevice
		default:
			errs.invalid(field+".type", "%q is not one of a, b, c", d.Type)
			continue
		}
		if d.Major != nil {
			if *d.Major < 0 {
				errs.invalid(field+".major", "%d is negative (omit it for any)", *d.Major)
				continue
			}
			rule.Major = *d.Major
		}
		if d.Minor != nil {
			if *d.Minor < 0 {
				errs.invalid(field+".minor", "%d is negative (omit it for any)", *d.Minor)
				continue
			}
			rule.Minor = *d.Minor
		}
		if rule.Type == devconfig.WildcardDevice && (d.Major != nil || d.Minor != nil) {
			errs.invalid(field, "type a (all devices) cannot name a major or minor number")
			continue
		}
		perms, ok := canonicalAccess(d.Access)
		if !ok {
			errs.invalid(field+".access", "%q is not a combination of r, w, m", d.Access)
			continue
		}
		rule.Permissions = perms
		out = append(out, rule)
	}
	return out, errs
}

// devicePolicy returns the rules to apply: the spec's rules with
// DefaultDevices inserted right after the spec's last "deny everything" rule
// (or first, when there is none). The library starts from deny-all, so the
// result is a deny-by-default allow list in which the usual spec prefix
// (deny all, then allow list) does not revoke the default devices, while a
// later spec rule can still deny one of them (for example /dev/null writes).
// This differs from runc, which appends the defaults after all spec rules.
func devicePolicy(rules []*devconfig.Rule) []*devconfig.Rule {
	at := 0
	for i, r := range rules {
		if !r.Allow && r.Type == devconfig.WildcardDevice && r.Permissions == "rwm" {
			at = i + 1
		}
	}
	out := make([]*devconfig.Rule, 0, len(rules)+len(DefaultDevices))
	out = append(out, rules[:at]...)
	for i := range DefaultDevices {
		d := DefaultDevices[i]
		out = append(out, &d)
	}
	return append(out, rules[at:]...)
}

// canonicalAccess returns access in the "rwm" order the library's device
// emulator compares against; empty means all three, per the spec's example
// semantics and runc's behaviour.
func canonicalAccess(access string) (devconfig.Permissions, bool) {
	if access == "" {
		return "rwm", true
	}
	var r, w, m bool
	for _, c := range access {
		switch c {
		case 'r':
			r = true
		case 'w':
			w = true
		case 'm':
			m = true
		default:
			return "", false
		}
	}
	var b strings.Builder
	if r {
		b.WriteByte('r')
	}
	if w {
		b.WriteByte('w')
	}
	if m {
		b.WriteByte('m')
	}
	return devconfig.Permissions(b.String()), true
}

// checkCPUList validates the kernel's list format and that ranges ascend.
func checkCPUList(s string) string {
	if !cpusetRe.MatchString(s) {
		return `is not a list like "0-3,5"`
	}
	for part := range strings.SplitSeq(s, ",") {
		lo, hi, ok := strings.Cut(part, "-")
		if !ok {
			continue
		}
		a, err1 := strconv.ParseUint(lo, 10, 32)
		b, err2 := strconv.ParseUint(hi, 10, 32)
		if err1 != nil || err2 != nil || a > b {
			return "has an invalid range " + strconv.Quote(part)
		}
	}
	return ""
}

// managedFiles are v2 files this package or the library owns; writing them
// through "unified" would move processes or undo the freezer.
var managedFiles = map[string]bool{
	"cgroup.procs": true, "cgroup.threads": true, "cgroup.subtree_control": true,
	"cgroup.freeze": true, "cgroup.kill": true, "cgroup.type": true,
}

func checkUnifiedKey(k string) string {
	if k == "" || strings.ContainsAny(k, "/\x00\n") || k == "." || k == ".." {
		return "is not a cgroup file name"
	}
	if _, _, ok := strings.Cut(k, "."); !ok {
		return "is not of the form <controller>.<file>"
	}
	if managedFiles[k] {
		return "is managed by the runtime and cannot be set through unified"
	}
	return ""
}

func ptr[T any](v T) *T { return &v }
