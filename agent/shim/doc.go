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
// ends only the shim holds; its stdin is a pipe whose write end the shim closes at once
// (EOF, like /dev/null, but dumpable). A checkpoint's manifest records the pipes'
// identities, so a restore can hand the new shim's pipes in with --inherit-fd, keeping
// the log going across checkpoint, restore and move.
//
// Checkpoint (Shim.Checkpoint) is done by the shim because it is the init's parent:
//
//	agent                    shim                              CRIU
//	  Checkpoint(dir) ────▶  mark checkpoint in progress
//	                         Checkpointer.Checkpoint ───────▶  freeze, dump, kill tree
//	                         wait(): init reaped, waits for
//	                           the dump's outcome
//	                         drain pipes, copy logs, manifest
//	                         exit.json {checkpoint: id}
//	  ◀──── downtime, bytes  State: "checkpointed"
//
// Restore: `migrated shim --restore DIR` replaces runtime Create in the start-up
// protocol above: it copies DIR/logs into the container directory, then restores with
// CRIU in restore-sibling mode, so the restored init is the shim's child. The ready
// report carries the restore's error (code and message) when it fails; the shim then
// leaves nothing behind and exits.
package shim
