//go:build cgo

package seccomp

import (
	"errors"
	"fmt"
	"syscall"

	specs "github.com/opencontainers/runtime-spec/specs-go"
	libseccomp "github.com/seccomp/libseccomp-golang"
)

// scmpOps maps the spec's operators to libseccomp's.
var scmpOps = map[specs.LinuxSeccompOperator]libseccomp.ScmpCompareOp{
	specs.OpNotEqual:     libseccomp.CompareNotEqual,
	specs.OpLessThan:     libseccomp.CompareLess,
	specs.OpLessEqual:    libseccomp.CompareLessOrEqual,
	specs.OpEqualTo:      libseccomp.CompareEqual,
	specs.OpGreaterEqual: libseccomp.CompareGreaterEqual,
	specs.OpGreaterThan:  libseccomp.CompareGreater,
	specs.OpMaskedEqual:  libseccomp.CompareMaskedEqual,
}

// Validate checks cfg without loading it: the static checks, then the whole
// filter is built with libseccomp and thrown away, so anything libseccomp
// would refuse at Load time is reported now. Syscall names this libseccomp
// does not know are skipped, as runc does, so that one profile serves
// kernels and libraries of different ages. A nil cfg is valid (no filter).
func Validate(cfg *specs.LinuxSeccomp) error {
	if cfg == nil {
		return nil
	}
	f, err := build(cfg)
	if err != nil {
		return err
	}
	f.Release()
	return nil
}

// Load builds the filter described by cfg and installs it for every thread
// of the calling process (TSYNC). It does not set no_new_privs; see the
// package documentation for the order the caller must follow. A nil cfg
// loads nothing.
func Load(cfg *specs.LinuxSeccomp) error {
	if cfg == nil {
		return nil
	}
	f, err := build(cfg)
	if err != nil {
		return err
	}
	defer f.Release()
	if err := f.Load(); err != nil {
		if errors.Is(err, syscall.EACCES) {
			return fmt.Errorf("load seccomp filter: %w: %w", ErrPrivilegeRequired, err)
		}
		return fmt.Errorf("load seccomp filter: %w", err)
	}
	return nil
}

// build turns cfg into a libseccomp filter. The caller releases it.
func build(cfg *specs.LinuxSeccomp) (_ *libseccomp.ScmpFilter, retErr error) {
	if err := checkStatic(cfg); err != nil {
		return nil, err
	}
	def, err := parseAction(cfg.DefaultAction, cfg.DefaultErrnoRet)
	if err != nil {
		return nil, fmt.Errorf("defaultAction: %w", err)
	}
	defAct := toScmpAction(def)
	f, err := libseccomp.NewFilter(defAct)
	if err != nil {
		return nil, fmt.Errorf("create seccomp filter: %w", err)
	}
	defer func() {
		if retErr != nil {
			f.Release()
		}
	}()

	// no_new_privs is the spec's decision (process.noNewPrivileges), taken
	// by the caller; libseccomp would otherwise set it behind its back.
	if err := f.SetNoNewPrivsBit(false); err != nil {
		return nil, fmt.Errorf("seccomp filter: clear no_new_privs attribute: %w", err)
	}
	// Without raw return codes libseccomp turns every kernel error into
	// ECANCELED, hiding the EACCES that Load maps to ErrPrivilegeRequired.
	if err := f.SetRawRC(true); err != nil {
		return nil, fmt.Errorf("seccomp filter: request raw return codes: %w", err)
	}

	for _, a := range cfg.Architectures {
		arch, err := libseccomp.GetArchFromString(knownArches[a])
		if err != nil {
			return nil, fmt.Errorf("%w: architecture %s: %v", ErrInvalidProfile, a, err)
		}
		if err := f.AddArch(arch); err != nil {
			return nil, fmt.Errorf("seccomp filter: add architecture %s: %w", a, err)
		}
	}

	flags, err := parseFlags(cfg.Flags)
	if err != nil {
		return nil, err
	}
	if flags.log {
		if err := f.SetLogBit(true); err != nil {
			return nil, fmt.Errorf("seccomp flag %s: %w", specs.LinuxSeccompFlagLog, err)
		}
	}
	if flags.specAllow {
		if err := f.SetSSB(true); err != nil {
			return nil, fmt.Errorf("seccomp flag %s: %w", specs.LinuxSeccompFlagSpecAllow, err)
		}
	}

	for i, sc := range cfg.Syscalls {
		if err := addRule(f, defAct, sc); err != nil {
			return nil, fmt.Errorf("syscalls[%d]: %w", i, err)
		}
	}
	return f, nil
}

// addRule adds one spec rule (several names, one action, optional argument
// conditions) to f.
func addRule(f *libseccomp.ScmpFilter, defAct libseccomp.ScmpAction, sc specs.LinuxSyscall) error {
	act, err := parseAction(sc.Action, sc.ErrnoRet)
	if err != nil {
		return err
	}
	scmpAct := toScmpAction(act)
	// libseccomp refuses a rule whose action is the default one; such a
	// rule changes nothing, so it is skipped, as runc does.
	if scmpAct == defAct {
		return nil
	}
	conds, perIndex, err := conditions(sc.Args)
	if err != nil {
		return err
	}
	for _, name := range sc.Names {
		call, err := libseccomp.GetSyscallFromName(name)
		if err != nil {
			// Unknown to this libseccomp (newer than it, or a typo we
			// cannot tell apart): skipped so a profile written for a newer
			// stack still loads, matching runc.
			continue
		}
		if err := addConditional(f, call, scmpAct, conds, perIndex); err != nil {
			return fmt.Errorf("add rule for syscall %s: %w", name, err)
		}
	}
	return nil
}

// addConditional adds call with conds. When one argument index carries
// several conditions, each condition becomes its own rule (so they are ORed):
// that is runc's long-standing behaviour, which existing profiles depend on.
func addConditional(f *libseccomp.ScmpFilter, call libseccomp.ScmpSyscall, act libseccomp.ScmpAction,
	conds []libseccomp.ScmpCondition, sharedIndex bool,
) error {
	if len(conds) == 0 {
		return f.AddRule(call, act)
	}
	if !sharedIndex {
		return f.AddRuleConditional(call, act, conds)
	}
	for _, c := range conds {
		if err := f.AddRuleConditional(call, act, []libseccomp.ScmpCondition{c}); err != nil {
			return err
		}
	}
	return nil
}

// conditions converts the spec's argument checks. sharedIndex reports
// whether some argument index is used more than once.
func conditions(args []specs.LinuxSeccompArg) (_ []libseccomp.ScmpCondition, sharedIndex bool, _ error) {
	var seen [maxArgs]int
	conds := make([]libseccomp.ScmpCondition, 0, len(args))
	for _, a := range args {
		op, ok := scmpOps[a.Op]
		if !ok || a.Index >= maxArgs {
			return nil, false, fmt.Errorf("%w: argument %d operator %q", ErrInvalidProfile, a.Index, a.Op)
		}
		var (
			c   libseccomp.ScmpCondition
			err error
		)
		if a.Op == specs.OpMaskedEqual {
			// (arg & value) == valueTwo: libseccomp takes the mask first.
			c, err = libseccomp.MakeCondition(a.Index, op, a.Value, a.ValueTwo)
		} else {
			c, err = libseccomp.MakeCondition(a.Index, op, a.Value)
		}
		if err != nil {
			return nil, false, fmt.Errorf("%w: argument %d: %v", ErrInvalidProfile, a.Index, err)
		}
		seen[a.Index]++
		if seen[a.Index] > 1 {
			sharedIndex = true
		}
		conds = append(conds, c)
	}
	return conds, sharedIndex, nil
}

// toScmpAction converts a checked action. SCMP_ACT_KILL is the historical
// name of SECCOMP_RET_KILL_THREAD.
func toScmpAction(a action) libseccomp.ScmpAction {
	switch a.name {
	case specs.ActKill, specs.ActKillThread:
		return libseccomp.ActKillThread
	case specs.ActKillProcess:
		return libseccomp.ActKillProcess
	case specs.ActTrap:
		return libseccomp.ActTrap
	case specs.ActErrno:
		return libseccomp.ActErrno.SetReturnCode(int16(a.errno))
	case specs.ActTrace:
		return libseccomp.ActTrace.SetReturnCode(int16(a.errno))
	case specs.ActAllow:
		return libseccomp.ActAllow
	case specs.ActLog:
		return libseccomp.ActLog
	}
	// parseAction admits nothing else.
	return libseccomp.ActInvalid
}
