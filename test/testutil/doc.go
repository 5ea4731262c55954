// Package testutil holds helpers shared by migrate's integration tests: the root
// check, and the paths of the fixtures `make fixtures` builds into the cache
// directory ($MIGRATE_CACHE, default /var/cache/migrate): a busybox rootfs and
// bundle, a Debian minbase rootfs with python3 and redis-server, and the workload
// programs of test/workloads.
//
// Fixture helpers fail the test with a message naming `make fixtures` when a
// fixture is missing, rather than skipping: a silent skip would hide that nothing
// was tested.
package testutil
