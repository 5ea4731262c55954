package seccomp

import (
	"errors"
	"strings"
	"testing"

	specs "github.com/opencontainers/runtime-spec/specs-go"
)

func uptr(v uint) *uint { return &v }

func baseProfile() *specs.LinuxSeccomp {
	return &specs.LinuxSeccomp{
		DefaultAction: specs.ActAllow,
		Architectures: []specs.Arch{specs.ArchX86_64, specs.ArchX86, specs.ArchX32},
		Syscalls: []specs.LinuxSyscall{{
			Names:  []string{"mkdir", "mkdirat"},
			Action: specs.ActErrno,
		}},
	}
}

func TestValidateAccepts(t *testing.T) {
	t.Parallel()
	cases := map[string]func(p *specs.LinuxSeccomp){
		"base":    func(*specs.LinuxSeccomp) {},
		"no arch": func(p *specs.LinuxSeccomp) { p.Architectures = nil },
		"flags": func(p *specs.LinuxSeccomp) {
			p.Flags = []specs.LinuxSeccompFlag{"SECCOMP_FILTER_FLAG_TSYNC", specs.LinuxSeccompFlagLog, specs.LinuxSeccompFlagSpecAllow}
		},
		"errnoRet": func(p *specs.LinuxSeccomp) { p.Syscalls[0].ErrnoRet = uptr(13) },
		"default errno": func(p *specs.LinuxSeccomp) {
			p.DefaultAction, p.DefaultErrnoRet = specs.ActErrno, uptr(38)
			p.Syscalls[0].Action = specs.ActAllow
		},
		// Unknown names are skipped so that newer profiles still load.
		"unknown syscall": func(p *specs.LinuxSeccomp) { p.Syscalls[0].Names = append(p.Syscalls[0].Names, "not_a_syscall_at_all") },
		"rule equals default": func(p *specs.LinuxSeccomp) {
			p.Syscalls = append(p.Syscalls, specs.LinuxSyscall{Names: []string{"getpid"}, Action: specs.ActAllow})
		},
		"every action": func(p *specs.LinuxSeccomp) {
			for i, a := range []specs.LinuxSeccompAction{specs.ActKill, specs.ActKillProcess, specs.ActKillThread,
				specs.ActTrap, specs.ActTrace, specs.ActLog} {
				p.Syscalls = append(p.Syscalls, specs.LinuxSyscall{Names: []string{[]string{"acct", "swapon", "swapoff", "kexec_load", "reboot", "syslog"}[i]}, Action: a})
			}
		},
		"every operator": func(p *specs.LinuxSeccomp) {
			for i, op := range []specs.LinuxSeccompOperator{specs.OpNotEqual, specs.OpLessThan, specs.OpLessEqual,
				specs.OpEqualTo, specs.OpGreaterEqual, specs.OpGreaterThan, specs.OpMaskedEqual} {
				p.Syscalls = append(p.Syscalls, specs.LinuxSyscall{
					Names: []string{"personality"}, Action: specs.ActErrno,
					Args: []specs.LinuxSeccompArg{{Index: uint(i % maxArgs), Value: 8, ValueTwo: 8, Op: op}},
				})
			}
		},
		"shared index": func(p *specs.LinuxSeccomp) {
			p.Syscalls[0].Args = []specs.LinuxSeccompArg{
				{Index: 2, Value: 0o700, Op: specs.OpEqualTo},
				{Index: 2, Value: 0o711, Op: specs.OpEqualTo},
			}
		},
	}
	for name, mutate := range cases {
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			p := baseProfile()
			mutate(p)
			if err := Validate(p); err != nil {
				t.Fatalf("Validate: %v", err)
			}
		})
	}
	if err := Validate(nil); err != nil {
		t.Fatalf("Validate(nil) = %v", err)
	}
}

func TestValidateRejects(t *testing.T) {
	t.Parallel()
	cases := []struct {
		name   string
		mutate func(p *specs.LinuxSeccomp)
		want   error
		substr string
	}{
		{"no default", func(p *specs.LinuxSeccomp) { p.DefaultAction = "" }, ErrInvalidProfile, "defaultAction"},
		{"bad default", func(p *specs.LinuxSeccomp) { p.DefaultAction = "SCMP_ACT_NOPE" }, ErrInvalidProfile, "SCMP_ACT_NOPE"},
		{"default errnoRet with allow", func(p *specs.LinuxSeccomp) { p.DefaultErrnoRet = uptr(1) }, ErrInvalidProfile, "errnoRet"},
		{"notify default", func(p *specs.LinuxSeccomp) { p.DefaultAction = specs.ActNotify }, ErrNotSupported, "SCMP_ACT_NOTIFY"},
		{"notify rule", func(p *specs.LinuxSeccomp) { p.Syscalls[0].Action = specs.ActNotify }, ErrNotSupported, "SCMP_ACT_NOTIFY"},
		{"listener", func(p *specs.LinuxSeccomp) { p.ListenerPath = "/run/listener.sock" }, ErrNotSupported, "listenerPath"},
		{"bad rule action", func(p *specs.LinuxSeccomp) { p.Syscalls[0].Action = "SCMP_ACT_MAYBE" }, ErrInvalidProfile, "SCMP_ACT_MAYBE"},
		{"empty rule action", func(p *specs.LinuxSeccomp) { p.Syscalls[0].Action = "" }, ErrInvalidProfile, "empty action"},
		{"errnoRet on allow rule", func(p *specs.LinuxSeccomp) {
			p.DefaultAction = specs.ActErrno
			p.Syscalls[0].Action, p.Syscalls[0].ErrnoRet = specs.ActAllow, uptr(1)
		}, ErrInvalidProfile, "errnoRet"},
		{"errnoRet too big", func(p *specs.LinuxSeccomp) { p.Syscalls[0].ErrnoRet = uptr(70000) }, ErrInvalidProfile, "70000"},
		{"bad arch", func(p *specs.LinuxSeccomp) { p.Architectures = []specs.Arch{"SCMP_ARCH_Z80"} }, ErrInvalidProfile, "SCMP_ARCH_Z80"},
		{"bad flag", func(p *specs.LinuxSeccomp) { p.Flags = []specs.LinuxSeccompFlag{"SECCOMP_FILTER_FLAG_NOPE"} }, ErrInvalidProfile, "SECCOMP_FILTER_FLAG_NOPE"},
		{"wait killable", func(p *specs.LinuxSeccomp) {
			p.Flags = []specs.LinuxSeccompFlag{specs.LinuxSeccompFlagWaitKillableRecv}
		}, ErrNotSupported, "WAIT_KILLABLE"},
		{"bad op", func(p *specs.LinuxSeccomp) {
			p.Syscalls[0].Args = []specs.LinuxSeccompArg{{Index: 0, Op: "SCMP_CMP_ALMOST"}}
		}, ErrInvalidProfile, "SCMP_CMP_ALMOST"},
		{"bad index", func(p *specs.LinuxSeccomp) {
			p.Syscalls[0].Args = []specs.LinuxSeccompArg{{Index: 6, Op: specs.OpEqualTo}}
		}, ErrInvalidProfile, "index 6"},
		{"no names", func(p *specs.LinuxSeccomp) { p.Syscalls[0].Names = nil }, ErrInvalidProfile, "no syscall names"},
		{"empty name", func(p *specs.LinuxSeccomp) { p.Syscalls[0].Names = []string{""} }, ErrInvalidProfile, "empty syscall name"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			p := baseProfile()
			tc.mutate(p)
			err := Validate(p)
			if !errors.Is(err, tc.want) {
				t.Fatalf("Validate error = %v, want %v", err, tc.want)
			}
			if !strings.Contains(err.Error(), tc.substr) {
				t.Fatalf("Validate error %q does not mention %q", err, tc.substr)
			}
		})
	}
}
