// Package logs keeps a container's stdout and stderr in a bounded, rotated log and
// reads it back, optionally following it as it grows.
//
// The format is the CRI one (as kubelet and containerd write it), one entry a line:
//
//	<RFC 3339 nano time> <stdout|stderr> <F|P> <content>
//
// where P marks a partial line that the next entries of the same stream continue and F
// ends it. The current file is container.log; rotation renames it to container.log.1,
// shifting older files up to container.log.<maxFiles-1> and dropping the oldest. The
// shim writes; the agent reads the files directly, so logs stay readable while the
// agent restarts and the shim keeps writing.
package logs
