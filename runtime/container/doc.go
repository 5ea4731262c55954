// Package container implements the OCI container lifecycle: create, start,
// state, kill, delete, exec, pause, resume and ps, with state persisted under
// a root directory so that separate invocations (the runc-compatible CLI) and
// the agent's shims share it.
//
// A container's init is a re-exec of the running binary from a sealed memfd
// copy (see selfexe_linux.go) that enters the "init" mode of this package before
// anything else runs (see InitMain). Parent and init talk over a socketpair;
// the protocol is drawn in sync_linux.go.
package container
