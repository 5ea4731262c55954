package cgroups

import (
	"errors"
	"reflect"
	"strings"
	"testing"

	"github.com/opencontainers/cgroups"
	devconfig "github.com/opencontainers/cgroups/devices/config"
	specs "github.com/opencontainers/runtime-spec/specs-go"
)

func TestCgroupPath(t *testing.T) {
	t.Parallel()
	ok := []struct{ id, in, want string }{
		{"abc", "", "/migrate/abc"},
		{"a.b_c-1", "", "/migrate/a.b_c-1"},
		{"x", "/custom/path", "/custom/path"},
		{"x", "/custom//path/../p2/", "/custom/p2"},
		{"x", "pod1/ctr", "/migrate/pod1/ctr"},
		{"x", "../../../etc", "/migrate/etc"},
		{"x", "/a:b:c", "/a:b:c"}, // absolute paths may contain colons
	}
	for _, c := range ok {
		got, err := cgroupPath(c.id, c.in)
		if err != nil || got != c.want {
			t.Errorf("cgroupPath(%q, %q) = %q, %v; want %q", c.id, c.in, got, err, c.want)
		}
	}
	bad := []struct {
		id, in string
		want   error
	}{
		{"", "", ErrInvalid},
		{"../x", "", ErrInvalid},
		{"a/b", "", ErrInvalid},
		{".hidden", "", ErrInvalid},
		{strings.Repeat("a", 201), "", ErrInvalid},
		{"x", "/", ErrInvalid},
		{"x", "/..", ErrInvalid},
		{"x", "..", ErrInvalid},
		{"x", "a\nb", ErrInvalid},
		{"x", "system.slice:migrate:abc", ErrUnsupported},
	}
	for _, c := range bad {
		if got, err := cgroupPath(c.id, c.in); !errors.Is(err, c.want) {
			t.Errorf("cgroupPath(%q, %q) = %q, %v; want %v", c.id, c.in, got, err, c.want)
		}
	}
}

func i64(v int64) *int64   { return &v }
func u64(v uint64) *uint64 { return &v }
func u32(v uint32) *uint32 { return &v }
func u16(v uint16) *uint16 { return &v }
func boolp(v bool) *bool   { return &v }

func fullSpec() *specs.LinuxResources {
	return &specs.LinuxResources{
		Memory: &specs.LinuxMemory{
			Limit: i64(64 << 20), Reservation: i64(32 << 20), Swap: i64(128 << 20),
			//lint:ignore SA1019 deprecated; the test checks it is ignored
			Kernel:     i64(1 << 20),
			Swappiness: u64(10), DisableOOMKiller: boolp(true),
		},
		CPU: &specs.LinuxCPU{
			Shares: u64(512), Quota: i64(50000), Period: u64(100000), Burst: u64(10000),
			RealtimeRuntime: i64(1000), RealtimePeriod: u64(100000), Cpus: "0-1", Mems: "0", Idle: i64(1),
		},
		Pids: &specs.LinuxPids{Limit: i64(42)},
		BlockIO: &specs.LinuxBlockIO{
			Weight: u16(500), LeafWeight: u16(300),
			WeightDevice:            []specs.LinuxWeightDevice{{LinuxBlockIODevice: specs.LinuxBlockIODevice{Major: 8, Minor: 0}, Weight: u16(200)}},
			ThrottleReadBpsDevice:   []specs.LinuxThrottleDevice{{LinuxBlockIODevice: specs.LinuxBlockIODevice{Major: 8, Minor: 0}, Rate: 1 << 20}},
			ThrottleWriteIOPSDevice: []specs.LinuxThrottleDevice{{LinuxBlockIODevice: specs.LinuxBlockIODevice{Major: 8, Minor: 0}, Rate: 100}},
		},
		HugepageLimits: []specs.LinuxHugepageLimit{{Pagesize: "2MB", Limit: 4 << 20}},
		Network:        &specs.LinuxNetwork{ClassID: u32(0x100001), Priorities: []specs.LinuxInterfacePriority{{Name: "eth0", Priority: 5}}},
		Rdma:           map[string]specs.LinuxRdma{"mlx5_0": {HcaHandles: u32(3)}},
		Devices:        []specs.LinuxDeviceCgroup{{Allow: false, Access: "rwm"}, {Allow: true, Type: "c", Major: i64(10), Minor: i64(200), Access: "rw"}},
	}
}

func TestTranslateV1(t *testing.T) {
	t.Parallel()
	res, rules, err := translate(ModeV1, fullSpec())
	if err != nil {
		t.Fatal(err)
	}
	want := &cgroups.Resources{
		Memory: 64 << 20, MemoryReservation: 32 << 20, MemorySwap: 128 << 20, MemorySwappiness: u64(10), OomKillDisable: true,
		CpuShares: 512, CpuQuota: 50000, CpuPeriod: 100000, CpuBurst: u64(10000), CpuRtRuntime: 1000, CpuRtPeriod: 100000,
		CpusetCpus: "0-1", CpusetMems: "0", CPUIdle: i64(1),
		PidsLimit:                    i64(42),
		BlkioWeight:                  500,
		BlkioLeafWeight:              300,
		BlkioWeightDevice:            []*cgroups.WeightDevice{cgroups.NewWeightDevice(8, 0, 200, 0)},
		BlkioThrottleReadBpsDevice:   []*cgroups.ThrottleDevice{cgroups.NewThrottleDevice(8, 0, 1<<20)},
		BlkioThrottleWriteIOPSDevice: []*cgroups.ThrottleDevice{cgroups.NewThrottleDevice(8, 0, 100)},
		HugetlbLimit:                 []*cgroups.HugepageLimit{{Pagesize: "2MB", Limit: 4 << 20}},
		NetClsClassid:                0x100001,
		NetPrioIfpriomap:             []*cgroups.IfPrioMap{{Interface: "eth0", Priority: 5}},
		Rdma:                         map[string]cgroups.LinuxRdma{"mlx5_0": {HcaHandles: u32(3)}},
	}
	if !reflect.DeepEqual(res, want) {
		t.Errorf("translate:\n got %+v\nwant %+v", res, want)
	}
	// deny-all, defaults, then the spec's tun allow.
	if len(rules) != 1+len(DefaultDevices)+1 {
		t.Fatalf("got %d rules, want %d", len(rules), len(DefaultDevices)+2)
	}
	if r := rules[0]; r.Allow || r.Type != devconfig.WildcardDevice || r.Permissions != "rwm" {
		t.Errorf("rule 0 = %+v, want deny a *:* rwm", r)
	}
	if r := rules[len(rules)-1]; !r.Allow || r.Type != devconfig.CharDevice || r.Major != 10 || r.Minor != 200 || r.Permissions != "rw" {
		t.Errorf("last rule = %+v, want allow c 10:200 rw", r)
	}
}

func TestTranslateV2(t *testing.T) {
	t.Parallel()
	spec := fullSpec()
	spec.Memory.Swappiness, spec.Memory.DisableOOMKiller = nil, nil
	spec.CPU.RealtimePeriod, spec.CPU.RealtimeRuntime = nil, nil
	spec.BlockIO.LeafWeight = nil
	spec.Network = nil
	spec.Unified = map[string]string{"memory.high": "100M", "cgroup.max.depth": "3"}
	res, _, err := translate(ModeV2, spec)
	if err != nil {
		t.Fatal(err)
	}
	// v1-style values pass through; the library converts them when writing.
	if res.CpuShares != 512 || res.BlkioWeight != 500 || res.MemorySwap != 128<<20 {
		t.Errorf("v2 translation changed v1-style values: %+v", res)
	}
	if !reflect.DeepEqual(res.Unified, spec.Unified) {
		t.Errorf("unified = %v, want %v", res.Unified, spec.Unified)
	}
}

func TestTranslateNil(t *testing.T) {
	t.Parallel()
	res, rules, err := translate(ModeV1, nil)
	if err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(res, &cgroups.Resources{}) {
		t.Errorf("nil resources translated to %+v", res)
	}
	if len(rules) != len(DefaultDevices) {
		t.Errorf("nil resources: %d device rules, want the %d defaults", len(rules), len(DefaultDevices))
	}
	// Zero-valued fields the library cannot write are "leave as is".
	res, _, err = translate(ModeV1, &specs.LinuxResources{CPU: &specs.LinuxCPU{Shares: u64(0), Quota: i64(0), Period: u64(0)}})
	if err != nil || res.CpuShares != 0 || res.CpuQuota != 0 || res.CpuPeriod != 0 {
		t.Errorf("zero cpu values: %+v, %v", res, err)
	}
}

func TestTranslateInvalid(t *testing.T) {
	t.Parallel()
	cases := []struct {
		field string // must appear in the message
		r     specs.LinuxResources
	}{
		{"memory.limit 1000 is below the minimum", specs.LinuxResources{Memory: &specs.LinuxMemory{Limit: i64(1000)}}},
		{"memory.limit", specs.LinuxResources{Memory: &specs.LinuxMemory{Limit: i64(-2)}}},
		{"memory.reservation", specs.LinuxResources{Memory: &specs.LinuxMemory{Limit: i64(64 << 20), Reservation: i64(128 << 20)}}},
		{"memory.swap", specs.LinuxResources{Memory: &specs.LinuxMemory{Limit: i64(64 << 20), Swap: i64(32 << 20)}}},
		{"memory.swap", specs.LinuxResources{Memory: &specs.LinuxMemory{Swap: i64(64 << 20)}}},
		{"memory.swap", specs.LinuxResources{Memory: &specs.LinuxMemory{Limit: i64(-1), Swap: i64(64 << 20)}}},
		{"memory.swappiness", specs.LinuxResources{Memory: &specs.LinuxMemory{Swappiness: u64(101)}}},
		{"cpu.shares", specs.LinuxResources{CPU: &specs.LinuxCPU{Shares: u64(1)}}},
		{"cpu.shares", specs.LinuxResources{CPU: &specs.LinuxCPU{Shares: u64(300000)}}},
		{"cpu.quota", specs.LinuxResources{CPU: &specs.LinuxCPU{Quota: i64(999)}}},
		{"cpu.period", specs.LinuxResources{CPU: &specs.LinuxCPU{Period: u64(999)}}},
		{"cpu.period", specs.LinuxResources{CPU: &specs.LinuxCPU{Period: u64(1000001)}}},
		{"cpu.burst", specs.LinuxResources{CPU: &specs.LinuxCPU{Quota: i64(10000), Burst: u64(20000)}}},
		{"cpu.realtimeRuntime", specs.LinuxResources{CPU: &specs.LinuxCPU{RealtimeRuntime: i64(2000), RealtimePeriod: u64(1000)}}},
		{"cpu.realtimePeriod", specs.LinuxResources{CPU: &specs.LinuxCPU{RealtimePeriod: u64(0)}}},
		{"cpu.cpus", specs.LinuxResources{CPU: &specs.LinuxCPU{Cpus: "0-"}}},
		{"cpu.cpus", specs.LinuxResources{CPU: &specs.LinuxCPU{Cpus: "3-1"}}},
		{"cpu.mems", specs.LinuxResources{CPU: &specs.LinuxCPU{Mems: "a"}}},
		{"cpu.idle", specs.LinuxResources{CPU: &specs.LinuxCPU{Idle: i64(2)}}},
		{"pids.limit", specs.LinuxResources{Pids: &specs.LinuxPids{Limit: i64(-5)}}},
		{"blockIO.weight", specs.LinuxResources{BlockIO: &specs.LinuxBlockIO{Weight: u16(5)}}},
		{"blockIO.leafWeight", specs.LinuxResources{BlockIO: &specs.LinuxBlockIO{LeafWeight: u16(2000)}}},
		{"blockIO.weightDevice[0]", specs.LinuxResources{BlockIO: &specs.LinuxBlockIO{WeightDevice: []specs.LinuxWeightDevice{{}}}}},
		{"blockIO.weightDevice[0].weight", specs.LinuxResources{BlockIO: &specs.LinuxBlockIO{WeightDevice: []specs.LinuxWeightDevice{{Weight: u16(1)}}}}},
		{"blockIO.throttleReadBpsDevice[0]", specs.LinuxResources{BlockIO: &specs.LinuxBlockIO{ThrottleReadBpsDevice: []specs.LinuxThrottleDevice{{LinuxBlockIODevice: specs.LinuxBlockIODevice{Major: -1}}}}}},
		{"hugepageLimits[0].pageSize", specs.LinuxResources{HugepageLimits: []specs.LinuxHugepageLimit{{Pagesize: "2M"}}}},
		{"network.priorities[0].name", specs.LinuxResources{Network: &specs.LinuxNetwork{Priorities: []specs.LinuxInterfacePriority{{Name: "a b"}}}}},
		{`rdma["x"] sets neither`, specs.LinuxResources{Rdma: map[string]specs.LinuxRdma{"x": {}}}},
		{"devices[0].type", specs.LinuxResources{Devices: []specs.LinuxDeviceCgroup{{Type: "p"}}}},
		{"devices[0].access", specs.LinuxResources{Devices: []specs.LinuxDeviceCgroup{{Access: "rx"}}}},
		{"devices[0].major", specs.LinuxResources{Devices: []specs.LinuxDeviceCgroup{{Type: "c", Major: i64(-3)}}}},
		{"devices[0] type a", specs.LinuxResources{Devices: []specs.LinuxDeviceCgroup{{Type: "a", Major: i64(1)}}}},
	}
	for _, c := range cases {
		_, _, err := translate(ModeV1, &c.r)
		var ve *ValidationError
		if !errors.Is(err, ErrInvalid) || !errors.As(err, &ve) {
			t.Errorf("%s: got %v, want a ValidationError", c.field, err)
			continue
		}
		if !strings.HasPrefix(err.Error(), "cgroups: ") || !strings.Contains(err.Error(), c.field) {
			t.Errorf("error %q does not name %q", err, c.field)
		}
	}
}

func TestTranslateReportsAllErrors(t *testing.T) {
	t.Parallel()
	_, _, err := translate(ModeV1, &specs.LinuxResources{
		Memory: &specs.LinuxMemory{Limit: i64(1)},
		CPU:    &specs.LinuxCPU{Shares: u64(1)},
	})
	if err == nil || !strings.Contains(err.Error(), "memory.limit") || !strings.Contains(err.Error(), "cpu.shares") {
		t.Errorf("want both fields reported, got %v", err)
	}
}

func TestTranslateUnsupported(t *testing.T) {
	t.Parallel()
	v2only := []specs.LinuxResources{
		{Memory: &specs.LinuxMemory{Swappiness: u64(10)}},
		{Memory: &specs.LinuxMemory{DisableOOMKiller: boolp(true)}},
		{CPU: &specs.LinuxCPU{RealtimeRuntime: i64(10)}},
		{BlockIO: &specs.LinuxBlockIO{LeafWeight: u16(100)}},
		{Network: &specs.LinuxNetwork{ClassID: u32(1)}},
		{Network: &specs.LinuxNetwork{Priorities: []specs.LinuxInterfacePriority{{Name: "eth0", Priority: 1}}}},
	}
	for i, r := range v2only {
		if _, _, err := translate(ModeV2, &r); !errors.Is(err, ErrUnsupported) {
			t.Errorf("v2 case %d: got %v, want ErrUnsupported", i, err)
		}
		if _, _, err := translate(ModeV1, &r); err != nil {
			t.Errorf("v1 case %d: %v", i, err)
		}
	}
	// DisableOOMKiller=false asks for nothing and is accepted everywhere.
	if _, _, err := translate(ModeV2, &specs.LinuxResources{Memory: &specs.LinuxMemory{DisableOOMKiller: boolp(false)}}); err != nil {
		t.Errorf("disableOOMKiller=false on v2: %v", err)
	}
	unified := &specs.LinuxResources{Unified: map[string]string{"memory.high": "1G"}}
	for _, mode := range []string{ModeV1, ModeHybrid} {
		_, _, err := translate(mode, unified)
		if !errors.Is(err, ErrUnsupported) || !strings.Contains(err.Error(), "unified") {
			t.Errorf("unified on %s: got %v, want ErrUnsupported naming unified", mode, err)
		}
	}
	// An empty map is no request at all.
	if _, _, err := translate(ModeV1, &specs.LinuxResources{Unified: map[string]string{}}); err != nil {
		t.Errorf("empty unified on v1: %v", err)
	}
	for _, k := range []string{"cgroup.procs", "../x", "a/b", "nodot", ""} {
		_, _, err := translate(ModeV2, &specs.LinuxResources{Unified: map[string]string{k: "1"}})
		if !errors.Is(err, ErrInvalid) {
			t.Errorf("unified key %q: got %v, want ErrInvalid", k, err)
		}
	}
}

func TestDevicePolicy(t *testing.T) {
	t.Parallel()
	deny := specs.LinuxDeviceCgroup{Allow: false, Access: "rwm"}
	nullW := specs.LinuxDeviceCgroup{Allow: false, Type: "c", Major: i64(1), Minor: i64(3), Access: "w"}
	tun := specs.LinuxDeviceCgroup{Allow: true, Type: "c", Major: i64(10), Minor: i64(200), Access: "wr"}
	n := len(DefaultDevices)
	cases := []struct {
		name string
		in   []specs.LinuxDeviceCgroup
		// position of each spec rule in the output
		want []int
	}{
		{"empty", nil, nil},
		{"deny all first", []specs.LinuxDeviceCgroup{deny, tun}, []int{0, n + 1}},
		{"no deny all", []specs.LinuxDeviceCgroup{tun}, []int{n}},
		{"deny null after deny all", []specs.LinuxDeviceCgroup{deny, nullW}, []int{0, n + 1}},
		{"last deny all wins", []specs.LinuxDeviceCgroup{tun, deny, nullW}, []int{0, 1, n + 2}},
	}
	for _, c := range cases {
		rules, errs := deviceRules(c.in)
		if len(errs) > 0 {
			t.Fatalf("%s: %v", c.name, errs)
		}
		out := devicePolicy(rules)
		if len(out) != len(c.in)+n {
			t.Errorf("%s: %d rules, want %d", c.name, len(out), len(c.in)+n)
			continue
		}
		for i, pos := range c.want {
			if out[pos] != rules[i] {
				t.Errorf("%s: spec rule %d at wrong position, want %d", c.name, i, pos)
			}
		}
	}
	rules, _ := deviceRules([]specs.LinuxDeviceCgroup{tun, {Allow: true}})
	if rules[0].Permissions != "rw" {
		t.Errorf("access %q canonicalised to %q, want rw", tun.Access, rules[0].Permissions)
	}
	if r := rules[1]; r.Type != devconfig.WildcardDevice || r.Major != devconfig.Wildcard || r.Minor != devconfig.Wildcard || r.Permissions != "rwm" {
		t.Errorf("empty rule got %+v, want a *:* rwm", r)
	}
	// DefaultDevices must not be aliased into the policy.
	out := devicePolicy(nil)
	out[0].Allow = false
	if !DefaultDevices[0].Allow {
		t.Fatal("devicePolicy aliases DefaultDevices")
	}
}

func TestRequestedFiles(t *testing.T) {
	t.Parallel()
	res := &cgroups.Resources{Memory: 1 << 30, PidsLimit: i64(10), HugetlbLimit: []*cgroups.HugepageLimit{{Pagesize: "2MB"}}, NetClsClassid: 1}
	got := map[string]string{}
	for _, f := range requestedFiles(ModeV1, res) {
		got[f.file] = f.controller
	}
	want := map[string]string{"memory.limit_in_bytes": "memory", "pids.max": "pids", "hugetlb.2MB.limit_in_bytes": "hugetlb", "net_cls.classid": "net_cls"}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("v1 files %v, want %v", got, want)
	}
	got = map[string]string{}
	res = &cgroups.Resources{Memory: 1 << 30, BlkioWeight: 100, Unified: map[string]string{"memory.high": "1", "cgroup.max.depth": "2"}}
	for _, f := range requestedFiles(ModeV2, res) {
		got[f.file] = f.controller
	}
	want = map[string]string{"memory.max": "memory", "io.weight": "io", "memory.high": "memory"}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("v2 files %v, want %v", got, want)
	}

}
