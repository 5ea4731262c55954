// Package api holds migrate's protobuf definitions and their generated Go code:
// migrate/v1 (the control API between migratectl and migrated, and the peer API
// between agents), shim/v1 (the API between migrated and its per-container shims) and
// transfer/v1 (streaming checkpoint files from one agent to another).
// Regenerate with `go generate ./api` (or `make generate`).
package api

//go:generate ./generate.sh
