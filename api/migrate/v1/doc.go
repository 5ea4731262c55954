// Package migratev1 is the generated Go code of the control API (migratectl <-> migrated)
// and the peer API (migrated <-> migrated). Edit the .proto files, then `go generate ./api`.
package migratev1
