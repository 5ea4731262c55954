// Package nsenter joins existing namespaces before the Go runtime starts.
//
// setns(2) on a mount or user namespace fails in a multi-threaded process, and
// the Go runtime starts threads before main, so the joining happens in a C
// constructor, as runc's nsexec does. Importing this package (blank import from
// the binary's main) installs the constructor; it does nothing unless the
// runtime's parent set _MIGRATE_NSENTER in the child's environment.
//
// Protocol on the sync fd (_MIGRATE_NSENTER_FD), child's view:
//
//	parent                         child (constructor)
//	  | -- 1 byte "go" ----------->  |  (parent has put the child in its cgroup)
//	  |                              |  open every path, then setns: user first
//	  |                              |  if _MIGRATE_NSENTER_FORK: fork, so the
//	  |                              |  grandchild is inside the joined pid ns
//	  | <- {"type":"pid","pid":N} -- |  (intermediate, N in the parent's pid ns)
//	  |                              |  intermediate exits 0; grandchild goes on
//	  | <- {"type":"error",...} ---- |  on any failure, then exit 1
//
// The grandchild (or the child when no fork is needed) returns into the Go
// runtime with every thread in the joined namespaces.
package nsenter
