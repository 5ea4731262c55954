// Package criu is migrate's client for CRIU (Checkpoint/Restore In Userspace).
//
// It speaks CRIU's RPC protocol to a `criu swrk` process that it starts itself,
// using the message types of github.com/checkpoint-restore/go-criu/v8/rpc. What
// belongs here: starting and stopping swrk, dump, pre-dump, restore and page
// server requests, notification callbacks, feature detection, and turning CRIU's
// failures into errors that quote CRIU's log. What does not: containers, cgroups,
// image transfer; callers in agent/ compose those with this package.
//
// The swrk protocol, as implemented in client_linux.go:
//
//	migrate                                   criu swrk 3
//	  socketpair(SEQPACKET|CLOEXEC) ----fd 3---->  (inherited via ExtraFiles;
//	  closes its copy of CRIU's end                  inherit fds are 4, 5, ...)
//	  CriuReq{type, opts} ------------------->
//	                     <------------------- CriuResp{type: NOTIFY, script}  (0..n times)
//	  CriuReq{NOTIFY, notify_success} ------->
//	                     <------------------- CriuResp{type, success, ...}
//	  closes its end; swrk sees EOF and exits; migrate reaps it
//
// One message per seqpacket in each direction. Notifications may carry one file
// descriptor (SCM_RIGHTS), received with MSG_CMSG_CLOEXEC.
package criu
