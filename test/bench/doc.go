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
// It needs root. MIGRATED names a prebuilt migrated binary; without it the
// benchmark builds ./cmd/migrated first.
package bench
