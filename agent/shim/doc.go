// Package shim is the per-container shim (`migrated shim`) and the agent's side of
// starting and talking to it.
//
// One shim runs per container. It is the parent of the container's init and of exec'd
// processes (a child subreaper), so it alone reaps them and records the init's exit
// status; it holds the read ends of the container's stdout/stderr pipes and writes them
// to the rotated log; it serves the Shim gRPC API on a root-only unix socket. It runs in
// its own session and its own cgroup, so stopping or killing the agent (even kill -9,
// even systemd stopping the unit with KillMode=process) leaves it and the container
// running, and a new agent re-adopts it through the files below.
//
// Container directory (<dataDir>/containers/<id>, mode 0700), who writes what:
//
//	meta.json        agent  id, bundle, creation time; written before the shim starts
//	shim.json        shim   shim pid and start time, init pid, shim cgroups, pipe inodes
//	exit.json        shim   init exit code and time, once the init has been reaped
//	shim.sock        shim   Shim gRPC API (0600, SO_PEERCRED uid 0)
//	shim.log         both   the shim's own stdout/stderr (diagnostics)
//	container.log*   shim   the container's stdio, see package logs
//
// Start-up protocol (Spawn <-> Main):
//
//	agent                                   shim (setsid, fd 3 = ready pipe)
//	  pipe(ready) ; start `migrated shim ...`
//	  close own write end                   prctl(CHILD_SUBREAPER); join own cgroup
//	                                        pipes for stdout/stderr; runtime Create
//	                                        listen on shim.sock; write shim.json
//	  read ready until EOF  <-------------- write {"ok":true} or {"code":..,"error":..}
//	                                        close fd 3
//	  dial shim.sock
//
// Stdio and checkpoint/restore: the container's stdout/stderr are pipes whose read
// ends only the shim holds; shim.json records their inodes so that a dump can declare
// them external (criu --external pipe:[inode]) and a restore can hand the shim's new
// pipes in with --inherit-fd, keeping the log going across checkpoint, restore and move.
package shim
