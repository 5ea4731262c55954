// Package seccomp turns the seccomp section of an OCI runtime spec
// (specs.LinuxSeccomp) into a BPF filter with libseccomp and loads it into
// the container's init process.
//
// It holds only the translation and the load; the profile itself comes from
// the spec, and choosing a default profile belongs elsewhere.
//
// Expectations on the caller (the container init, a single-job re-exec of
// our binary running with runtime.LockOSThread):
//
//   - Validate may run anywhere, any number of times (the agent calls it
//     when a spec is accepted); it builds the filter without loading it.
//   - Load is the last step before execve: nothing between Load and execve
//     may need a syscall the profile denies. The filter is synchronised to
//     every thread of the process (SECCOMP_FILTER_FLAG_TSYNC), so the Go
//     runtime's own threads are filtered too; a profile must allow what the
//     Go runtime needs for that short window (futex, nanosleep, sigreturn,
//     mmap...) and execve itself, as any profile written for runc must.
//   - Load never sets no_new_privs itself (process.noNewPrivileges is the
//     spec's decision, applied by the caller). Without no_new_privs the
//     kernel only lets a thread holding CAP_SYS_ADMIN install a filter, so
//     when process.noNewPrivileges is false the caller must call Load
//     before capabilities are reduced (and the profile must then allow the
//     setuid/capset/prctl calls that follow). Load reports that mistake as
//     ErrPrivilegeRequired.
//
// The cgo-dependent code (libseccomp) lives in files built only on Linux
// with cgo; elsewhere Validate performs the static checks only and Load
// returns ErrNotSupported.
package seccomp
