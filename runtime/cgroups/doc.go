// Package cgroups places a container's processes in cgroups and applies the
// resource limits of its OCI spec, on cgroup v1, hybrid and v2 (unified) hosts.
//
// The kernel-facing work (creating directories, writing controller files,
// freezing, the v2 device eBPF program) is done by
// github.com/opencontainers/cgroups; this package adds what sits between the
// OCI runtime spec and that library:
//
//   - validation of specs.LinuxResources with errors that name the field
//     ("cgroups: memory.limit 1000 is below the minimum ..."),
//   - translation to the library's Resources, including the default device
//     allow list every container needs,
//   - a placement policy that keeps containers out of the agent's own cgroup
//     (the default is /migrate/<id> at the root of each hierarchy),
//   - a State value the runtime persists so another process can reopen the
//     same cgroup with Load.
//
// What belongs here: cgroup placement, limits, freezing, pids and statistics
// for one container. Process spawning, namespaces and CRIU live elsewhere.
// See docs/cgroups.md for the layout and what is refused and why.
package cgroups
