// Package bench holds benchmarks that compare migrate's OCI runtime with runc
// on the same host in the same run.
//
// BenchmarkLifecycle measures one container lifecycle (create, start, wait for
// the busybox `true` process to exit, delete) through each runtime's CLI,
// alternating the runtimes so drift in host load hits both alike, and reports
// the median per runtime and the median of the per-pair ratios ours/runc:
//
//	go test -run '^$' -bench Lifecycle -benchtime 40x ./test/bench/
//
// BenchmarkMove moves memory writers of 64, 256 and 1024 MiB between two agents
// and through the naive pipeline (runc checkpoint, tar | zstd over TCP, runc
// restore) in the same run; BenchmarkLimits measures this machine's ceilings
// (loopback, TLS, zstd, SHA-256, first touch, CRIU alone); BenchmarkPostcopy
// compares post-copy with cold moves and runc's lazy-pages flow;
// BenchmarkCheckpointRestore and BenchmarkSnapshot compare checkpoints and
// snapshots with runc's. docs/performance.md has the figures.
//
// They need root. MIGRATED names a prebuilt migrated binary; without it the
// benchmarks build ./cmd/migrated first.
package bench
