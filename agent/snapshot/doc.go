// Package snapshot holds the pure logic of scheduled snapshots: schedule
// specifications (--every, cron) and when they fire, per-container jitter,
// retention (keep-last, keep-hourly, keep-daily), snapshot names and the
// persisted table of schedules. The agent (agent/snapshots_linux.go) does the
// dumping and the storing in the pagestore; nothing here touches a container.
package snapshot
