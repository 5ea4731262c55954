// Package caps applies the capability sets of an OCI process
// (specs.LinuxCapabilities) to the container's init before it execs the
// user's program.
//
// Capabilities are per thread: every function that changes them acts on the
// calling thread only, so the caller must hold runtime.LockOSThread and
// execve from that same thread. The expected order in the init is:
//
//  1. DropBounding(c)          while still root with every capability;
//     dropping from the bounding set needs CAP_SETPCAP.
//  2. KeepCapsForUserSwitch(), then setgroups/setgid/setuid (the caller's);
//     without PR_SET_KEEPCAPS a change from uid 0 to another uid empties
//     the permitted set and Apply could no longer grant anything.
//  3. Apply(c)                 effective, permitted and inheritable exactly as
//     listed, then the ambient set; PR_SET_KEEPCAPS is cleared again.
//  4. prctl(PR_SET_NO_NEW_PRIVS) by the caller when noNewPrivileges is set.
//  5. seccomp (see runtime/seccomp), then execve.
//
// A nil *specs.LinuxCapabilities means "leave capabilities as they are"
// (the spec's process.capabilities is optional), so every function accepts
// nil and does nothing.
//
// Names must be the spec's "CAP_XXX" spelling of a capability this package
// knows. A known capability that the running kernel predates is skipped
// when applying, as runc does, so one spec serves old and new kernels.
package caps
