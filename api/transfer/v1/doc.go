// Package transferv1 is the generated Go code of the Transfer API, which streams
// checkpoint files between agents (see package transfer). Edit transfer.proto, then
// `go generate ./api`.
package transferv1
