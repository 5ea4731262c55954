// Package workloads holds the small programs that tests run inside containers and
// checkpoint, restore or migrate: memwriter (a memory pattern that verifies itself),
// counter (an in-memory counter) and httpcounter (an HTTP request counter). Each is a
// static Go binary built by `make fixtures` into $MIGRATE_CACHE/workloads and copied
// into the busybox rootfs at /usr/local/bin; testutil.Workload names the host copy.
//
// The programs keep their state only in memory on purpose: if that state survives a
// checkpoint/restore, the process's memory did.
package workloads
