package seccomp

import (
	"errors"
	"fmt"

	specs "github.com/opencontainers/runtime-spec/specs-go"
)

var (
	// ErrInvalidProfile is wrapped by every error about a malformed profile:
	// unknown action, architecture, flag or operator, bad argument index...
	ErrInvalidProfile = errors.New("invalid seccomp profile")
	// ErrNotSupported is wrapped when a profile asks for something this
	// runtime deliberately does not implement (SCMP_ACT_NOTIFY, a listener
	// socket, SECCOMP_FILTER_FLAG_WAIT_KILLABLE_RECV), or when seccomp is
	// not available in this build (no cgo / not Linux).
	ErrNotSupported = errors.New("not supported")
	// ErrPrivilegeRequired is wrapped by Load when the kernel refused the
	// filter because the thread has neither no_new_privs nor CAP_SYS_ADMIN.
	ErrPrivilegeRequired = errors.New("loading a seccomp filter needs no_new_privs or CAP_SYS_ADMIN")
)

// maxArgs is the number of syscall arguments seccomp can inspect.
const maxArgs = 6

// maxErrno is the kernel's MAX_ERRNO: larger SECCOMP_RET_ERRNO data is
// silently clamped by the kernel, so we reject it instead of surprising.
const maxErrno = 4095

// defaultErrno is what SCMP_ACT_ERRNO and SCMP_ACT_TRACE return when the
// profile gives no errnoRet, matching runc (EPERM).
const defaultErrno = 1

// knownArches maps the spec's architecture names to libseccomp's names.
var knownArches = map[specs.Arch]string{
	specs.ArchX86:         "x86",
	specs.ArchX86_64:      "amd64",
	specs.ArchX32:         "x32",
	specs.ArchARM:         "arm",
	specs.ArchAARCH64:     "arm64",
	specs.ArchMIPS:        "mips",
	specs.ArchMIPS64:      "mips64",
	specs.ArchMIPS64N32:   "mips64n32",
	specs.ArchMIPSEL:      "mipsel",
	specs.ArchMIPSEL64:    "mipsel64",
	specs.ArchMIPSEL64N32: "mipsel64n32",
	specs.ArchPPC:         "ppc",
	specs.ArchPPC64:       "ppc64",
	specs.ArchPPC64LE:     "ppc64le",
	specs.ArchS390:        "s390",
	specs.ArchS390X:       "s390x",
	specs.ArchPARISC:      "parisc",
	specs.ArchPARISC64:    "parisc64",
	specs.ArchRISCV64:     "riscv64",
	specs.ArchLOONGARCH64: "loong64",
	specs.ArchM68K:        "m68k",
	specs.ArchSH:          "sh",
	specs.ArchSHEB:        "sheb",
}

// knownOps lists the spec's comparison operators.
var knownOps = map[specs.LinuxSeccompOperator]bool{
	specs.OpNotEqual:     true,
	specs.OpLessThan:     true,
	specs.OpLessEqual:    true,
	specs.OpEqualTo:      true,
	specs.OpGreaterEqual: true,
	specs.OpGreaterThan:  true,
	specs.OpMaskedEqual:  true,
}

// action is a checked spec action with its return value resolved.
type action struct {
	name  specs.LinuxSeccompAction
	errno uint // meaningful for SCMP_ACT_ERRNO and SCMP_ACT_TRACE only
}

// parseAction checks a spec action and its optional errnoRet.
func parseAction(a specs.LinuxSeccompAction, errnoRet *uint) (action, error) {
	switch a {
	case specs.ActErrno, specs.ActTrace:
		errno := uint(defaultErrno)
		if errnoRet != nil {
			errno = *errnoRet
		}
		if errno > maxErrno {
			return action{}, fmt.Errorf("%w: errnoRet %d for %s is above %d", ErrInvalidProfile, errno, a, maxErrno)
		}
		return action{name: a, errno: errno}, nil
	case specs.ActKill, specs.ActKillProcess, specs.ActKillThread, specs.ActTrap, specs.ActAllow, specs.ActLog:
		if errnoRet != nil {
			return action{}, fmt.Errorf("%w: errnoRet is only valid with %s or %s, not %s",
				ErrInvalidProfile, specs.ActErrno, specs.ActTrace, a)
		}
		return action{name: a}, nil
	case specs.ActNotify:
		// A notify action needs a listener agent to answer the calls; we
		// have none, and a filter waiting on nobody hangs the container.
		return action{}, fmt.Errorf("seccomp action %s: %w", a, ErrNotSupported)
	case "":
		return action{}, fmt.Errorf("%w: empty action", ErrInvalidProfile)
	default:
		return action{}, fmt.Errorf("%w: unknown action %q", ErrInvalidProfile, a)
	}
}

// flagSet is the checked set of spec filter flags.
type flagSet struct {
	log       bool
	specAllow bool
}

func parseFlags(flags []specs.LinuxSeccompFlag) (flagSet, error) {
	var fs flagSet
	for _, f := range flags {
		switch f {
		case "SECCOMP_FILTER_FLAG_TSYNC":
			// The filter is always synchronised to every thread.
		case specs.LinuxSeccompFlagLog:
			fs.log = true
		case specs.LinuxSeccompFlagSpecAllow:
			fs.specAllow = true
		case specs.LinuxSeccompFlagWaitKillableRecv:
			// Only meaningful for notify filters, which we refuse.
			return flagSet{}, fmt.Errorf("seccomp flag %s: %w", f, ErrNotSupported)
		default:
			return flagSet{}, fmt.Errorf("%w: unknown flag %q", ErrInvalidProfile, f)
		}
	}
	return fs, nil
}

// checkArgs checks the argument conditions of one rule.
func checkArgs(args []specs.LinuxSeccompArg) error {
	for _, a := range args {
		if a.Index >= maxArgs {
			return fmt.Errorf("%w: argument index %d out of range (0-%d)", ErrInvalidProfile, a.Index, maxArgs-1)
		}
		if !knownOps[a.Op] {
			return fmt.Errorf("%w: unknown operator %q", ErrInvalidProfile, a.Op)
		}
	}
	return nil
}

// checkStatic performs every check that needs no libseccomp: it is the part
// of Validate that is the same on every platform.
func checkStatic(cfg *specs.LinuxSeccomp) error {
	if cfg.ListenerPath != "" {
		return fmt.Errorf("seccomp listenerPath: %w", ErrNotSupported)
	}
	if cfg.DefaultAction == "" {
		return fmt.Errorf("%w: defaultAction is required", ErrInvalidProfile)
	}
	if _, err := parseAction(cfg.DefaultAction, cfg.DefaultErrnoRet); err != nil {
		return fmt.Errorf("defaultAction: %w", err)
	}
	for _, a := range cfg.Architectures {
		if _, ok := knownArches[a]; !ok {
			return fmt.Errorf("%w: unknown architecture %q", ErrInvalidProfile, a)
		}
	}
	if _, err := parseFlags(cfg.Flags); err != nil {
		return err
	}
	for i, sc := range cfg.Syscalls {
		if err := checkRule(sc); err != nil {
			return fmt.Errorf("syscalls[%d]: %w", i, err)
		}
	}
	return nil
}

func checkRule(sc specs.LinuxSyscall) error {
	if len(sc.Names) == 0 {
		return fmt.Errorf("%w: rule has no syscall names", ErrInvalidProfile)
	}
	for _, n := range sc.Names {
		if n == "" {
			return fmt.Errorf("%w: empty syscall name", ErrInvalidProfile)
		}
	}
	if _, err := parseAction(sc.Action, sc.ErrnoRet); err != nil {
		return err
	}
	return checkArgs(sc.Args)
}
