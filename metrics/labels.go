package metrics

// Result is the outcome label of an operation.
type Result string

// Results.
const (
	ResultSuccess Result = "success"
	ResultFailure Result = "failure"
)

// Reason says why an operation failed. The set is closed: see NormalizeReason.
type Reason string

// Reasons. ReasonNone goes with ResultSuccess only.
const (
	ReasonNone              Reason = "none"
	ReasonTargetUnreachable Reason = "target_unreachable"
	ReasonTransfer          Reason = "transfer"
	ReasonRestore           Reason = "restore"
	ReasonDump              Reason = "dump"
	ReasonCancelled         Reason = "cancelled"
	ReasonTimeout           Reason = "timeout"
	ReasonOther             Reason = "other"
	// ReasonPagesLost: a postcopy move's page transfer broke after the target
	// resumed the container (the source was lost); the container was stopped.
	ReasonPagesLost Reason = "pages_lost"
)

// Reasons lists the failure reasons, without ReasonNone.
var Reasons = []Reason{
	ReasonTargetUnreachable, ReasonTransfer, ReasonRestore, ReasonDump,
	ReasonCancelled, ReasonTimeout, ReasonPagesLost, ReasonOther,
}

// NormalizeReason maps r into the documented set; anything unknown, including
// the empty string, becomes ReasonOther. ReasonNone is kept.
func NormalizeReason(r Reason) Reason {
	switch r {
	case ReasonNone, ReasonTargetUnreachable, ReasonTransfer, ReasonRestore,
		ReasonDump, ReasonCancelled, ReasonTimeout, ReasonPagesLost:
		return r
	}
	return ReasonOther
}

// resultReason returns the label pair of an outcome: a success always has
// reason "none", a failure never does.
func resultReason(res Result, r Reason) (Result, Reason) {
	if res == ResultSuccess {
		return ResultSuccess, ReasonNone
	}
	r = NormalizeReason(r)
	if r == ReasonNone {
		r = ReasonOther
	}
	return ResultFailure, r
}

// Move modes. Only cold moves exist so far; the others are reserved so the
// label set need not change when they come.
const (
	ModeCold    = "cold"
	ModePreCopy = "precopy"
	ModeLazy    = "lazy"
	ModeOther   = "other"
)

// NormalizeMode maps an unknown mode to ModeOther.
func NormalizeMode(m string) string {
	switch m {
	case ModeCold, ModePreCopy, ModeLazy:
		return m
	}
	return ModeOther
}

// Phase is one step of a move.
type Phase string

// Phases of a move, in order. lazy_pages is the time the source serves pages
// after the container already runs on the target.
const (
	PhaseFreeze    Phase = "freeze"
	PhaseDump      Phase = "dump"
	PhaseTransfer  Phase = "transfer"
	PhaseRestore   Phase = "restore"
	PhaseLazyPages Phase = "lazy_pages"
	PhaseOther     Phase = "other"
)

// NormalizePhase maps an unknown phase to PhaseOther.
func NormalizePhase(p Phase) Phase {
	switch p {
	case PhaseFreeze, PhaseDump, PhaseTransfer, PhaseRestore, PhaseLazyPages:
		return p
	}
	return PhaseOther
}

// OpKind is the kind label of migrate_operations_in_flight.
type OpKind string

// Operation kinds.
const (
	OpMove       OpKind = "move"
	OpCheckpoint OpKind = "checkpoint"
	OpRestore    OpKind = "restore"
	OpSnapshot   OpKind = "snapshot"
	OpOther      OpKind = "other"
)

// NormalizeOpKind maps an unknown kind to OpOther.
func NormalizeOpKind(k OpKind) OpKind {
	switch k {
	case OpMove, OpCheckpoint, OpRestore, OpSnapshot:
		return k
	}
	return OpOther
}

// Container statuses counted by migrate_containers. They follow the OCI states
// plus the agent's own; anything else is counted as "other".
var containerStatuses = map[string]bool{
	"creating": true, "created": true, "running": true, "paused": true,
	"stopped": true, "checkpointed": true, "moving": true, "restoring": true,
}

// NormalizeStatus maps an unknown container status to "other".
func NormalizeStatus(s string) string {
	if containerStatuses[s] {
		return s
	}
	return "other"
}
